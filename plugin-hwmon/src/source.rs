//! The source: reads every channel at each poll and emits its power and
//! the energy of the interval since the previous poll.
//!
//! Energy counters go through [`EnergyCounter`] and [`CounterTruth`] (wraps,
//! resets and implausible advances, as for RAPL); powers through a
//! [`PowerIntegrator`] over the polls' own times. A reading that is not a
//! number, is negative or above `max_power_w`, or cannot be read breaks a
//! channel's chain: the interval that ends at it and the one after it are
//! reported as `energy_unmeasured_time`, never as 0 J, so that every
//! interval of a channel is either energy or unmeasured time, never both.
//! Each channel says so once in the log (then at debug level).

use std::borrow::Cow;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use alumet::measurement::{
    AttributeValue, MeasurementBuffer, MeasurementPoint, MeasurementValue, ResourceConsumer,
    Timestamp,
};
use alumet::metrics::MetricId;
use alumet::pipeline::{PollError, Source};
use alumet_energy::{CounterTruth, EnergyCounter, PowerIntegrator, Reading, Verdict, Wrap};
use alumet_kernelfs::file::{KernelFile, ReadBuf};
use alumet_kernelfs::host::Clock;

use crate::discovery::{Channel, ChannelKind, Role};

/// Joules per unit of an `energy*_input` counter (µJ).
const JOULES_PER_MICROJOULE: f64 = 1e-6;

/// The metrics the source emits (the ids every power sensor's source has).
pub use alumet_energy::EnergyMetricIds as SourceMetrics;

/// A value read from a channel.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    /// A power, W.
    Watts(f64),
    /// A counter, µJ.
    Microjoules(u64),
}

/// Why a reading is not used.
#[derive(Debug)]
enum Bad {
    /// The file could not be read.
    Unreadable(io::Error),
    /// Not a non-negative whole number.
    Invalid(String),
    /// A power above the configured bound, W.
    Implausible(f64),
}

impl Bad {
    /// The `reason` attribute.
    fn reason(&self) -> &'static str {
        match self {
            Bad::Unreadable(_) => "unreadable",
            Bad::Invalid(_) => "invalid",
            Bad::Implausible(_) => "implausible",
        }
    }

    fn describe(&self, max_power_w: f64) -> String {
        match self {
            Bad::Unreadable(e) => format!("cannot be read ({e})"),
            Bad::Invalid(text) => format!("reads {text:?}, not a non-negative whole number"),
            Bad::Implausible(w) => {
                format!("reads {w:.3} W, above max_power_w ({max_power_w} W)")
            }
        }
    }
}

/// A file read again and again through a kept descriptor.
struct ValueFile {
    file: KernelFile,
}

impl ValueFile {
    fn new(path: std::path::PathBuf) -> Self {
        Self {
            file: KernelFile::new(path, true),
        }
    }

    /// The file's integer: hwmon values are decimal integers, signed for
    /// some drivers' currents and powers, up to 2^64 - 1 for energy counters.
    fn read(&mut self, buf: &mut ReadBuf) -> Result<i128, Bad> {
        self.file.read_into(buf).map_err(Bad::Unreadable)?;
        let text = String::from_utf8_lossy(buf.bytes());
        let text = text.trim();
        text.parse()
            .map_err(|_| Bad::Invalid(alumet::limits::shown(text)))
    }
}

/// The files of one channel.
enum Files {
    Energy(ValueFile),
    Power(ValueFile),
    VoltageCurrent {
        voltage: ValueFile,
        current: ValueFile,
    },
}

/// A non-negative integer from `raw`, else [`Bad::Invalid`].
fn non_negative(raw: i128) -> Result<u64, Bad> {
    u64::try_from(raw).map_err(|_| Bad::Invalid(raw.to_string()))
}

/// A power, voltage or current register read as all ones is a firmware's
/// "no reading" (0xFFFFFFFF; also 0xFFFF for the 16-bit registers of INA
/// rails' volts and amps), not a value: 4 295 W would pass a server's
/// `max_power_w`.
fn not_all_ones(raw: u64, sixteen_bit: bool) -> Result<u64, Bad> {
    if matches!(raw, 0xFFFF_FFFF | u64::MAX) || (sixteen_bit && raw == 0xFFFF) {
        return Err(Bad::Invalid(format!("{raw} (all bits set: no reading)")));
    }
    Ok(raw)
}

