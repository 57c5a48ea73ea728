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
        PluginMetadata::of::<plugin_hwmon::HwmonPlugin>(),
        PluginMetadata::of::<plugin_redfish::RedfishPlugin>(),
        PluginMetadata::of::<plugin_cpu_power_model::CpuPowerModelPlugin>(),
        PluginMetadata::of::<plugin_energy_attribution::EnergyAttributionPlugin>(),
        PluginMetadata::of::<plugin_energy_to_carbon::EnergyToCarbonPlugin>(),
        PluginMetadata::of::<plugin_filter::FilterPlugin>(),
        PluginMetadata::of::<plugin_aggregate::AggregatePlugin>(),
        PluginMetadata::of::<plugin_csv::CsvPlugin>(),
        PluginMetadata::of::<plugin_influxdb::InfluxDbPlugin>(),
        PluginMetadata::of::<plugin_prometheus::PrometheusPlugin>(),
        PluginMetadata::of::<plugin_opentelemetry::OpenTelemetryPlugin>(),
    ]
}

/// Whether a plugin is enabled when the config does not say: everything that
/// works on any Linux machine without setup. The InfluxDB and OpenTelemetry
/// outputs need a server or receiver, so they are off. The Prometheus
/// endpoint is off too: opening a port is a change to the machine the admin
/// should choose; in `exec` runs it would live only as long as the command
/// (nothing to scrape) and two runs would fight over the port; and an
/// unscraped endpoint only costs memory. Redfish needs a BMC's URL and
/// credentials.
pub fn enabled_by_default(name: &str) -> bool {
    !matches!(
        name,
        "influxdb" | "opentelemetry" | "prometheus" | "filter" | "aggregate" | "redfish"
    )
}
