//! Energy over a poll interval, from the driver's counter or from power.
//!
//! [`EnergyCounter`] turns NVML's total-energy counter (mJ since the driver
//! was loaded) into joules per interval. When the counter is not supported
//! (before Volta) the source integrates power readings with
//! [`alumet_energy::PowerIntegrator`], as every power-only sensor does.

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
