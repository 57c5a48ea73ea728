//! The source: one per physical GPU, polled on a dedicated thread.
//!
//! At start each device (and each of its MIG instances) is probed once: every
//! value the plugin reports is read one time, and what the device answers
//! `NotSupported` is never asked again. At each poll the source reads what is
//! left and turns it into points; energy comes from the driver's counter when
//! there is one, else from power integrated over the poll timestamps.

use std::collections::BTreeMap;

use alumet::measurement::{
    MeasurementBuffer, MeasurementPoint, MeasurementValue, Resource, ResourceConsumer, Timestamp,
};
use alumet::metrics::MetricId;
use alumet::pipeline::{PollError, Source};

use crate::energy::{EnergyCounter, PowerIntegrator};
use crate::metrics::GpuMetrics;
use crate::nvml::{normalize_bus_id, ClockDomain, GpuDevice, GpuError, GpuProcess};

/// What a device answered when probed: `true` means read it at every poll.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Features {
    /// Total-energy counter (Volta and newer).
    pub energy_counter: bool,
    /// Instant power.
    pub power: bool,
    /// Die temperature.
    pub temperature: bool,
    /// GPU and memory utilisation.
    pub utilization: bool,
    /// Memory used and total.
    pub memory: bool,
    /// SM clock.
    pub sm_clock: bool,
    /// Memory clock.
    pub memory_clock: bool,
    /// Throttle reasons.
    pub throttle_reasons: bool,
    /// Process list with memory per process.
    pub processes: bool,
    /// Per-process utilisation samples.
    pub process_samples: bool,
}

/// How the energy of a device is obtained.
#[derive(Debug, Clone)]
enum EnergyMethod {
    Counter(EnergyCounter),
    PowerIntegration(PowerIntegrator),
    Unavailable,
}

/// One device or MIG instance, as probed.
struct Target {
    device: Box<dyn GpuDevice>,
    resource: Resource,
    features: Features,
    energy: EnergyMethod,
    /// Driver timestamp (µs) of the newest process sample already reported.
    last_sample_us: u64,
}

/// What a probe call taught us: use the feature, skip it, or give up on the device.
fn probe<T>(
    resource: &Resource,
    what: &str,
    result: Result<T, GpuError>,
) -> Result<Option<T>, GpuError> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(GpuError::NotSupported) => {
            log::debug!("{resource}: {what} is not supported; not reported");
            Ok(None)
        }
        Err(GpuError::NoPermission) => {
            log::warn!("{resource}: no permission to read {what}; not reported");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

impl Target {
    fn probe(
        device: Box<dyn GpuDevice>,
        resource: Resource,
        per_process: bool,
    ) -> Result<Self, GpuError> {
        let r = &resource;
        let mut f = Features {
            energy_counter: probe(r, "the energy counter", device.total_energy_mj())?.is_some(),
            power: probe(r, "power", device.power_mw())?.is_some(),
            temperature: probe(r, "temperature", device.temperature_c())?.is_some(),
            utilization: probe(r, "utilization", device.utilization())?.is_some(),
            memory: probe(r, "memory usage", device.memory())?.is_some(),
            sm_clock: probe(r, "the SM clock", device.clock_mhz(ClockDomain::Sm))?.is_some(),
            memory_clock: probe(r, "the memory clock", device.clock_mhz(ClockDomain::Memory))?
                .is_some(),
            throttle_reasons: probe(r, "throttle reasons", device.throttle_reasons())?.is_some(),
            ..Features::default()
        };
        let mut last_sample_us = 0;
        if per_process {
            f.processes = probe(r, "the process list", device.processes())?.is_some();
            // Starting from the newest buffered sample keeps the first poll
            // from reporting activity older than the agent.
            if let Some(samples) = probe(r, "process utilization", device.process_samples(0))? {
                f.process_samples = true;
                last_sample_us = samples.iter().map(|s| s.timestamp_us).max().unwrap_or(0);
            }
        }
        let energy = if f.energy_counter {
            EnergyMethod::Counter(EnergyCounter::new())
        } else if f.power {
            log::debug!("{resource}: energy will be integrated from power (estimated=true)");
            EnergyMethod::PowerIntegration(PowerIntegrator::new())
        } else {
            log::debug!("{resource}: neither energy nor power is supported; no energy reported");
            EnergyMethod::Unavailable
        };
        Ok(Self {
            device,
            resource,
            features: f,
            energy,
            last_sample_us,
        })
    }
}

/// A GPU with its MIG instances, probed and ready to be polled.
pub struct MonitoredGpu {
    bus_id: String,
    name: String,
    targets: Vec<Target>,
}

impl MonitoredGpu {
    /// Probes `device` and its MIG instances. Fails when the device cannot
    /// even tell its bus id, or answers a probe with an error other than
    /// `NotSupported`/`NoPermission` (it is then unusable).
    ///
    /// With MIG on, processes are reported per instance only (the parent
    /// would list the same processes again).
    pub fn open(device: Box<dyn GpuDevice>, per_process: bool) -> Result<Self, GpuError> {
        let bus_id = normalize_bus_id(&device.pci_bus_id()?);
        let name = device.name().unwrap_or_else(|_| "unknown model".to_owned());
        let instances = match device.mig_instances() {
            Ok(list) => list,
            Err(GpuError::NotSupported) => Vec::new(),
            Err(e) => {
                log::warn!("GPU {bus_id}: cannot list its MIG instances ({e}); reporting the whole GPU only");
                Vec::new()
            }
        };
        let parent_per_process = per_process && instances.is_empty();
        let parent = Target::probe(
            device,
            Resource::Gpu {
                bus_id: bus_id.clone().into(),
            },
            parent_per_process,
        )?;
        let mut targets = vec![parent];
        for (i, instance) in instances.into_iter().enumerate() {
            let resource = Resource::Gpu {
                bus_id: format!("{bus_id}/mig{i}").into(),
            };
            let shown = resource.to_string();
            match Target::probe(instance, resource, per_process) {
                Ok(t) => targets.push(t),
                Err(e) => log::warn!("{shown}: MIG instance skipped ({e})"),
            }
        }
        Ok(Self {
            bus_id,
            name,
            targets,
        })
    }

    /// PCI bus id in the form reported as the resource id (`0000:3b:00.0`).
    pub fn bus_id(&self) -> &str {
        &self.bus_id
    }

    /// Model name, for logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the GPU itself (not its MIG instances) supports.
    pub fn features(&self) -> Features {
        self.targets.first().map(|t| t.features).unwrap_or_default()
    }

    /// Number of MIG instances reported separately.
    pub fn mig_instance_count(&self) -> usize {
        self.targets.len().saturating_sub(1)
    }
}

/// The failures of one poll, summarised into one error.
#[derive(Default)]
struct Failures {
    count: usize,
    first: Option<String>,
    lost: bool,
}

impl Failures {
    fn add(&mut self, resource: &Resource, what: &str, e: &GpuError) {
        self.count += 1;
        self.lost |= *e == GpuError::GpuLost;
        if self.first.is_none() {
            self.first = Some(format!("{resource}: {what}: {e}"));
        }
    }

    fn into_result(self) -> Result<(), PollError> {
        let Some(first) = self.first else {
            return Ok(());
        };
        let message = if self.count == 1 {
            first
        } else {
            format!("{first} (and {} other reads failed)", self.count - 1)
        };
        if self.lost {
            Err(PollError::fatal(message))
        } else {
            Err(PollError::transient(message))
        }
    }
}

/// Keeps a successful value; on `NotSupported` (the device changed its mind,
/// e.g. MIG was toggled) stops reading it; counts any other failure.
fn read<T>(
    enabled: &mut bool,
    resource: &Resource,
    what: &str,
    result: Result<T, GpuError>,
    failures: &mut Failures,
) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(GpuError::NotSupported) => {
            log::warn!("{resource}: {what} is not supported any more; no longer reported");
            *enabled = false;
            None
        }
        Err(e) => {
            failures.add(resource, what, &e);
            None
        }
    }
}

