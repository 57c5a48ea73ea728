//! The source: reads every domain's counter and emits the energy consumed
//! since the previous poll.
//!
//! Both interfaces end up here as a list of [`DomainReader`]s, so the wrap
//! correction and the points are the same whichever interface was chosen.

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use alumet::measurement::{
    AttributeValue, MeasurementBuffer, MeasurementPoint, MeasurementValue, Resource,
    ResourceConsumer, Timestamp,
};
use alumet::metrics::MetricId;
use alumet::pipeline::{PollError, Source};

use crate::counters::{EnergyCounter, Reading, Wrap};
use crate::domain::Domain;

/// A raw energy counter: a powercap `energy_uj` file or a perf event.
pub trait RawEnergyReader: Send {
    /// The current value of the counter, in the reader's own unit.
    fn read_raw(&mut self) -> io::Result<u64>;
}

/// One candidate counter of a domain, with its own wrap correction.
struct Candidate {
    origin: String,
    reader: Box<dyn RawEnergyReader>,
    counter: EnergyCounter,
}

/// One domain on one package (or die): where to read it and how to
/// interpret it.
///
/// A reader usually has one counter. psys on multi-socket machines has one
/// candidate per package of which only one advances: the reader reads all
/// of them until one advances, then keeps that one alone.
pub struct DomainReader {
    domain: Domain,
    resource: Resource,
    die: Option<u32>,
    origin: String,
    joules_per_unit: f64,
    max_power_w: f64,
    candidates: Vec<Candidate>,
    last_read: Option<Instant>,
    reset_warned: bool,
}

impl fmt::Debug for DomainReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DomainReader")
            .field("domain", &self.domain)
            .field("resource", &self.resource)
            .field("die", &self.die)
            .field("origin", &self.origin)
            .field("joules_per_unit", &self.joules_per_unit)
            .field("candidates", &self.candidates.len())
            .finish()
    }
}

impl DomainReader {
    /// A domain read through `reader`, whose values are counts of
    /// `joules_per_unit` J that wrap as `wrap` says. `origin` names where the
    /// value comes from (a file, an event and CPU) for messages;
    /// `max_power_w` is the highest power the domain can draw, which bounds
    /// the energy a wrap may imply.
    pub fn new(
        domain: Domain,
        resource: Resource,
        origin: String,
        joules_per_unit: f64,
        wrap: Wrap,
        max_power_w: f64,
        reader: Box<dyn RawEnergyReader>,
    ) -> Self {
        Self::with_candidates(
            domain,
            resource,
            joules_per_unit,
            wrap,
            max_power_w,
            vec![(origin, reader)],
        )
    }

    /// A domain with several candidate counters, each with its origin, of
    /// which the first to advance is kept (psys on multi-socket machines).
    /// `readers` must not be empty for the domain to report anything.
    pub fn with_candidates(
        domain: Domain,
        resource: Resource,
        joules_per_unit: f64,
        wrap: Wrap,
        max_power_w: f64,
        readers: Vec<(String, Box<dyn RawEnergyReader>)>,
    ) -> Self {
        let origin = readers
            .iter()
            .map(|(o, _)| o.as_str())
            .collect::<Vec<_>>()
            .join(" or ");
        Self {
            domain,
            resource,
            die: None,
            origin,
            joules_per_unit,
            max_power_w,
            candidates: readers
                .into_iter()
                .map(|(origin, reader)| Candidate {
                    origin,
                    reader,
                    counter: EnergyCounter::new(wrap),
                })
                .collect(),
            last_read: None,
            reset_warned: false,
        }
    }

    /// The same reader, reported with a `die` attribute.
    pub fn with_die(mut self, die: Option<u32>) -> Self {
        self.die = die;
        self
    }

    /// The domain.
    pub fn domain(&self) -> Domain {
        self.domain
    }

    /// The resource the domain's energy is reported on.
    pub fn resource(&self) -> &Resource {
        &self.resource
    }

    /// The die, for packages with several dies that each have a counter.
    pub fn die(&self) -> Option<u32> {
        self.die
    }

    /// Where the value comes from (file path, or event and CPU).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Joules per unit of the raw counter.
    pub fn joules_per_unit(&self) -> f64 {
        self.joules_per_unit
    }

    /// How many candidate counters are still read.
    pub fn candidate_count(&self) -> usize {
        self.candidates.len()
    }

