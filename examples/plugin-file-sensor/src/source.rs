//! The source: reads every power file at each poll and emits its power.
//!
//! A file holds an integer in microwatts (hwmon's `power*_input`). A file
//! that cannot be read or parsed during a poll is skipped for that poll and
//! reported as a transient error; the others are still read.

use std::path::{Path, PathBuf};

use alumet::measurement::{
    MeasurementBuffer, MeasurementPoint, Resource, ResourceConsumer, Timestamp,
};
use alumet::metrics::MetricId;
use alumet::pipeline::{PollError, Source};
use alumet::plugin::PluginError;

/// One power file, and the name its points carry.
#[derive(Debug)]
struct PowerFile {
    path: PathBuf,
    sensor: String,
}

/// The source of the plugin.
#[derive(Debug)]
pub struct PowerFiles {
    files: Vec<PowerFile>,
    metric: MetricId,
}

impl PowerFiles {
    /// A source reading `files` under `root` and emitting `metric`.
    pub fn new(root: &Path, files: &[PathBuf], metric: MetricId) -> Self {
        let files = files
            .iter()
            .map(|f| PowerFile {
                path: root.join(f),
                sensor: f.display().to_string(),
            })
            .collect();
        Self { files, metric }
    }
}

/// Reads one file: its power in W.
fn read_watts(path: &Path) -> Result<f64, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let microwatts: u64 = text
        .trim()
        .parse()
        .map_err(|_| format!("expected an integer in µW, found {:?}", text.trim()))?;
    Ok(microwatts as f64 / 1e6)
}

/// Whether every file can be read now: the plugin cannot run without them.
pub fn check_files(root: &Path, files: &[PathBuf]) -> Result<(), PluginError> {
    if files.is_empty() {
        return Err(PluginError::absent(
            "no sensor file is configured",
            "list power files in plugins.file-sensor.files",
        ));
    }
    for f in files {
        let path = root.join(f);
        read_watts(&path).map_err(|e| {
            PluginError::unavailable(
                format!("cannot read {}: {e}", path.display()),
                "check plugins.file-sensor.root and files",
            )
        })?;
    }
    Ok(())
}

impl Source for PowerFiles {
    fn poll(
        &mut self,
        into: &mut MeasurementBuffer,
        timestamp: Timestamp,
    ) -> Result<(), PollError> {
        let mut failures = Vec::new();
        for f in &self.files {
            match read_watts(&f.path) {
                Ok(watts) => into.push(
                    MeasurementPoint::new(
                        timestamp,
                        self.metric,
                        Resource::LocalMachine,
                        ResourceConsumer::LocalMachine,
                        watts,
                    )
                    .with_attr("sensor", f.sensor.clone()),
                ),
                Err(e) => failures.push(format!("{}: {e}", f.path.display())),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(PollError::Transient(failures.join("; ").into()))
        }
    }
}
