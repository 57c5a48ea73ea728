//! The command of `exec`, forked before the agent starts and released once
//! the measurement is ready.
//!
//! Why not `std::process::Command`: to be in its cgroup from its first
//! instruction, the command must join it before it execs, and a `pre_exec`
//! hook makes std fork the whole running agent (threads, buffers, kept
//! descriptors) instead of using posix_spawn. The command is forked as
//! soon as the configuration is loaded and its cgroup created, while the
//! agent is one small thread; the child joins its cgroup at once, then
//! waits on a pipe while the agent starts, and execs the command when
//! [`PendingCommand::start`] releases it. Until then it runs no code of the
//! command, so nothing of the command is missed.
//!
//! How it joins (see `alumet_kernelfs::cgroup::run_in` for the kernel's
//! side): in a v2 hierarchy it is created inside (clone3
//! `CLONE_INTO_CGROUP`, Linux 5.7+), in v1 ones it writes `0` to `tasks`;
//! both spare the RCU grace period (4–20 ms measured here) that a move of
//! a process waits for, the largest cost `exec` had.
//!
//! Between fork and exec the child only calls async-signal-safe functions
//! on memory prepared before the fork (`read`, `sigprocmask`, `signal`,
//! `execvp`, `write`, `_exit`), so this stays correct even if a thread
//! existed at fork time.

use std::ffi::{CString, NulError};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use alumet_kernelfs::cgroup::join_raw_each;

/// Exit status of the waiting child when the agent gives up before
/// releasing it (it never ran the command).
const EXIT_NOT_RELEASED: libc::c_int = 125;

/// A command forked and waiting to be released.
pub struct PendingCommand {
    pid: libc::pid_t,
    /// Writing one byte releases the child; closing it without writing makes
    /// the child exit without running the command.
    release: Option<OwnedFd>,
    /// Carries the outcome of the child's join first ([`JOINED`]), then is
    /// closed by its successful exec (close-on-exec), or carries its errno
    /// when exec fails.
    exec_status: Option<OwnedFd>,
    /// The outcome of the join, once read.
    joined: Option<Result<(), JoinFailure>>,
    started: bool,
    /// The first join descriptor was skipped (created inside): the child's
    /// indices are one off.
    skipped_first: bool,
}

/// What the child writes after joining: (index of the first descriptor it
/// could not write to, or -1; errno).
const JOINED: usize = 8;

/// The cgroup the child joins before it waits: created inside `create_in`
/// (a v2 directory) where the kernel can, and writing `0` to each of
/// `join_fds` (one per hierarchy, the first one that same v2 cgroup,
/// skipped when created inside).
#[derive(Debug, Clone, Copy)]
pub struct Join<'a> {
    /// The v2 directory of the first of `join_fds`, if it is v2.
    pub create_in: Option<&'a std::path::Path>,
    /// Descriptors to write `0` to, kept open by the caller until the fork returns.
    pub join_fds: &'a [std::os::fd::RawFd],
}

/// A descriptor of [`Join::join_fds`] the child could not write to.
#[derive(Debug)]
pub struct JoinFailure {
    /// Its index in `join_fds`.
    pub index: usize,
    /// The error.
    pub error: io::Error,
}

/// Why the command could not be forked.
#[derive(Debug)]
pub enum LaunchError {
    /// An argument holds a NUL byte, which no exec can pass.
    Nul(String),
    /// pipe or fork failed.
    Fork(io::Error),
}

