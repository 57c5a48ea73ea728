//! Starting the plugins and the pipeline, and stopping them, shared by `run`
//! and `exec`.

use alumet::config::ConfigTable;
use alumet::exec::ExecTarget;
use alumet::pipeline::{
    PipelineBuilder, PipelineConfig, PipelineHandle, PluginStartContext, RunningPipeline,
};
use alumet::plugin::{Plugin, PluginError};

use crate::config::load::LoadedConfig;

/// Why the agent cannot run (after configuration loading).
#[derive(Debug)]
pub enum StartError {
    /// A plugin rejected its configuration (exit 2).
    InvalidConfig(String),
    /// Nothing can be measured, or the pipeline failed (exit 1).
    Fatal(String),
}

/// A plugin that could not start, and why (for summaries).
#[derive(Debug, Clone, serde::Serialize)]
pub struct UnavailablePlugin {
    /// Plugin name.
    pub name: String,
    /// One line: reason and fix.
    pub reason: String,
    /// The reason alone, without the fix.
    pub why: String,
    /// Whether what it reads is simply not on this machine (no GPU, no
    /// RAPL): information, not a fault.
    pub absent: bool,
}

impl UnavailablePlugin {
    /// What the `exec` report says of it: the reason alone where the
    /// hardware is absent (nothing to fix), with the fix otherwise.
    pub fn report_line(&self) -> String {
        if self.absent {
            format!("{}: {}", self.name, self.why)
        } else {
            format!("{}: {}", self.name, self.reason)
        }
    }

    /// Records `name`'s start failure `e`, and says it in one line: at
    /// info level when the hardware is absent, as a warning otherwise.
    pub fn logged(name: &str, e: &PluginError) -> Self {
        let absent = e.is_absent();
        if absent {
            log::info!("plugin {name} has nothing to measure here: {e}");
        } else {
            log::warn!("plugin {name} cannot run here: {e}");
        }
        let why = match e {
            PluginError::Unavailable { reason, .. } => reason.clone(),
            other => other.to_string(),
        };
        Self {
            name: name.to_owned(),
            reason: e.to_string(),
            why,
            absent,
        }
    }
}

/// A running agent.
pub struct Agent {
    pipeline: RunningPipeline,
    plugins: Vec<(String, Box<dyn Plugin>)>,
    /// Plugins that could not start.
    pub unavailable: Vec<UnavailablePlugin>,
    /// The exec target shared with plugins.
    pub exec_target: ExecTarget,
}

/// Initialises every enabled plugin from its section without starting it,
/// so that what only a plugin can check (beyond the section's shape) is
/// checked too. Returns the first plugin's rejection, as `start` reports it.
pub fn check_plugin_configs(config: &LoadedConfig) -> Result<(), String> {
    for (meta, table, enabled) in &config.plugins {
        if !enabled {
            continue;
        }
        if let Err(e @ PluginError::Config(_)) = (meta.init)(table.clone()) {
            return Err(config.plugin_diagnostic(meta.name, &e));
        }
    }
    Ok(())
}

/// Starts every enabled plugin, then the pipeline. `extra` adds agent-owned
/// elements (the exec summary).
pub fn start(
    config: &LoadedConfig,
    extra: impl FnOnce(&mut PluginStartContext) -> Result<(), PluginError>,
) -> Result<Agent, StartError> {
    start_with(config, config.agent.pipeline_config(), extra)
}

