//! Plugin `nvidia`: energy, power and activity of NVIDIA GPUs through NVML.
//!
//! One source per GPU, on its own poller thread (NVML calls serialise on a
//! driver-wide lock and the process lists take milliseconds). The driver is
//! reached only through the [`nvml::GpuBackend`] trait: [`nvml::NvmlBackend`]
//! in the agent, [`testing::FakeBackend`] in tests.
//!
//! - [`nvml`]: the boundary to the driver (trait, real implementation, errors).
//! - [`source`]: probing devices and polling them.
//! - [`energy`]: joules from the energy counter, or from power (trapezoid).
//! - [`metrics`]: the metrics reported.
//! - [`testing`]: the scripted test double.

pub mod energy;
pub mod metrics;
pub mod nvml;
mod processes;
pub mod source;
pub mod testing;

use std::path::Path;
use std::time::Duration;

use alumet::config::ConfigError;
use alumet::pipeline::{PluginStartContext, SourceTrigger};
use alumet::plugin::{Plugin, PluginDefinition, PluginError};
use serde::{Deserialize, Serialize};

use crate::metrics::GpuMetrics;
use crate::nvml::{normalize_bus_id, GpuBackend, GpuError, NvmlBackend, OpenError};
use crate::source::{GpuSource, MonitoredGpu};

/// Below this poll interval NVML's driver lock makes polling costly and its
/// values (refreshed every few tens of ms) repeat.
pub const MIN_RECOMMENDED_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The fix suggested whenever the plugin cannot run here.
const DISABLE_HINT: &str = "disable the plugin: [plugins.nvidia] enabled = false";

/// Configuration of `[plugins.nvidia]`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NvidiaConfig {
    /// Time between two polls of each GPU. Default `1s`; below `50ms` a
    /// warning is logged.
    #[serde(with = "alumet::config::duration")]
    pub poll_interval: Duration,
    /// Time between two hand-overs of the points to the pipeline. Default
    /// `5s`; never shorter than `poll_interval`.
    #[serde(with = "alumet::config::duration")]
    pub flush_interval: Duration,
    /// Whether a GPU that fails at start is skipped with a warning (`true`,
    /// default) or makes the plugin fail to start (`false`).
    pub skip_failed_devices: bool,
    /// The GPUs to measure, by NVML index (`"0"`) or PCI bus id
    /// (`"0000:3b:00.0"`, `"00000000:3B:00.0"` or `"3b:00.0"`). Default empty: all.
    pub devices: Vec<String>,
    /// Whether per-process metrics are reported (default `true`). Listing
    /// processes is the slowest NVML call; turn it off to poll faster.
    pub per_process: bool,
}

impl Default for NvidiaConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            flush_interval: Duration::from_secs(5),
            skip_failed_devices: true,
            devices: Vec::new(),
            per_process: true,
        }
    }
}

/// One entry of `devices`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DeviceSelector {
    Index(u32),
    /// Normalised full bus id (`0000:3b:00.0`).
    BusId(String),
    /// Bus id without the PCI domain (`3b:00.0`).
    ShortBusId(String),
}

impl DeviceSelector {
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Ok(index) = text.parse::<u32>() {
            return Ok(Self::Index(index));
        }
        match text.matches(':').count() {
            1 => Ok(Self::ShortBusId(text.to_ascii_lowercase())),
            2 => Ok(Self::BusId(normalize_bus_id(text))),
            _ => Err(format!(
                "\"{text}\" is neither an NVML index (\"0\") nor a PCI bus id (\"0000:3b:00.0\")"
            )),
        }
    }

    fn matches(&self, index: u32, bus_id: &str) -> bool {
        match self {
            Self::Index(i) => *i == index,
            Self::BusId(b) => b == bus_id,
            Self::ShortBusId(b) => bus_id.split_once(':').is_some_and(|(_, rest)| rest == b),
        }
    }
}

impl NvidiaConfig {
    fn selectors(&self) -> Result<Vec<DeviceSelector>, ConfigError> {
        self.devices
            .iter()
            .map(|d| DeviceSelector::parse(d))
            .collect::<Result<_, _>>()
            .map_err(|reason| ConfigError::Invalid {
                key: "devices".to_owned(),
                reason,
            })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        alumet::limits::POLL_INTERVAL.check("poll_interval", self.poll_interval)?;
        alumet::limits::FLUSH_INTERVAL.check("flush_interval", self.flush_interval)?;
        if self.poll_interval.is_zero() {
            return Err(ConfigError::Invalid {
                key: "poll_interval".to_owned(),
                reason: "must be greater than zero, e.g. \"1s\"".to_owned(),
            });
        }
        self.selectors().map(|_| ())
    }
}

/// The `nvidia` plugin.
pub struct NvidiaPlugin {
    config: NvidiaConfig,
    /// `None`: the real driver, opened at start.
    backend: Option<Box<dyn GpuBackend>>,
}

impl NvidiaPlugin {
    /// The plugin over another backend than NVML (a test double).
    pub fn with_backend(
        config: NvidiaConfig,
        backend: Box<dyn GpuBackend>,
    ) -> Result<Self, PluginError> {
        config.validate()?;
        Ok(Self {
            config,
            backend: Some(backend),
        })
    }
}

