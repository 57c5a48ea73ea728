//! Energy consumed between two reads of a cumulative counter, wraps corrected.
//!
//! Sensors give a running total that wraps: RAPL's powercap `energy_uj`
//! goes back to zero after `max_energy_range_uj`, perf's count after 2^64
//! units of 2^-32 J (the kernel extends the 32-bit hardware register; 2^32 J
//! is about 166 days at 300 W), hwmon's `energy*_input` after 2^64 µJ (or
//! earlier where a driver keeps a narrower register). The consumed energy is
//! the difference of two reads, plus the range when the counter went
//! backwards. Only one wrap per interval can be seen, which is why a plugin
//! warns when the poll interval is close to the wrap period.
//!
//! A counter can also go backwards without wrapping: powercap's after a
//! reset (driver reload, firmware), perf's by a little when the kernel's
//! signed 32-bit delta of the register comes out negative. Taken for a wrap,
//! either would add energy never consumed (up to the whole range, ~4.3 GJ
//! for perf). So a backward step is a wrap only when the energy it implies
//! fits the caller's bound (elapsed time × highest power); otherwise the
//! counter is re-primed at the new value.
//!
//! What a reading is worth is decided here too ([`CounterTruth`]): a
//! package or psys counter that stops advancing (a hypervisor's migration,
//! firmware) is *frozen*, and its intervals are not measured, not 0 J; an
//! advance larger than the domain can draw in the interval is *implausible*
//! and skipped. Wraps, resets, freezes and jumps: one place for the rules
//! that say whether a counter's figure is true.

use std::time::Duration;

/// Where a counter wraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrap {
    /// The counter takes values in `0..=max` and restarts at 0
    /// (powercap: `max` is `max_energy_range_uj`).
    AtMax(u64),
    /// The counter is 64 bits wide (perf).
    At64Bits,
}

/// The amount a counter advanced from `previous` to `current`.
///
/// When the counter went backwards it wrapped once: for powercap the result
/// is `current + max - previous`, as the kernel documents the range.
pub fn advance(previous: u64, current: u64, wrap: Wrap) -> u64 {
    if current >= previous {
        return current - previous;
    }
    match wrap {
        // saturating: a `previous` above `max` is a kernel inconsistency, not a reason to panic
        Wrap::AtMax(max) => max.saturating_sub(previous).saturating_add(current),
        Wrap::At64Bits => current.wrapping_sub(previous),
    }
}

/// Whether the counter went backwards from `previous` to `current`: below
/// it for a bounded counter; a negative signed difference for a 64-bit one
/// (a real 64-bit wrap gives a small positive difference modulo 2^64).
pub fn went_backwards(previous: u64, current: u64, wrap: Wrap) -> bool {
    match wrap {
        Wrap::AtMax(_) => current < previous,
        Wrap::At64Bits => current.wrapping_sub(previous) > i64::MAX as u64,
    }
}

/// What one new raw value of a counter means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// The first value (or the first after a reset): nothing to report yet.
    Primed,
    /// The counter advanced by this many units since the previous value
    /// (one wrap included, when it wrapped).
    Advanced(u64),
    /// The counter went backwards by more than a wrap can explain: it was
    /// reset. `implied` is the advance a wrap would have meant. The counter
    /// is primed at the new value.
    Reset {
        /// The units a wrap would have added.
        implied: u64,
    },
}

/// A counter that remembers its last value and reports what it advanced.
#[derive(Debug, Clone)]
pub struct EnergyCounter {
    previous: Option<u64>,
    wrap: Wrap,
    wraps_seen: u64,
    resets_seen: u64,
}

impl EnergyCounter {
    /// A counter not yet primed.
    pub fn new(wrap: Wrap) -> Self {
        Self {
            previous: None,
            wrap,
            wraps_seen: 0,
            resets_seen: 0,
        }
    }

