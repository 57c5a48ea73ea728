//! The CSV output: rows into a buffered file, flushed on the pipeline's
//! flush interval and at shutdown.
//!
//! A failed write is retryable (a full disk may be cleaned up): the pipeline
//! hands the same batch again, and the rows already accepted by the buffer
//! are not written twice.
//!
//! `reopen` (SIGHUP) opens the path again in append mode: a file renamed
//! away (logrotate) is left complete and a new one starts with its header;
//! the same file goes on without a second header.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use alumet::measurement::MeasurementBuffer;
use alumet::pipeline::{ElementContext, Output, WriteError};

use crate::row::RowFormatter;

/// Size of the write buffer: large enough that a batch of a thousand rows
/// is one `write` call.
pub const WRITE_BUFFER_BYTES: usize = 256 * 1024;

/// What went wrong with the CSV file; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    /// The file could not be opened or created.
    #[error("cannot open the CSV output file {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause (missing directory, permission...).
        source: io::Error,
    },
    /// Writing or flushing failed.
    #[error("cannot write to the CSV output file {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause (disk full, I/O error...).
        source: io::Error,
    },
}

/// Where a batch stopped when a write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Resume {
    /// Identity of the batch: its address and length (the pipeline retries
    /// with the very same buffer).
    batch: (usize, usize),
    rows_done: usize,
}

/// Writes measurement points as CSV rows into a file.
pub struct CsvOutput<W: Write = File> {
    path: PathBuf,
    writer: BufWriter<W>,
    rows: RowFormatter,
    line: Vec<u8>,
    resume: Option<Resume>,
    /// Opens the path again, for `reopen`: the file and whether it is empty.
    reopener: Option<Reopener<W>>,
}

/// Opens a CSV file for appending: the writer and whether it is empty.
type Reopener<W> = fn(&Path, &RowFormatter) -> Result<(W, bool), CsvError>;

