//! The output: appends every energy point to a text file, one line each:
//! `<unix time in ns> <sensor> <joules>`. Lines are buffered and written at
//! each flush; on SIGHUP (`reopen`) the file is opened again by name, so a
//! log rotated away is left complete and a new one starts.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use alumet::measurement::MeasurementBuffer;
use alumet::metrics::MetricId;
use alumet::pipeline::{ElementContext, Output, WriteError};

/// The output of the plugin.
#[derive(Debug)]
pub struct EnergyLog {
    path: PathBuf,
    file: BufWriter<File>,
    energy: MetricId,
}

fn open(path: &Path) -> std::io::Result<BufWriter<File>> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(BufWriter::new)
}

impl EnergyLog {
    /// Opens (creates, appends to) `path` for the `energy` points.
    pub fn create(path: &Path, energy: MetricId) -> std::io::Result<Self> {
        Ok(Self {
            path: path.to_owned(),
            file: open(path)?,
            energy,
        })
    }
}

/// A write error: the disk may come back, so the batch is tried again.
fn retry(e: std::io::Error) -> WriteError {
    WriteError::Retry {
        error: e.into(),
        after: None,
    }
}

impl Output for EnergyLog {
    fn write(
        &mut self,
        buffer: &MeasurementBuffer,
        _ctx: &ElementContext,
    ) -> Result<(), WriteError> {
        for p in buffer.iter().filter(|p| p.metric == self.energy) {
            let sensor = p
                .attr("sensor")
                .map(ToString::to_string)
                .unwrap_or_default();
            writeln!(
                self.file,
                "{} {sensor} {}",
                p.timestamp.unix_nanos(),
                p.value.as_f64()
            )
            .map_err(retry)?;
        }
        Ok(())
    }

    fn flush(&mut self, _ctx: &ElementContext) -> Result<(), WriteError> {
        self.file.flush().map_err(retry)
    }

    fn reopen(&mut self, _ctx: &ElementContext) -> Result<(), WriteError> {
        self.file.flush().map_err(retry)?;
        self.file = open(&self.path).map_err(retry)?;
        Ok(())
    }
}