impl Files {
    fn read(&mut self, buf: &mut ReadBuf, max_power_w: f64) -> Result<Value, Bad> {
        let watts = match self {
            Files::Energy(f) => return Ok(Value::Microjoules(non_negative(f.read(buf)?)?)),
            // µW
            Files::Power(f) => not_all_ones(non_negative(f.read(buf)?)?, false)? as f64 * 1e-6,
            // mV × mA = µW
            Files::VoltageCurrent { voltage, current } => {
                let mv = not_all_ones(non_negative(voltage.read(buf)?)?, true)?;
                let ma = not_all_ones(non_negative(current.read(buf)?)?, true)?;
                mv as f64 * ma as f64 * 1e-6
            }
        };
        if watts > max_power_w {
            return Err(Bad::Implausible(watts));
        }
        Ok(Value::Watts(watts))
    }
}

/// How a channel turns readings into energy.
enum Energy {
    Counter {
        counter: EnergyCounter,
        truth: CounterTruth,
    },
    Integrated(PowerIntegrator),
    /// Power only (its energy is another channel's).
    None,
}

/// One channel and its state between polls.
pub struct ChannelReader {
    sensor: String,
    origin: String,
    files: Files,
    energy: Energy,
    attributes: Vec<(Cow<'static, str>, AttributeValue)>,
    resource: alumet::measurement::Resource,
    /// Whether a poll has read (or tried to read) the channel: the time
    /// base of the next interval.
    seen: bool,
    /// Why the previous reading was not used: the next good one starts a
    /// new chain, its interval unmeasured for that reason.
    broken: Option<&'static str>,
    warned: bool,
}

impl ChannelReader {
    /// A reader of `channel`, or `None` when it is not read.
    pub fn new(channel: &Channel) -> Option<Self> {
        let energy = match (&channel.role, &channel.kind) {
            (Role::Skipped { .. }, _) => return None,
            (Role::PowerOnly { .. }, _) => Energy::None,
            (Role::Reported, ChannelKind::Energy { .. }) => Energy::Counter {
                // hwmon's energy*_input are 64-bit µJ counts (drivers extend
                // narrower registers); a backward step that does not fit a
                // 64-bit wrap is a reset.
                counter: EnergyCounter::new(Wrap::At64Bits),
                truth: CounterTruth::new(),
            },
            (Role::Reported, _) => Energy::Integrated(PowerIntegrator::new()),
        };
        let (files, origin) = match &channel.kind {
            ChannelKind::Energy { file } => (
                Files::Energy(ValueFile::new(file.clone())),
                file.display().to_string(),
            ),
            ChannelKind::Power { file, .. } => (
                Files::Power(ValueFile::new(file.clone())),
                file.display().to_string(),
            ),
            ChannelKind::VoltageCurrent { voltage, current } => (
                Files::VoltageCurrent {
                    voltage: ValueFile::new(voltage.clone()),
                    current: ValueFile::new(current.clone()),
                },
                format!("{} x {}", voltage.display(), current.display()),
            ),
        };
        Some(Self {
            sensor: channel.sensor(),
            origin,
            files,
            energy,
            attributes: attributes(channel),
            resource: channel.placement.resource.clone(),
            seen: false,
            broken: None,
            warned: false,
        })
    }

    /// Logs a reading not used: once as a warning, then at debug level.
    fn warn(&mut self, what: &str) {
        let message = format!("hwmon: {} ({}) {what}", self.sensor, self.origin);
        if self.warned {
            log::debug!("{message}");
        } else {
            log::warn!("{message}; skipped, its intervals reported as energy_unmeasured_time (further ones are logged at debug level)");
            self.warned = true;
        }
    }