    /// Records a new raw value. `max_wrap_units` is the most the counter can
    /// have advanced since the previous value (elapsed time × highest
    /// power, in the counter's units): a backward step is a wrap only when
    /// the advance it implies is not above it.
    pub fn update(&mut self, current: u64, max_wrap_units: u64) -> Reading {
        let Some(previous) = self.previous.replace(current) else {
            return Reading::Primed;
        };
        let advanced = advance(previous, current, self.wrap);
        if went_backwards(previous, current, self.wrap) {
            if advanced > max_wrap_units {
                self.resets_seen += 1;
                return Reading::Reset { implied: advanced };
            }
            self.wraps_seen += 1;
        }
        Reading::Advanced(advanced)
    }

    /// Whether the counter has a value to compute the next difference from.
    pub fn is_primed(&self) -> bool {
        self.previous.is_some()
    }

    /// How many times the counter was seen wrapping.
    pub fn wraps_seen(&self) -> u64 {
        self.wraps_seen
    }

    /// How many times the counter went backwards by more than a wrap.
    pub fn resets_seen(&self) -> u64 {
        self.resets_seen
    }

    /// The last value read, if any.
    pub fn previous(&self) -> Option<u64> {
        self.previous
    }
}

/// Why an interval's energy is not known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unmeasured {
    /// The counter did not advance for longer than a real one can stay still.
    Frozen,
    /// The counter advanced by more than the domain can draw in the interval.
    Implausible {
        /// The energy the advance would mean, J.
        joules: f64,
        /// The most the domain could have drawn, J.
        bound_j: f64,
    },
    /// The counter went back by more than a wrap can explain (see [`Reading::Reset`]).
    Reset,
}

impl Unmeasured {
    /// The value of the `reason` attribute.
    pub fn as_str(&self) -> &'static str {
        match self {
            Unmeasured::Frozen => "frozen",
            Unmeasured::Implausible { .. } => "implausible",
            Unmeasured::Reset => "reset",
        }
    }
}

/// What one reading of a counter is worth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// The first reading (or the first after a reset): the start of the next interval.
    Start,
    /// The energy consumed over the interval, J.
    Consumed(f64),
    /// The interval's energy is not known.
    Unmeasured(Unmeasured),
}

/// A change in a counter's state worth one line in the log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transition {
    /// The counter has not advanced for `still_for`: from now on frozen.
    Froze {
        /// How long it has not advanced.
        still_for: Duration,
    },
    /// A frozen counter advances again, after `still_for` without advancing.
    Thawed {
        /// How long it did not advance.
        still_for: Duration,
    },
}

/// Extra time allowed over an interval when bounding its energy: RAPL
/// updates its register about every millisecond, so an interval read
/// between two updates can carry a few milliseconds more.
const UPDATE_SLACK: Duration = Duration::from_millis(10);

/// How much more than its highest power a domain's advance may mean before
/// it is implausible: constraints give the long-term limit, and short-term
/// boosts (PL2) exceed it for seconds. Real jumps (a stale counter catching
/// up after a migration) are orders of magnitude larger.
const JUMP_FACTOR: f64 = 2.0;

/// Whether a counter's readings are true, reading after reading.
#[derive(Debug, Clone, Default)]
pub struct CounterTruth {
    /// How long the counter has not advanced.
    still_for: Duration,
    frozen: bool,
    frozen_intervals: u64,
    implausible_intervals: u64,
}

