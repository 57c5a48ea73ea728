//! One energy domain (a RAPL domain of one package, or one GPU): its timeline
//! of energy intervals waiting to be attributed, and its idle power.
//!
//! An energy point is a delta: the energy of `[t0, t1]` where `t1` is its
//! timestamp and `t0` the timestamp of the domain's previous point. Intervals
//! are held in `pending`, keyed by `t1`, until the activity data that covers
//! them has arrived; each interval's `t0` is its predecessor in the timeline,
//! so a point that arrives late but before its successor was attributed
//! splits that successor's interval correctly.

use std::borrow::Cow;
use std::collections::BTreeMap;

use alumet::measurement::{AttributeValue, Resource, Timestamp};

use crate::idle::IdlePower;

/// Which activity data a domain's energy is shared by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivityKind {
    /// Process CPU time (RAPL domains).
    Cpu,
    /// Process SM utilisation of the GPU at this index of the GPU stores.
    Gpu(usize),
}

/// What happened to an energy point given to [`Domain::insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// The domain's first point: its start is unknown, it only sets `t0` of the next.
    StartLearned,
    /// Queued for attribution.
    Pending,
    /// At or before an interval already attributed: it cannot be placed
    /// without counting some energy twice, so it is dropped.
    TooLate,
}

/// An energy interval of a domain.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnergyInterval {
    /// Start (the previous point of the domain).
    pub start: Timestamp,
    /// End (the point's timestamp).
    pub end: Timestamp,
    /// Energy in joules, as received (may be invalid: checked when
    /// attributed); `None` when the sensor did not measure the interval
    /// (a frozen counter: an estimate covers it, not this domain).
    pub energy_j: Option<f64>,
}

/// State of one domain.
#[derive(Debug, Clone)]
pub struct Domain {
    /// The domain's resource (CPU package, DRAM, machine, GPU).
    pub resource: Resource,
    /// The `domain` attribute of the input points (`package`, `dram`, ..., or `gpu`).
    pub name: AttributeValue,
    /// Which input metric this domain comes from (index into the energy inputs).
    pub input: usize,
    /// The attributes that tell this domain's series apart from others of
    /// the same input, resource and name, copied onto every point derived
    /// from it: `die` on packages of several dies measured one by one; for
    /// whole-node energy, `chassis`, `sensor`, `device` (those present) and
    /// `energy_metric` (the input metric).
    pub tags: Vec<(Cow<'static, str>, AttributeValue)>,
    /// Whole-node energy (`node`/`module` of hwmon or Redfish): its dynamic
    /// part is split between the GPUs' use and CPU time.
    pub node: bool,
    /// The activity its dynamic energy is shared by.
    pub activity: ActivityKind,
    /// Its idle power.
    pub idle: IdlePower,
    /// End of the last interval attributed (or of the first point).
    resolved_until: Option<Timestamp>,
    /// Interval end → energy (`None`: not measured), waiting for activity data.
    pending: BTreeMap<Timestamp, Option<f64>>,
}

impl Domain {
    /// A domain that has seen no point yet.
    pub fn new(
        resource: Resource,
        name: AttributeValue,
        input: usize,
        activity: ActivityKind,
        idle: IdlePower,
    ) -> Self {
        Self {
            resource,
            name,
            input,
            tags: Vec::new(),
            node: false,
            activity,
            idle,
            resolved_until: None,
            pending: BTreeMap::new(),
        }
    }

