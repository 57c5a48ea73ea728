//! Joules from power readings, for sensors that give no energy counter.
//!
//! The trapezoid rule over the timestamps of the polls that read the power:
//! polls are not evenly spaced (a late tick, a slow BMC), so each interval
//! uses its own length, and the result depends only on the readings and
//! their timestamps (a fixture gives the same joules on any machine).

use alumet::measurement::Timestamp;

/// Joules estimated from power readings with the trapezoid rule.
#[derive(Debug, Default, Clone)]
pub struct PowerIntegrator {
    previous: Option<(Timestamp, f64)>,
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

    /// Forgets the previous reading: the next one only primes (after a
    /// reading that could not be taken, so that the gap is not integrated
    /// as if the power had been known).
    pub fn reset(&mut self) {
        self.previous = None;
    }

    /// Takes the power `power_w` (watts) read at `at`; returns the joules
    /// since the previous reading: mean of the two powers times the time
    /// between them.
    ///
    /// The first reading only primes. A reading at the same time as the
    /// previous one gives nothing (no time has passed) and one earlier than
    /// it (the wall clock was set back) primes again. A power that is not a
    /// finite, non-negative number is refused: it primes nothing and
    /// returns `None`, and the next reading starts again.
    pub fn update(&mut self, at: Timestamp, power_w: f64) -> Option<f64> {
        if !power_w.is_finite() || power_w < 0.0 {
            self.previous = None;
            return None;
        }
        let Some((previous_at, previous_w)) = self.previous else {
            self.previous = Some((at, power_w));
            return None;
        };
        if at < previous_at {
            self.previous = Some((at, power_w));
            return None;
        }
        if at == previous_at {
            return None;
        }
        self.previous = Some((at, power_w));
        let elapsed_ns = at.unix_nanos() - previous_at.unix_nanos();
        // (sum / 2) W × elapsed_ns ns = sum × elapsed_ns / 2e9 J.
        Some((previous_w + power_w) * elapsed_ns as f64 / 2e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_ms(ms: u64) -> Timestamp {
        Timestamp::from_unix_nanos(1_700_000_000_000_000_000 + ms * 1_000_000)
    }

    #[test]
    fn trapezoid_uses_the_given_timestamps() {
        let mut p = PowerIntegrator::new();
        assert_eq!(p.update(at_ms(0), 100.0), None);
        // (100 W + 200 W) / 2 × 0.5 s
        assert_eq!(p.update(at_ms(500), 200.0), Some(75.0));
        // (200 W + 200 W) / 2 × 0.25 s
        assert_eq!(p.update(at_ms(750), 200.0), Some(50.0));
    }

    #[test]
    fn first_reading_primes_and_time_going_back_reprimes() {
        let mut p = PowerIntegrator::new();
        assert_eq!(p.update(at_ms(1000), 50.0), None);
        assert_eq!(p.update(at_ms(1000), 60.0), None, "no time passed");
        assert_eq!(p.update(at_ms(900), 60.0), None, "clock set back");
        assert_eq!(p.update(at_ms(1900), 60.0), Some(60.0));
    }

    #[test]
    fn an_impossible_power_breaks_the_chain() {
        let mut p = PowerIntegrator::new();
        p.update(at_ms(0), 10.0);
        assert_eq!(p.update(at_ms(1000), f64::NAN), None);
        assert_eq!(p.update(at_ms(2000), -1.0), None);
        assert_eq!(p.update(at_ms(3000), 10.0), None, "primes again");
        assert_eq!(p.update(at_ms(4000), 10.0), Some(10.0));
        p.reset();
        assert!(!p.is_primed());
    }
}
