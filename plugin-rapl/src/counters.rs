//! Energy consumed between two reads of a RAPL counter, wraps corrected.
//!
//! Both interfaces give a running total that wraps: powercap's `energy_uj`
//! goes back to zero after `max_energy_range_uj`, perf's count after 2^64
//! units of 2^-32 J (the kernel extends the 32-bit hardware register; 2^32 J
//! is about 166 days at 300 W). The consumed energy is the difference of two
//! reads, plus the range when the counter went backwards. Only one wrap per
//! interval can be seen, which is why the plugin warns when the poll
//! interval is close to the wrap period.
//!
//! A counter can also go backwards without wrapping: powercap's after a
//! reset (driver reload, firmware), perf's by a little when the kernel's
//! signed 32-bit delta of the register comes out negative. Taken for a wrap,
//! either would add energy never consumed (up to the whole range, ~4.3 GJ
//! for perf). So a backward step is a wrap only when the energy it implies
//! fits the caller's bound (elapsed time × highest power); otherwise the
//! counter is re-primed at the new value.

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

    #[test]
    fn wrap_time_is_range_over_power() {
        // 262 143 328 850 µJ at 500 W wraps after about 524 s
        let t = shortest_wrap_time(262_143_328_850, 500_000_000).unwrap();
        assert_eq!(t.as_secs(), 524);
        assert_eq!(shortest_wrap_time(1, 0), None);
    }
}