impl CounterTruth {
    /// A counter with nothing judged yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Judges `reading`, taken `elapsed` after the previous one.
    /// `freeze_after`: how long a counter that must count (package, psys)
    /// may stay still before it is frozen (`None`: never frozen, for
    /// domains that may legitimately stay at 0, or with the check off).
    /// `max_power_w` bounds a plausible advance.
    pub fn judge(
        &mut self,
        reading: Reading,
        joules_per_unit: f64,
        elapsed: Duration,
        freeze_after: Option<Duration>,
        max_power_w: f64,
    ) -> (Verdict, Option<Transition>) {
        match reading {
            Reading::Primed => {
                self.still_for = Duration::ZERO;
                (Verdict::Start, None)
            }
            Reading::Reset { .. } => {
                self.still_for = Duration::ZERO;
                (Verdict::Unmeasured(Unmeasured::Reset), None)
            }
            Reading::Advanced(0) => {
                self.still_for = self.still_for.saturating_add(elapsed);
                let Some(limit) = freeze_after else {
                    return (Verdict::Consumed(0.0), None);
                };
                if self.still_for < limit {
                    return (Verdict::Consumed(0.0), None);
                }
                self.frozen_intervals += 1;
                let transition = (!self.frozen).then_some(Transition::Froze {
                    still_for: self.still_for,
                });
                self.frozen = true;
                (Verdict::Unmeasured(Unmeasured::Frozen), transition)
            }
            Reading::Advanced(units) => {
                let transition = self.frozen.then_some(Transition::Thawed {
                    still_for: self.still_for,
                });
                self.frozen = false;
                self.still_for = Duration::ZERO;
                let joules = units as f64 * joules_per_unit;
                let bound_j =
                    JUMP_FACTOR * max_power_w * elapsed.saturating_add(UPDATE_SLACK).as_secs_f64();
                if joules > bound_j {
                    self.implausible_intervals += 1;
                    return (
                        Verdict::Unmeasured(Unmeasured::Implausible { joules, bound_j }),
                        transition,
                    );
                }
                (Verdict::Consumed(joules), transition)
            }
        }
    }

    /// Whether the counter is frozen now.
    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    /// Intervals judged frozen so far.
    pub fn frozen_intervals(&self) -> u64 {
        self.frozen_intervals
    }

    /// Intervals whose advance was implausible so far.
    pub fn implausible_intervals(&self) -> u64 {
        self.implausible_intervals
    }
}

