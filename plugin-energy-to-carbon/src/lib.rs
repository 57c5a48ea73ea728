//! Plugin `energy-to-carbon`: a transform that turns every energy point (any
//! metric in joules of kind delta: RAPL, GPU, attributed, unattributed,
//! estimated) into a `carbon_emission` point, g CO2e, from the carbon
//! intensity of the electricity grid and the data centre's PUE.

pub mod countries;
pub mod intensity;
pub mod transform;

use std::path::PathBuf;

use alumet::config::ConfigError;
use alumet::metrics::{Metric, MetricKind, Unit, ValueType};
use alumet::pipeline::builder::PluginStartContext;
use alumet::plugin::{Plugin, PluginDefinition, PluginError};
use serde::{Deserialize, Serialize};

pub use intensity::Intensity;
pub use transform::{CarbonStats, CarbonTransform, JOULES_PER_KWH};

/// Name of the output metric.
pub const CARBON_METRIC: &str = "carbon_emission";

/// Configuration of `[plugins.energy-to-carbon]`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// CSV file of `timestamp,g_co2e_per_kwh` rows (e.g. hourly data from a
    /// grid operator); "" for none. Preferred over the other two when set.
    pub intensity_file: PathBuf,
    /// A fixed intensity in g CO2e/kWh; preferred over `country` when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intensity_g_per_kwh: Option<f64>,
    /// ISO 3166-1 alpha-2 or alpha-3 code whose annual average (bundled
    /// table) applies; "" for none.
    pub country: String,
    /// Power usage effectiveness of the data centre (≥ 1): facility energy
    /// over IT energy. Carbon is computed from energy × pue.
    pub pue: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            intensity_file: PathBuf::new(),
            intensity_g_per_kwh: None,
            country: String::new(),
            pue: 1.0,
        }
    }
}

fn invalid(key: &str, reason: impl Into<String>) -> PluginError {
    PluginError::Config(ConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.into(),
    })
}

impl Config {
    /// The intensity this configuration asks for: the time series file,
    /// else the fixed value, else the country, else the world average
    /// (marked estimated).
    pub fn intensity(&self) -> Result<Intensity, PluginError> {
        Ok(self
            .configured_intensity()?
            .unwrap_or(Intensity::WorldAverage))
    }

    /// The intensity the configuration sets, if any.
    pub fn configured_intensity(&self) -> Result<Option<Intensity>, PluginError> {
        let as_config = |e: intensity::IntensityError| invalid(e.key, e.reason);
        if !self.intensity_file.as_os_str().is_empty() {
            return intensity::time_series(&self.intensity_file)
                .map(Some)
                .map_err(as_config);
        }
        if let Some(v) = self.intensity_g_per_kwh {
            return intensity::fixed(v).map(Some).map_err(as_config);
        }
        if !self.country.trim().is_empty() {
            return intensity::country(&self.country)
                .map(Some)
                .map_err(as_config);
        }
        Ok(None)
    }

    /// Checks the values that serde cannot (the intensity is checked by [`Config::intensity`]).
    pub fn validate(&self) -> Result<(), PluginError> {
        if !(self.pue.is_finite() && self.pue >= 1.0) {
            return Err(invalid(
                "pue",
                format!(
                    "{} is not a PUE (facility energy / IT energy, ≥ 1.0; 1.0 counts the IT energy alone)",
                    self.pue
                ),
            ));
        }
        Ok(())
    }
}

/// The definition of `carbon_emission`.
pub fn carbon_metric() -> Metric {
    Metric::new(
        CARBON_METRIC,
        Unit::Custom {
            ucum: "g{CO2eq}".into(),
            symbol: "gCO2e".into(),
        },
        ValueType::F64,
        MetricKind::Delta,
        "Carbon emission of an energy point (energy × pue × grid intensity); attributes say which energy metric and which intensity.",
    )
}

/// The `energy-to-carbon` plugin.
#[derive(Debug)]
pub struct EnergyToCarbonPlugin {
    config: Config,
    intensity: Intensity,
}

impl PluginDefinition for EnergyToCarbonPlugin {
    const NAME: &'static str = "energy-to-carbon";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Carbon emission (g CO2e) of every energy point, from a grid intensity (time series file, fixed value or country average) and a PUE.";
    type Config = Config;

