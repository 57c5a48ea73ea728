//! The boundary between the plugin and the NVIDIA driver.
//!
//! The plugin talks to GPUs only through [`GpuBackend`] and [`GpuDevice`], so
//! that every line of it except this file's [`NvmlBackend`] can be tested
//! without a GPU (see [`crate::testing`]). The real implementation wraps
//! nvml-wrapper, which loads `libnvidia-ml.so.1` at run time: the agent
//! builds and starts on machines without the driver, and [`NvmlBackend::open`]
//! then fails with [`OpenError`].
//!
//! Every call returns [`GpuError`], which keeps apart what the plugin must
//! treat differently: `NotSupported` (skip that metric for good),
//! `MissingFunction` (the same, but worth a warning: the driver is older than
//! the function), `NoPermission`, `GpuLost` (stop polling the device) and any
//! other failure (retried at the next poll).

use std::sync::OnceLock;

use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};

/// Why a call to the driver failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuError {
    /// The device (or this driver) cannot report this value at all.
    #[error("not supported by this device")]
    NotSupported,
    /// The installed driver's library lacks the function (an older driver).
    #[error("the installed NVIDIA driver lacks {0}")]
    MissingFunction(String),
    /// The user may not ask the driver for this value.
    #[error("permission denied by the NVIDIA driver")]
    NoPermission,
    /// The device fell off the bus or is otherwise gone until a reset.
    #[error("the GPU is lost (fell off the bus or needs a reset)")]
    GpuLost,
    /// Anything else, with the driver's description.
    #[error("{0}")]
    Failed(String),
}

impl From<NvmlError> for GpuError {
    fn from(e: NvmlError) -> Self {
        match e {
            NvmlError::NotSupported => GpuError::NotSupported,
            // A driver too old to have the function cannot report the value
            // either: skip that metric rather than the whole GPU, and say so.
            NvmlError::FailedToLoadSymbol(symbol) => GpuError::MissingFunction(symbol),
            NvmlError::FunctionNotFound => {
                GpuError::MissingFunction("a function this build uses".to_owned())
            }
            NvmlError::NoPermission => GpuError::NoPermission,
            NvmlError::GpuLost | NvmlError::ResetRequired => GpuError::GpuLost,
            other => GpuError::Failed(other.to_string()),
        }
    }
}

/// Why NVML itself could not be initialised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// `libnvidia-ml.so.1` is not installed (or not on the loader path).
    #[error("no NVIDIA driver found (libnvidia-ml.so could not be loaded)")]
    LibraryNotFound,
    /// The library is there but the kernel driver is not running.
    #[error("the NVIDIA driver is not loaded (libnvidia-ml.so was found, but NVML reports no running kernel driver)")]
    DriverNotLoaded,
    /// The library is older than the functions this build uses.
    #[error("libnvidia-ml.so is too old for this build of alumet ({0})")]
    LibraryTooOld(String),
    /// Library and kernel module come from different driver versions.
    #[error("the NVML library and the NVIDIA kernel driver have different versions")]
    VersionMismatch,
    /// The user may not talk to the driver.
    #[error("no permission to talk to the NVIDIA driver")]
    NoPermission,
    /// Any other failure, with NVML's description.
    #[error("NVML failed to initialise: {0}")]
    Other(String),
}

impl OpenError {
    /// What the user can do about it, for the agent's one-line message.
    pub fn fix(&self) -> &'static str {
        match self {
            OpenError::LibraryNotFound | OpenError::DriverNotLoaded => {
                "install the NVIDIA driver, or disable the plugin: [plugins.nvidia] enabled = false"
            }
            OpenError::LibraryTooOld(_) => {
                "update the NVIDIA driver, or disable the plugin: [plugins.nvidia] enabled = false"
            }
            OpenError::VersionMismatch => {
                "reboot (or reload the nvidia kernel module) after a driver update"
            }
            OpenError::NoPermission => {
                "run the agent as a user that can open /dev/nvidia*, or disable the plugin: [plugins.nvidia] enabled = false"
            }
            OpenError::Other(_) => {
                "check `nvidia-smi`, or disable the plugin: [plugins.nvidia] enabled = false"
            }
        }
    }
}

