//! The plugins compiled into the agent, in start order: sources first, then
//! the transforms (applied in this order: cpu-power-model before
//! energy-attribution, so an estimate is attributed like RAPL's energy;
//! energy-to-carbon after it, so attributed energy gets its carbon), then the outputs.

use alumet::plugin::PluginMetadata;

/// Every built-in plugin.
pub fn all() -> Vec<PluginMetadata> {
    vec![
        PluginMetadata::of::<plugin_procfs::ProcfsPlugin>(),
        PluginMetadata::of::<plugin_cgroups::CgroupsPlugin>(),
        PluginMetadata::of::<plugin_rapl::RaplPlugin>(),
        PluginMetadata::of::<plugin_nvidia::NvidiaPlugin>(),
        PluginMetadata::of::<plugin_cpu_power_model::CpuPowerModelPlugin>(),
        PluginMetadata::of::<plugin_energy_attribution::EnergyAttributionPlugin>(),
        PluginMetadata::of::<plugin_energy_to_carbon::EnergyToCarbonPlugin>(),
        PluginMetadata::of::<plugin_csv::CsvPlugin>(),
        PluginMetadata::of::<plugin_influxdb::InfluxDbPlugin>(),
    ]
}

/// Whether a plugin is enabled when the config does not say: everything that
/// works on any Linux machine without setup. InfluxDB needs a server, so it is off.
pub fn enabled_by_default(name: &str) -> bool {
    name != "influxdb"
}
