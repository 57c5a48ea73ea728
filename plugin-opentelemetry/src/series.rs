//! The state of every series of a sum (a metric with all its point
//! attributes): start time, latest point, running total; found by a key
//! built from the attributes, with a fast hasher, and forgotten once idle.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::proto::{KeyValue, NumberValue, Value};

/// A series (of a sum) without a point for this long is forgotten: 10 min.
pub const SERIES_IDLE_NS: u64 = 600_000_000_000;

/// What is remembered per series (metric + attributes) of a sum.
#[derive(Debug, Clone, Copy)]
pub struct Series {
    /// Start time of its sums.
    pub start: u64,
    /// Time of its latest point.
    pub last_time: u64,
    /// Running total of a u64 metric.
    pub int_total: u64,
    /// Running total of an f64 metric.
    pub double_total: f64,
}

/// A fast hasher for the series map (keys are built by this encoder, not
/// chosen by an attacker, so SipHash's protection buys nothing here):
/// multiply-rotate over 8-byte words, the FxHash scheme.
#[derive(Default, Clone, Copy, Debug)]
struct WordHasher(u64);

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type SeriesMap = HashMap<Box<[u8]>, Series, BuildHasherDefault<WordHasher>>;

/// Every series seen, by key.
#[derive(Debug, Default)]
pub struct SeriesTable {
    map: SeriesMap,
    /// The key being looked up (reused).
    key: Vec<u8>,
    /// The latest point time seen.
    latest_time: u64,
    /// Series idle before this were forgotten: new ones start after it.
    pruned_before: u64,
    /// When (in point time) to look for idle series next.
    next_prune_at: u64,
}

impl SeriesTable {
    /// Updates the state of the series of a sum point (fresh on first
    /// sight) with `update`, which returns the point's (start, value).
    pub fn update(
        &mut self,
        index: usize,
        attributes: &[KeyValue],
        time: u64,
        agent_start: u64,
        update: impl FnOnce(&mut Series) -> (u64, NumberValue),
    ) -> (u64, NumberValue) {
        self.key.clear();
        self.key.extend_from_slice(&(index as u32).to_le_bytes());
        for kv in attributes {
            push_key(&mut self.key, kv);
        }
        self.latest_time = self.latest_time.max(time);
        if let Some(series) = self.map.get_mut(self.key.as_slice()) {
            return update(series);
        }
        // After a prune, a series starts again after every point it had
        // before: a later start time is how OTLP says "reset".
        let start = agent_start.max(self.pruned_before).min(time);
        let mut series = Series {
            start,
            last_time: start,
            int_total: 0,
            double_total: 0.0,
        };
        let encoded = update(&mut series);
        self.map.insert(self.key.clone().into_boxed_slice(), series);
        encoded
    }

    /// Forgets the series without a point for [`SERIES_IDLE_NS`] (ended
    /// processes), so that memory follows the live series, not every series
    /// ever seen. Checked at most every half of that, at the end of a batch.
    pub fn prune_idle(&mut self) {
        if self.latest_time < self.next_prune_at {
            return;
        }
        let horizon = self.latest_time.saturating_sub(SERIES_IDLE_NS);
        let before = self.map.len();
        self.map.retain(|_, s| s.last_time >= horizon);
        if self.map.len() < before {
            self.pruned_before = self.pruned_before.max(horizon);
        }
        self.next_prune_at = self.latest_time.saturating_add(SERIES_IDLE_NS / 2);
    }

    /// Series remembered now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// Appends an unambiguous spelling of an attribute to a series key.
fn push_key(key: &mut Vec<u8>, kv: &KeyValue) {
    key.extend_from_slice(&(kv.key.len() as u32).to_le_bytes());
    key.extend_from_slice(kv.key.as_bytes());
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => {
            key.push(1);
            key.extend_from_slice(&(s.len() as u32).to_le_bytes());
            key.extend_from_slice(s.as_bytes());
        }
        Some(Value::BoolValue(b)) => key.extend_from_slice(&[2, u8::from(*b)]),
        Some(Value::IntValue(i)) => {
            key.push(3);
            key.extend_from_slice(&i.to_le_bytes());
        }
        Some(Value::DoubleValue(d)) => {
            key.push(4);
            key.extend_from_slice(&d.to_bits().to_le_bytes());
        }
        None => key.push(0),
    }
}