impl std::fmt::Display for LaunchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LaunchError::Nul(arg) => write!(f, "argument {arg:?} contains a NUL byte"),
            LaunchError::Fork(e) => write!(f, "cannot fork the command: {e}"),
        }
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded: both are open descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl PendingCommand {
    /// Forks the process that will exec `command` (program and arguments,
    /// looked up in PATH like a shell does) once released.
    #[cfg(test)]
    pub fn fork(command: &[String]) -> Result<Self, LaunchError> {
        Self::fork_into(command, None).map(|(p, _)| p)
    }

    /// Like `fork`, the process joining the cgroup `join` before it waits
    /// (see [`Join`]; [`PendingCommand::joined`] tells how that went). The
    /// flag says whether it was created inside `join.create_in`: false
    /// where the kernel cannot (before 5.7) or may not, and the child then
    /// joins that cgroup too by writing to its descriptor.
    pub fn fork_into(command: &[String], join: Option<Join>) -> Result<(Self, bool), LaunchError> {
        let args: Vec<CString> = command
            .iter()
            .map(|a| CString::new(a.as_bytes()).map_err(|_: NulError| LaunchError::Nul(a.clone())))
            .collect::<Result<_, _>>()?;
        let Some(program) = args.first() else {
            return Err(LaunchError::Fork(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no command",
            )));
        };
        let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let (release_read, release_write) = pipe().map_err(LaunchError::Fork)?;
        let (status_read, status_write) = pipe().map_err(LaunchError::Fork)?;
        let join_fds = join.map(|j| j.join_fds).unwrap_or_default();
        let cgroup_dir = join
            .and_then(|j| j.create_in)
            .and_then(|dir| std::fs::File::open(dir).ok());
        let mut in_cgroup = false;
        let mut pid = -1;
        if let Some(dir) = &cgroup_dir {
            pid = clone_into_cgroup(dir.as_raw_fd());
            in_cgroup = pid >= 0;
            if pid < 0 {
                log::debug!(
                    "exec: cannot create the command in its cgroup ({}); moving it there instead",
                    io::Error::last_os_error()
                );
            }
        }
        if pid < 0 {
            // SAFETY: the child branch below only calls async-signal-safe
            // functions on memory prepared above, then execs or exits.
            pid = unsafe { libc::fork() };
        }
        if pid < 0 {
            return Err(LaunchError::Fork(io::Error::last_os_error()));
        }
        if pid == 0 {
            // SAFETY: in the child, see above.
            unsafe {
                child(
                    [release_write.as_raw_fd(), status_read.as_raw_fd()],
                    &join_fds[usize::from(in_cgroup).min(join_fds.len())..],
                    release_read.as_raw_fd(),
                    status_write.as_raw_fd(),
                    program.as_ptr(),
                    argv.as_ptr(),
                )
            }
        }
        drop(release_read);
        drop(status_write);
        drop(cgroup_dir);
        Ok((
            Self {
                pid,
                release: Some(release_write),
                exec_status: Some(status_read),
                joined: None,
                started: false,
                skipped_first: in_cgroup,
            },
            in_cgroup,
        ))
    }

    /// The pid of the command (the same before and after it is released).
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Releases the child and waits until it has exec'd the command (Ok) or
    /// failed to (the exec error: not found, not executable...). On error
    /// the child has exited and is reaped.
    pub fn start(&mut self) -> io::Result<()> {
        // The join's outcome comes first on the status pipe.
        let _ = self.joined();
        let (Some(release), Some(status)) = (self.release.take(), self.exec_status.take()) else {
            return Err(io::Error::other("the command was already released"));
        };
        self.started = true;
        let go = [1u8];
        // SAFETY: valid descriptor and one-byte buffer.
        let written = unsafe { libc::write(release.as_raw_fd(), go.as_ptr().cast(), 1) };
        if written != 1 {
            // The child is gone (EPIPE): killed while it waited, e.g. by a
            // Ctrl-C sent to the whole foreground group during start-up.
            let e = io::Error::last_os_error();
            let status = self.reap_quietly();
            return Err(match status {
                Some(s) if libc::WIFSIGNALED(s) => io::Error::other(format!(
                    "killed by signal {} before it started",
                    libc::WTERMSIG(s)
                )),
                _ => e,
            });
        }
        drop(release);
        let mut errno = [0u8; 4];
        if read_full(status.as_raw_fd(), &mut errno)? == 0 {
            return Ok(()); // closed by exec
        }
        let _ = self.reap_quietly();
        Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)))
    }

    /// Waits until the child has joined its cgroup (it does so right after
    /// the fork); the first descriptor of [`Join::join_fds`] it could not
    /// write to. Ok when there was nothing to join.
    pub fn joined(&mut self) -> Result<(), &JoinFailure> {
        if self.joined.is_none() {
            let outcome = match &self.exec_status {
                Some(status) => {
                    let mut report = [0u8; JOINED];
                    match read_full(status.as_raw_fd(), &mut report) {
                        Ok(JOINED) => {
                            let [i0, i1, i2, i3, e0, e1, e2, e3] = report;
                            let index = i32::from_ne_bytes([i0, i1, i2, i3]);
                            let errno = i32::from_ne_bytes([e0, e1, e2, e3]);
                            match usize::try_from(index) {
                                Err(_) => Ok(()),
                                Ok(i) => Err(JoinFailure {
                                    index: i + usize::from(self.skipped_first),
                                    error: io::Error::from_raw_os_error(errno),
                                }),
                            }
                        }
                        Ok(_) => Err(JoinFailure {
                            index: 0,
                            error: io::Error::other("the command ended before it joined"),
                        }),
                        Err(error) => Err(JoinFailure { index: 0, error }),
                    }
                }
                None => Err(JoinFailure {
                    index: 0,
                    error: io::Error::other("the command was already released"),
                }),
            };
            self.joined = Some(outcome);
        }
        match &self.joined {
            Some(Err(f)) => Err(f),
            _ => Ok(()),
        }
    }

    /// Waits for the child to end; its wait status, if it could be had.
    fn reap_quietly(&mut self) -> Option<libc::c_int> {
        self.started = true; // nothing left to clean up
        let mut status = 0;
        loop {
            // SAFETY: pid is our child; status is a valid int.
            let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if r == self.pid {
                return Some(status);
            }
            if r >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return None;
            }
        }
    }
}

