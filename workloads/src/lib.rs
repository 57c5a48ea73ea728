//! Workload names: who a cgroup's container id, pod uid or Slurm job id
//! is, in the words of the manager that created it, so that energy is
//! accounted to the things people run and name (a compose service, a pod in
//! a namespace, a job of a user in an account, a VM).
//!
//! - [`names`]: the names of one workload, as point attributes;
//! - [`config`]: the `names` settings and the resolver they make;
//! - [`resolver`]: lookups on threads of their own, one per new workload,
//!   and the names they found, kept while the workload exists;
//! - [`engine`]: Docker and Podman containers, from the engines' APIs on
//!   their Unix sockets ([`unix_http`]);
//! - [`cri`]: containerd and CRI-O containers, through the CRI (gRPC);
//! - [`slurm`]: Slurm jobs, from a job process's environment or `squeue`;
//! - [`kubernetes`]: this node's pods from the API server (a field-selected
//!   list and watch) or the kubelet, kept in a [`kubernetes::PodIndex`] and
//!   named by [`kubernetes::KubeLookup`].
//!
//! Lookups never run on a poll path: they run on threads of their own and
//! their results are cached; a slow or absent manager delays no poll.

pub mod config;
pub mod cri;
pub mod engine;
pub mod kubernetes;
pub mod names;
pub mod resolver;
pub mod slurm;
pub mod unix_http;

pub use names::Names;
