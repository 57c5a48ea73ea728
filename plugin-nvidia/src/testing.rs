//! A test double of the driver, so that the plugin can be tested without a GPU.
//!
//! A [`FakeGpu`] is a set of dials: every value it answers is a
//! `Result<_, GpuError>` that a test sets before each poll (a value,
//! `NotSupported`, or a failure). Clones share the dials, so a test keeps one
//! clone and hands another to a [`FakeBackend`], which the plugin gets through
//! [`crate::NvidiaPlugin::with_backend`]. The fake also counts the calls made
//! to it, so tests can check that unsupported values are not asked again.
//!
//! ```
//! use plugin_nvidia::nvml::GpuError;
//! use plugin_nvidia::testing::{FakeBackend, FakeGpu};
//!
//! let gpu = FakeGpu::new("00000000:3B:00.0");
//! gpu.update(|s| s.total_energy_mj = Err(GpuError::NotSupported));
//! let backend = FakeBackend::new()
//!     .with_gpu(gpu.clone())
//!     .with_failing_device(GpuError::Failed("unit is on fire".into()));
//! # let _ = backend;
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::nvml::{
    ClockDomain, GpuBackend, GpuDevice, GpuError, GpuProcess, MemoryUsage, ProcessSample,
    Utilization,
};

/// Everything a [`FakeGpu`] answers. Public fields: set them in [`FakeGpu::update`].
#[derive(Debug, Clone)]
pub struct FakeGpuState {
    /// Answer of `pci_bus_id` (an error makes the device fail at start).
    pub bus_id: Result<String, GpuError>,
    /// Answer of `name`.
    pub name: String,
    /// Answer of `uuid`.
    pub uuid: Result<String, GpuError>,
    /// Answer of `total_energy_mj`.
    pub total_energy_mj: Result<u64, GpuError>,
    /// Answer of `power_mw`.
    pub power_mw: Result<u32, GpuError>,
    /// Answer of `temperature_c`.
    pub temperature_c: Result<u32, GpuError>,
    /// Answer of `utilization`.
    pub utilization: Result<Utilization, GpuError>,
    /// Answer of `memory`.
    pub memory: Result<MemoryUsage, GpuError>,
    /// Answer of `clock_mhz(Sm)`.
    pub sm_clock_mhz: Result<u32, GpuError>,
    /// Answer of `clock_mhz(Memory)`.
    pub memory_clock_mhz: Result<u32, GpuError>,
    /// Answer of `throttle_reasons`.
    pub throttle_reasons: Result<u64, GpuError>,
    /// Answer of `processes`.
    pub processes: Result<Vec<GpuProcess>, GpuError>,
    /// Every sample the "driver" holds; `process_samples(since)` answers
    /// those newer than `since`, as NVML does.
    pub process_samples: Result<Vec<ProcessSample>, GpuError>,
    /// MIG slots (empty: MIG off): an instance, an empty slot (`Ok(None)`),
    /// or the error the driver answers for that slot.
    pub mig_slots: Vec<Result<Option<FakeGpu>, GpuError>>,
}

impl FakeGpuState {
    /// An idle GPU that supports everything: 0 mJ, 50 W, 40 °C, no process.
    pub fn idle(bus_id: &str) -> Self {
        Self {
            bus_id: Ok(bus_id.to_owned()),
            name: "Fake GPU".to_owned(),
            uuid: Ok(format!("GPU-fake-{}", bus_id.to_ascii_lowercase())),
            total_energy_mj: Ok(0),
            power_mw: Ok(50_000),
            temperature_c: Ok(40),
            utilization: Ok(Utilization {
                gpu_percent: 0,
                memory_percent: 0,
            }),
            memory: Ok(MemoryUsage {
                used_bytes: 512 << 20,
                total_bytes: 80 << 30,
            }),
            sm_clock_mhz: Ok(345),
            memory_clock_mhz: Ok(1593),
            throttle_reasons: Ok(1),
            processes: Ok(Vec::new()),
            process_samples: Ok(Vec::new()),
            mig_slots: Vec::new(),
        }
    }
}

#[derive(Debug)]
struct Shared {
    state: FakeGpuState,
    calls: HashMap<&'static str, u64>,
}

/// A scripted GPU; clones share their dials and call counts.
#[derive(Debug, Clone)]
pub struct FakeGpu {
    shared: Arc<Mutex<Shared>>,
}

impl FakeGpu {
    /// An idle GPU with bus id `bus_id` as NVML would write it (see [`FakeGpuState::idle`]).
    pub fn new(bus_id: &str) -> Self {
        Self::from_state(FakeGpuState::idle(bus_id))
    }

    /// A MIG instance of the GPU at `bus_id` with UUID `uuid` (`MIG-…`).
    /// Like a real MIG device handle it answers everything the parent does
    /// (NVML returns the parent's power, for instance): what the plugin
    /// asks an instance is the plugin's choice.
    pub fn mig_instance(bus_id: &str, uuid: &str) -> Self {
        let gpu = Self::new(bus_id);
        gpu.update(|s| s.uuid = Ok(uuid.to_owned()));
        gpu
    }

