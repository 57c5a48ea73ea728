//! Plugin `csv`: writes every measurement point as a row of a CSV file.
//!
//! Columns are fixed: `timestamp,metric,unit,value,resource_kind,
//! resource_id,consumer_kind,consumer_id,attributes` (then the optional
//! attribute columns). The exact forms are described in README.md.

pub mod format;
pub mod output;
pub mod row;

use std::path::{Path, PathBuf};
use std::time::Duration;

use alumet::config::ConfigError;
use alumet::pipeline::{OutputOptions, PluginStartContext};
use alumet::plugin::{Plugin, PluginDefinition, PluginError};
use serde::{Deserialize, Serialize};

use output::CsvOutput;
pub use row::TimestampFormat;
use row::{RowFormatter, COLUMNS};

/// Configuration of the `csv` plugin (`[plugins.csv]`).
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct CsvConfig {
    /// The file to write (default `alumet-output.csv`, relative to the
    /// agent's working directory). Its directory must exist.
    pub output_path: PathBuf,
    /// Append to an existing file (header only if it is empty) instead of
    /// replacing it (default false).
    pub append: bool,
    /// How often buffered rows are written to the file (default 1s); they
    /// are always written at shutdown.
    #[serde(with = "alumet::config::duration")]
    pub flush_interval: Duration,
    /// Field delimiter: one ASCII character other than `"`, CR and LF (default `,`).
    pub delimiter: String,
    /// `rfc3339` (default, `2026-11-22T10:00:00.123456789Z`) or `unix_ns`.
    pub timestamp_format: TimestampFormat,
    /// Attribute keys that get a column of their own after `attributes`
    /// (default none); the `attributes` column then holds the others.
    pub attribute_columns: Vec<String>,
}

impl Default for CsvConfig {
    fn default() -> Self {
        Self {
            output_path: PathBuf::from("alumet-output.csv"),
            append: false,
            flush_interval: Duration::from_secs(1),
            delimiter: ",".to_owned(),
            timestamp_format: TimestampFormat::Rfc3339,
            attribute_columns: Vec::new(),
        }
    }
}

fn invalid(key: &str, reason: impl Into<String>) -> PluginError {
    PluginError::Config(ConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.into(),
    })
}

impl CsvConfig {
    /// The delimiter as a byte, if it is valid.
    fn delimiter_byte(&self) -> Result<u8, PluginError> {
        match self.delimiter.as_bytes() {
            [b] if b.is_ascii() && !matches!(b, b'"' | b'\r' | b'\n') => Ok(*b),
            _ => Err(invalid(
                "delimiter",
                format!(
                    "{:?} is not usable: give one ASCII character other than '\"', CR and LF, e.g. \",\", \";\" or \"\\t\"",
                    self.delimiter
                ),
            )),
        }
    }

    fn validate(&self) -> Result<(), PluginError> {
        self.delimiter_byte()?;
        alumet::limits::FLUSH_INTERVAL.check("flush_interval", self.flush_interval)?;
        if self.output_path.as_os_str().is_empty() {
            return Err(invalid(
                "output_path",
                "is empty; give a file path such as \"alumet-output.csv\"",
            ));
        }
        for (i, column) in self.attribute_columns.iter().enumerate() {
            if column.is_empty() {
                return Err(invalid("attribute_columns", "a column name is empty"));
            }
            if COLUMNS.contains(&column.as_str()) {
                return Err(invalid(
                    "attribute_columns",
                    format!("\"{column}\" is already a fixed column"),
                ));
            }
            if self.attribute_columns[..i].contains(column) {
                return Err(invalid(
                    "attribute_columns",
                    format!("\"{column}\" is listed twice"),
                ));
            }
        }
        Ok(())
    }
}

/// The directory a relative or absolute file path lives in.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The `csv` plugin.
pub struct CsvPlugin {
    config: CsvConfig,
    delimiter: u8,
}

