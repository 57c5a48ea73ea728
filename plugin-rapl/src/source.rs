//! The source: reads every domain's counter and emits the energy consumed
//! since the previous poll.
//!
//! Both interfaces end up here as a list of [`DomainReader`]s, so the wrap
//! correction and the points are the same whichever interface was chosen.

use std::borrow::Cow;
use std::fmt;
use std::io;

use alumet::measurement::{
    AttributeValue, MeasurementBuffer, MeasurementPoint, MeasurementValue, Resource,
    ResourceConsumer, Timestamp,
};
use alumet::metrics::MetricId;
use alumet::pipeline::{PollError, Source};

use crate::counters::{EnergyCounter, Wrap};
use crate::domain::Domain;

/// A raw energy counter: a powercap `energy_uj` file or a perf event.
pub trait RawEnergyReader: Send {
    /// The current value of the counter, in the reader's own unit.
    fn read_raw(&mut self) -> io::Result<u64>;
}

/// One domain on one package: where to read it and how to interpret it.
pub struct DomainReader {
    domain: Domain,
    resource: Resource,
    origin: String,
    joules_per_unit: f64,
    reader: Box<dyn RawEnergyReader>,
    counter: EnergyCounter,
}

impl fmt::Debug for DomainReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DomainReader")
            .field("domain", &self.domain)
            .field("resource", &self.resource)
            .field("origin", &self.origin)
            .field("joules_per_unit", &self.joules_per_unit)
            .finish()
    }
}

impl DomainReader {
    /// A domain read through `reader`, whose values are counts of
    /// `joules_per_unit` J that wrap as `wrap` says. `origin` names where the
    /// value comes from (a file, an event and CPU) for messages.
    pub fn new(
        domain: Domain,
        resource: Resource,
        origin: String,
        joules_per_unit: f64,
        wrap: Wrap,
        reader: Box<dyn RawEnergyReader>,
    ) -> Self {
        Self {
            domain,
            resource,
            origin,
            joules_per_unit,
            reader,
            counter: EnergyCounter::new(wrap),
        }
    }

    /// The domain.
    pub fn domain(&self) -> Domain {
        self.domain
    }

    /// The resource the domain's energy is reported on.
    pub fn resource(&self) -> &Resource {
        &self.resource
    }

    /// Where the value comes from (file path, or event and CPU).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Joules per unit of the raw counter.
    pub fn joules_per_unit(&self) -> f64 {
        self.joules_per_unit
    }

    /// Reads the counter once; `Ok(None)` when this read only primed it.
    pub fn read_consumed_joules(&mut self) -> io::Result<Option<f64>> {
        let raw = self.reader.read_raw()?;
        Ok(self
            .counter
            .update(raw)
            .map(|units| units as f64 * self.joules_per_unit))
    }
}

/// The managed source of the plugin.
pub struct EnergySource {
    metric: MetricId,
    domains: Vec<DomainReader>,
}

impl EnergySource {
    /// A source emitting `metric` for each of `domains`.
    pub fn new(metric: MetricId, domains: Vec<DomainReader>) -> Self {
        Self { metric, domains }
    }
}

/// Some counters could not be read during one poll.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}", .failures.join("; "))]
pub struct ReadFailures {
    /// One line per failed counter: where, and the error.
    pub failures: Vec<String>,
}

impl Source for EnergySource {
    fn poll(
        &mut self,
        into: &mut MeasurementBuffer,
        timestamp: Timestamp,
    ) -> Result<(), PollError> {
        let mut failures = Vec::new();
        for d in &mut self.domains {
            match d.read_consumed_joules() {
                Ok(Some(joules)) => into.push(MeasurementPoint {
                    timestamp,
                    metric: self.metric,
                    resource: d.resource.clone(),
                    consumer: ResourceConsumer::LocalMachine,
                    value: MeasurementValue::F64(joules),
                    attributes: vec![(
                        Cow::Borrowed("domain"),
                        AttributeValue::Str(Cow::Borrowed(d.domain.as_str())),
                    )],
                }),
                Ok(None) => {}
                // The counter keeps its previous value: the next good read
                // reports everything consumed since, so nothing is lost.
                Err(e) => failures.push(format!("{}: {e}", d.origin)),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(PollError::transient(ReadFailures { failures }))
        }
    }
}
