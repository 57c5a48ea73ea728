//! Plugin `filter`: transforms that keep or drop points by metric name,
//! resource, consumer and attribute values (globs, or regular expressions
//! where a glob cannot say it), each for every output or only some: all
//! points to a CSV file, the energy ones only to a remote store. A metric
//! pattern that matches no metric once the pipeline runs (a typo, most
//! likely) is reported once, naming the closest metric.

pub mod pattern;
pub mod transform;

use alumet::config::ConfigError;
use alumet::metrics::MetricRegistry;
use alumet::pipeline::builder::PluginStartContext;
use alumet::pipeline::{OutputScope, PipelineHandle};
use alumet::plugin::{Plugin, PluginDefinition, PluginError};
use serde::{Deserialize, Serialize};

pub use pattern::Pattern;
pub use transform::{FilterTransform, Rule, RuleConfig, Rules};

/// Configuration of `[plugins.filter]`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The filters, each a transform of its own.
    pub filters: Vec<FilterConfig>,
}

/// One filter.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    /// The outputs whose points it filters (plugin names); empty: every output.
    pub outputs: Vec<String>,
    /// A point stays only if it matches one of these (none: every point may stay).
    pub keep: Vec<RuleConfig>,
    /// A point that matches one of these goes.
    pub drop: Vec<RuleConfig>,
}

fn invalid(key: String, reason: impl Into<String>) -> PluginError {
    PluginError::Config(ConfigError::Invalid {
        key,
        reason: reason.into(),
    })
}