impl Drop for PendingCommand {
    /// A command never released exits without running (its release pipe is
    /// closed) and is reaped, so no process is left behind.
    fn drop(&mut self) {
        if !self.started {
            self.release = None;
            self.exec_status = None;
            let _ = self.reap_quietly();
        }
    }
}

/// Reads until `buf` is full or end of file; the bytes read.
fn read_full(fd: libc::c_int, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: valid descriptor; the buffer has buf.len() - got bytes left.
        let n = unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        if n == 0 {
            break;
        }
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        got += n as usize;
    }
    Ok(got)
}

/// `clone3` with `CLONE_INTO_CGROUP`, otherwise a plain fork (a copy of the
/// address space; the child returns 0 on its own copy of the stack, as from
/// fork). Returns the pid, 0 in the child, or -1 with errno set.
fn clone_into_cgroup(cgroup_fd: libc::c_int) -> libc::pid_t {
    /// `struct clone_args` of linux/sched.h (version 2, with `cgroup`).
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup_fd as u64,
        ..CloneArgs::default()
    };
    // SAFETY: a valid clone_args of the size given; without CLONE_VM the
    // child runs on its own copy of memory, like after fork(2).
    unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        ) as libc::pid_t
    }
}

/// The forked child: join the cgroup (write `0` to each of `join_fds`) and
/// say how that went, wait for the release, restore what a new program
/// expects (no blocked signals, SIGPIPE by default: Rust ignores it), exec.
///
/// # Safety
/// Only to be called in the child right after fork, with pointers to
/// memory prepared before the fork.
unsafe fn child(
    parent_ends: [libc::c_int; 2],
    join_fds: &[libc::c_int],
    release: libc::c_int,
    status: libc::c_int,
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
) -> ! {
    // SAFETY: see the function's contract.
    unsafe {
        // Our copy of the parent's ends: without closing the write end, the
        // release pipe would never read EOF if the agent died.
        for fd in parent_ends {
            libc::close(fd);
        }
        // What a terminal's Ctrl-C does to a command that has not started:
        // the agent's handlers, if any were installed before the fork, are not ours.
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::signal(sig, libc::SIG_DFL);
        }
        // Every hierarchy is tried; the first failure is reported.
        let failed: (i32, i32) = match join_raw_each(join_fds) {
            Ok(()) => (-1, 0),
            Err((i, e)) => (i as i32, e.raw_os_error().unwrap_or(0)),
        };
        let mut report = [0u8; JOINED];
        report[..4].copy_from_slice(&failed.0.to_ne_bytes());
        report[4..].copy_from_slice(&failed.1.to_ne_bytes());
        libc::write(status, report.as_ptr().cast(), report.len());
        let mut go = 0u8;
        loop {
            let n = libc::read(release, (&mut go as *mut u8).cast(), 1);
            if n == 1 {
                break;
            }
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            // The agent closed the pipe (it stopped, or gave up): run nothing.
            libc::_exit(EXIT_NOT_RELEASED);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::execvp(program, argv);
        let errno = (*libc::__errno_location()).to_ne_bytes();
        libc::write(status, errno.as_ptr().cast(), errno.len());
        libc::_exit(EXIT_NOT_RELEASED);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn wait(pid: u32) -> i32 {
        let mut status = 0;
        // SAFETY: our child.
        unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
        libc::WEXITSTATUS(status)
    }

    #[test]
    fn a_released_command_runs_and_keeps_its_pid() {
        let dir = std::env::temp_dir().join(format!("alumet-launch-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let script = format!("echo $$ > {}; exit 7", dir.display());
        let mut cmd = PendingCommand::fork(&["sh".into(), "-c".into(), script]).unwrap();
        let pid = cmd.pid();
        // Not run before the release.
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!dir.exists());
        cmd.start().unwrap();
        assert_eq!(wait(pid), 7);
        let written = std::fs::read_to_string(&dir).unwrap();
        assert_eq!(written.trim(), pid.to_string());
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn a_missing_program_is_an_error_with_its_errno() {
        let mut cmd = PendingCommand::fork(&["/nonexistent/alumet-nothing".into()]).unwrap();
        let e = cmd.start().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let mut cmd = PendingCommand::fork(&["alumet-no-such-command-anywhere".into()]).unwrap();
        assert_eq!(cmd.start().unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_command_never_released_runs_nothing_and_is_reaped() {
        let marker = std::env::temp_dir().join(format!("alumet-unrun-{}", std::process::id()));
        let script = format!("touch {}", marker.display());
        let cmd = PendingCommand::fork(&["sh".into(), "-c".into(), script]).unwrap();
        let pid = cmd.pid();
        drop(cmd);
        assert!(!marker.exists());
        // Reaped: no such child any more.
        // SAFETY: kill with signal 0 only checks existence.
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, 0) }, -1);
    }

    #[test]
    fn a_command_killed_while_it_waits_says_so() {
        let mut cmd = PendingCommand::fork(&["true".into()]).unwrap();
        // SAFETY: our child.
        unsafe { libc::kill(cmd.pid() as libc::pid_t, libc::SIGINT) };
        std::thread::sleep(std::time::Duration::from_millis(50));
        let e = cmd.start().unwrap_err();
        assert!(e.to_string().contains("signal 2"), "{e}");
    }

    #[test]
    fn the_child_says_which_join_descriptor_it_could_not_write_to() {
        use std::os::fd::AsRawFd;
        let writable = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .unwrap();
        let read_only = std::fs::File::open("/dev/null").unwrap();
        let fds = [
            writable.as_raw_fd(),
            read_only.as_raw_fd(),
            writable.as_raw_fd(),
        ];
        let join = Join {
            create_in: None,
            join_fds: &fds,
        };
        let (mut cmd, inside) = PendingCommand::fork_into(&["true".into()], Some(join)).unwrap();
        assert!(!inside);
        let failure = cmd.joined().unwrap_err();
        assert_eq!(failure.index, 1);
        assert_eq!(failure.error.raw_os_error(), Some(libc::EBADF));
        // The command still runs once released.
        let pid = cmd.pid();
        cmd.start().unwrap();
        assert_eq!(wait(pid), 0);

        let fds = [writable.as_raw_fd()];
        let join = Join {
            create_in: None,
            join_fds: &fds,
        };
        let (mut cmd, _) = PendingCommand::fork_into(&["true".into()], Some(join)).unwrap();
        assert!(cmd.joined().is_ok());
        let pid = cmd.pid();
        cmd.start().unwrap();
        assert_eq!(wait(pid), 0);
    }

    #[test]
    fn nul_bytes_are_refused_before_forking() {
        assert!(matches!(
            PendingCommand::fork(&["a\0b".into()]),
            Err(LaunchError::Nul(_))
        ));
    }
}
