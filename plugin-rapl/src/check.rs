//! The start-up check: a counter is used only once it has shown that it
//! counts. Opening is not enough: virtual machines often expose a `power`
//! PMU or powercap zones whose counters open without error and read the
//! same value forever (the hypervisor does not pass the MSRs through).
//!
//! Every counter is sampled for up to a window (about 100 ms) without
//! loading the CPU: a real package or psys counter advances within a
//! millisecond or two even at idle (RAPL updates about every 1 ms), so on
//! real hardware the check ends after a few reads. Counters that did not
//! advance are dropped; [`Checked::counts`] says whether what is left can
//! stand for the CPU's energy (a package or psys counter that counts).

use std::fmt;
use std::time::{Duration, Instant};

use alumet::measurement::Resource;

use crate::domain::Domain;
use crate::source::DomainReader;

/// Time between two samples of the check: RAPL's update period.
const SAMPLE_PERIOD: Duration = Duration::from_millis(1);

/// A counter that did not advance during the check.
#[derive(Debug, Clone, PartialEq)]
pub struct SilentCounter {
    /// Its domain.
    pub domain: Domain,
    /// The resource it would have been reported on.
    pub resource: Resource,
    /// Where it is read (file, or event and CPU).
    pub origin: String,
    /// What was seen: `stayed at N`, or the read error.
    pub seen: String,
}

impl fmt::Display for SilentCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.origin, self.seen)
    }
}

/// The outcome of the check.
#[derive(Debug)]
pub struct Checked {
    /// Counters that advanced (all of them when the check is off).
    pub counting: Vec<DomainReader>,
    /// Counters that did not.
    pub silent: Vec<SilentCounter>,
    /// How long the counters were watched.
    pub window: Duration,
}

impl Checked {
    /// Whether the counters left can stand for the CPU's energy: a package
    /// or psys counter counts (or, where there is none of those, any
    /// counter does).
    pub fn counts(&self) -> bool {
        let any_must_count = self
            .counting
            .iter()
            .map(DomainReader::domain)
            .chain(self.silent.iter().map(|s| s.domain))
            .any(Domain::must_count);
        if any_must_count {
            self.counting.iter().any(|r| r.domain().must_count())
        } else {
            !self.counting.is_empty()
        }
    }
}

/// Samples every counter of `readers` until each has advanced or `window`
/// has passed (a zero window checks nothing). Reading a counter here does
/// not prime it: the source's first poll does.
pub fn check_counting(readers: Vec<DomainReader>, window: Duration) -> Checked {
    if window.is_zero() {
        return Checked {
            counting: readers,
            silent: Vec::new(),
            window,
        };
    }
    let start = Instant::now();
    let mut states: Vec<(DomainReader, Result<Vec<u64>, String>, bool)> = readers
        .into_iter()
        .map(|mut r| {
            let first = r.sample_raw().map_err(|e| e.to_string());
            (r, first, false)
        })
        .collect();
    loop {
        let waiting = states
            .iter()
            .any(|(_, first, advanced)| first.is_ok() && !advanced);
        if !waiting || start.elapsed() >= window {
            break;
        }
        std::thread::sleep(SAMPLE_PERIOD);
        for (reader, first, advanced) in &mut states {
            let Ok(initial) = first else { continue };
            if *advanced {
                continue;
            }
            match reader.sample_raw() {
                Ok(now) => *advanced = now != *initial,
                Err(e) => *first = Err(e.to_string()),
            }
        }
    }
    let mut checked = Checked {
        counting: Vec::new(),
        silent: Vec::new(),
        window,
    };
    for (reader, first, advanced) in states {
        if advanced {
            checked.counting.push(reader);
            continue;
        }
        let seen = match first {
            Ok(values) => match values.as_slice() {
                [v] => format!("stayed at {v}"),
                many => format!(
                    "stayed at {}",
                    many.iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
            Err(e) => format!("cannot be read: {e}"),
        };
        checked.silent.push(SilentCounter {
            domain: reader.domain(),
            resource: reader.resource().clone(),
            origin: reader.origin().to_owned(),
            seen,
        });
    }
    checked
}
