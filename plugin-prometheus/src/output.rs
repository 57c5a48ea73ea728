//! The pipeline output: each batch updates the store, under its lock, and
//! returns; it never waits for a scraper.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use alumet::measurement::MeasurementBuffer;
use alumet::pipeline::{ElementContext, Output, WriteError};

use crate::store::Store;

/// Locks the store; a panic elsewhere while it was held leaves a state
/// that is still consistent enough to serve (every update is per series).
pub(crate) fn lock(store: &Mutex<Store>) -> MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Keeps the latest state of every series for the endpoint.
pub struct PrometheusOutput {
    store: Arc<Mutex<Store>>,
}

impl PrometheusOutput {
    /// An output that updates `store`.
    pub fn new(store: Arc<Mutex<Store>>) -> Self {
        Self { store }
    }
}

impl Output for PrometheusOutput {
    fn write(
        &mut self,
        buffer: &MeasurementBuffer,
        ctx: &ElementContext,
    ) -> Result<(), WriteError> {
        lock(&self.store).update(buffer, ctx.metrics);
        Ok(())
    }
}
