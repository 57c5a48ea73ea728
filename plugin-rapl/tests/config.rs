//! The `[plugins.rapl]` table: defaults, what `config regen` writes (and
//! the README shows), and the errors for bad values.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use alumet::plugin::{ParsedDocument, PluginDefinition, PluginMetadata};
use plugin_rapl::{InterfaceChoice, RaplConfig, RaplPlugin};

#[test]
fn defaults_are_the_documented_ones() {
    let c = RaplConfig::default();
    assert_eq!(c.interface, InterfaceChoice::Auto);
    assert_eq!(c.sysfs_root, std::path::PathBuf::from("/sys"));
    assert_eq!(c.poll_interval, Duration::from_secs(1));
    assert_eq!(c.flush_interval, Duration::from_secs(5));
    assert_eq!(c.max_power_w_bound, 500.0);
}

#[test]
fn readme_shows_every_default_value() {
    // The exact block, comments included, is checked against the agent's
    // `config regen` in app-agent/tests/e2e_rapl.rs.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let table = (PluginMetadata::of::<RaplPlugin>().default_config)().unwrap();
    for line in toml::to_string(&table).unwrap().lines() {
        assert!(
            readme.lines().any(|l| l == line),
            "README.md lacks the default line {line:?}"
        );
    }
}

#[test]
fn every_key_is_documented_for_regen() {
    let table = (PluginMetadata::of::<RaplPlugin>().default_config)().unwrap();
    let docs = RaplPlugin::config_docs();
    for key in table.keys() {
        assert!(docs.iter().any(|(k, _)| k == key), "no doc for {key}");
    }
    assert_eq!(docs.len(), table.len());
}

#[test]
fn values_parse_from_toml() {
    let c: RaplConfig = toml::from_str(
        "interface = \"powercap\"\nsysfs_root = \"/host/sys\"\npoll_interval = \"10ms\"\nflush_interval = \"1s\"\nmax_power_w_bound = 350\n",
    )
    .unwrap();
    assert_eq!(c.interface, InterfaceChoice::Powercap);
    assert_eq!(c.poll_interval, Duration::from_millis(10));
    assert_eq!(c.max_power_w_bound, 350.0);
}

#[test]
fn bad_values_are_reported_with_the_key() {
    let doc = "[plugins.rapl]\nenabled = true\ninterface = \"msr\"\n";
    let err = (PluginMetadata::of::<RaplPlugin>().check_config_in_document)(
        &ParsedDocument::parse(doc).unwrap(),
    )
    .unwrap_err();
    assert!(err.message().contains("auto"), "{}", err.message());

    let doc = "[plugins.rapl]\npoll_intervall = \"1s\"\n";
    let err = (PluginMetadata::of::<RaplPlugin>().check_config_in_document)(
        &ParsedDocument::parse(doc).unwrap(),
    )
    .unwrap_err();
    assert!(err.message().contains("poll_interval"), "{}", err.message());

    let zero = RaplConfig {
        poll_interval: Duration::ZERO,
        ..RaplConfig::default()
    };
    let err = RaplPlugin::init(zero).unwrap_err();
    assert!(err.to_string().contains("poll_interval"), "{err}");

    let negative = RaplConfig {
        max_power_w_bound: -1.0,
        ..RaplConfig::default()
    };
    assert!(RaplPlugin::init(negative).is_err());
}
