//! SIGINT, SIGTERM and SIGHUP, as a stream the agent can wait on.
//!
//! systemd stops services with SIGTERM and terminals send SIGINT: both mean
//! "stop gracefully". A second one means "stop now". SIGHUP (a closing
//! terminal, logrotate's `postrotate`, `systemctl reload`) never kills the
//! agent: `run` reloads, `exec` passes it on to the command.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// How soon after the first stop signal another one is taken as the same
/// request (a copy sent to the process group) rather than a second one.
pub const SAME_REQUEST_WINDOW: std::time::Duration = std::time::Duration::from_millis(500);

/// The two stop signals, registered as soon as the agent starts so that an
/// early signal is not lost (or fatal).
pub struct StopSignals {
    runtime: tokio::runtime::Runtime,
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

/// Which signal arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (systemd, kill).
    Terminate,
    /// SIGHUP (reload, closing terminal): never a stop.
    Hangup,
}

impl StopSignal {
    /// Signal name.
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
            StopSignal::Hangup => "SIGHUP",
        }
    }
}

impl StopSignals {
    /// Installs the handlers.
    pub fn install() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (interrupt, terminate, hangup) = {
            let _guard = runtime.enter();
            (
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
                signal(SignalKind::hangup())?,
            )
        };
        Ok(Self {
            runtime,
            interrupt,
            terminate,
            hangup,
        })
    }

    /// Waits for the next signal, SIGHUP included.
    pub fn wait(&mut self) -> StopSignal {
        let (interrupt, terminate, hangup) =
            (&mut self.interrupt, &mut self.terminate, &mut self.hangup);
        self.runtime.block_on(async {
            tokio::select! {
                _ = interrupt.recv() => StopSignal::Interrupt,
                _ = terminate.recv() => StopSignal::Terminate,
                _ = hangup.recv() => StopSignal::Hangup,
            }
        })
    }

    /// Waits for the next stop signal (SIGINT or SIGTERM); a SIGHUP is
    /// logged (`SIGHUP: ignored, {why}`) and ignored.
    pub fn wait_stop(&mut self, why: &str) -> StopSignal {
        loop {
            match self.wait() {
                StopSignal::Hangup => log::info!("SIGHUP: ignored, {why}"),
                s => return s,
            }
        }
    }

    /// Waits for a signal (SIGHUP included) or for `future`, whichever
    /// comes first.
    pub fn wait_or<F: std::future::Future>(
        &mut self,
        future: &mut std::pin::Pin<Box<F>>,
    ) -> Result<F::Output, StopSignal> {
        let (interrupt, terminate, hangup) =
            (&mut self.interrupt, &mut self.terminate, &mut self.hangup);
        self.runtime.block_on(async {
            tokio::select! {
                out = future.as_mut() => Ok(out),
                _ = interrupt.recv() => Err(StopSignal::Interrupt),
                _ = terminate.recv() => Err(StopSignal::Terminate),
                _ = hangup.recv() => Err(StopSignal::Hangup),
            }
        })
    }

    /// After the first signal: a second one exits at once, from a thread of
    /// its own. One that comes within [`SAME_REQUEST_WINDOW`] of the call is
    /// the same request delivered twice, not a second one: `timeout(1)`
    /// signals the command and then its whole process group, and a terminal
    /// or `kill -- -PGID` can do likewise; taking that copy for "exit now"
    /// lost every point not yet written.
    pub fn force_exit_on_next(mut self) {
        let first = std::time::Instant::now();
        std::thread::spawn(move || loop {
            let s = self.wait_stop("the agent is stopping");
            if first.elapsed() < SAME_REQUEST_WINDOW {
                log::debug!(
                    "{}: arrived with the first; still stopping gracefully",
                    s.name()
                );
                continue;
            }
            eprintln!(
                "alumet-agent: second {}: exiting now; data not yet written is lost",
                s.name()
            );
            std::process::exit(130);
        });
    }
}