impl From<NvmlError> for OpenError {
    fn from(e: NvmlError) -> Self {
        match e {
            NvmlError::LibloadingError(_) | NvmlError::LibraryNotFound => {
                OpenError::LibraryNotFound
            }
            NvmlError::DriverNotLoaded => OpenError::DriverNotLoaded,
            NvmlError::FailedToLoadSymbol(s) => OpenError::LibraryTooOld(s),
            NvmlError::FunctionNotFound => {
                OpenError::LibraryTooOld("a function is missing".to_owned())
            }
            NvmlError::LibRmVersionMismatch => OpenError::VersionMismatch,
            NvmlError::NoPermission => OpenError::NoPermission,
            other => OpenError::Other(other.to_string()),
        }
    }
}

/// GPU and memory-controller activity over the driver's last sample period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utilization {
    /// Percent of time one or more kernels ran.
    pub gpu_percent: u32,
    /// Percent of time device memory was read or written.
    pub memory_percent: u32,
}

/// Device memory in use and installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUsage {
    /// Allocated bytes (including what the driver reserves for itself).
    pub used_bytes: u64,
    /// Installed bytes.
    pub total_bytes: u64,
}

/// A clock domain whose frequency the plugin reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClockDomain {
    /// Streaming multiprocessors.
    Sm,
    /// Device memory.
    Memory,
}

/// A process with a context on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuProcess {
    /// Process id.
    pub pid: u32,
    /// Device memory it uses; `None` when the driver cannot tell.
    pub used_memory_bytes: Option<u64>,
}

/// One sample of a process's activity, as the driver buffers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessSample {
    /// Process id.
    pub pid: u32,
    /// When the driver took the sample, in µs (the driver's CPU timestamp).
    pub timestamp_us: u64,
    /// SM (3D/compute) utilisation in percent.
    pub sm_percent: u32,
}

/// One GPU, or one MIG instance of a GPU.
///
/// Each method is one driver call (the process list is two). All of them may
/// block on the driver-wide lock, so the plugin calls them from a dedicated thread.
pub trait GpuDevice: Send {
    /// PCI bus id as NVML writes it, e.g. `00000000:3B:00.0`.
    fn pci_bus_id(&self) -> Result<String, GpuError>;
    /// The device's UUID: `GPU-…` for a GPU, `MIG-…` for a MIG instance
    /// (stable while the MIG layout is, unlike the slot index).
    fn uuid(&self) -> Result<String, GpuError>;
    /// Marketing name, e.g. `NVIDIA H100 80GB HBM3` (for logs only).
    fn name(&self) -> Result<String, GpuError>;
    /// Energy consumed since the driver was loaded, in mJ (Volta and newer).
    fn total_energy_mj(&self) -> Result<u64, GpuError>;
    /// Current power draw, in mW.
    fn power_mw(&self) -> Result<u32, GpuError>;
    /// GPU die temperature, in °C.
    fn temperature_c(&self) -> Result<u32, GpuError>;
    /// GPU and memory activity.
    fn utilization(&self) -> Result<Utilization, GpuError>;
    /// Device memory used and installed.
    fn memory(&self) -> Result<MemoryUsage, GpuError>;
    /// Current frequency of a clock domain, in MHz.
    fn clock_mhz(&self, domain: ClockDomain) -> Result<u32, GpuError>;
    /// Current clock throttle reasons, as NVML's bitmask (`nvmlClocksEventReason*`).
    fn throttle_reasons(&self) -> Result<u64, GpuError>;
    /// Processes with a compute or graphics context on the device, one entry per pid.
    fn processes(&self) -> Result<Vec<GpuProcess>, GpuError>;
    /// Per-process samples taken after `since_us` (0: everything the driver holds).
    fn process_samples(&self, since_us: u64) -> Result<Vec<ProcessSample>, GpuError>;
    /// The number of MIG device slots of this GPU when MIG mode is on; 0 otherwise.
    fn mig_slot_count(&self) -> Result<u32, GpuError> {
        Ok(0)
    }
    /// The MIG instance in slot `slot`; `None` for an empty slot.
    fn mig_instance(&self, slot: u32) -> Result<Option<Box<dyn GpuDevice>>, GpuError> {
        let _ = slot;
        Ok(None)
    }
}