    /// Whether this domain is the one of a point of input `input` on
    /// `resource` with domain `name` and identifying attributes `tags`.
    pub fn matches(
        &self,
        input: usize,
        resource: &Resource,
        name: &str,
        tags: &[(Cow<'static, str>, AttributeValue)],
    ) -> bool {
        self.input == input
            && self.resource == *resource
            && matches!(&self.name, AttributeValue::Str(s) if s == name)
            && self.tags == tags
    }

    /// Adds the energy point ending at `end`.
    pub fn insert(&mut self, end: Timestamp, energy_j: f64) -> Inserted {
        self.insert_interval(end, Some(energy_j))
    }

    /// Marks the interval ending at `end` as not measured: it ends the
    /// previous interval and starts the next, and is attributed to no one.
    pub fn insert_unmeasured(&mut self, end: Timestamp) -> Inserted {
        self.insert_interval(end, None)
    }

    fn insert_interval(&mut self, end: Timestamp, energy_j: Option<f64>) -> Inserted {
        match self.resolved_until {
            None => {
                self.resolved_until = Some(end);
                Inserted::StartLearned
            }
            Some(r) if end <= r || self.pending.contains_key(&end) => Inserted::TooLate,
            Some(_) => {
                self.pending.insert(end, energy_j);
                Inserted::Pending
            }
        }
    }

    /// The oldest interval waiting for attribution.
    pub fn front(&self) -> Option<EnergyInterval> {
        let start = self.resolved_until?;
        self.pending
            .iter()
            .next()
            .map(|(&end, &energy_j)| EnergyInterval {
                start,
                end,
                energy_j,
            })
    }

    /// Marks the oldest pending interval as done.
    pub fn pop_front(&mut self) {
        if let Some((end, _)) = self.pending.pop_first() {
            self.resolved_until = Some(end);
        }
    }

    /// The earliest time this domain may still need activity data for.
    pub fn needs_from(&self) -> Option<Timestamp> {
        self.resolved_until
    }

    /// Whether intervals are waiting.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Timestamp {
        Timestamp::from_unix_nanos(v * 1_000_000)
    }

    fn domain() -> Domain {
        Domain::new(
            Resource::CpuPackage { id: 0 },
            AttributeValue::from("package"),
            0,
            ActivityKind::Cpu,
            IdlePower::Configured(0.0),
        )
    }

    #[test]
    fn first_point_only_sets_the_start() {
        let mut d = domain();
        assert_eq!(d.insert(ms(100), 5.0), Inserted::StartLearned);
        assert_eq!(d.front(), None);
        assert_eq!(d.insert(ms(200), 1.0), Inserted::Pending);
        let i = d.front().unwrap();
        assert_eq!((i.start, i.end, i.energy_j), (ms(100), ms(200), Some(1.0)));
    }

    #[test]
    fn late_point_splits_its_pending_successor() {
        let mut d = domain();
        d.insert(ms(0), 0.0);
        d.insert(ms(200), 2.0);
        // The point of 100 ms arrives after the one of 200 ms.
        assert_eq!(d.insert(ms(100), 1.0), Inserted::Pending);
        let first = d.front().unwrap();
        assert_eq!((first.start, first.end), (ms(0), ms(100)));
        d.pop_front();
        let second = d.front().unwrap();
        assert_eq!((second.start, second.end), (ms(100), ms(200)));
    }

    #[test]
    fn an_unmeasured_interval_bounds_its_neighbours() {
        let mut d = domain();
        d.insert(ms(0), 0.0);
        d.insert(ms(100), 1.0);
        assert_eq!(d.insert_unmeasured(ms(200)), Inserted::Pending);
        d.insert(ms(300), 3.0);
        let i = d.front().unwrap();
        assert_eq!((i.start, i.end, i.energy_j), (ms(0), ms(100), Some(1.0)));
        d.pop_front();
        let i = d.front().unwrap();
        assert_eq!((i.start, i.end, i.energy_j), (ms(100), ms(200), None));
        d.pop_front();
        let i = d.front().unwrap();
        assert_eq!((i.start, i.end, i.energy_j), (ms(200), ms(300), Some(3.0)));
    }

    #[test]
    fn point_before_an_attributed_interval_is_too_late() {
        let mut d = domain();
        d.insert(ms(0), 0.0);
        d.insert(ms(200), 2.0);
        d.pop_front();
        assert_eq!(d.insert(ms(100), 1.0), Inserted::TooLate);
        assert_eq!(d.insert(ms(200), 1.0), Inserted::TooLate);
        d.insert(ms(300), 1.0);
        assert_eq!(d.insert(ms(300), 1.0), Inserted::TooLate);
    }
}
