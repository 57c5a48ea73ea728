//! Workload names: who a cgroup's container id, pod uid or Slurm job id
//! is, in the words of the manager that created it, so that energy is
//! accounted to the things people run and name (a compose service, a pod in
//! a namespace, a job of a user in an account, a VM).
//!
//! - [`names`]: the names of one workload, as point attributes;
//! - [`kubernetes`]: this node's pods from the API server (a field-selected
//!   list and watch) or the kubelet, kept in a [`kubernetes::PodIndex`].
//!
//! Lookups never run on a poll path: they run on threads of their own and
//! their results are cached; a slow or absent manager delays no poll.

pub mod kubernetes;
pub mod names;

pub use names::Names;