/// Polls one GPU (and its MIG instances).
pub struct GpuSource {
    gpu: MonitoredGpu,
    metrics: GpuMetrics,
}

impl GpuSource {
    /// A source for a probed GPU, emitting the registered `metrics`.
    pub fn new(gpu: MonitoredGpu, metrics: GpuMetrics) -> Self {
        Self { gpu, metrics }
    }
}

impl Source for GpuSource {
    fn poll(
        &mut self,
        into: &mut MeasurementBuffer,
        timestamp: Timestamp,
    ) -> Result<(), PollError> {
        let mut failures = Failures::default();
        for target in &mut self.gpu.targets {
            poll_target(target, &self.metrics, into, timestamp, &mut failures);
        }
        failures.into_result()
    }
}

fn poll_target(
    t: &mut Target,
    m: &GpuMetrics,
    into: &mut MeasurementBuffer,
    timestamp: Timestamp,
    failures: &mut Failures,
) {
    let resource = &t.resource;
    let f = &mut t.features;
    let device = t.device.as_ref();
    let point = |metric: MetricId, value: MeasurementValue| {
        MeasurementPoint::new(
            timestamp,
            metric,
            resource.clone(),
            ResourceConsumer::LocalMachine,
            value,
        )
    };

    if f.energy_counter {
        let r = device.total_energy_mj();
        if let Some(total_mj) = read(&mut f.energy_counter, resource, "energy", r, failures) {
            if let EnergyMethod::Counter(counter) = &mut t.energy {
                if let Some(joules) = counter.update(total_mj) {
                    into.push(point(m.consumed_energy, joules.into()));
                }
            }
        }
    }
    if f.power {
        if let Some(mw) = read(&mut f.power, resource, "power", device.power_mw(), failures) {
            into.push(point(m.power, (f64::from(mw) / 1000.0).into()));
            if let EnergyMethod::PowerIntegration(integrator) = &mut t.energy {
                if let Some(joules) = integrator.update(timestamp, mw) {
                    into.push(point(m.consumed_energy, joules.into()).with_attr("estimated", true));
                }
            }
        }
    }
    if f.temperature {
        let r = device.temperature_c();
        if let Some(c) = read(&mut f.temperature, resource, "temperature", r, failures) {
            into.push(point(m.temperature, f64::from(c).into()));
        }
    }
    if f.utilization {
        let r = device.utilization();
        if let Some(u) = read(&mut f.utilization, resource, "utilization", r, failures) {
            into.push(point(m.utilization, f64::from(u.gpu_percent).into()));
            into.push(point(
                m.memory_utilization,
                f64::from(u.memory_percent).into(),
            ));
        }
    }
    if f.memory {
        if let Some(mem) = read(&mut f.memory, resource, "memory", device.memory(), failures) {
            into.push(point(m.memory_used, mem.used_bytes.into()));
            into.push(point(m.memory_total, mem.total_bytes.into()));
        }
    }
    if f.sm_clock {
        let r = device.clock_mhz(ClockDomain::Sm);
        if let Some(mhz) = read(&mut f.sm_clock, resource, "SM clock", r, failures) {
            into.push(point(m.sm_clock, (u64::from(mhz) * 1_000_000).into()));
        }
    }
    if f.memory_clock {
        let r = device.clock_mhz(ClockDomain::Memory);
        if let Some(mhz) = read(&mut f.memory_clock, resource, "memory clock", r, failures) {
            into.push(point(m.memory_clock, (u64::from(mhz) * 1_000_000).into()));
        }
    }
    if f.throttle_reasons {
        let r = device.throttle_reasons();
        if let Some(bits) = read(
            &mut f.throttle_reasons,
            resource,
            "throttle reasons",
            r,
            failures,
        ) {
            into.push(point(m.throttle_reasons, bits.into()));
        }
    }

    let processes = if f.processes {
        let r = device.processes();
        read(&mut f.processes, resource, "process list", r, failures)
    } else {
        None
    };
    let sm_by_pid = if f.process_samples {
        let r = device.process_samples(t.last_sample_us);
        read(
            &mut f.process_samples,
            resource,
            "process utilization",
            r,
            failures,
        )
        .map(|samples| mean_sm_by_pid(&samples, &mut t.last_sample_us))
    } else {
        None
    };
    push_processes(
        into,
        m,
        resource,
        timestamp,
        processes.as_deref(),
        sm_by_pid,
    );
}

