//! A network output's own figures as metrics, so that dashboards and alerts
//! see an output that retries before it drops: a source of the output's
//! plugin that reads its [`StatsHandle`] every `own_metrics_interval` (default [`DEFAULT_INTERVAL`]).
//!
//! | metric | kind | meaning |
//! | --- | --- | --- |
//! | `output_requests` | delta | requests sent (retries included) |
//! | `output_retries` | delta | requests sent again after a retryable failure |
//! | `output_delivered_points` | delta | points the server acknowledged |
//! | `output_lost_points` | delta | points lost, by `reason` (`buffer_full`, `rejected`, `unrepresentable`, `undelivered_at_shutdown`) |
//! | `output_buffered_points` | gauge | points queued or in flight now |
//!
//! Each point has the attribute `output` (the output's name) on the local
//! machine.

use std::time::Duration;

use alumet::measurement::{
    MeasurementBuffer, MeasurementPoint, Resource, ResourceConsumer, Timestamp,
};
use alumet::metrics::{Metric, MetricError, MetricId, MetricKind, Unit, ValueType};
use alumet::pipeline::{PluginStartContext, PollError, Source, SourceTrigger};

use crate::stats::{DeliveryStats, StatsHandle};

/// How often an output's figures are read by default (`own_metrics_interval`).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
struct Ids {
    requests: MetricId,
    retries: MetricId,
    delivered: MetricId,
    lost: MetricId,
    buffered: MetricId,
}

fn custom(ucum: &str, symbol: &str) -> Unit {
    Unit::Custom {
        ucum: ucum.into(),
        symbol: symbol.into(),
    }
}

fn register(ctx: &mut PluginStartContext) -> Result<Ids, MetricError> {
    let delta = |name: &str, unit: Unit, description: &str| {
        Metric::new(name, unit, ValueType::U64, MetricKind::Delta, description)
    };
    Ok(Ids {
        requests: ctx.create_metric(delta(
            "output_requests",
            custom("{request}", "requests"),
            "Requests a network output sent (retries included).",
        ))?,
        retries: ctx.create_metric(delta(
            "output_retries",
            custom("{request}", "requests"),
            "Requests a network output sent again after a retryable failure (5xx, 429, timeout, connection).",
        ))?,
        delivered: ctx.create_metric(delta(
            "output_delivered_points",
            custom("{point}", "points"),
            "Points a network output's server acknowledged.",
        ))?,
        lost: ctx.create_metric(delta(
            "output_lost_points",
            custom("{point}", "points"),
            "Points a network output lost, by reason.",
        ))?,
        buffered: ctx.create_metric(Metric::new(
            "output_buffered_points",
            custom("{point}", "points"),
            ValueType::U64,
            MetricKind::Gauge,
            "Points a network output holds now (queued or in flight).",
        ))?,
    })
}

/// The source of one output's figures.
struct OutputStatsSource {
    output: String,
    stats: StatsHandle,
    ids: Ids,
    previous: DeliveryStats,
}

impl Source for OutputStatsSource {
    fn poll(
        &mut self,
        into: &mut MeasurementBuffer,
        timestamp: Timestamp,
    ) -> Result<(), PollError> {
        let now = self.stats.snapshot();
        let before = std::mem::replace(&mut self.previous, now);
        let point = |metric: MetricId, value: u64| {
            MeasurementPoint::new(
                timestamp,
                metric,
                Resource::LocalMachine,
                ResourceConsumer::LocalMachine,
                value,
            )
            .with_attr("output", self.output.clone())
        };
        let ids = self.ids;
        into.push(point(
            ids.requests,
            now.requests.saturating_sub(before.requests),
        ));
        into.push(point(
            ids.retries,
            now.retries.saturating_sub(before.retries),
        ));
        into.push(point(
            ids.delivered,
            now.delivered_points.saturating_sub(before.delivered_points),
        ));
        for (reason, now, before) in [
            (
                "buffer_full",
                now.buffer_dropped_points,
                before.buffer_dropped_points,
            ),
            ("rejected", now.rejected_points, before.rejected_points),
            ("unrepresentable", now.skipped_points, before.skipped_points),
            (
                "undelivered_at_shutdown",
                now.undelivered_at_shutdown_points,
                before.undelivered_at_shutdown_points,
            ),
        ] {
            into.push(point(ids.lost, now.saturating_sub(before)).with_attr("reason", reason));
        }
        into.push(point(ids.buffered, now.buffered_points));
        Ok(())
    }
}

/// Adds the source of output `output_name`'s figures, read every
/// `interval` (zero: none), to the plugin being started. A metric that cannot be registered (another plugin's metric of
/// the same name) leaves the output without them, said in one line.
pub fn add_self_metrics(
    ctx: &mut PluginStartContext,
    output_name: &str,
    stats: &StatsHandle,
    interval: Duration,
) {
    if interval.is_zero() {
        return;
    }
    let ids = match register(ctx) {
        Ok(ids) => ids,
        Err(e) => {
            log::warn!("{output_name}: its own figures are not exported: {e}");
            return;
        }
    };
    let source = OutputStatsSource {
        output: output_name.to_owned(),
        stats: stats.clone(),
        ids,
        previous: stats.snapshot(),
    };
    ctx.add_source(
        &format!("{output_name}-stats"),
        Box::new(source),
        SourceTrigger::every(interval),
    );
}