/// The set of GPUs the driver knows.
pub trait GpuBackend: Send {
    /// Number of GPUs, including those the user may not access.
    fn device_count(&self) -> Result<u32, GpuError>;
    /// The GPU of NVML index `index`.
    fn device(&self, index: u32) -> Result<Box<dyn GpuDevice>, GpuError>;
}

/// NVML, initialised once per process: `nvmlInit` is slow (it loads the
/// library and its symbols) and the driver reference-counts it anyway.
static NVML: OnceLock<Result<Nvml, OpenError>> = OnceLock::new();

/// The real backend, over nvml-wrapper.
#[derive(Debug, Clone, Copy)]
pub struct NvmlBackend {
    nvml: &'static Nvml,
}

impl NvmlBackend {
    /// Loads `libnvidia-ml.so.1` and initialises NVML (once per process; a
    /// failure is remembered, the driver will not appear while we run).
    pub fn open() -> Result<Self, OpenError> {
        match NVML.get_or_init(|| Nvml::init().map_err(OpenError::from)) {
            Ok(nvml) => Ok(Self { nvml }),
            Err(e) => Err(e.clone()),
        }
    }
}

impl GpuBackend for NvmlBackend {
    fn device_count(&self) -> Result<u32, GpuError> {
        Ok(self.nvml.device_count()?)
    }

    fn device(&self, index: u32) -> Result<Box<dyn GpuDevice>, GpuError> {
        let device = self.nvml.device_by_index(index)?;
        Ok(Box::new(NvmlDevice { device }))
    }
}

/// One device handle; the handle stays valid as long as NVML is initialised,
/// which is the whole life of the process (see [`NVML`]).
struct NvmlDevice {
    device: Device<'static>,
}

/// `nvmlDeviceGetMigMode` reports this when MIG is on (`NVML_DEVICE_MIG_ENABLE`).
const MIG_ENABLED: u32 = 1;

impl GpuDevice for NvmlDevice {
    fn pci_bus_id(&self) -> Result<String, GpuError> {
        Ok(self.device.pci_info()?.bus_id)
    }

    fn name(&self) -> Result<String, GpuError> {
        Ok(self.device.name()?)
    }

    fn uuid(&self) -> Result<String, GpuError> {
        Ok(self.device.uuid()?)
    }

    fn total_energy_mj(&self) -> Result<u64, GpuError> {
        Ok(self.device.total_energy_consumption()?)
    }

    fn power_mw(&self) -> Result<u32, GpuError> {
        Ok(self.device.power_usage()?)
    }

    fn temperature_c(&self) -> Result<u32, GpuError> {
        Ok(self.device.temperature(TemperatureSensor::Gpu)?)
    }

    fn utilization(&self) -> Result<Utilization, GpuError> {
        let u = self.device.utilization_rates()?;
        Ok(Utilization {
            gpu_percent: u.gpu,
            memory_percent: u.memory,
        })
    }

    fn memory(&self) -> Result<MemoryUsage, GpuError> {
        let m = self.device.memory_info()?;
        Ok(MemoryUsage {
            used_bytes: m.used,
            total_bytes: m.total,
        })
    }

    fn clock_mhz(&self, domain: ClockDomain) -> Result<u32, GpuError> {
        let clock = match domain {
            ClockDomain::Sm => Clock::SM,
            ClockDomain::Memory => Clock::Memory,
        };
        Ok(self.device.clock_info(clock)?)
    }

    fn throttle_reasons(&self) -> Result<u64, GpuError> {
        Ok(self.device.current_throttle_reasons()?.bits())
    }