/// Mean SM utilisation of each pid over the samples newer than
/// `last_sample_us`, which moves to the newest sample.
fn mean_sm_by_pid(
    samples: &[crate::nvml::ProcessSample],
    last_sample_us: &mut u64,
) -> BTreeMap<u32, f64> {
    let mut sums: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    let mut newest = *last_sample_us;
    for s in samples.iter().filter(|s| s.timestamp_us > *last_sample_us) {
        let e = sums.entry(s.pid).or_default();
        e.0 += u64::from(s.sm_percent);
        e.1 += 1;
        newest = newest.max(s.timestamp_us);
    }
    *last_sample_us = newest;
    sums.into_iter()
        .map(|(pid, (sum, n))| (pid, sum as f64 / n as f64))
        .collect()
}

/// Per-process points: memory for each listed process; SM utilisation for
/// each listed process (0 when the driver has no sample of it: it only
/// samples processes that were active) and for each sampled process that has
/// already exited (it used the GPU during the interval).
fn push_processes(
    into: &mut MeasurementBuffer,
    m: &GpuMetrics,
    resource: &Resource,
    timestamp: Timestamp,
    processes: Option<&[GpuProcess]>,
    mut sm_by_pid: Option<BTreeMap<u32, f64>>,
) {
    let point = |metric: MetricId, pid: u32, value: MeasurementValue| {
        MeasurementPoint::new(
            timestamp,
            metric,
            resource.clone(),
            ResourceConsumer::Process { pid },
            value,
        )
    };
    for p in processes.unwrap_or_default() {
        if let Some(bytes) = p.used_memory_bytes {
            into.push(point(m.process_memory_used, p.pid, bytes.into()));
        }
        if let Some(sm) = sm_by_pid.as_mut() {
            let percent = sm.remove(&p.pid).unwrap_or(0.0);
            into.push(point(m.process_sm_utilization, p.pid, percent.into()));
        }
    }
    for (pid, percent) in sm_by_pid.unwrap_or_default() {
        into.push(point(m.process_sm_utilization, pid, percent.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvml::ProcessSample;

    #[test]
    fn sm_utilisation_is_averaged_over_new_samples_only() {
        let s = |pid, timestamp_us, sm_percent| ProcessSample {
            pid,
            timestamp_us,
            sm_percent,
        };
        let mut last = 100;
        let means = mean_sm_by_pid(
            &[s(1, 90, 99), s(1, 110, 20), s(1, 120, 40), s(2, 130, 5)],
            &mut last,
        );
        assert_eq!(means.get(&1), Some(&30.0));
        assert_eq!(means.get(&2), Some(&5.0));
        assert_eq!(last, 130);
        let means = mean_sm_by_pid(&[], &mut last);
        assert!(means.is_empty());
        assert_eq!(last, 130);
    }
}