/// The shortest time a powercap counter with range `max_energy_range_uj`
/// takes to wrap at `max_power_uw` (the highest power the domain can draw).
/// `None` when the power is zero (no bound to reason with).
pub fn shortest_wrap_time(max_energy_range_uj: u64, max_power_uw: u64) -> Option<Duration> {
    if max_power_uw == 0 {
        return None;
    }
    // µJ / µW = s
    Some(Duration::from_secs_f64(
        max_energy_range_uj as f64 / max_power_uw as f64,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANY: u64 = u64::MAX;

    #[test]
    fn first_update_primes_and_reports_nothing() {
        let mut c = EnergyCounter::new(Wrap::AtMax(1000));
        assert_eq!(c.update(10, ANY), Reading::Primed);
        assert!(c.is_primed());
        assert_eq!(c.update(15, ANY), Reading::Advanced(5));
        assert_eq!(c.update(15, ANY), Reading::Advanced(0));
    }

    #[test]
    fn powercap_wrap_adds_the_range() {
        let mut c = EnergyCounter::new(Wrap::AtMax(1000));
        c.update(990, ANY);
        // 990 -> 1000 (max) is 10, then 0 -> 5 is 5: new + range - prev
        assert_eq!(c.update(5, 15), Reading::Advanced(15));
        assert_eq!(c.wraps_seen(), 1);
    }

    #[test]
    fn a_backward_step_too_large_for_a_wrap_is_a_reset() {
        // powercap reset: 990 -> 5 would be a wrap of 15 units, but at most
        // 14 fit the elapsed time: re-primed at 5.
        let mut c = EnergyCounter::new(Wrap::AtMax(1000));
        c.update(990, ANY);
        assert_eq!(c.update(5, 14), Reading::Reset { implied: 15 });
        assert_eq!((c.wraps_seen(), c.resets_seen()), (0, 1));
        assert_eq!(c.update(8, 14), Reading::Advanced(3));
    }

    #[test]
    fn a_perf_count_stepping_back_is_a_reset_and_a_64_bit_wrap_is_not() {
        let mut c = EnergyCounter::new(Wrap::At64Bits);
        c.update(1 << 40, ANY);
        // steps back by 1000 counts: wrapping_sub would say 2^64 - 1000
        let bound = 500u64 << 32; // 500 J in 2^-32 J units
        assert_eq!(
            c.update((1 << 40) - 1000, bound),
            Reading::Reset {
                implied: u64::MAX - 999
            }
        );
        assert_eq!(c.update((1 << 40) + 24, bound), Reading::Advanced(1024));
        // a real 64-bit wrap is a small forward step modulo 2^64
        let mut c = EnergyCounter::new(Wrap::At64Bits);
        c.update(u64::MAX - 1, bound);
        assert_eq!(c.update(3, bound), Reading::Advanced(5));
        assert!(!went_backwards(u64::MAX - 1, 3, Wrap::At64Bits));
        assert!(went_backwards(3, 2, Wrap::At64Bits));
    }

    #[test]
    fn perf_counters_wrap_at_64_bits() {
        assert_eq!(advance(u64::MAX - 1, 3, Wrap::At64Bits), 5);
        assert_eq!(advance(7, 9, Wrap::At64Bits), 2);
    }

    #[test]
    fn inconsistent_previous_above_range_does_not_panic() {
        assert_eq!(advance(2000, 5, Wrap::AtMax(1000)), 5);
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_still_counter_is_frozen_once_past_the_limit_and_thaws_when_it_advances() {
        let mut t = CounterTruth::new();
        let limit = Some(100 * MS);
        let j = 1e-6;
        assert_eq!(
            t.judge(Reading::Primed, j, MS, limit, 500.0).0,
            Verdict::Start
        );
        // still for 60 ms: a real counter may not have updated yet, 0 J
        assert_eq!(
            t.judge(Reading::Advanced(0), j, 60 * MS, limit, 500.0),
            (Verdict::Consumed(0.0), None)
        );
        // still for 120 ms in all: frozen, said once
        assert_eq!(
            t.judge(Reading::Advanced(0), j, 60 * MS, limit, 500.0),
            (
                Verdict::Unmeasured(Unmeasured::Frozen),
                Some(Transition::Froze {
                    still_for: 120 * MS
                })
            )
        );
        assert_eq!(
            t.judge(Reading::Advanced(0), j, 60 * MS, limit, 500.0),
            (Verdict::Unmeasured(Unmeasured::Frozen), None)
        );
        assert!(t.is_frozen());
        assert_eq!(t.frozen_intervals(), 2);
        // 5 J in 100 ms: counts again
        let (v, tr) = t.judge(Reading::Advanced(5_000_000), j, 100 * MS, limit, 500.0);
        assert_eq!(v, Verdict::Consumed(5.0));
        assert_eq!(
            tr,
            Some(Transition::Thawed {
                still_for: 180 * MS
            })
        );
        assert!(!t.is_frozen());
    }

    #[test]
    fn domains_that_may_stay_at_zero_are_never_frozen() {
        let mut t = CounterTruth::new();
        for _ in 0..10 {
            assert_eq!(
                t.judge(
                    Reading::Advanced(0),
                    1.0,
                    Duration::from_secs(1),
                    None,
                    500.0
                ),
                (Verdict::Consumed(0.0), None)
            );
        }
    }

    #[test]
    fn an_advance_beyond_twice_the_highest_power_is_implausible() {
        let mut t = CounterTruth::new();
        // 100 W bound over 1 s (+10 ms): 202 J plausible, 203 J not.
        assert_eq!(
            t.judge(
                Reading::Advanced(202),
                1.0,
                Duration::from_secs(1),
                None,
                100.0
            )
            .0,
            Verdict::Consumed(202.0)
        );
        match t
            .judge(
                Reading::Advanced(203),
                1.0,
                Duration::from_secs(1),
                None,
                100.0,
            )
            .0
        {
            Verdict::Unmeasured(Unmeasured::Implausible { joules, bound_j }) => {
                assert_eq!(joules, 203.0);
                assert!((bound_j - 202.0).abs() < 1e-9);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(t.implausible_intervals(), 1);
        assert_eq!(
            t.judge(Reading::Reset { implied: 9 }, 1.0, MS, None, 100.0)
                .0,
            Verdict::Unmeasured(Unmeasured::Reset)
        );
    }

    #[test]
    fn wrap_time_is_range_over_power() {
        // 262 143 328 850 µJ at 500 W wraps after about 524 s
        let t = shortest_wrap_time(262_143_328_850, 500_000_000).unwrap();
        assert_eq!(t.as_secs(), 524);
        assert_eq!(shortest_wrap_time(1, 0), None);
    }
}
