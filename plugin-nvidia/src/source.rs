//! The source: one per physical GPU, polled on a dedicated thread.
//!
//! At start each device (and each of its MIG instances) is probed once: every
//! value the plugin reports is read one time, and what the device answers
//! `NotSupported` is never asked again. At each poll the source reads what is
//! left and turns it into points; energy comes from the driver's counter when
//! there is one, else from power integrated over the poll timestamps.

use alumet::measurement::{
    MeasurementBuffer, MeasurementPoint, MeasurementValue, Resource, ResourceConsumer, Timestamp,
};
use alumet::metrics::MetricId;
use alumet::pipeline::{PollError, Source};

use crate::energy::EnergyCounter;
use crate::metrics::GpuMetrics;
use crate::nvml::{normalize_bus_id, ClockDomain, GpuDevice, GpuError};
use crate::processes::ProcessTracker;
use alumet_energy::PowerIntegrator;

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

/// A whole GPU, or one of its MIG instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TargetKind {
    Gpu,
    /// NVML supports memory and processes on a MIG device handle; energy,
    /// power, clocks and the rest are the parent GPU's (and would be counted
    /// once per instance).
    MigInstance,
}

/// One device or MIG instance, as probed.
struct Target {
    device: Box<dyn GpuDevice>,
    resource: Resource,
    features: Features,
    energy: EnergyMethod,
    /// What the process sampling remembers between polls.
    processes: ProcessTracker,
}

/// What a probe call taught us: read the value at each poll (`true`), skip
/// it for good (`false`), or give up on the device (`GpuLost`). A failure
/// other than these (`Unknown`, `InsufficientSize` when the sample count
/// changed between NVML's two calls...) is retried at each poll: one
/// optional value must not cost the whole GPU.
fn probe<T>(
    resource: &Resource,
    what: &str,
    result: Result<T, GpuError>,
) -> Result<bool, GpuError> {
    match result {
        Ok(_) => Ok(true),
        Err(GpuError::NotSupported) => {
            log::debug!("{resource}: {what} is not supported; not reported");
            Ok(false)
        }
        Err(e @ GpuError::MissingFunction(_)) => {
            log::warn!("{resource}: {what} not reported: {e} (a newer driver has it)");
            Ok(false)
        }
        Err(GpuError::NoPermission) => {
            log::warn!("{resource}: no permission to read {what}; not reported");
            Ok(false)
        }
        Err(GpuError::GpuLost) => Err(GpuError::GpuLost),
        Err(e @ GpuError::Failed(_)) => {
            log::warn!(
                "{resource}: reading {what} failed at start ({e}); tried again at each poll"
            );
            Ok(true)
        }
    }
}

