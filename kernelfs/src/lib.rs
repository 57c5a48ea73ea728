//! The kernel's pseudo-filesystems, as several plugins and the agent read them.
//!
//! - [`file`]: a file kept open and re-read with `pread` (procfs, sysfs and
//!   cgroupfs regenerate their content at each read from offset 0), and the
//!   budget of descriptors a source may keep.
//! - [`host`]: USER_HZ, page size, online CPUs and the interval clock (injectable).
//! - [`pids`]: the pids of a procfs, listed only above the last one seen
//!   where the kernel allows it.
//! - [`parse`] and [`glob`]: byte parsers and path/name patterns.
//! - [`cgroup`]: where the cgroup hierarchies are (v1, v2, hybrid), which one
//!   accounts CPU time, `/proc/PID/cgroup`, and creating a cgroup to run a
//!   command in.
//! - [`virt`]: whether the machine is a virtual machine, and which hypervisor.
//!
//! One mechanism, one place: procfs, cgroups, energy-attribution and the
//! agent's `exec` all go through this crate for these files.

pub mod cgroup;
pub mod file;
pub mod glob;
pub mod host;
pub mod parse;
pub mod pids;
pub mod virt;