    /// Reads the channel at `now` (`elapsed` after the previous poll) and
    /// pushes its points.
    fn poll(&mut self, ctx: &PollContext, buf: &mut ReadBuf, into: &mut MeasurementBuffer) {
        let first = !std::mem::replace(&mut self.seen, true);
        let value = self.files.read(buf, ctx.max_power_w);
        if let Ok(Value::Watts(w)) = value {
            self.push(ctx, into, ctx.metrics.power, w, None);
        }
        if matches!(self.energy, Energy::None) {
            if let Err(bad) = value {
                let what = bad.describe(ctx.max_power_w);
                self.warn(&what);
            }
            return;
        }
        let value = match value {
            Ok(v) => v,
            Err(bad) => {
                let what = bad.describe(ctx.max_power_w);
                self.warn(&what);
                self.restart();
                if !first {
                    self.push(
                        ctx,
                        into,
                        ctx.metrics.unmeasured,
                        ctx.elapsed_s(),
                        Some(bad.reason()),
                    );
                }
                self.broken = Some(bad.reason());
                return;
            }
        };
        if let Some(reason) = self.broken.take() {
            // The chain was broken at the previous poll: this interval has
            // no known start; this reading starts a new chain.
            self.push(
                ctx,
                into,
                ctx.metrics.unmeasured,
                ctx.elapsed_s(),
                Some(reason),
            );
            self.start(ctx, value);
            return;
        }
        match (&mut self.energy, value) {
            (Energy::Counter { counter, truth }, Value::Microjoules(raw)) => {
                // f64 to u64 saturates: a huge bound is simply no bound.
                let max_wrap_units =
                    (ctx.elapsed.as_secs_f64() * ctx.max_power_w / JOULES_PER_MICROJOULE) as u64;
                let reading = counter.update(raw, max_wrap_units);
                let (verdict, _) = truth.judge(
                    reading,
                    JOULES_PER_MICROJOULE,
                    ctx.elapsed,
                    None,
                    ctx.max_power_w,
                );
                match verdict {
                    // 0 J at a channel's first reading is not emitted.
                    Verdict::Start => {}
                    Verdict::Consumed(joules) => {
                        self.push(ctx, into, ctx.metrics.energy, joules, None)
                    }
                    Verdict::Unmeasured(why) => {
                        let what = match (why, reading) {
                            (_, Reading::Reset { implied }) => format!(
                                "went back by more than a wrap can explain ({:.0} J in {:.3} s): a reset, counting again from {raw}",
                                implied as f64 * JOULES_PER_MICROJOULE,
                                ctx.elapsed.as_secs_f64()
                            ),
                            (alumet_energy::Unmeasured::Implausible { joules, bound_j }, _) => format!(
                                "advanced by {joules:.3} J in {:.3} s, more than it can draw ({bound_j:.3} J at twice max_power_w)",
                                ctx.elapsed.as_secs_f64()
                            ),
                            (other, _) => other.as_str().to_owned(),
                        };
                        self.warn(&what);
                        self.push(
                            ctx,
                            into,
                            ctx.metrics.unmeasured,
                            ctx.elapsed_s(),
                            Some(why.as_str()),
                        );
                    }
                }
            }
            (Energy::Integrated(integrator), Value::Watts(w)) => {
                if let Some(joules) = integrator.update(ctx.at, w) {
                    self.push(ctx, into, ctx.metrics.energy, joules, None);
                }
            }
            // A channel's files give one kind of value.
            _ => {}
        }
    }

    /// Forgets the chain: the next good reading only starts one.
    fn restart(&mut self) {
        match &mut self.energy {
            Energy::Counter { counter, .. } => *counter = EnergyCounter::new(Wrap::At64Bits),
            Energy::Integrated(integrator) => integrator.reset(),
            Energy::None => {}
        }
    }

    /// Starts a new chain at `value`.
    fn start(&mut self, ctx: &PollContext, value: Value) {
        self.restart();
        match (&mut self.energy, value) {
            (Energy::Counter { counter, .. }, Value::Microjoules(raw)) => {
                counter.update(raw, 0);
            }
            (Energy::Integrated(integrator), Value::Watts(w)) => {
                integrator.update(ctx.at, w);
            }
            _ => {}
        }
    }

