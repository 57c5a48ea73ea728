//! The metric registry as the running elements see it.
//!
//! A registry never changes while elements read it, but a plugin started
//! into a running pipeline (a reload) may register new metrics. Ids only
//! grow (a registry is extended, never edited), so an element keeps its
//! own `Arc` and swaps it for the newer one when the generation moves: one
//! atomic load per batch, no lock on the data path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::metrics::MetricRegistry;

/// The current registry, replaced whole when metrics are added.
#[derive(Debug)]
pub(crate) struct MetricsCell {
    current: RwLock<Arc<MetricRegistry>>,
    generation: AtomicU64,
}

impl MetricsCell {
    pub(crate) fn new(metrics: MetricRegistry) -> Self {
        Self {
            current: RwLock::new(Arc::new(metrics)),
            generation: AtomicU64::new(0),
        }
    }

    pub(crate) fn current(&self) -> Arc<MetricRegistry> {
        match self.current.read() {
            Ok(m) => m.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Publishes `metrics`, which must extend the current registry.
    pub(crate) fn publish(&self, metrics: MetricRegistry) {
        let mut current = match self.current.write() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        *current = Arc::new(metrics);
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// An element's copy of the registry, refreshed when a newer one exists.
pub(crate) struct LocalMetrics {
    cell: Arc<MetricsCell>,
    seen: u64,
    local: Arc<MetricRegistry>,
}

impl LocalMetrics {
    pub(crate) fn new(cell: Arc<MetricsCell>) -> Self {
        let seen = cell.generation.load(Ordering::Acquire);
        let local = cell.current();
        Self { cell, seen, local }
    }

    /// Takes the newest registry (call before handing one to an element).
    pub(crate) fn refresh(&mut self) {
        let generation = self.cell.generation.load(Ordering::Acquire);
        if generation != self.seen {
            self.seen = generation;
            self.local = self.cell.current();
        }
    }

    /// The registry as of the last refresh.
    pub(crate) fn get(&self) -> &MetricRegistry {
        &self.local
    }
}
