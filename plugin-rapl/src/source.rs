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

use crate::domain::Domain;
use alumet_energy::counter::{CounterTruth, EnergyCounter, Reading, Transition, Verdict, Wrap};

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
    truth: CounterTruth,
    /// How long the counter may stay still before it is frozen (package
    /// and psys only: the others may legitimately stay at 0).
    freeze_after: Option<Duration>,
    implausible_warned: bool,
}

/// One reading of a domain: what it is worth, over how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DomainReading {
    /// The energy, or why it is not known.
    pub verdict: Verdict,
    /// The time since the previous reading (zero for the first).
    pub elapsed: Duration,
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
            truth: CounterTruth::new(),
            freeze_after: None,
            implausible_warned: false,
        }
    }

    /// The same reader, whose counter is taken as frozen once it has not
    /// advanced for `limit` (`None`: never). Only package and psys
    /// counters must count: the setting is ignored for the other domains.
    pub fn with_freeze_after(mut self, limit: Option<Duration>) -> Self {
        self.freeze_after = limit.filter(|_| self.domain.must_count());
        self
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

    /// Reads every candidate counter without updating anything (the
    /// start-up check compares such samples).
    pub fn sample_raw(&mut self) -> io::Result<Vec<u64>> {
        self.candidates
            .iter_mut()
            .map(|c| c.reader.read_raw())
            .collect()
    }

    /// Reads the counter once and judges the reading (see
    /// [`CounterTruth`]); logs a freeze, a thaw and an implausible advance.
    pub fn read(&mut self) -> io::Result<DomainReading> {
        let (reading, elapsed) = self.read_counter()?;
        let (verdict, transition) = self.truth.judge(
            reading,
            self.joules_per_unit,
            elapsed,
            self.freeze_after,
            self.max_power_w,
        );
        match transition {
            Some(Transition::Froze { still_for }) => log::warn!(
                "rapl: {} of {} ({}) has not counted for {:.3} s: frozen (a hypervisor's migration, firmware?); its intervals are reported as energy_unmeasured_time, not as 0 J, until it counts again",
                self.domain,
                self.resource,
                self.origin,
                still_for.as_secs_f64()
            ),
            Some(Transition::Thawed { still_for }) => log::info!(
                "rapl: {} of {} ({}) counts again after {:.3} s frozen",
                self.domain,
                self.resource,
                self.origin,
                still_for.as_secs_f64()
            ),
            None => {}
        }
        if let Verdict::Unmeasured(alumet_energy::counter::Unmeasured::Implausible {
            joules,
            bound_j,
        }) = verdict
        {
            let message = format!(
                "rapl: {} of {} ({}) advanced by {joules:.3} J in {:.3} s, more than it can draw ({bound_j:.3} J at twice {} W): skipped, reported as energy_unmeasured_time",
                self.domain,
                self.resource,
                self.origin,
                elapsed.as_secs_f64(),
                self.max_power_w
            );
            if self.implausible_warned {
                log::debug!("{message}");
            } else {
                log::warn!("{message} (further ones are logged at debug level)");
                self.implausible_warned = true;
            }
        }
        Ok(DomainReading { verdict, elapsed })
    }

    /// Reads the counter once: its raw reading (one candidate chosen) and
    /// the time since the previous read.
    fn read_counter(&mut self) -> io::Result<(Reading, Duration)> {
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
            return Ok((reading, elapsed));
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
        Ok((chosen, elapsed))
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
    metrics: SourceMetrics,
    domains: Vec<DomainReader>,
    /// The hypervisor's name when the counters are read inside a virtual
    /// machine (`unknown` when nothing names it): they then show the
    /// host's package, shared with other guests, and every point says so.
    virtual_machine: Option<AttributeValue>,
}

/// The metrics the source emits.
#[derive(Debug, Clone, Copy)]
pub struct SourceMetrics {
    /// `rapl_consumed_energy`.
    pub energy: MetricId,
    /// `energy_unmeasured_time`: intervals whose energy is not known.
    pub unmeasured: MetricId,
}

impl EnergySource {
    /// A source emitting `metrics` for each of `domains`.
    pub fn new(metrics: SourceMetrics, domains: Vec<DomainReader>) -> Self {
        Self {
            metrics,
            domains,
            virtual_machine: None,
        }
    }

    /// The same source, whose points say that they are seen from a virtual
    /// machine of `hypervisor`.
    pub fn seen_from_vm(mut self, hypervisor: Option<&str>) -> Self {
        self.virtual_machine = Some(AttributeValue::Str(Cow::Owned(
            hypervisor.unwrap_or("unknown").to_owned(),
        )));
        self
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
            let reading = match d.read() {
                Ok(r) => r,
                // The counter keeps its previous value: the next good read
                // reports everything consumed since, so nothing is lost.
                Err(e) => {
                    failures.push(format!("{}: {e}", d.origin));
                    continue;
                }
            };
            let mut attributes = vec![(
                Cow::Borrowed("domain"),
                AttributeValue::Str(Cow::Borrowed(d.domain.as_str())),
            )];
            if let Some(die) = d.die {
                attributes.push((Cow::Borrowed("die"), AttributeValue::U64(die.into())));
            }
            if let Some(vm) = &self.virtual_machine {
                attributes.push((Cow::Borrowed(VIRTUAL_MACHINE_ATTRIBUTE), vm.clone()));
            }
            let (metric, value) = match reading.verdict {
                // The first reading gives the start of the first interval:
                // a point of 0 J says when it began, so that the energy of
                // the first interval can be attributed like the others.
                Verdict::Start => (self.metrics.energy, 0.0),
                Verdict::Consumed(joules) => (self.metrics.energy, joules),
                Verdict::Unmeasured(why) => {
                    attributes.push((
                        Cow::Borrowed("reason"),
                        AttributeValue::Str(Cow::Borrowed(why.as_str())),
                    ));
                    attributes.push((
                        Cow::Borrowed("energy_metric"),
                        AttributeValue::Str(Cow::Borrowed(crate::METRIC_NAME)),
                    ));
                    (self.metrics.unmeasured, reading.elapsed.as_secs_f64())
                }
            };
            into.push(MeasurementPoint {
                timestamp,
                metric,
                resource: d.resource.clone(),
                consumer: ResourceConsumer::LocalMachine,
                value: MeasurementValue::F64(value),
                attributes: attributes.into(),
            });
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(PollError::transient(ReadFailures { failures }))
        }
    }
}

/// The attribute of points read inside a virtual machine: the hypervisor.
pub const VIRTUAL_MACHINE_ATTRIBUTE: &str = "virtual_machine";