impl Target {
    /// Probes what `device` supports. `samples_since_us` is the agent's
    /// start in the driver's clock: older process samples are never reported.
    fn probe(
        device: Box<dyn GpuDevice>,
        resource: Resource,
        kind: TargetKind,
        per_process: bool,
        samples_since_us: u64,
    ) -> Result<Self, GpuError> {
        let r = &resource;
        let mut f = Features::default();
        if kind == TargetKind::Gpu {
            f.energy_counter = probe(r, "the energy counter", device.total_energy_mj())?;
            f.power = probe(r, "power", device.power_mw())?;
            f.temperature = probe(r, "temperature", device.temperature_c())?;
            f.utilization = probe(r, "utilization", device.utilization())?;
        }
        f.memory = probe(r, "memory usage", device.memory())?;
        if kind == TargetKind::Gpu {
            f.sm_clock = probe(r, "the SM clock", device.clock_mhz(ClockDomain::Sm))?;
            f.memory_clock = probe(r, "the memory clock", device.clock_mhz(ClockDomain::Memory))?;
            f.throttle_reasons = probe(r, "throttle reasons", device.throttle_reasons())?;
        }
        if per_process {
            f.processes = probe(r, "the process list", device.processes())?;
            if kind == TargetKind::Gpu {
                let samples = device.process_samples(samples_since_us);
                f.process_samples = probe(r, "process utilization", samples)?;
            }
        }
        let energy = if f.energy_counter {
            EnergyMethod::Counter(EnergyCounter::new())
        } else if f.power {
            log::debug!("{resource}: energy will be integrated from power (estimated=true)");
            EnergyMethod::PowerIntegration(PowerIntegrator::new())
        } else {
            if kind == TargetKind::Gpu {
                log::debug!(
                    "{resource}: neither energy nor power is supported; no energy reported"
                );
            }
            EnergyMethod::Unavailable
        };
        Ok(Self {
            device,
            resource,
            features: f,
            energy,
            processes: ProcessTracker::new(samples_since_us),
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
    /// even tell its bus id, or is lost; a value it fails to give at start
    /// is asked again at each poll.
    ///
    /// `samples_since_us` is the agent's start in the driver's µs clock
    /// (process samples older than that are the driver's old buffer and
    /// are never reported).
    ///
    /// With MIG on, processes are reported per instance only (the parent
    /// would list the same processes again), instances report memory and
    /// processes only, and each is named by its MIG UUID.
    pub fn open(
        device: Box<dyn GpuDevice>,
        per_process: bool,
        samples_since_us: u64,
    ) -> Result<Self, GpuError> {
        let bus_id = normalize_bus_id(&device.pci_bus_id()?);
        let name = device.name().unwrap_or_else(|_| "unknown model".to_owned());
        let instances = mig_instances(device.as_ref(), &bus_id);
        let parent_per_process = per_process && instances.is_empty();
        let parent = Target::probe(
            device,
            Resource::Gpu {
                bus_id: bus_id.clone().into(),
            },
            TargetKind::Gpu,
            parent_per_process,
            samples_since_us,
        )?;
        let mut targets = vec![parent];
        for (uuid, instance) in instances {
            let resource = Resource::Gpu {
                bus_id: format!("{bus_id}/{uuid}").into(),
            };
            let shown = resource.to_string();
            match Target::probe(
                instance,
                resource,
                TargetKind::MigInstance,
                per_process,
                samples_since_us,
            ) {
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

    /// The resource ids of the MIG instances reported (`<bus id>/MIG-…`).
    pub fn mig_instance_ids(&self) -> Vec<String> {
        self.targets
            .iter()
            .skip(1)
            .map(|t| t.resource.id().into_owned())
            .collect()
    }
}

/// The MIG instances of `device` with their UUIDs. A slot that fails
/// (`NoPermission` in a container that sees only some instances, ...) is
/// skipped with a warning; the others are kept. An instance without a UUID
/// is skipped too: a slot index is not a stable name (it changes when the
/// layout does).
fn mig_instances(device: &dyn GpuDevice, bus_id: &str) -> Vec<(String, Box<dyn GpuDevice>)> {
    let slots = match device.mig_slot_count() {
        Ok(n) => n,
        Err(GpuError::NotSupported) => 0,
        Err(e) => {
            log::warn!(
                "GPU {bus_id}: cannot list its MIG instances ({e}); reporting the whole GPU only"
            );
            0
        }
    };
    let mut instances = Vec::new();
    for slot in 0..slots {
        let instance = match device.mig_instance(slot) {
            Ok(Some(instance)) => instance,
            Ok(None) => continue,
            Err(e) => {
                log::warn!("GPU {bus_id}: MIG slot {slot} skipped ({e})");
                continue;
            }
        };
        match instance.uuid() {
            Ok(uuid) => instances.push((uuid, instance)),
            Err(e) => log::warn!(
                "GPU {bus_id}: the MIG instance in slot {slot} has no UUID ({e}); skipped, its slot number would not name it reliably"
            ),
        }
    }
    instances
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
        Err(e @ (GpuError::NotSupported | GpuError::MissingFunction(_))) => {
            log::warn!("{resource}: {what}: {e} any more; no longer reported");
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
                // The first reading gives 0 J: its timestamp is where the
                // first interval starts, so that interval is attributed too.
                let first = !counter.is_primed();
                match counter.update(total_mj) {
                    Some(joules) => into.push(point(m.consumed_energy, joules.into())),
                    None if first => into.push(point(m.consumed_energy, 0.0.into())),
                    None => {}
                }
            }
        }
    }
    if f.power {
        if let Some(mw) = read(&mut f.power, resource, "power", device.power_mw(), failures) {
            into.push(point(m.power, (f64::from(mw) / 1000.0).into()));
            if let EnergyMethod::PowerIntegration(integrator) = &mut t.energy {
                let first = !integrator.is_primed();
                let joules = match integrator.update(timestamp, f64::from(mw) / 1000.0) {
                    Some(joules) => Some(joules),
                    None if first => Some(0.0),
                    None => None,
                };
                if let Some(joules) = joules {
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
    let samples = if f.process_samples {
        let r = device.process_samples(t.processes.newest_sample_us());
        read(
            &mut f.process_samples,
            resource,
            "process utilization",
            r,
            failures,
        )
    } else {
        None
    };
    let list_known = f.processes;
    let point = |metric: MetricId, pid: u32, value: MeasurementValue| {
        MeasurementPoint::new(
            timestamp,
            metric,
            resource.clone(),
            ResourceConsumer::Process { pid },
            value,
        )
    };
    let mut sm_by_pid = samples
        .map(|samples| {
            t.processes
                .take_samples(&samples, processes.as_deref(), list_known)
        })
        .unwrap_or_default();
    t.processes.remember(processes.as_deref());
    // Memory for each listed process, SM utilisation for those with new
    // samples, then for processes listed at the previous poll that exited
    // after their last samples.
    for p in processes.as_deref().unwrap_or_default() {
        if let Some(bytes) = p.used_memory_bytes {
            into.push(point(m.process_memory_used, p.pid, bytes.into()));
        }
        if let Some(percent) = sm_by_pid.remove(&p.pid) {
            into.push(point(m.process_sm_utilization, p.pid, percent.into()));
        }
    }
    for (pid, percent) in sm_by_pid {
        into.push(point(m.process_sm_utilization, pid, percent.into()));
    }
}