    /// Reads the first counter without updating anything (to compare
    /// counters when the readers are set up).
    pub fn peek_raw(&mut self) -> io::Result<u64> {
        match self.candidates.first_mut() {
            Some(c) => c.reader.read_raw(),
            None => Err(io::Error::other("no counter")),
        }
    }

    /// Reads the counter once; `Ok(None)` when this read only primed it (the
    /// first read, or one after a reset).
    pub fn read_consumed_joules(&mut self) -> io::Result<Option<f64>> {
        let now = Instant::now();
        let limits = WrapLimits {
            max_power_w: self.max_power_w,
            joules_per_unit: self.joules_per_unit,
        };
        // One counter (every domain but a multi-socket psys): no allocation.
        if let [c] = self.candidates.as_mut_slice() {
            let raw = c.reader.read_raw()?;
            let elapsed = elapsed_since(&mut self.last_read, now);
            let reading = c.update(raw, elapsed, limits, &mut self.reset_warned);
            return Ok(limits.joules(reading));
        }
        // Read every candidate first: a failed read leaves all counters as
        // they were.
        let raws = self
            .candidates
            .iter_mut()
            .map(|c| c.reader.read_raw())
            .collect::<io::Result<Vec<u64>>>()?;
        let elapsed = elapsed_since(&mut self.last_read, now);
        let readings: Vec<Reading> = self
            .candidates
            .iter_mut()
            .zip(raws)
            .map(|(c, raw)| c.update(raw, elapsed, limits, &mut self.reset_warned))
            .collect();
        let chosen = match readings.as_slice() {
            [single] => *single,
            _ => match readings
                .iter()
                .position(|r| matches!(r, Reading::Advanced(n) if *n > 0))
            {
                Some(i) => {
                    let kept = self.candidates.swap_remove(i);
                    log::info!(
                        "rapl: {}: {} advances, the other candidates do not: reading it alone",
                        self.domain,
                        kept.origin
                    );
                    self.origin.clone_from(&kept.origin);
                    self.candidates = vec![kept];
                    readings[i]
                }
                None => readings.first().copied().unwrap_or(Reading::Primed),
            },
        };
        Ok(limits.joules(chosen))
    }
}

/// The time since `last_read`, which becomes `now` (zero the first time).
fn elapsed_since(last_read: &mut Option<Instant>, now: Instant) -> Duration {
    last_read
        .replace(now)
        .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
}

/// What bounds the energy a wrap may imply, and the counter's unit.
#[derive(Debug, Clone, Copy)]
struct WrapLimits {
    max_power_w: f64,
    joules_per_unit: f64,
}

impl WrapLimits {
    /// The joules a reading reports, if any.
    fn joules(self, reading: Reading) -> Option<f64> {
        match reading {
            Reading::Advanced(units) => Some(units as f64 * self.joules_per_unit),
            Reading::Primed | Reading::Reset { .. } => None,
        }
    }
}

impl Candidate {
    /// Feeds `raw` to the counter; a wrap may imply at most `elapsed` at
    /// the limit's power. Logs a reset.
    fn update(
        &mut self,
        raw: u64,
        elapsed: Duration,
        limits: WrapLimits,
        reset_warned: &mut bool,
    ) -> Reading {
        // f64 to u64 saturates: a huge bound is simply no bound.
        let max_wrap_units =
            (elapsed.as_secs_f64() * limits.max_power_w / limits.joules_per_unit) as u64;
        let previous = self.counter.previous();
        let reading = self.counter.update(raw, max_wrap_units);
        if let (Reading::Reset { implied }, Some(previous)) = (reading, previous) {
            let what = ResetSeen {
                previous,
                current: raw,
                implied_j: implied as f64 * limits.joules_per_unit,
                elapsed,
                max_power_w: limits.max_power_w,
            };
            what.log(&self.origin, reset_warned);
        }
        reading
    }
}

/// A counter seen going back by more than a wrap, for the warning.
struct ResetSeen {
    previous: u64,
    current: u64,
    implied_j: f64,
    elapsed: Duration,
    max_power_w: f64,
}

