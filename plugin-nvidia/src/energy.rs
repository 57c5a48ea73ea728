//! Energy over a poll interval, from the driver's counter or from power.
//!
//! [`EnergyCounter`] turns NVML's total-energy counter (mJ since the driver
//! was loaded) into joules per interval. [`PowerIntegrator`] estimates the
//! same from two power readings when the counter is not supported (before
//! Volta), with the trapezoid rule over the poll timestamps it is given, so
//! the result depends only on its inputs.

use alumet::measurement::Timestamp;

/// Joules consumed between two reads of a cumulative mJ counter.
#[derive(Debug, Default, Clone)]
pub struct EnergyCounter {
    previous_mj: Option<u64>,
}

impl EnergyCounter {
    /// A counter that has not been read yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a reading has been taken (the next one gives a difference).
    pub fn is_primed(&self) -> bool {
        self.previous_mj.is_some()
    }

    /// Takes a new reading; returns the joules since the previous one.
    ///
    /// The first reading only primes. A reading below the previous one means
    /// the driver was reloaded and its counter restarted from zero: we cannot
    /// know what was consumed across the reload, so we prime again rather
    /// than report a negative or invented value.
    pub fn update(&mut self, total_mj: u64) -> Option<f64> {
        let previous = self.previous_mj.replace(total_mj)?;
        let delta_mj = total_mj.checked_sub(previous)?;
        Some(delta_mj as f64 / 1000.0)
    }
}

/// Joules estimated from power readings with the trapezoid rule.
#[derive(Debug, Default, Clone)]
pub struct PowerIntegrator {
    previous: Option<(Timestamp, u32)>,
}

impl PowerIntegrator {
    /// An integrator that has not seen a reading yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a reading has been taken (the next one gives a difference).
    pub fn is_primed(&self) -> bool {
        self.previous.is_some()
    }

    /// Takes the power `power_mw` read at `at`; returns the joules since the
    /// previous reading: mean of the two powers times the time between them.
    ///
    /// The first reading only primes. A reading at the same time as the
    /// previous one gives nothing (no time has passed) and one earlier than
    /// it (the wall clock was set back) primes again.
    pub fn update(&mut self, at: Timestamp, power_mw: u32) -> Option<f64> {
        let Some((previous_at, previous_mw)) = self.previous else {
            self.previous = Some((at, power_mw));
            return None;
        };
        if at < previous_at {
            self.previous = Some((at, power_mw));
            return None;
        }
        if at == previous_at {
            return None;
        }
        self.previous = Some((at, power_mw));
        let elapsed_ns = at.unix_nanos() - previous_at.unix_nanos();
        let sum_mw = u64::from(previous_mw) + u64::from(power_mw);
        // (sum_mw / 2) mW × elapsed_ns ns = sum_mw × elapsed_ns / 2e12 J.
        Some(sum_mw as f64 * elapsed_ns as f64 / 2e12)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_ms(ms: u64) -> Timestamp {
        Timestamp::from_unix_nanos(1_700_000_000_000_000_000 + ms * 1_000_000)
    }

    #[test]
    fn counter_delta_is_in_joules_and_exact() {
        let mut c = EnergyCounter::new();
        assert_eq!(c.update(1_000), None);
        assert_eq!(c.update(3_500), Some(2.5));
        assert_eq!(c.update(3_500), Some(0.0));
        assert_eq!(c.update(u64::MAX), Some((u64::MAX - 3_500) as f64 / 1000.0));
    }

    #[test]
    fn counter_going_backwards_reprimes() {
        let mut c = EnergyCounter::new();
        c.update(10_000);
        assert_eq!(c.update(400), None, "driver reload: no negative delta");
        assert_eq!(c.update(1_400), Some(1.0));
    }

    #[test]
    fn trapezoid_uses_the_given_timestamps() {
        let mut p = PowerIntegrator::new();
        assert_eq!(p.update(at_ms(0), 100_000), None);
        // (100 W + 200 W) / 2 × 0.5 s
        assert_eq!(p.update(at_ms(500), 200_000), Some(75.0));
        // (200 W + 200 W) / 2 × 0.25 s
        assert_eq!(p.update(at_ms(750), 200_000), Some(50.0));
    }

    #[test]
    fn trapezoid_first_reading_primes_and_time_going_back_reprimes() {
        let mut p = PowerIntegrator::new();
        assert_eq!(p.update(at_ms(1000), 50_000), None);
        assert_eq!(p.update(at_ms(1000), 60_000), None, "no time passed");
        assert_eq!(p.update(at_ms(900), 60_000), None, "clock set back");
        assert_eq!(p.update(at_ms(1900), 60_000), Some(60.0));
    }
}
