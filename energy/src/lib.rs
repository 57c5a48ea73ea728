//! How a sensor's readings become joules, in one place for every energy
//! plugin: cumulative counters that wrap, reset, freeze or jump
//! ([`counter`]: rapl, hwmon), and power readings integrated over the
//! uneven intervals between polls ([`integrate`]: nvidia before Volta,
//! hwmon power channels, Redfish), and the metric for intervals that were
//! not measured ([`metric`]).

pub mod counter;
pub mod integrate;
pub mod metric;

pub use counter::{CounterTruth, EnergyCounter, Reading, Transition, Unmeasured, Verdict, Wrap};
pub use integrate::PowerIntegrator;
pub use metric::{unmeasured_metric, EnergyMetricIds, UNMEASURED_METRIC_NAME};
