//! What a person writes: the TOML configuration, read section by section
//! into each plugin's config type and validated as the agent does, and
//! the carbon-intensity file that energy-to-carbon reads.

use std::io::Write;

use alumet::plugin::{ParsedDocument, PluginDefinition};
use plugin_energy_to_carbon::intensity::{time_series, Intensity};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Reads `[plugins.NAME]` of the document into `P`'s config type. One that
/// reads is written back and read again to the same TOML; then `init`
/// (which validates, without side effects) runs on it unless `init` is
/// false (rapl's `init` probes the machine: only its root is checked).
fn plugin<P: PluginDefinition>(document: &ParsedDocument<'_>, init: bool)
where
    P::Config: Serialize + DeserializeOwned,
{
    let Ok(config) = document.plugin_section::<P::Config>(P::NAME) else {
        return;
    };
    let text = toml::to_string(&config)
        .unwrap_or_else(|e| panic!("[plugins.{}] read but cannot be written: {e}", P::NAME));
    let again: P::Config = toml::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "[plugins.{}] written as\n{text}\ndoes not read: {e}",
            P::NAME
        )
    });
    assert_eq!(
        toml::to_string(&again).ok().as_deref(),
        Some(text.as_str()),
        "[plugins.{}] changes when written and read again",
        P::NAME
    );
    if init {
        // An error is an answer; a panic or a hang is the bug.
        let _ = P::init(config);
    }
}

/// A whole configuration file: every plugin's section read, round-tripped
/// and validated.
pub fn plugin_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(document) = ParsedDocument::parse(text) else {
        return;
    };
    plugin::<plugin_procfs::ProcfsPlugin>(&document, true);
    plugin::<plugin_cgroups::CgroupsPlugin>(&document, true);
    plugin::<plugin_csv::CsvPlugin>(&document, true);
    plugin::<plugin_influxdb::InfluxDbPlugin>(&document, true);
    plugin::<plugin_prometheus::PrometheusPlugin>(&document, true);
    plugin::<plugin_opentelemetry::OpenTelemetryPlugin>(&document, true);
    plugin::<plugin_energy_attribution::EnergyAttributionPlugin>(&document, true);
    plugin::<plugin_energy_to_carbon::EnergyToCarbonPlugin>(&document, true);
    plugin::<plugin_cpu_power_model::CpuPowerModelPlugin>(&document, true);
    plugin::<plugin_nvidia::NvidiaPlugin>(&document, true);
    plugin::<plugin_rapl::RaplPlugin>(&document, false);
    if let Ok(config) =
        document.plugin_section::<plugin_rapl::RaplConfig>(plugin_rapl::RaplPlugin::NAME)
    {
        let _ = config.with_absolute_root();
    }
}

/// The carbon-intensity time series (`intensity_file`): rows sorted by
/// time, values finite and not negative, and the intensity at any time one
/// of the rows' values.
pub fn carbon_intensity(data: &[u8]) {
    let mut file = tempfile::NamedTempFile::new().expect("a temporary file");
    file.write_all(data).expect("written");
    let Ok(intensity) = time_series(file.path()) else {
        return;
    };
    let Intensity::TimeSeries { rows, .. } = &intensity else {
        panic!("a file gave {intensity:?}");
    };
    assert!(!rows.is_empty());
    for pair in rows.windows(2) {
        assert!(pair[0].0 < pair[1].0, "{rows:?}");
    }
    for (t, v) in rows {
        assert!(v.is_finite() && *v >= 0.0);
        for at in [t.saturating_sub(1), *t, t.saturating_add(1)] {
            let value = intensity.at(at);
            assert!(rows.iter().any(|(_, v)| *v == value));
        }
    }
    assert!(!intensity.outside_series(u64::MAX));
    assert_eq!(intensity.outside_series(0), rows[0].0 > 0);
}
