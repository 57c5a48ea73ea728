//! SIGINT and SIGTERM, as a stream the agent can wait on.
//!
//! systemd stops services with SIGTERM and terminals send SIGINT: both mean
//! "stop gracefully". A second one means "stop now".

use tokio::signal::unix::{signal, Signal, SignalKind};

/// The two stop signals, registered as soon as the agent starts so that an
/// early signal is not lost (or fatal).
pub struct StopSignals {
    runtime: tokio::runtime::Runtime,
    interrupt: Signal,
    terminate: Signal,
}

/// Which signal arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (systemd, kill).
    Terminate,
}

impl StopSignal {
    /// Signal name.
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
        }
    }
}

impl StopSignals {
    /// Installs the handlers.
    pub fn install() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (interrupt, terminate) = {
            let _guard = runtime.enter();
            (
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
            )
        };
        Ok(Self {
            runtime,
            interrupt,
            terminate,
        })
    }

    /// Waits for the next stop signal.
    pub fn wait(&mut self) -> StopSignal {
        let (interrupt, terminate) = (&mut self.interrupt, &mut self.terminate);
        self.runtime.block_on(async {
            tokio::select! {
                _ = interrupt.recv() => StopSignal::Interrupt,
                _ = terminate.recv() => StopSignal::Terminate,
            }
        })
    }

    /// Waits for a stop signal or for `future`, whichever comes first.
    pub fn wait_or<F: std::future::Future>(
        &mut self,
        future: &mut std::pin::Pin<Box<F>>,
    ) -> Result<F::Output, StopSignal> {
        let (interrupt, terminate) = (&mut self.interrupt, &mut self.terminate);
        self.runtime.block_on(async {
            tokio::select! {
                out = future.as_mut() => Ok(out),
                _ = interrupt.recv() => Err(StopSignal::Interrupt),
                _ = terminate.recv() => Err(StopSignal::Terminate),
            }
        })
    }

    /// After the first signal: a second one exits at once, from a thread of its own.
    pub fn force_exit_on_next(mut self) {
        std::thread::spawn(move || {
            let s = self.wait();
            eprintln!(
                "alumet-agent: second {}: exiting now; data not yet written is lost",
                s.name()
            );
            std::process::exit(130);
        });
    }
}