fn unavailable(e: OpenError) -> PluginError {
    // No library, or a driver that is not loaded on a machine without an
    // NVIDIA device, is a machine without NVIDIA GPUs: information, not a
    // fault. The same on a machine that has one is a broken install.
    let absent = match e {
        OpenError::LibraryNotFound => !has_nvidia_pci_device(Path::new(SYS_PCI_DEVICES)),
        OpenError::DriverNotLoaded => !has_nvidia_pci_device(Path::new(SYS_PCI_DEVICES)),
        _ => false,
    };
    if absent {
        PluginError::absent(e.to_string(), e.fix())
    } else {
        PluginError::unavailable(e.to_string(), e.fix())
    }
}

/// Where the kernel lists PCI devices.
const SYS_PCI_DEVICES: &str = "/sys/bus/pci/devices";

/// NVIDIA's PCI vendor id (the PCI-SIG registry).
const NVIDIA_PCI_VENDOR: &str = "0x10de";

/// Whether a PCI device of NVIDIA's is present under `devices` (each
/// device's `vendor` file). A tree that cannot be read says no.
pub fn has_nvidia_pci_device(devices: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(devices) else {
        return false;
    };
    entries.flatten().any(|e| {
        std::fs::read_to_string(e.path().join("vendor"))
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case(NVIDIA_PCI_VENDOR))
    })
}

/// Opens and probes the GPUs `config` selects. Errors are one-line
/// [`PluginError::Unavailable`]s: there is nothing to measure here.
pub fn open_gpus(
    backend: &dyn GpuBackend,
    config: &NvidiaConfig,
) -> Result<Vec<MonitoredGpu>, PluginError> {
    let selectors = config.selectors()?;
    // NVML's process samples carry the CPU's wall clock in µs: what the
    // driver buffered before now is not the agent's to report.
    let samples_since_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let count = backend.device_count().map_err(|e| {
        PluginError::unavailable(format!("NVML cannot count the GPUs: {e}"), DISABLE_HINT)
    })?;
    if count == 0 {
        return Err(PluginError::absent(
            "the NVIDIA driver is loaded but reports no GPU",
            DISABLE_HINT,
        ));
    }
    let has_bus_selectors = selectors
        .iter()
        .any(|s| matches!(s, DeviceSelector::BusId(_) | DeviceSelector::ShortBusId(_)));
    let mut gpus = Vec::new();
    let mut first_failure = None;
    let mut failed = |index: u32, e: GpuError| -> Result<(), PluginError> {
        if !config.skip_failed_devices {
            return Err(PluginError::unavailable(
                format!("GPU {index} failed at start: {e}"),
                "check it with `nvidia-smi`, or skip it: [plugins.nvidia] skip_failed_devices = true",
            ));
        }
        log::warn!("GPU {index} skipped: it failed at start ({e})");
        first_failure.get_or_insert(format!("GPU {index}: {e}"));
        Ok(())
    };
    for index in 0..count {
        let wanted_by_index =
            selectors.is_empty() || selectors.contains(&DeviceSelector::Index(index));
        if !wanted_by_index && !has_bus_selectors {
            continue;
        }
        let identified = backend
            .device(index)
            .and_then(|device| Ok((normalize_bus_id(&device.pci_bus_id()?), device)));
        let (bus_id, device) = match identified {
            Ok(found) => found,
            // Only its bus id could tell whether it is wanted: a broken GPU
            // that may not be one of `devices` must not stop the plugin.
            Err(e) if !wanted_by_index => {
                log::warn!("GPU {index}: cannot read its PCI bus id ({e}); not measured");
                continue;
            }
            Err(e) => {
                failed(index, e)?;
                continue;
            }
        };
        if !selectors.is_empty() && !selectors.iter().any(|s| s.matches(index, &bus_id)) {
            continue;
        }
        match MonitoredGpu::open(device, config.per_process, samples_since_us) {
            Ok(gpu) => gpus.push(gpu),
            Err(e) => failed(index, e)?,
        }
    }
    if gpus.is_empty() {
        let reason = match first_failure {
            Some(failure) => format!("no usable NVIDIA GPU ({failure})"),
            None => format!(
                "none of the {count} GPUs matches [plugins.nvidia] devices = {:?}",
                config.devices
            ),
        };
        return Err(PluginError::unavailable(
            reason,
            "check `nvidia-smi` and [plugins.nvidia] devices",
        ));
    }
    Ok(gpus)
}