    /// A GPU answering `state`.
    pub fn from_state(state: FakeGpuState) -> Self {
        Self {
            shared: Arc::new(Mutex::new(Shared {
                state,
                calls: HashMap::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes what the GPU answers from now on.
    pub fn update(&self, f: impl FnOnce(&mut FakeGpuState)) {
        f(&mut self.lock().state);
    }

    /// A copy of what the GPU answers now.
    pub fn state(&self) -> FakeGpuState {
        self.lock().state.clone()
    }

    /// How many times method `name` (e.g. `"total_energy_mj"`) was called.
    pub fn calls(&self, name: &str) -> u64 {
        self.lock().calls.get(name).copied().unwrap_or(0)
    }

    fn answer<T>(&self, name: &'static str, f: impl FnOnce(&FakeGpuState) -> T) -> T {
        let mut shared = self.lock();
        *shared.calls.entry(name).or_default() += 1;
        f(&shared.state)
    }
}

impl GpuDevice for FakeGpu {
    fn pci_bus_id(&self) -> Result<String, GpuError> {
        self.answer("pci_bus_id", |s| s.bus_id.clone())
    }
    fn name(&self) -> Result<String, GpuError> {
        self.answer("name", |s| Ok(s.name.clone()))
    }
    fn uuid(&self) -> Result<String, GpuError> {
        self.answer("uuid", |s| s.uuid.clone())
    }
    fn total_energy_mj(&self) -> Result<u64, GpuError> {
        self.answer("total_energy_mj", |s| s.total_energy_mj.clone())
    }
    fn power_mw(&self) -> Result<u32, GpuError> {
        self.answer("power_mw", |s| s.power_mw.clone())
    }
    fn temperature_c(&self) -> Result<u32, GpuError> {
        self.answer("temperature_c", |s| s.temperature_c.clone())
    }
    fn utilization(&self) -> Result<Utilization, GpuError> {
        self.answer("utilization", |s| s.utilization.clone())
    }
    fn memory(&self) -> Result<MemoryUsage, GpuError> {
        self.answer("memory", |s| s.memory.clone())
    }
    fn clock_mhz(&self, domain: ClockDomain) -> Result<u32, GpuError> {
        match domain {
            ClockDomain::Sm => self.answer("sm_clock_mhz", |s| s.sm_clock_mhz.clone()),
            ClockDomain::Memory => self.answer("memory_clock_mhz", |s| s.memory_clock_mhz.clone()),
        }
    }
    fn throttle_reasons(&self) -> Result<u64, GpuError> {
        self.answer("throttle_reasons", |s| s.throttle_reasons.clone())
    }
    fn processes(&self) -> Result<Vec<GpuProcess>, GpuError> {
        self.answer("processes", |s| s.processes.clone())
    }
    fn process_samples(&self, since_us: u64) -> Result<Vec<ProcessSample>, GpuError> {
        self.answer("process_samples", |s| {
            s.process_samples.clone().map(|all| {
                all.into_iter()
                    .filter(|x| x.timestamp_us > since_us)
                    .collect()
            })
        })
    }
    fn mig_slot_count(&self) -> Result<u32, GpuError> {
        self.answer("mig_slot_count", |s| {
            Ok(u32::try_from(s.mig_slots.len()).unwrap_or(u32::MAX))
        })
    }
    fn mig_instance(&self, slot: u32) -> Result<Option<Box<dyn GpuDevice>>, GpuError> {
        self.answer("mig_instance", |s| match s.mig_slots.get(slot as usize) {
            Some(Ok(Some(g))) => Ok(Some(Box::new(g.clone()) as Box<dyn GpuDevice>)),
            Some(Ok(None)) | None => Ok(None),
            Some(Err(e)) => Err(e.clone()),
        })
    }
}

/// A scripted set of GPUs, in NVML index order.
#[derive(Debug, Clone, Default)]
pub struct FakeBackend {
    devices: Vec<Result<FakeGpu, GpuError>>,
    count_error: Option<GpuError>,
}

impl FakeBackend {
    /// No GPU at all.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a GPU at the next index.
    pub fn with_gpu(mut self, gpu: FakeGpu) -> Self {
        self.devices.push(Ok(gpu));
        self
    }

    /// Adds, at the next index, a device whose handle cannot be obtained.
    pub fn with_failing_device(mut self, error: GpuError) -> Self {
        self.devices.push(Err(error));
        self
    }

    /// Makes `device_count` itself fail.
    pub fn with_count_error(mut self, error: GpuError) -> Self {
        self.count_error = Some(error);
        self
    }
}

impl GpuBackend for FakeBackend {
    fn device_count(&self) -> Result<u32, GpuError> {
        match &self.count_error {
            Some(e) => Err(e.clone()),
            None => Ok(u32::try_from(self.devices.len()).unwrap_or(u32::MAX)),
        }
    }

    fn device(&self, index: u32) -> Result<Box<dyn GpuDevice>, GpuError> {
        match self.devices.get(index as usize) {
            Some(Ok(gpu)) => Ok(Box::new(gpu.clone())),
            Some(Err(e)) => Err(e.clone()),
            None => Err(GpuError::Failed(format!("no device at index {index}"))),
        }
    }
}
