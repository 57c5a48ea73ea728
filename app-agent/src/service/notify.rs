//! The systemd notify protocol (`sd_notify(3)`): newline-separated
//! `KEY=VALUE` assignments in one datagram sent to the `AF_UNIX` socket named
//! by `$NOTIFY_SOCKET` (a path, or an abstract name when it starts with `@`).
//! Without `$NOTIFY_SOCKET` every call does nothing.
//!
//! The watchdog: with `$WATCHDOG_USEC` set (systemd's `WatchdogSec=`) and
//! `$WATCHDOG_PID` absent or ours, [`Notifier::watchdog_interval`] says how
//! often to send `WATCHDOG=1`.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Sends state changes to the service manager, if there is one.
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; a socket that cannot be used is logged once
    /// and notifications are off.
    pub fn from_env() -> Self {
        let Some(name) = std::env::var_os("NOTIFY_SOCKET") else {
            return Self { target: None };
        };
        let name = name.to_string_lossy().into_owned();
        match Self::connect(&name) {
            Ok(target) => Self {
                target: Some(target),
            },
            Err(e) => {
                log::warn!("NOTIFY_SOCKET={name}: cannot use it ({e}); no readiness notification");
                Self { target: None }
            }
        }
    }

    fn connect(name: &str) -> std::io::Result<(UnixDatagram, SocketAddr)> {
        let addr = if let Some(abstract_name) = name.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(abstract_name.as_bytes())?
        } else if name.starts_with('/') {
            SocketAddr::from_pathname(name)?
        } else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "neither an absolute path nor an abstract name (@...)",
            ));
        };
        Ok((UnixDatagram::unbound()?, addr))
    }

    /// Whether a service manager listens.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one message (assignments separated by `\n`). Failures are
    /// logged at debug level: the manager may be gone, measuring goes on.
    pub fn send(&self, message: &str) {
        if let Some((socket, addr)) = &self.target {
            if let Err(e) = socket.send_to_addr(message.as_bytes(), addr) {
                log::debug!("sd_notify {message:?}: {e}");
            }
        }
    }

    /// Half of `$WATCHDOG_USEC` (as `sd_watchdog_enabled(3)` advises), when
    /// the watchdog is meant for this process.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.target.as_ref()?;
        if let Ok(pid) = std::env::var("WATCHDOG_PID") {
            if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
                return None;
            }
        }
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
        (usec > 0).then(|| Duration::from_micros(usec / 2))
    }
}

/// `CLOCK_MONOTONIC` in microseconds, for `MONOTONIC_USEC=` with `RELOADING=1`.
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_message_arrives_whole_at_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            target: Some(Notifier::connect(path.to_str().unwrap()).unwrap()),
        };
        notifier.send("READY=1\nSTATUS=ok");
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=ok");
    }

    #[test]
    fn a_relative_name_is_refused() {
        assert!(Notifier::connect("relative/path").is_err());
    }
}