impl Plugin for NvidiaPlugin {
    fn start(&mut self, ctx: &mut PluginStartContext) -> Result<(), PluginError> {
        let real;
        let backend: &dyn GpuBackend = match &self.backend {
            Some(b) => b.as_ref(),
            None => {
                real = NvmlBackend::open().map_err(unavailable)?;
                &real
            }
        };
        let gpus = open_gpus(backend, &self.config)?;
        if self.config.poll_interval < MIN_RECOMMENDED_POLL_INTERVAL {
            log::warn!(
                "nvidia: poll_interval = {} is below {}: NVML serialises calls on a driver lock and refreshes most values every few tens of ms, so polling this fast costs CPU and repeats values",
                alumet::config::format_duration(self.config.poll_interval),
                alumet::config::format_duration(MIN_RECOMMENDED_POLL_INTERVAL),
            );
        }
        let metrics = GpuMetrics::register(|m| ctx.create_metric(m))?;
        let trigger = SourceTrigger::every(self.config.poll_interval)
            .flush_every(self.config.flush_interval)
            .on_dedicated_thread();
        for gpu in gpus {
            let f = gpu.features();
            log::info!(
                "nvidia: measuring GPU {} ({}): energy {}{}",
                gpu.bus_id(),
                gpu.name(),
                if f.energy_counter {
                    "from the driver's counter"
                } else if f.power {
                    "integrated from power (estimated)"
                } else {
                    "not available"
                },
                match gpu.mig_instance_count() {
                    0 => String::new(),
                    n => format!(", {n} MIG instances"),
                }
            );
            let name = format!("gpu-{}", gpu.bus_id());
            ctx.add_source(&name, Box::new(GpuSource::new(gpu, metrics)), trigger);
        }
        Ok(())
    }
}

impl PluginDefinition for NvidiaPlugin {
    const NAME: &'static str = "nvidia";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "NVIDIA GPUs through NVML: energy, power, temperature, utilisation, memory, clocks, per-process use";
    type Config = NvidiaConfig;

    fn init(config: NvidiaConfig) -> Result<Self, PluginError> {
        config.validate()?;
        Ok(Self {
            config,
            backend: None,
        })
    }

    fn config_docs() -> &'static [(&'static str, &'static str)] {
        &[
            ("poll_interval", "time between two polls of each GPU (below 50ms a warning is logged: NVML calls share a driver lock)"),
            ("flush_interval", "time between two hand-overs of the points to the outputs"),
            ("skip_failed_devices", "skip, with a warning, a GPU that fails at start (false: the plugin fails to start)"),
            ("devices", "GPUs to measure, by NVML index (\"0\") or PCI bus id (\"0000:3b:00.0\"); empty: all"),
            ("per_process", "report GPU memory and SM utilisation per process (the slowest NVML calls)"),
        ]
    }

    fn check_availability(config: &NvidiaConfig) -> Result<(), PluginError> {
        config.validate()?;
        let backend = NvmlBackend::open().map_err(unavailable)?;
        match backend.device_count() {
            Ok(0) => Err(PluginError::absent(
                "the NVIDIA driver is loaded but reports no GPU",
                DISABLE_HINT,
            )),
            Ok(_) => Ok(()),
            Err(e) => Err(PluginError::unavailable(
                format!("NVML cannot count the GPUs: {e}"),
                DISABLE_HINT,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_nvidia_pci_device_is_found_by_its_vendor_id() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!has_nvidia_pci_device(&dir.path().join("missing")));
        for (slot, vendor) in [("0000:00:02.0", "0x8086\n"), ("0000:00:03.0", "0x1af4\n")] {
            std::fs::create_dir_all(dir.path().join(slot)).unwrap();
            std::fs::write(dir.path().join(slot).join("vendor"), vendor).unwrap();
        }
        assert!(!has_nvidia_pci_device(dir.path()));
        std::fs::create_dir_all(dir.path().join("0000:3b:00.0")).unwrap();
        std::fs::write(dir.path().join("0000:3b:00.0/vendor"), "0x10DE\n").unwrap();
        assert!(has_nvidia_pci_device(dir.path()));
    }

    #[test]
    fn device_selectors_parse_and_match() {
        let bus = "0000:3b:00.0";
        let sel = |t: &str| DeviceSelector::parse(t).unwrap();
        assert!(sel("1").matches(1, bus));
        assert!(!sel("0").matches(1, bus));
        assert!(sel("00000000:3B:00.0").matches(1, bus));
        assert!(sel("0000:3b:00.0").matches(1, bus));
        assert!(sel("3B:00.0").matches(1, bus));
        assert!(!sel("af:00.0").matches(1, bus));
        assert!(DeviceSelector::parse("gpu0").is_err());
    }

    #[test]
    fn invalid_configs_are_rejected_at_init() {
        let zero = NvidiaConfig {
            poll_interval: Duration::ZERO,
            ..NvidiaConfig::default()
        };
        assert!(NvidiaPlugin::init(zero).is_err());
        let bad_device = NvidiaConfig {
            devices: vec!["first".into()],
            ..NvidiaConfig::default()
        };
        let err = NvidiaPlugin::init(bad_device).err().unwrap().to_string();
        assert!(err.contains("devices"), "{err}");
    }

    #[test]
    fn default_config_round_trips() {
        let table = alumet::config::serialize_config(&NvidiaConfig::default()).unwrap();
        let text = toml::to_string(&table).unwrap();
        assert!(text.contains("poll_interval = \"1s\""), "{text}");
        assert!(text.contains("flush_interval = \"5s\""), "{text}");
        let back: NvidiaConfig = alumet::config::deserialize_config(table).unwrap();
        assert_eq!(back, NvidiaConfig::default());
    }
}