/// Like [`start`], with the pipeline's settings given (`exec` changes one).
pub fn start_with(
    config: &LoadedConfig,
    pipeline: PipelineConfig,
    extra: impl FnOnce(&mut PluginStartContext) -> Result<(), PluginError>,
) -> Result<Agent, StartError> {
    let mut builder = PipelineBuilder::new(pipeline);
    // Transforms run in the plugin list's order, also for a plugin started later by a reload.
    builder.plugin_order(config.plugins.iter().map(|(m, _, _)| m.name));
    let mut started = Vec::new();
    let mut unavailable = Vec::new();
    for (meta, table, enabled) in &config.plugins {
        if !enabled {
            continue;
        }
        let mut plugin = match (meta.init)(table.clone()) {
            Ok(p) => p,
            Err(e @ PluginError::Config(_)) => {
                return Err(StartError::InvalidConfig(
                    config.plugin_diagnostic(meta.name, &e),
                ))
            }
            Err(e) => {
                unavailable.push(UnavailablePlugin::logged(meta.name, &e));
                continue;
            }
        };
        match builder.start_plugin(meta.name, plugin.as_mut()) {
            Ok(()) => {
                log::debug!("plugin {} started", meta.name);
                started.push((meta.name.to_owned(), plugin));
            }
            Err(e) if meta.name == "csv" && config.output_file_requested => {
                // The user named the file on the command line: writing
                // nowhere would silently lose the whole run.
                return Err(StartError::Fatal(format!(
                    "cannot write the output file: {e}"
                )));
            }
            Err(e) => {
                unavailable.push(UnavailablePlugin::logged(meta.name, &e));
            }
        }
    }
    if builder.source_count() == 0 {
        return Err(StartError::Fatal(
            "nothing can be measured: no enabled plugin could start a source (see the messages above); enable one with --plugins, e.g. --plugins procfs,csv".into(),
        ));
    }
    builder
        .with_plugin_context("agent", extra)
        .map_err(|e| StartError::Fatal(format!("cannot start the agent's own elements: {e}")))?;
    if builder.output_count() == 0 {
        log::warn!("no output is enabled: measurements are taken but written nowhere (enable csv, influxdb, prometheus or opentelemetry)");
    }
    let exec_target = builder.exec_target();
    let pipeline = builder
        .start()
        .map_err(|e| StartError::Fatal(format!("cannot start the pipeline: {e}")))?;
    let handle = pipeline.handle();
    for (name, plugin) in &mut started {
        if let Err(e) = plugin.post_pipeline_start(&handle) {
            log::error!("plugin {name}: {e}");
        }
    }
    log::info!(
        "measuring with {}",
        started
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(Agent {
        pipeline,
        plugins: started,
        unavailable,
        exec_target,
    })
}

impl Agent {
    /// The pipeline's control handle.
    pub fn handle(&self) -> PipelineHandle {
        self.pipeline.handle()
    }

    /// Names of the plugins that started.
    pub fn plugin_names(&self) -> Vec<String> {
        self.plugins.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Applies a new configuration to some plugins while the others run on:
    /// the elements of `stop` drain, flush and close, those plugins stop;
    /// then `start` start from `config` into the running pipeline, each
    /// with its `previous` section if the new one cannot run. Element names
    /// are the same as before. A plugin that cannot run is reported and
    /// left out, as at start. Returns the plugins that run on their
    /// previous section.
    pub fn restart_plugins(
        &mut self,
        stop: &[String],
        start: &[String],
        config: &LoadedConfig,
        previous: &LoadedConfig,
    ) -> Result<Vec<String>, String> {
        // Plugins that start again get every buffer that comes meanwhile.
        let stopped = if start.is_empty() {
            self.pipeline.stop_plugins(stop)
        } else {
            self.pipeline.stop_plugins_for_restart(stop)
        };
        stopped.map_err(|e| format!("cannot stop {}: {e}", stop.join(", ")))?;
        let (stopping, staying): (Vec<_>, Vec<_>) = std::mem::take(&mut self.plugins)
            .into_iter()
            .partition(|(name, _)| stop.contains(name));
        self.plugins = staying;
        for (name, mut plugin) in stopping {
            if let Err(e) = plugin.stop() {
                log::error!("plugin {name} failed to stop cleanly: {e}");
            }
        }
        self.unavailable
            .retain(|u| !stop.contains(&u.name) && !start.contains(&u.name));
        let section = |c: &LoadedConfig, name: &str| {
            c.plugins
                .iter()
                .find(|(m, _, enabled)| m.name == name && *enabled)
                .map(|(m, t, _)| (*m, t.clone()))
        };
        let mut extension = self.pipeline.extend();
        let mut started = Vec::new();
        let mut on_previous = Vec::new();
        for name in start {
            let Some((meta, table)) = section(config, name) else {
                continue;
            };
            let attempt = |table: ConfigTable,
                           extension: &mut alumet::pipeline::PipelineExtension|
             -> Result<Box<dyn Plugin>, PluginError> {
                let mut plugin = (meta.init)(table)?;
                extension.start_plugin(meta.name, plugin.as_mut())?;
                Ok(plugin)
            };
            let result = attempt(table, &mut extension).or_else(|e| {
                match section(previous, name) {
                    Some((_, old)) if stop.contains(&meta.name.to_owned()) => {
                        log::error!("plugin {name} cannot run with its new section: {e}; going back to its previous one");
                        on_previous.push(name.clone());
                        attempt(old, &mut extension)
                    }
                    _ => Err(e),
                }
            });
            match result {
                Ok(plugin) => started.push((meta.name.to_owned(), plugin)),
                Err(e) => {
                    self.unavailable
                        .push(UnavailablePlugin::logged(meta.name, &e));
                }
            }
        }
        let committed = extension.commit();
        // Whatever started, the held buffers go on now.
        if let Err(e) = self.pipeline.release_held() {
            log::warn!("cannot release the buffers held for the restart: {e}");
        }
        committed.map_err(|e| format!("cannot start {}: {e}", start.join(", ")))?;
        let handle = self.pipeline.handle();
        for (name, plugin) in &mut started {
            if let Err(e) = plugin.post_pipeline_start(&handle) {
                log::error!("plugin {name}: {e}");
            }
        }
        self.plugins.extend(started);
        let rank = |name: &str| {
            config
                .plugins
                .iter()
                .position(|(m, _, _)| m.name == name)
                .unwrap_or(usize::MAX)
        };
        self.plugins.sort_by_key(|(name, _)| rank(name));
        Ok(on_previous)
    }

    /// Every output flushes and reopens its file (SIGHUP: logrotate).
    pub fn reopen_outputs(&self) {
        if let Err(e) = self.pipeline.handle().reopen_outputs() {
            log::warn!("cannot reopen the outputs: {e}");
        }
    }

    /// Shuts the pipeline down (last poll, drain, flush, close), then stops
    /// the plugins. Returns the number of points lost, if any.
    pub fn stop(self) -> u64 {
        let stats = self.pipeline.shutdown_and_wait();
        for (name, mut plugin) in self.plugins {
            if let Err(e) = plugin.stop() {
                log::error!("plugin {name} failed to stop cleanly: {e}");
            }
        }
        if stats.total_dropped_points > 0 {
            log::warn!(
                "{} points were dropped during this run (see the warnings above)",
                stats.total_dropped_points
            );
        }
        stats.total_dropped_points
    }
}
