//! The filter transform: a point is kept when it matches one `keep` rule
//! (or there are none) and no `drop` rule. A rule matches when every field
//! it gives matches; the metric part is decided once per metric, the other
//! fields per point.

use std::collections::BTreeMap;

use alumet::measurement::{MeasurementBuffer, MeasurementPoint};
use alumet::metrics::MetricRegistry;
use alumet::pipeline::{ElementContext, Transform, TransformError};
use serde::{Deserialize, Serialize};

use crate::pattern::{Pattern, PatternError};

/// One rule as configured: each field it gives must match.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RuleConfig {
    /// Metric name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// Resource kind (`cpu_package`, `gpu`, `local_machine`...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_kind: Option<String>,
    /// Resource id (`0`, a PCI bus id; empty for the machine).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// Consumer kind (`process`, `cgroup`, `local_machine`...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer_kind: Option<String>,
    /// Consumer id (a pid, a cgroup path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer_id: Option<String>,
    /// Attribute key → pattern of its value; a point without the key does not match.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    metric: Option<Pattern>,
    resource_kind: Option<Pattern>,
    resource_id: Option<Pattern>,
    consumer_kind: Option<Pattern>,
    consumer_id: Option<Pattern>,
    attributes: Vec<(String, Pattern)>,
}

fn compile(p: &Option<String>) -> Result<Option<Pattern>, PatternError> {
    p.as_deref().map(Pattern::new).transpose()
}

impl Rule {
    /// Compiles a configured rule.
    pub fn new(config: &RuleConfig) -> Result<Self, PatternError> {
        Ok(Self {
            metric: compile(&config.metric)?,
            resource_kind: compile(&config.resource_kind)?,
            resource_id: compile(&config.resource_id)?,
            consumer_kind: compile(&config.consumer_kind)?,
            consumer_id: compile(&config.consumer_id)?,
            attributes: config
                .attributes
                .iter()
                .map(|(k, v)| Ok((k.clone(), Pattern::new(v)?)))
                .collect::<Result<_, PatternError>>()?,
        })
    }

    /// Whether the rule accepts metric `name` (the other fields aside).
    pub fn accepts_metric(&self, name: &str) -> bool {
        self.metric.as_ref().is_none_or(|m| m.matches(name))
    }

    /// Whether the fields other than the metric match `p`.
    fn matches_rest(&self, p: &MeasurementPoint) -> bool {
        self.resource_kind
            .as_ref()
            .is_none_or(|m| m.matches(p.resource.kind()))
            && self
                .resource_id
                .as_ref()
                .is_none_or(|m| m.matches(&p.resource.id()))
            && self
                .consumer_kind
                .as_ref()
                .is_none_or(|m| m.matches(p.consumer.kind()))
            && self
                .consumer_id
                .as_ref()
                .is_none_or(|m| m.matches(&p.consumer.id()))
            && self.attributes.iter().all(|(key, pattern)| {
                p.attr(key).is_some_and(|v| match v {
                    alumet::measurement::AttributeValue::Str(s) => pattern.matches(s),
                    other => pattern.matches(&other.to_string()),
                })
            })
    }
}

/// The rules of one filter.
#[derive(Debug, Clone)]
pub struct Rules {
    /// A point must match one of these (none: every point may stay).
    pub keep: Vec<Rule>,
    /// A point that matches one of these goes.
    pub drop: Vec<Rule>,
}

/// For one metric: which rules can match its points.
#[derive(Debug, Clone, Default)]
struct MetricRules {
    keep: Vec<usize>,
    drop: Vec<usize>,
    /// No rule looks further than the metric: the answer for every point.
    decided: Option<bool>,
}

/// The filter transform.
pub struct FilterTransform {
    rules: Rules,
    /// By metric index.
    by_metric: Vec<MetricRules>,
    /// Points seen and dropped, for tests and logs.
    seen: u64,
    dropped: u64,
}

impl FilterTransform {
    /// A filter with `rules`.
    pub fn new(rules: Rules) -> Self {
        Self {
            rules,
            by_metric: Vec::new(),
            seen: 0,
            dropped: 0,
        }
    }

    /// `(seen, dropped)` so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.seen, self.dropped)
    }

    fn prepare(&mut self, metrics: &MetricRegistry) {
        for (id, metric) in metrics.iter().skip(self.by_metric.len()) {
            let select = |rules: &[Rule]| -> Vec<usize> {
                (0..rules.len())
                    .filter(|&i| rules[i].accepts_metric(&metric.name))
                    .collect()
            };
            let keep = select(&self.rules.keep);
            let drop = select(&self.rules.drop);
            let plain = |i: &usize, rules: &[Rule]| {
                let r = &rules[*i];
                r.resource_kind.is_none()
                    && r.resource_id.is_none()
                    && r.consumer_kind.is_none()
                    && r.consumer_id.is_none()
                    && r.attributes.is_empty()
            };
            let no_keep_can_match = !self.rules.keep.is_empty() && keep.is_empty();
            let decided = if no_keep_can_match || drop.iter().any(|i| plain(i, &self.rules.drop)) {
                Some(false)
            } else if drop.is_empty()
                && (self.rules.keep.is_empty() || keep.iter().any(|i| plain(i, &self.rules.keep)))
            {
                Some(true)
            } else {
                None
            };
            debug_assert_eq!(id.index(), self.by_metric.len());
            self.by_metric.push(MetricRules {
                keep,
                drop,
                decided,
            });
        }
    }

    fn keeps(&self, p: &MeasurementPoint) -> bool {
        let Some(m) = self.by_metric.get(p.metric.index()) else {
            return true;
        };
        if let Some(answer) = m.decided {
            return answer;
        }
        let kept = self.rules.keep.is_empty()
            || m.keep.iter().any(|&i| self.rules.keep[i].matches_rest(p));
        kept && !m.drop.iter().any(|&i| self.rules.drop[i].matches_rest(p))
    }
}

impl Transform for FilterTransform {
    fn apply(
        &mut self,
        buffer: &mut MeasurementBuffer,
        ctx: &ElementContext,
    ) -> Result<(), TransformError> {
        if self.by_metric.len() < ctx.metrics.len() {
            // Metrics only grow (a plugin started by a reload adds some).
            self.prepare(ctx.metrics);
        }
        let before = buffer.len();
        buffer.retain(|p| self.keeps(p));
        self.seen += before as u64;
        self.dropped += (before - buffer.len()) as u64;
        Ok(())
    }
}
