//! Plugin `aggregate`: a transform that replaces the points of the chosen
//! metrics by one point per series and per fixed window aligned to the wall
//! clock (10 ms polls into 1 s points, 1 s into 1 min), for every output or
//! only some (`outputs`): raw points to a CSV file, aggregates to a remote
//! store, from one pipeline. Deltas are summed exactly, counters keep their
//! last value, gauges give their mean, min, max or last value.

pub mod accumulate;
pub mod transform;

use std::collections::BTreeMap;
use std::time::Duration;

use alumet::config::ConfigError;
use alumet::limits::DurationRange;
use alumet::metrics::{Metric, MetricKind, Unit, ValueType};
use alumet::pipeline::builder::PluginStartContext;
use alumet::pipeline::OutputScope;
use alumet::plugin::{Plugin, PluginDefinition, PluginError};
use serde::{Deserialize, Serialize};

pub use accumulate::{GaugeFn, GaugeFns};
pub use transform::{AggregateTransform, Settings};

/// The metric that counts the points that came after their window closed.
pub const LATE_METRIC: &str = "aggregate_late_points";

/// Allowed window lengths: a millisecond (the fastest poll) to a day.
pub const WINDOW_RANGE: DurationRange =
    DurationRange::new(Duration::from_millis(1), Duration::from_secs(86_400));

/// Configuration of `[plugins.aggregate]`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Length of a window; windows start at multiples of it since the Unix epoch.
    #[serde(with = "alumet::config::duration")]
    pub window: Duration,
    /// How long after a window's end its points may still come (sources
    /// that hand their points on every few seconds).
    #[serde(with = "alumet::config::duration")]
    pub max_delay: Duration,
    /// The outputs that receive the aggregates (plugin names such as
    /// `influxdb`); empty: every output.
    pub outputs: Vec<String>,
    /// Globs of the metrics to aggregate; others pass unchanged.
    pub metrics: Vec<String>,
    /// What a gauge gives, unless `gauge_per_metric` says otherwise.
    pub gauge: Vec<GaugeFn>,
    /// Metric glob → what its gauges give; the first matching glob wins.
    pub gauge_per_metric: BTreeMap<String, Vec<GaugeFn>>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            max_delay: Duration::from_secs(5),
            outputs: Vec::new(),
            metrics: vec!["*".to_owned()],
            gauge: vec![GaugeFn::Mean],
            gauge_per_metric: BTreeMap::new(),
        }
    }
}

fn invalid(key: &str, reason: impl Into<String>) -> PluginError {
    PluginError::Config(ConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.into(),
    })
}

impl Config {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), PluginError> {
        WINDOW_RANGE.check("window", self.window)?;
        alumet::limits::MAX_AGE
            .or_zero("a window closes as soon as a later point comes")
            .check("max_delay", self.max_delay)?;
        if self.metrics.iter().any(|m| m.trim().is_empty()) {
            return Err(invalid(
                "metrics",
                "an empty glob matches no metric; use \"*\" for all",
            ));
        }
        if self.gauge.is_empty() {
            return Err(invalid(
                "gauge",
                "give at least one of \"mean\", \"min\", \"max\", \"last\"",
            ));
        }
        if let Some((glob, _)) = self.gauge_per_metric.iter().find(|(_, f)| f.is_empty()) {
            return Err(invalid(
                "gauge_per_metric",
                format!("\"{glob}\" has no function; give at least one of \"mean\", \"min\", \"max\", \"last\""),
            ));
        }
        Ok(())
    }

    /// The transform's settings.
    pub fn settings(&self) -> Settings {
        Settings {
            window: self.window,
            max_delay: self.max_delay,
            metrics: self.metrics.clone(),
            gauge: GaugeFns::from(self.gauge.as_slice()),
            gauge_per_metric: self
                .gauge_per_metric
                .iter()
                .map(|(glob, fns)| (glob.clone(), GaugeFns::from(fns.as_slice())))
                .collect(),
        }
    }
}

/// The definition of [`LATE_METRIC`].
pub fn late_metric() -> Metric {
    Metric::new(
        LATE_METRIC,
        Unit::Unity,
        ValueType::U64,
        MetricKind::Delta,
        "Points that came after their aggregation window had closed (they are aggregated apart, marked late=true).",
    )
}

/// The `aggregate` plugin.
#[derive(Debug)]
pub struct AggregatePlugin {
    config: Config,
}

impl PluginDefinition for AggregatePlugin {
    const NAME: &'static str = "aggregate";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "One point per series and window aligned to the wall clock (deltas summed exactly, gauges as mean/min/max/last), for every output or only some.";
    type Config = Config;

    fn init(config: Config) -> Result<Self, PluginError> {
        config.validate()?;
        Ok(Self { config })
    }

    fn config_docs() -> &'static [(&'static str, &'static str)] {
        &[
            ("window", "length of a window; windows are aligned to the wall clock (they start at multiples of it since 1970), e.g. \"1s\" or \"1m\""),
            ("max_delay", "how long after its end a window waits for late points (sources that flush every few seconds); a point after that is aggregated apart, marked late=true, and counted in aggregate_late_points"),
            ("outputs", "outputs that receive the aggregates, by plugin name, e.g. [\"influxdb\"]; the others receive the raw points; [] for every output"),
            ("metrics", "globs (* and ?) of the metrics to aggregate; other metrics pass unchanged"),
            ("gauge", "what a gauge gives: any of \"mean\", \"min\", \"max\", \"last\" (one point each, attribute aggregation)"),
            ("gauge_per_metric", "per metric glob, what its gauges give instead, e.g. { \"cgroup_memory_*\" = [\"max\"] }"),
        ]
    }
}

impl Plugin for AggregatePlugin {
    fn start(&mut self, ctx: &mut PluginStartContext) -> Result<(), PluginError> {
        let late = ctx.create_metric(late_metric())?;
        let transform = AggregateTransform::new(self.config.settings(), late);
        ctx.add_scoped_transform(
            "aggregate",
            Box::new(transform),
            OutputScope::from_names(self.config.outputs.clone()),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        alumet::config::deserialize_config(toml::from_str::<toml::Table>(text).unwrap())
    }

    #[test]
    fn the_default_round_trips_and_is_valid() {
        let table = alumet::config::serialize_config(&Config::default()).unwrap();
        let back: Config = alumet::config::deserialize_config(table).unwrap();
        assert_eq!(back, Config::default());
        assert!(AggregatePlugin::init(back).is_ok());
    }

    #[test]
    fn bad_values_are_config_errors_naming_the_key() {
        let c = parse("window = \"0s\"").unwrap();
        let e = AggregatePlugin::init(c).unwrap_err().to_string();
        assert!(e.contains("`window`"), "{e}");
        let c = parse("gauge = []").unwrap();
        assert!(AggregatePlugin::init(c)
            .unwrap_err()
            .to_string()
            .contains("`gauge`"));
        let c = parse("[gauge_per_metric]\n\"mem*\" = []").unwrap();
        assert!(AggregatePlugin::init(c)
            .unwrap_err()
            .to_string()
            .contains("mem*"));
        assert!(parse("gauge = [\"median\"]").is_err());
        assert!(parse("windw = \"1s\"").is_err());
        let c =
            parse("window = \"1m\"\ngauge = [\"min\", \"max\"]\noutputs = [\"influxdb\"]").unwrap();
        assert_eq!(c.window, Duration::from_secs(60));
        assert!(AggregatePlugin::init(c).is_ok());
    }
}
