//! What `exec`, `exec --cgroup` and `watch` share: the agent started with
//! the summary output, a poll of every source at the start and at the end
//! of the measured window, then the report (text on stderr, JSON file).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use alumet::exec::ExecTarget;
use alumet::measurement::Timestamp;
use alumet::metrics::MetricRegistry;
use alumet::pipeline::{OutputOptions, PipelineConfig, PipelineHandle, SourceSelector};
use alumet_kernelfs::virt::MachineKind;

use crate::agent::{self, Agent, StartError, UnavailablePlugin};
use crate::config::load::LoadedConfig;
use crate::report::summary::{Method, RunFacts, SummaryCollector, Wait4Usage};

/// How long a poll of every source may take when asked for.
pub const TRIGGER_TIMEOUT: Duration = Duration::from_secs(5);

/// A running measurement with its summary.
pub struct Session {
    agent: Agent,
    collector: SummaryCollector,
    handle: PipelineHandle,
    metrics: std::sync::Arc<MetricRegistry>,
    started: Option<Instant>,
    machine: MachineKind,
}

impl Session {
    /// Starts the agent with the summary output. Err: the exit code.
    pub fn start(config: &LoadedConfig) -> Result<Self, i32> {
        let collector = SummaryCollector::new();
        let summary_output = collector.clone();
        // No poll at start: the first is the window's, once what is measured is ready.
        let pipeline = PipelineConfig {
            first_poll_at_start: false,
            ..config.agent.exec_pipeline_config()
        };
        let agent = match agent::start_with(config, pipeline, move |ctx| {
            ctx.add_output(
                "summary",
                Box::new(summary_output),
                OutputOptions {
                    flush_interval: None,
                    // The report counts and sums every point of the window.
                    thinned: false,
                },
            );
            Ok(())
        }) {
            Ok(a) => a,
            Err(StartError::InvalidConfig(m)) => {
                log::error!("{m}");
                return Err(2);
            }
            Err(StartError::Fatal(m)) => {
                log::error!("{m}");
                return Err(1);
            }
        };
        let handle = agent.handle();
        let metrics = handle.metrics().clone();
        Ok(Self {
            agent,
            collector,
            handle,
            metrics,
            started: None,
            machine: config.machine_kind(),
        })
    }

    /// The pipeline's control handle.
    pub fn handle(&self) -> PipelineHandle {
        self.handle.clone()
    }

    /// The target shared with the plugins.
    pub fn exec_target(&self) -> &ExecTarget {
        &self.agent.exec_target
    }

    /// Whether plugin `name` is running.
    pub fn is_running(&self, name: &str, config: &LoadedConfig) -> bool {
        config.is_enabled(name) && !self.agent.unavailable.iter().any(|u| u.name == name)
    }

    /// Also gathers what `--plot` draws.
    pub fn enable_plot(&self, title: String) {
        self.collector.enable_plot(title);
    }

    /// Sets how the command is measured.
    pub fn set_method(&self, method: Method) {
        self.collector
            .set_method(method, self.agent.exec_target.clone());
    }

    /// Polls every source, then opens the window: what is measured from now on is the command's.
    pub fn begin_window(&mut self) {
        let _ = self
            .handle
            .trigger_now(SourceSelector::All, TRIGGER_TIMEOUT);
        self.collector.start_window(Timestamp::now());
        self.started = Some(Instant::now());
    }

    /// Closes the window with the agent's last poll of every source (the
    /// shutdown's: no extra poll), then stops it (drain, flush). Returns the
    /// window's length, measured now, and the stopped session.
    pub fn finish(self) -> (Duration, Finished) {
        let wall = self.started.map(|s| s.elapsed()).unwrap_or_default();
        let collector = self.collector.clone();
        let finished = self.stop();
        // Every point of the last poll is stamped before this.
        collector.end_window(Timestamp::now());
        (wall, finished)
    }

    /// Stops the agent (last poll, drain, flush) without closing the window.
    pub fn stop(self) -> Finished {
        let unavailable = self.agent.unavailable.clone();
        self.agent.stop();
        Finished {
            collector: self.collector,
            metrics: self.metrics,
            unavailable,
            machine: self.machine,
        }
    }
}

/// A stopped session, ready to report.
pub struct Finished {
    collector: SummaryCollector,
    metrics: std::sync::Arc<MetricRegistry>,
    unavailable: Vec<UnavailablePlugin>,
    machine: MachineKind,
}

/// The files the report is written to besides the terminal.
#[derive(Debug, Clone, Default)]
pub struct ReportFiles {
    /// `--json`: the report as JSON.
    pub json: Option<PathBuf>,
    /// `--plot`: power and CPU usage over time (SVG, or PNG by extension).
    pub plot: Option<PathBuf>,
}

/// What is reported besides the measurements.
pub struct Outcome {
    /// The command line, or a description of what was watched.
    pub label: Vec<String>,
    /// The exit code the agent returns.
    pub exit_code: i32,
    /// Length of the window.
    pub wall: Duration,
    /// The kernel's figures at reaping, for a spawned command.
    pub wait4: Option<Wait4Usage>,
    /// Processes that outlived the command (moved out of its cgroup).
    pub outlived: Vec<u32>,
}

impl Finished {
    /// Prints the report on stderr and writes its JSON form and its plot; returns the exit code.
    pub fn report(self, outcome: Outcome, files: ReportFiles) -> i32 {
        let plot = self.collector.take_plot();
        let mut report = self.collector.report(
            &self.metrics,
            RunFacts {
                command: outcome.label,
                exit_code: outcome.exit_code,
                wall_s: outcome.wall.as_secs_f64(),
                wait4: outcome.wait4,
                unavailable: &self.unavailable,
                machine: &self.machine,
            },
        );
        report.outlived = outcome.outlived;
        eprint!("{}", report.to_text());
        if let Some(path) = files.json {
            if let Err(e) = report.write_json(&path) {
                eprintln!("alumet-agent: {e}");
            }
        }
        if let (Some(path), Some(plot)) = (files.plot, plot) {
            match crate::report::plot::write(&plot, &path) {
                Ok(()) => eprintln!("   plot written to {}", path.display()),
                Err(e) => eprintln!("alumet-agent: {e}"),
            }
        }
        outcome.exit_code
    }
}
