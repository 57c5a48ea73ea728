//! Facts about the running kernel that /proc values are expressed in
//! (clock ticks, page size) and the clock used to time poll intervals.
//!
//! They are gathered in [`HostParams`] so that fixture tests can pin them
//! (a fixture's CPU times are in ticks of a known rate) and drive time by hand.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// A monotonic clock, in nanoseconds from an arbitrary origin.
pub trait Clock: Send + Sync {
    /// The current time in nanoseconds.
    fn now_ns(&self) -> u64;
}

/// The real monotonic clock (immune to wall-clock jumps, so that a CPU usage
/// never divides by a negative or stretched interval).
#[derive(Debug)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A clock that moves only when told to, for tests and simulations.
#[derive(Debug, Default, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `ns` nanoseconds.
    pub fn advance_ns(&self, ns: u64) {
        self.0.fetch_add(ns, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Units of the kernel's /proc values, and the interval clock.
#[derive(Clone)]
pub struct HostParams {
    /// `USER_HZ`: the unit of CPU times in /proc/stat and /proc/PID/stat.
    pub clock_ticks_per_second: u64,
    /// The unit of the resident set size in /proc/PID/stat.
    pub page_size_bytes: u64,
    /// Times the interval between two polls.
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for HostParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostParams")
            .field("clock_ticks_per_second", &self.clock_ticks_per_second)
            .field("page_size_bytes", &self.page_size_bytes)
            .finish_non_exhaustive()
    }
}

impl HostParams {
    /// The values of this machine, from `sysconf`. USER_HZ is 100 on every
    /// mainstream Linux build, but it is a build option, so it is asked for.
    pub fn detect() -> Self {
        // SAFETY: sysconf only reads a configuration value.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        // SAFETY: as above.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Self {
            clock_ticks_per_second: u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or_else(
                || {
                    log::warn!("sysconf(_SC_CLK_TCK) failed; assuming 100 ticks per second");
                    100
                },
            ),
            page_size_bytes: u64::try_from(page)
                .ok()
                .filter(|&p| p > 0)
                .unwrap_or_else(|| {
                    log::warn!("sysconf(_SC_PAGESIZE) failed; assuming 4096-byte pages");
                    4096
                }),
            clock: Arc::new(MonotonicClock::new()),
        }
    }

    /// A simulated host for fixtures and simulations: USER_HZ 100, 4096-byte
    /// pages, and an interval clock driven by hand through the returned
    /// [`ManualClock`] (polls then see the intervals the test chooses).
    pub fn simulated() -> (Self, ManualClock) {
        let clock = ManualClock::new();
        let host = Self {
            clock_ticks_per_second: 100,
            page_size_bytes: 4096,
            clock: Arc::new(clock.clone()),
        };
        (host, clock)
    }

    /// Online CPUs according to `sysconf`, used when /proc/stat cannot say.
    pub fn online_cpus_fallback() -> u32 {
        // SAFETY: sysconf only reads a configuration value.
        let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        u32::try_from(n).ok().filter(|&n| n > 0).unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detected_values_are_positive_and_clock_moves_forward() {
        let host = HostParams::detect();
        assert!(host.clock_ticks_per_second > 0);
        assert!(host.page_size_bytes >= 512);
        let a = host.clock.now_ns();
        let b = host.clock.now_ns();
        assert!(b >= a);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new();
        let shared = c.clone();
        assert_eq!(c.now_ns(), 0);
        shared.advance_ns(1_000);
        assert_eq!(c.now_ns(), 1_000);
    }
}