impl FilterConfig {
    fn rules(&self, index: usize) -> Result<Rules, PluginError> {
        let compile = |list: &[RuleConfig], which: &str| {
            list.iter()
                .enumerate()
                .map(|(j, r)| {
                    Rule::new(r).map_err(|e| {
                        invalid(format!("filters[{index}].{which}[{j}]"), e.to_string())
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Rules {
            keep: compile(&self.keep, "keep")?,
            drop: compile(&self.drop, "drop")?,
        })
    }
}

impl Config {
    /// Compiles every filter's rules (a bad regular expression is a config error).
    pub fn compile(&self) -> Result<Vec<Rules>, PluginError> {
        self.filters
            .iter()
            .enumerate()
            .map(|(i, f)| {
                if f.keep.is_empty() && f.drop.is_empty() {
                    return Err(invalid(
                        format!("filters[{i}]"),
                        "a filter without keep or drop rules lets everything through; give rules or remove it",
                    ));
                }
                f.rules(i)
            })
            .collect()
    }

    /// One line for each metric pattern that matches none of `metrics`,
    /// naming the closest metric.
    pub fn unmatched_metrics(&self, metrics: &MetricRegistry) -> Vec<String> {
        let names: Vec<&str> = metrics.iter().map(|(_, m)| m.name.as_str()).collect();
        let mut lines = Vec::new();
        for (i, f) in self.filters.iter().enumerate() {
            for (which, list) in [("keep", &f.keep), ("drop", &f.drop)] {
                for (j, rule) in list.iter().enumerate() {
                    let Some(text) = &rule.metric else { continue };
                    let Ok(pattern) = Pattern::new(text) else {
                        continue;
                    };
                    if names.iter().any(|n| pattern.matches(n)) {
                        continue;
                    }
                    let bare = text.strip_prefix(pattern::REGEX_PREFIX).unwrap_or(text);
                    let closest = names
                        .iter()
                        .min_by_key(|n| alumet::suggest::edit_distance(bare, n))
                        .map_or(String::new(), |n| format!("; did you mean `{n}`?"));
                    lines.push(format!(
                        "filter: metric = \"{text}\" (plugins.filter.filters[{i}].{which}[{j}]) matches no metric{closest}"
                    ));
                }
            }
        }
        lines
    }
}

/// The `filter` plugin.
#[derive(Debug)]
pub struct FilterPlugin {
    config: Config,
    rules: Vec<Rules>,
}

impl PluginDefinition for FilterPlugin {
    const NAME: &'static str = "filter";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Keeps or drops points by metric, resource, consumer and attributes (globs or regex:), for every output or only some.";
    type Config = Config;

    fn init(config: Config) -> Result<Self, PluginError> {
        let rules = config.compile()?;
        Ok(Self { config, rules })
    }

    fn config_docs() -> &'static [(&'static str, &'static str)] {
        &[(
            "filters",
            "each filter: { outputs = [\"influxdb\"] ([] for every output), keep = [rules] (a point stays if it matches one; none: all may stay), drop = [rules] }. A rule: { metric, resource_kind, resource_id, consumer_kind, consumer_id, attributes = { key = pattern } }, each a glob (* ?) or \"regex:...\"; every field given must match. e.g. filters = [{ outputs = [\"influxdb\"], keep = [{ metric = \"rapl_*\" }] }]",
        )]
    }
}

impl Plugin for FilterPlugin {
    fn start(&mut self, ctx: &mut PluginStartContext) -> Result<(), PluginError> {
        for (i, (rules, f)) in self.rules.iter().zip(&self.config.filters).enumerate() {
            ctx.add_scoped_transform(
                &format!("filter{i}"),
                Box::new(FilterTransform::new(rules.clone())),
                OutputScope::from_names(f.outputs.clone()),
            );
        }
        Ok(())
    }

    fn post_pipeline_start(&mut self, pipeline: &PipelineHandle) -> Result<(), PluginError> {
        // Every plugin has registered its metrics by now: a pattern that
        // matches none is a typo far more often than a metric yet to come.
        for line in self.config.unmatched_metrics(&pipeline.metrics()) {
            log::warn!("{line}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alumet::metrics::{Metric, MetricKind, Unit, ValueType};

    fn parse(text: &str) -> Result<Config, ConfigError> {
        alumet::config::deserialize_config(toml::from_str::<toml::Table>(text).unwrap())
    }

    #[test]
    fn the_default_round_trips_and_filters_nothing() {
        let table = alumet::config::serialize_config(&Config::default()).unwrap();
        let back: Config = alumet::config::deserialize_config(table).unwrap();
        assert_eq!(back, Config::default());
        assert!(FilterPlugin::init(back).unwrap().rules.is_empty());
    }

    #[test]
    fn bad_rules_are_config_errors_naming_the_rule() {
        let c = parse("filters = [{ keep = [{ metric = \"regex:(\" }] }]").unwrap();
        let e = FilterPlugin::init(c).unwrap_err().to_string();
        assert!(e.contains("filters[0].keep[0]"), "{e}");
        let c = parse("filters = [{ outputs = [\"csv\"] }]").unwrap();
        assert!(FilterPlugin::init(c)
            .unwrap_err()
            .to_string()
            .contains("filters[0]"));
        assert!(parse("filters = [{ keep = [{ metrc = \"x\" }] }]").is_err());
        assert!(parse("filters = [{ kep = [] }]").is_err());
    }

    #[test]
    fn a_misspelt_metric_gets_one_line_naming_the_closest() {
        let mut r = MetricRegistry::new();
        for name in ["rapl_consumed_energy", "process_cpu_time", "cpu_time"] {
            r.register(Metric::new(
                name,
                Unit::Unity,
                ValueType::U64,
                MetricKind::Gauge,
                "",
            ))
            .unwrap();
        }
        let c = parse(
            "filters = [{ keep = [{ metric = \"rapl_consumed_enrgy\" }, { metric = \"cpu_*\" }], drop = [{ metric = \"regex:proces_cpu_time\" }] }]",
        )
        .unwrap();
        let lines = c.unmatched_metrics(&r);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].contains("did you mean `rapl_consumed_energy`?"),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("filters[0].keep[0]"), "{}", lines[0]);
        assert!(
            lines[1].contains("did you mean `process_cpu_time`?"),
            "{}",
            lines[1]
        );
    }
}