    fn processes(&self) -> Result<Vec<GpuProcess>, GpuError> {
        let compute = self.device.running_compute_processes()?;
        // Graphics contexts are not supported on some compute-only boards: then
        // the compute list is all there is.
        let graphics = match self.device.running_graphics_processes() {
            Ok(list) => list,
            Err(NvmlError::NotSupported) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let mut merged: Vec<GpuProcess> = Vec::with_capacity(compute.len() + graphics.len());
        for info in compute.into_iter().chain(graphics) {
            let used = match info.used_gpu_memory {
                UsedGpuMemory::Used(bytes) => Some(bytes),
                UsedGpuMemory::Unavailable => None,
            };
            merge_process(&mut merged, info.pid, used);
        }
        Ok(merged)
    }

    fn process_samples(&self, since_us: u64) -> Result<Vec<ProcessSample>, GpuError> {
        match self.device.process_utilization_stats(since_us) {
            Ok(samples) => Ok(samples
                .into_iter()
                .map(|s| ProcessSample {
                    pid: s.pid,
                    timestamp_us: s.timestamp,
                    sm_percent: s.sm_util,
                })
                .collect()),
            // NVML answers NOT_FOUND when no process was active since `since_us`.
            Err(NvmlError::NotFound) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    fn mig_slot_count(&self) -> Result<u32, GpuError> {
        match self.device.mig_mode() {
            Ok(mode) if mode.current == MIG_ENABLED => {}
            Ok(_) | Err(NvmlError::NotSupported) => return Ok(0),
            Err(e) => return Err(e.into()),
        }
        Ok(self.device.mig_device_count()?)
    }

    fn mig_instance(&self, slot: u32) -> Result<Option<Box<dyn GpuDevice>>, GpuError> {
        // The count is the number of slots; empty slots answer NOT_FOUND
        // (or INVALID_ARGUMENT on some drivers).
        match self.device.mig_device_by_index(slot) {
            Ok(device) => Ok(Some(Box::new(NvmlDevice { device }))),
            Err(NvmlError::NotFound) | Err(NvmlError::InvalidArg) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// Adds a process to a list keyed by pid. A process with both a compute and
/// a graphics context appears in both NVML lists with the same allocation,
/// so the larger figure is kept rather than the sum.
pub(crate) fn merge_process(list: &mut Vec<GpuProcess>, pid: u32, used: Option<u64>) {
    match list.iter_mut().find(|p| p.pid == pid) {
        Some(p) => {
            p.used_memory_bytes = match (p.used_memory_bytes, used) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            }
        }
        None => list.push(GpuProcess {
            pid,
            used_memory_bytes: used,
        }),
    }
}

/// Writes a PCI bus id the way Linux does in `/sys/bus/pci/devices`:
/// NVML's `00000000:3B:00.0` becomes `0000:3b:00.0`. An id in another
/// form is only lowercased.
pub fn normalize_bus_id(nvml_bus_id: &str) -> String {
    let lower = nvml_bus_id.trim().to_ascii_lowercase();
    let Some((domain, rest)) = lower.split_once(':') else {
        return lower;
    };
    match u32::from_str_radix(domain, 16) {
        Ok(d) if d <= 0xffff => format!("{d:04x}:{rest}"),
        _ => lower,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_ids_take_the_sysfs_form() {
        assert_eq!(normalize_bus_id("00000000:3B:00.0"), "0000:3b:00.0");
        assert_eq!(normalize_bus_id("00000001:AF:00.0"), "0001:af:00.0");
        assert_eq!(normalize_bus_id("0000:3b:00.0"), "0000:3b:00.0");
        assert_eq!(normalize_bus_id("weird"), "weird");
        assert_eq!(normalize_bus_id("XYZ:01:00.0"), "xyz:01:00.0");
    }

    #[test]
    fn nvml_errors_are_classified() {
        assert_eq!(
            GpuError::from(NvmlError::NotSupported),
            GpuError::NotSupported
        );
        assert_eq!(GpuError::from(NvmlError::GpuLost), GpuError::GpuLost);
        assert_eq!(
            GpuError::from(NvmlError::FailedToLoadSymbol("nvmlDeviceGetX".into())),
            GpuError::MissingFunction("nvmlDeviceGetX".into())
        );
        assert!(matches!(
            GpuError::from(NvmlError::Unknown),
            GpuError::Failed(_)
        ));
        assert_eq!(
            OpenError::from(NvmlError::LibraryNotFound),
            OpenError::LibraryNotFound
        );
        assert_eq!(
            OpenError::from(NvmlError::DriverNotLoaded),
            OpenError::DriverNotLoaded
        );
    }

    #[test]
    fn a_process_in_both_lists_is_counted_once() {
        let mut list = Vec::new();
        merge_process(&mut list, 7, Some(100));
        merge_process(&mut list, 8, None);
        merge_process(&mut list, 7, Some(100));
        merge_process(&mut list, 8, Some(5));
        assert_eq!(
            list,
            vec![
                GpuProcess {
                    pid: 7,
                    used_memory_bytes: Some(100)
                },
                GpuProcess {
                    pid: 8,
                    used_memory_bytes: Some(5)
                }
            ]
        );
    }
}