impl Plugin for CsvPlugin {
    fn start(&mut self, ctx: &mut PluginStartContext) -> Result<(), PluginError> {
        let rows = RowFormatter::new(
            self.delimiter,
            self.config.timestamp_format,
            self.config.attribute_columns.clone(),
        );
        let output = CsvOutput::open(&self.config.output_path, self.config.append, rows)
            .map_err(PluginError::other)?;
        let options = OutputOptions {
            flush_interval: Some(self.config.flush_interval),
            thinned: true,
        };
        ctx.add_output("file", Box::new(output), options);
        Ok(())
    }
}

impl PluginDefinition for CsvPlugin {
    const NAME: &'static str = "csv";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Writes every measurement as a row of a CSV file.";
    type Config = CsvConfig;

    fn init(config: Self::Config) -> Result<Self, PluginError> {
        config.validate()?;
        let delimiter = config.delimiter_byte()?;
        Ok(Self { config, delimiter })
    }

    fn config_docs() -> &'static [(&'static str, &'static str)] {
        &[
            ("output_path", "The CSV file to write (its directory must exist); --output-file sets it."),
            ("append", "Append to the file (header only if it is empty) instead of replacing it."),
            ("flush_interval", "Time between two writes of the buffered rows to the file; all are written at shutdown."),
            ("delimiter", "Field delimiter: one ASCII character, e.g. \",\", \";\" or \"\\t\"."),
            ("timestamp_format", "\"rfc3339\" (2026-11-22T10:00:00.123456789Z, UTC) or \"unix_ns\" (nanoseconds since 1970)."),
            ("attribute_columns", "Attribute keys written in columns of their own after `attributes`, e.g. [\"domain\", \"exe\"]."),
        ]
    }

    fn check_availability(config: &Self::Config) -> Result<(), PluginError> {
        let dir = parent_dir(&config.output_path);
        if dir.is_dir() {
            Ok(())
        } else {
            Err(PluginError::unavailable(
                format!("the directory {} of the CSV output file does not exist", dir.display()),
                "create it, or set plugins.csv.output_path (or --output-file) to a file in an existing directory",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_round_trips() {
        let table = alumet::config::serialize_config(&CsvConfig::default()).unwrap();
        let text = toml::to_string(&table).unwrap();
        assert!(text.contains("timestamp_format = \"rfc3339\""), "{text}");
        assert!(text.contains("flush_interval = \"1s\""), "{text}");
        let back: CsvConfig = alumet::config::deserialize_config(table).unwrap();
        assert!(CsvPlugin::init(back).is_ok());
        let unix: CsvConfig = alumet::config::deserialize_config(
            toml::from_str("timestamp_format = \"unix_ns\"").unwrap(),
        )
        .unwrap();
        assert_eq!(unix.timestamp_format, TimestampFormat::UnixNs);
    }

    #[test]
    fn invalid_configs_name_the_key() {
        let d = CsvConfig::default;
        let cases = [
            (
                CsvConfig {
                    delimiter: "::".into(),
                    ..d()
                },
                "delimiter",
            ),
            (
                CsvConfig {
                    delimiter: "\"".into(),
                    ..d()
                },
                "delimiter",
            ),
            (
                CsvConfig {
                    delimiter: "é".into(),
                    ..d()
                },
                "delimiter",
            ),
            (
                CsvConfig {
                    output_path: PathBuf::new(),
                    ..d()
                },
                "output_path",
            ),
            (
                CsvConfig {
                    attribute_columns: vec!["metric".into()],
                    ..d()
                },
                "attribute_columns",
            ),
            (
                CsvConfig {
                    attribute_columns: vec!["a".into(), "a".into()],
                    ..d()
                },
                "attribute_columns",
            ),
        ];
        for (config, key) in cases {
            let err = CsvPlugin::init(config).err().unwrap().to_string();
            assert!(err.contains(key), "{err}");
        }
        assert!(CsvPlugin::init(CsvConfig {
            delimiter: "\t".into(),
            ..d()
        })
        .is_ok());
    }

    #[test]
    fn availability_checks_the_directory() {
        let missing = CsvConfig {
            output_path: PathBuf::from("/nonexistent-dir/out.csv"),
            ..CsvConfig::default()
        };
        let err = CsvPlugin::check_availability(&missing).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir"), "{err}");
        assert!(CsvPlugin::check_availability(&CsvConfig::default()).is_ok());
    }
}
