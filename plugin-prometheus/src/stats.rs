//! The exporter's own counters, shared by the output thread and the HTTP
//! server, and exposed as the `<prefix>prometheus_*` families.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use alumet::measurement::Timestamp;

/// Counters of the exporter, live.
#[derive(Debug)]
pub struct ExporterStats {
    /// Series exposed now.
    pub series: AtomicU64,
    /// Distinct new series refused because `max_series` was reached.
    pub dropped_series: AtomicU64,
    /// Points not exported (refused series, invalid deltas, colliding names).
    pub dropped_points: AtomicU64,
    /// The part of `dropped_points` that were invalid deltas or had a colliding name.
    pub invalid_points: AtomicU64,
    /// Series removed because they were not updated for `series_ttl`.
    pub expired_series: AtomicU64,
    /// Scrapes answered with 200.
    pub scrapes: AtomicU64,
    /// Requests answered 400 (no or several Host headers), 401, 404, 405 or 501.
    pub rejected_requests: AtomicU64,
    /// Connections closed while waiting for their request, for a new
    /// connection, because every slot was taken.
    pub evicted_connections: AtomicU64,
    /// When the exporter started, ms since the epoch (`_created` of these counters).
    pub started_ms: u64,
}

impl Default for ExporterStats {
    fn default() -> Self {
        Self {
            series: AtomicU64::new(0),
            dropped_series: AtomicU64::new(0),
            dropped_points: AtomicU64::new(0),
            invalid_points: AtomicU64::new(0),
            expired_series: AtomicU64::new(0),
            scrapes: AtomicU64::new(0),
            rejected_requests: AtomicU64::new(0),
            evicted_connections: AtomicU64::new(0),
            started_ms: Timestamp::now().unix_nanos() / 1_000_000,
        }
    }
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// See [`ExporterStats::series`].
    pub series: u64,
    /// See [`ExporterStats::dropped_series`].
    pub dropped_series: u64,
    /// See [`ExporterStats::dropped_points`].
    pub dropped_points: u64,
    /// See [`ExporterStats::expired_series`].
    pub expired_series: u64,
    /// See [`ExporterStats::scrapes`].
    pub scrapes: u64,
    /// See [`ExporterStats::rejected_requests`].
    pub rejected_requests: u64,
    /// See [`ExporterStats::evicted_connections`].
    pub evicted_connections: u64,
}

impl ExporterStats {
    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            series: self.series.load(Relaxed),
            dropped_series: self.dropped_series.load(Relaxed),
            dropped_points: self.dropped_points.load(Relaxed),
            expired_series: self.expired_series.load(Relaxed),
            scrapes: self.scrapes.load(Relaxed),
            rejected_requests: self.rejected_requests.load(Relaxed),
            evicted_connections: self.evicted_connections.load(Relaxed),
        }
    }
}