    fn init(config: Config) -> Result<Self, PluginError> {
        config.validate()?;
        let intensity = config.intensity()?;
        Ok(Self { config, intensity })
    }

    fn check_availability(config: &Config) -> Result<(), PluginError> {
        config.intensity().map(|_| ())
    }

    fn config_docs() -> &'static [(&'static str, &'static str)] {
        &[
            ("intensity_file", "CSV of timestamp,g_co2e_per_kwh rows (RFC 3339 or unix seconds), e.g. hourly grid data; preferred over intensity_g_per_kwh and country; \"\" for none"),
            ("intensity_g_per_kwh", "fixed carbon intensity in g CO2e/kWh, e.g. intensity_g_per_kwh = 56.0; preferred over country"),
            ("country", "ISO 3166-1 code (\"FR\" or \"FRA\") whose annual average intensity, from the bundled table, applies; \"\" for none (then the world average, marked intensity_estimated). A fixed intensity_g_per_kwh = 56.0 (unset by default) is preferred over it"),
            ("pue", "power usage effectiveness of the data centre (>= 1.0): carbon is computed from energy x pue"),
        ]
    }
}

impl Plugin for EnergyToCarbonPlugin {
    fn start(&mut self, ctx: &mut PluginStartContext) -> Result<(), PluginError> {
        let intensity = self.intensity.clone();
        if intensity.is_estimated() {
            log::info!(
                "energy-to-carbon: no carbon intensity is configured: the world average, {} g CO2e/kWh, is used and every carbon point says so (intensity_estimated=true); set plugins.energy-to-carbon.country = \"FR\" (ISO 3166 code), intensity_g_per_kwh or intensity_file for your grid",
                intensity::WORLD_AVERAGE_G_PER_KWH
            );
        }
        let output = ctx.create_metric(carbon_metric())?;
        ctx.add_transform(
            "carbon",
            Box::new(CarbonTransform::new(intensity, self.config.pue, output)),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        alumet::config::deserialize_config(toml::from_str::<toml::Table>(text).unwrap())
    }

    #[test]
    fn by_default_the_world_average_is_used_and_marked_estimated() {
        let table = alumet::config::serialize_config(&Config::default()).unwrap();
        let back: Config = alumet::config::deserialize_config(table).unwrap();
        assert_eq!(back, Config::default());
        let plugin = EnergyToCarbonPlugin::init(back).unwrap();
        assert_eq!(plugin.intensity, Intensity::WorldAverage);
        assert!(plugin.intensity.is_estimated());
        assert_eq!(plugin.intensity.at(0), 481.0);
        assert!(plugin
            .intensity
            .source()
            .starts_with("world average 2023 (Ember"));
        assert!(EnergyToCarbonPlugin::check_availability(&Config::default()).is_ok());
    }

    #[test]
    fn preference_file_then_fixed_then_country() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("grid.csv");
        std::fs::write(&file, "timestamp,g\n0,10\n").unwrap();
        let mut c = parse("country = \"DE\"\nintensity_g_per_kwh = 5.0").unwrap();
        c.intensity_file = file;
        assert!(matches!(
            c.intensity().unwrap(),
            Intensity::TimeSeries { .. }
        ));
        c.intensity_file = PathBuf::new();
        assert_eq!(c.intensity().unwrap(), Intensity::Fixed(5.0));
        c.intensity_g_per_kwh = None;
        assert!(matches!(c.intensity().unwrap(), Intensity::Country(d) if d.alpha_3 == "DEU"));
        assert!(!c.intensity().unwrap().is_estimated());
    }

    #[test]
    fn bad_values_are_config_errors() {
        let c = parse("pue = 0.5").unwrap();
        assert!(matches!(
            EnergyToCarbonPlugin::init(c),
            Err(PluginError::Config(_))
        ));
        let c = parse("country = \"FRX\"").unwrap();
        let e = EnergyToCarbonPlugin::init(c).unwrap_err().to_string();
        assert!(e.contains("did you mean `FRA`"), "{e}");
        assert!(parse("contry = \"FR\"").is_err());
    }
}