impl ResetSeen {
    /// Warns the first time (`warned` false), then logs at debug level.
    fn log(&self, origin: &str, warned: &mut bool) {
        let message = format!(
            "rapl: {origin} went back from {} to {}: a wrap would mean {:.0} J in {:.3} s, more than {} W can draw; taken as a reset (driver reload, firmware, or a kernel count stepping back), counting again from the new value",
            self.previous,
            self.current,
            self.implied_j,
            self.elapsed.as_secs_f64(),
            self.max_power_w
        );
        if *warned {
            log::debug!("{message}");
        } else {
            log::warn!("{message} (further resets are logged at debug level)");
            *warned = true;
        }
    }
}

/// Counters read at set-up to tell whether dies share one counter: three
/// rounds, so that a shared counter updated between two reads of one round
/// still agrees in another.
const SHARED_COUNTER_ROUNDS: usize = 3;

/// Keeps one reader per package where the readers of its dies read the same
/// counter (some kernels give each die, e.g. each AMD CCD, a powercap zone
/// whose counter is the package's: summing them would multiply the energy
/// by the number of dies). For absolute counters only (powercap's
/// `energy_uj`): perf counts start at 0 when opened. Dies whose counters agree,
/// not at 0, in one of three rounds of reads share one; the reader kept has
/// no `die`. Readers without a die are left as they are.
pub fn merge_shared_dies(readers: Vec<DomainReader>) -> Vec<DomainReader> {
    let mut groups: Vec<Vec<DomainReader>> = Vec::new();
    for reader in readers {
        let same = groups.iter_mut().find(|g| {
            g[0].die.is_some()
                && reader.die.is_some()
                && g[0].domain == reader.domain
                && g[0].resource == reader.resource
        });
        match same {
            Some(group) => group.push(reader),
            None => groups.push(vec![reader]),
        }
    }
    let mut kept = Vec::new();
    for mut group in groups {
        if group.len() > 1 && dies_share_a_counter(&mut group) {
            log::info!(
                "rapl: the {} dies of {} read the same {} counter: reporting it once for the package ({})",
                group.len(),
                group[0].resource,
                group[0].domain,
                group.iter().map(|r| r.origin.as_str()).collect::<Vec<_>>().join(", ")
            );
            group.truncate(1);
            for r in &mut group {
                r.die = None;
            }
        }
        kept.extend(group);
    }
    kept
}

fn dies_share_a_counter(group: &mut [DomainReader]) -> bool {
    for _ in 0..SHARED_COUNTER_ROUNDS {
        let Ok(values) = group
            .iter_mut()
            .map(DomainReader::peek_raw)
            .collect::<io::Result<Vec<u64>>>()
        else {
            return false;
        };
        if values[0] != 0 && values.iter().all(|v| *v == values[0]) {
            return true;
        }
    }
    false
}

/// The managed source of the plugin.
pub struct EnergySource {
    metric: MetricId,
    domains: Vec<DomainReader>,
}

impl EnergySource {
    /// A source emitting `metric` for each of `domains`.
    pub fn new(metric: MetricId, domains: Vec<DomainReader>) -> Self {
        Self { metric, domains }
    }
}

/// Some counters could not be read during one poll.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}", .failures.join("; "))]
pub struct ReadFailures {
    /// One line per failed counter: where, and the error.
    pub failures: Vec<String>,
}

impl Source for EnergySource {
    fn poll(
        &mut self,
        into: &mut MeasurementBuffer,
        timestamp: Timestamp,
    ) -> Result<(), PollError> {
        let mut failures = Vec::new();
        for d in &mut self.domains {
            match d.read_consumed_joules() {
                Ok(Some(joules)) => {
                    let mut attributes = vec![(
                        Cow::Borrowed("domain"),
                        AttributeValue::Str(Cow::Borrowed(d.domain.as_str())),
                    )];
                    if let Some(die) = d.die {
                        attributes.push((Cow::Borrowed("die"), AttributeValue::U64(die.into())));
                    }
                    into.push(MeasurementPoint {
                        timestamp,
                        metric: self.metric,
                        resource: d.resource.clone(),
                        consumer: ResourceConsumer::LocalMachine,
                        value: MeasurementValue::F64(joules),
                        attributes: attributes.into(),
                    })
                }
                Ok(None) => {}
                // The counter keeps its previous value: the next good read
                // reports everything consumed since, so nothing is lost.
                Err(e) => failures.push(format!("{}: {e}", d.origin)),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(PollError::transient(ReadFailures { failures }))
        }
    }
}