    fn push(
        &self,
        ctx: &PollContext,
        into: &mut MeasurementBuffer,
        metric: MetricId,
        value: f64,
        unmeasured: Option<&'static str>,
    ) {
        let mut attributes = self.attributes.clone();
        if let Some(reason) = unmeasured {
            attributes.push((
                Cow::Borrowed("reason"),
                AttributeValue::Str(Cow::Borrowed(reason)),
            ));
            attributes.push((
                Cow::Borrowed("energy_metric"),
                AttributeValue::Str(Cow::Borrowed(crate::ENERGY_METRIC_NAME)),
            ));
        }
        into.push(MeasurementPoint {
            timestamp: ctx.timestamp,
            metric,
            resource: self.resource.clone(),
            consumer: ResourceConsumer::LocalMachine,
            value: MeasurementValue::F64(value),
            attributes: attributes.into(),
        });
    }
}

/// The attributes every point of `channel` carries.
fn attributes(channel: &Channel) -> Vec<(Cow<'static, str>, AttributeValue)> {
    let s = |v: String| AttributeValue::Str(Cow::Owned(v));
    let mut a = vec![
        (
            Cow::Borrowed("domain"),
            AttributeValue::Str(Cow::Borrowed(channel.placement.domain.as_str())),
        ),
        (Cow::Borrowed("sensor"), s(channel.sensor())),
        (Cow::Borrowed("device"), s(channel.device.clone())),
    ];
    if let Some(label) = &channel.label {
        a.push((Cow::Borrowed("label"), s(label.clone())));
    }
    if let Some(d) = channel.part_of {
        a.push((
            Cow::Borrowed("part_of"),
            AttributeValue::Str(Cow::Borrowed(d.as_str())),
        ));
    }
    let integrated =
        channel.role == Role::Reported && !matches!(channel.kind, ChannelKind::Energy { .. });
    if integrated {
        a.push((Cow::Borrowed("integrated"), AttributeValue::Bool(true)));
    }
    if let ChannelKind::Power {
        averaging_interval_ms: Some(ms),
        ..
    } = channel.kind
    {
        a.push((
            Cow::Borrowed("averaging_interval_ms"),
            AttributeValue::U64(ms),
        ));
    }
    a
}

/// What every channel's poll shares.
struct PollContext {
    timestamp: Timestamp,
    /// The poll's time on the interval clock, as a timestamp for the
    /// integrator (which only uses differences).
    at: Timestamp,
    elapsed: Duration,
    max_power_w: f64,
    metrics: SourceMetrics,
}

impl PollContext {
    fn elapsed_s(&self) -> f64 {
        self.elapsed.as_secs_f64()
    }
}

/// The managed source of the plugin.
pub struct HwmonSource {
    metrics: SourceMetrics,
    channels: Vec<ChannelReader>,
    clock: Arc<dyn Clock>,
    max_power_w: f64,
    last_poll_ns: Option<u64>,
    buf: ReadBuf,
}

impl HwmonSource {
    /// A source reading `channels`, timing intervals with `clock` (the
    /// monotonic clock in the agent: a wall clock set back would stretch or
    /// cancel an interval), refusing powers above `max_power_w`.
    pub fn new(
        metrics: SourceMetrics,
        channels: Vec<ChannelReader>,
        clock: Arc<dyn Clock>,
        max_power_w: f64,
    ) -> Self {
        Self {
            metrics,
            channels,
            clock,
            max_power_w,
            last_poll_ns: None,
            buf: ReadBuf::with_capacity(64),
        }
    }
}

impl Source for HwmonSource {
    fn poll(
        &mut self,
        into: &mut MeasurementBuffer,
        timestamp: Timestamp,
    ) -> Result<(), PollError> {
        let now_ns = self.clock.now_ns();
        let elapsed = match self.last_poll_ns {
            // No time has passed since the previous poll: no interval to
            // report (two polls in the same instant).
            Some(previous) if now_ns <= previous => return Ok(()),
            Some(previous) => Duration::from_nanos(now_ns - previous),
            None => Duration::ZERO,
        };
        self.last_poll_ns = Some(now_ns);
        let ctx = PollContext {
            timestamp,
            at: Timestamp::from_unix_nanos(now_ns),
            elapsed,
            max_power_w: self.max_power_w,
            metrics: self.metrics,
        };
        for channel in &mut self.channels {
            channel.poll(&ctx, &mut self.buf, into);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_ones_is_no_reading() {
        assert!(
            not_all_ones(4_294_967_295, false).is_err(),
            "4 295 W of 0xFFFFFFFF"
        );
        assert!(not_all_ones(u64::MAX, false).is_err());
        assert_eq!(
            not_all_ones(65_535, false).ok(),
            Some(65_535),
            "65 mW may be real"
        );
        assert!(not_all_ones(65_535, true).is_err(), "a 16-bit INA register");
        assert_eq!(not_all_ones(250_000_000, false).ok(), Some(250_000_000));
    }
}
