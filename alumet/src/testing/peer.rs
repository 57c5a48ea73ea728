//! Test peers: a loopback port to start one on, and its process, killed
//! when the test ends (also when it fails).

#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::process::Child;

/// A loopback port nothing listens on right now (the caller binds it soon after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process (a test peer) killed (SIGKILL) and reaped on drop.
#[derive(Debug, Default)]
pub struct ChildProcess {
    child: Option<Child>,
}

impl ChildProcess {
    /// Owns `child`.
    pub fn new(child: Child) -> Self {
        Self { child: Some(child) }
    }

    /// Kills and reaps the process, if it still runs.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the process has exited (or was never started, or was killed).
    pub fn exited(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().ok().flatten().is_some(),
            None => true,
        }
    }

    /// The running process, if any.
    pub fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
