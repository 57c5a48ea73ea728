//! What the attribution did: counters for tests and logs, the rule that
//! thins repeated warnings, and the summary logged when the pipeline stops.
//!
//! Every part of the attribution (the transform, the process level, whole
//! nodes) counts here, so this module depends on none of them.

/// Counters of what the transform did, for tests and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttributionStats {
    /// Whole-node intervals longer than `NODE_HOLD_NS` (their shares come
    /// from the part that activity still covers).
    pub node_intervals_beyond_hold: u64,
    /// Energy intervals whose energy was shared among processes.
    pub intervals_attributed: u64,
    /// Of those, the ones that activity data covered only in part (the
    /// shares then come from the covered part).
    pub intervals_partially_covered: u64,
    /// Intervals with energy to share but no process activity over them.
    pub intervals_unattributed: u64,
    /// Intervals with nothing to share (no dynamic energy).
    pub intervals_without_dynamic_energy: u64,
    /// Energy points dropped because they arrived after the interval they
    /// belong to had been attributed (or twice).
    pub energy_points_too_late: u64,
    /// Energy values that were NaN, infinite or negative (interval skipped).
    pub invalid_energy_values: u64,
    /// Intervals the sensor did not measure (nothing to attribute).
    pub intervals_unmeasured: u64,
    /// First points of a domain that carried energy over an interval whose
    /// start is unknown (reported as unattributed, reason
    /// `interval_start_unknown`).
    pub energy_with_unknown_start: u64,
    /// Activity values that were NaN, infinite or negative (ignored).
    pub invalid_activity_values: u64,
}

impl AttributionStats {
    /// Logs the counters in one line (when the transform finishes).
    pub(crate) fn log_summary(&self) {
        let s = self;
        log::info!(
            "energy-attribution: {} energy intervals attributed ({} only partly covered by CPU data), {} unattributed, {} without dynamic energy, {} not measured, {} with an unknown start; {} late energy points dropped, {} invalid energy values, {} invalid activity values",
            s.intervals_attributed,
            s.intervals_partially_covered,
            s.intervals_unattributed,
            s.intervals_without_dynamic_energy,
            s.intervals_unmeasured,
            s.energy_with_unknown_start,
            s.energy_points_too_late,
            s.invalid_energy_values,
            s.invalid_activity_values
        );
    }
}

/// Logs the 1st, 2nd, 4th, 8th... occurrence of something that may repeat at every poll.
pub(crate) fn should_log(count: u64) -> bool {
    count.is_power_of_two()
}
