//! Measuring one command or one workload: `exec` (its cgroup
//! `command_cgroup`, its fork and release `launch`), `exec --cgroup` and
//! `watch --pid` (`watch`), and what they share: the agent with the summary
//! output and the measured window (`session`).

pub mod command_cgroup;
pub mod exec;
pub mod launch;
pub mod session;
pub mod watch;