/// Whether the file starts with `header` (an appended file written with
/// other columns would mix two layouts).
fn starts_with_header(file: &mut File, header: &[u8]) -> io::Result<bool> {
    let mut first = vec![0; header.len()];
    let mut filled = 0;
    while filled < first.len() {
        match file.read(&mut first[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(&first[..filled] == header)
}

/// Opens `path` (truncated, or for appending) and says whether it is empty.
fn open_file(path: &Path, append: bool, rows: &RowFormatter) -> Result<(File, bool), CsvError> {
    let open_error = |source| CsvError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut options = OpenOptions::new();
    if append {
        options.read(true).append(true).create(true);
    } else {
        options.write(true).create(true).truncate(true);
    }
    let mut file = options.open(path).map_err(open_error)?;
    let header = rows.header();
    let empty = file.metadata().map_err(open_error)?.len() == 0;
    if append && !empty && !starts_with_header(&mut file, &header).map_err(open_error)? {
        log::warn!(
            "{} does not start with the expected CSV header; appending rows in this layout anyway: {}",
            path.display(),
            String::from_utf8_lossy(header.trim_ascii_end())
        );
    }
    Ok((file, empty))
}

impl CsvOutput<File> {
    /// Opens (creates) `path` and writes the header: always when truncating,
    /// only into an empty file when appending.
    pub fn open(path: &Path, append: bool, rows: RowFormatter) -> Result<Self, CsvError> {
        let (file, empty) = open_file(path, append, &rows)?;
        let mut output = CsvOutput::from_writer(path, file, rows);
        output.reopener = Some(|path, rows| open_file(path, true, rows));
        if empty {
            output.write_header()?;
        }
        Ok(output)
    }
}

impl<W: Write> CsvOutput<W> {
    /// An output into any writer (benchmarks, tests); `path` names it in errors.
    /// No header is written.
    pub fn from_writer(path: &Path, writer: W, rows: RowFormatter) -> Self {
        Self {
            path: path.to_path_buf(),
            writer: BufWriter::with_capacity(WRITE_BUFFER_BYTES, writer),
            rows,
            line: Vec::with_capacity(512),
            resume: None,
            reopener: None,
        }
    }

    /// Writes the header line and flushes it, so that a file that cannot be
    /// written is reported at start.
    pub fn write_header(&mut self) -> Result<(), CsvError> {
        let header = self.rows.header();
        self.writer
            .write_all(&header)
            .and_then(|()| self.writer.flush())
            .map_err(|source| self.write_error(source))
    }

    fn write_error(&self, source: io::Error) -> CsvError {
        CsvError::Write {
            path: self.path.clone(),
            source,
        }
    }

    /// Writes the rows of `buffer` into the write buffer.
    pub fn write_rows(
        &mut self,
        buffer: &MeasurementBuffer,
        metrics: &alumet::metrics::MetricRegistry,
    ) -> Result<(), CsvError> {
        let batch = (buffer.as_ptr() as usize, buffer.len());
        let start = match self.resume.take() {
            Some(r) if r.batch == batch => r.rows_done,
            _ => 0,
        };
        for (i, point) in buffer.iter().enumerate().skip(start) {
            self.line.clear();
            self.rows.push_row(&mut self.line, point, metrics);
            // A row is smaller than the buffer: either all of it is taken or,
            // when flushing older rows fails, none of it.
            if let Err(source) = self.writer.write_all(&self.line) {
                self.resume = Some(Resume {
                    batch,
                    rows_done: i,
                });
                return Err(self.write_error(source));
            }
        }
        Ok(())
    }

    /// Pushes the buffered rows to the file.
    pub fn flush_rows(&mut self) -> Result<(), CsvError> {
        self.writer
            .flush()
            .map_err(|source| self.write_error(source))
    }
}

impl<W: Write + Send> Output for CsvOutput<W> {
    fn write(
        &mut self,
        buffer: &MeasurementBuffer,
        ctx: &ElementContext,
    ) -> Result<(), WriteError> {
        self.write_rows(buffer, ctx.metrics)
            .map_err(WriteError::retry)
    }

    fn flush(&mut self, _ctx: &ElementContext) -> Result<(), WriteError> {
        self.flush_rows().map_err(WriteError::retry)
    }

    fn close(&mut self, _ctx: &ElementContext) -> Result<(), WriteError> {
        self.flush_rows().map_err(WriteError::fatal)
    }

    fn reopen(&mut self, _ctx: &ElementContext) -> Result<(), WriteError> {
        let Some(reopener) = self.reopener else {
            return Ok(());
        };
        self.flush_rows().map_err(WriteError::retry)?;
        // On failure the old file stays open and in use.
        let (file, empty) = reopener(&self.path, &self.rows).map_err(WriteError::retry)?;
        // The old writer is flushed: dropping it closes the old file.
        self.writer = BufWriter::with_capacity(WRITE_BUFFER_BYTES, file);
        self.resume = None;
        if empty {
            self.write_header().map_err(WriteError::retry)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::TimestampFormat;
    use alumet::measurement::{MeasurementPoint, Resource, ResourceConsumer, Timestamp};
    use alumet::metrics::{Metric, MetricKind, MetricRegistry, Unit, ValueType};

    /// Accepts `budget` bytes, then fails like a full disk until refilled.
    struct FullDisk {
        budget: usize,
        written: Vec<u8>,
    }

    impl Write for FullDisk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(io::Error::from_raw_os_error(ENOSPC));
            }
            let n = buf.len().min(self.budget);
            self.budget -= n;
            self.written.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// `ENOSPC` on Linux.
    const ENOSPC: i32 = 28;

    #[test]
    fn a_retried_batch_is_not_written_twice() {
        let mut metrics = MetricRegistry::new();
        let id = metrics
            .register(Metric::new(
                "n",
                Unit::Unity,
                ValueType::U64,
                MetricKind::Gauge,
                "n",
            ))
            .unwrap();
        let batch: MeasurementBuffer = (0..20_000u64)
            .map(|i| {
                MeasurementPoint::new(
                    Timestamp::from_unix_nanos(i),
                    id,
                    Resource::LocalMachine,
                    ResourceConsumer::LocalMachine,
                    i,
                )
            })
            .collect();
        let disk = FullDisk {
            budget: 300_000,
            written: Vec::new(),
        };
        let rows = RowFormatter::new(b',', TimestampFormat::UnixNs, vec![]);
        let mut out = CsvOutput::from_writer(Path::new("/tmp/full.csv"), disk, rows);
        let err = out.write_rows(&batch, &metrics).unwrap_err();
        assert!(err.to_string().contains("/tmp/full.csv"), "{err}");
        assert!(err.to_string().contains("os error 28"), "{err}");
        // Space is freed; the pipeline retries the same batch.
        out.writer.get_mut().budget = usize::MAX;
        out.write_rows(&batch, &metrics).unwrap();
        out.flush_rows().unwrap();
        let text = String::from_utf8(out.writer.get_ref().written.clone()).unwrap();
        let values: Vec<u64> = text
            .lines()
            .map(|l| l.split(',').nth(3).unwrap().parse().unwrap())
            .collect();
        assert_eq!(values, (0..20_000).collect::<Vec<u64>>());
    }
}
