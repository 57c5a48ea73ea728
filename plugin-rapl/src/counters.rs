//! Energy consumed between two reads of a RAPL counter, wraps corrected.
//!
//! Both interfaces give a running total that wraps: powercap's `energy_uj`
//! goes back to zero after `max_energy_range_uj`, perf's count after 2^64
//! (the kernel extends the 32-bit hardware register). The consumed energy is
//! the difference of two reads, plus the range when the counter went
//! backwards. Only one wrap per interval can be seen, which is why the plugin
//! warns when the poll interval is close to the wrap period.

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

/// A counter that remembers its last value and reports what it advanced.
#[derive(Debug, Clone)]
pub struct EnergyCounter {
    previous: Option<u64>,
    wrap: Wrap,
    wraps_seen: u64,
}

impl EnergyCounter {
    /// A counter not yet primed.
    pub fn new(wrap: Wrap) -> Self {
        Self {
            previous: None,
            wrap,
            wraps_seen: 0,
        }
    }

    /// Records a new raw value. Returns how much the counter advanced since
    /// the previous value, or `None` on the first call (priming).
    pub fn update(&mut self, current: u64) -> Option<u64> {
        let previous = self.previous.replace(current)?;
        if current < previous {
            self.wraps_seen += 1;
        }
        Some(advance(previous, current, self.wrap))
    }

    /// Whether the counter has a value to compute the next difference from.
    pub fn is_primed(&self) -> bool {
        self.previous.is_some()
    }

    /// How many times the counter was seen going backwards.
    pub fn wraps_seen(&self) -> u64 {
        self.wraps_seen
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

    #[test]
    fn first_update_primes_and_reports_nothing() {
        let mut c = EnergyCounter::new(Wrap::AtMax(1000));
        assert_eq!(c.update(10), None);
        assert!(c.is_primed());
        assert_eq!(c.update(15), Some(5));
        assert_eq!(c.update(15), Some(0));
    }

    #[test]
    fn powercap_wrap_adds_the_range() {
        let mut c = EnergyCounter::new(Wrap::AtMax(1000));
        c.update(990);
        // 990 -> 1000 (max) is 10, then 0 -> 5 is 5: new + range - prev
        assert_eq!(c.update(5), Some(15));
        assert_eq!(c.wraps_seen(), 1);
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
