//! The bundled table of CPU models (`data/cpu_tdp.csv`): thermal design
//! power and threads per socket, looked up by the model name that
//! `/proc/cpuinfo` gives.
//!
//! The figures are public vendor specifications (Intel ARK, AMD product
//! pages), mostly as compiled by Boavizta's open dataset
//! (`boaviztapi/data/crowdsourcing/cpu_specs.csv`); each row names its
//! source, and the README says how the table was made. Custom cloud SKUs
//! (Xeon Platinum 8375C, EPYC 7R13...) have no published TDP: their rows
//! are Boavizta's estimates.

use std::path::Path;
use std::sync::OnceLock;

/// One CPU model of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuModel {
    /// `Intel` or `AMD`.
    pub vendor: String,
    /// The model, as [`normalize`] writes cpuinfo's name (`Xeon Platinum 8375C`).
    pub model: String,
    /// Cores per socket.
    pub cores: u32,
    /// Hardware threads per socket.
    pub threads: u32,
    /// Thermal design power of one socket, W.
    pub tdp_w: f64,
    /// Where the figures come from.
    pub source: String,
}

const TABLE: &str = include_str!("../data/cpu_tdp.csv");

/// Every model of the table (parsed once; a bad row is a build defect the tests catch).
pub fn all() -> &'static [CpuModel] {
    static PARSED: OnceLock<Vec<CpuModel>> = OnceLock::new();
    PARSED.get_or_init(|| {
        TABLE
            .lines()
            .skip(1)
            .filter_map(|line| {
                let f: Vec<&str> = line.split(',').collect();
                let [vendor, model, cores, threads, tdp_w, source] = f.as_slice() else {
                    return None;
                };
                Some(CpuModel {
                    vendor: (*vendor).to_owned(),
                    model: (*model).to_owned(),
                    cores: cores.parse().ok()?,
                    threads: threads.parse().ok()?,
                    tdp_w: tdp_w.parse().ok()?,
                    source: (*source).to_owned(),
                })
            })
            .collect()
    })
}

/// Words of cpuinfo's `model name` that are not part of the model.
const NOISE: &[&str] = &["(R)", "(r)", "(TM)", "(tm)", "CPU", "Processor"];

/// The table's key for a cpuinfo `model name`: vendor and marketing words,
/// the frequency and core-count suffixes and the generation prefix dropped,
/// spaces collapsed. `Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz` →
/// (`Intel`, `Xeon Platinum 8375C`); `AMD EPYC 9654 96-Core Processor` →
/// (`AMD`, `EPYC 9654`).
pub fn normalize(model_name: &str) -> Option<(&'static str, String)> {
    let mut text = model_name.to_owned();
    // "@ 2.90GHz" and everything after it
    if let Some(at) = text.find('@') {
        text.truncate(at);
    }
    // Ryzen APUs: "... with Radeon Graphics", "... w/ Radeon 780M Graphics"
    for marker in [" with Radeon", " w/ Radeon"] {
        if let Some(i) = text.find(marker) {
            text.truncate(i);
        }
    }
    for noise in NOISE {
        text = text.replace(noise, " ");
    }
    let mut words: Vec<&str> = text.split_whitespace().collect();
    // "11th Gen Intel(R) Core(TM) i7-1165G7": the generation comes first
    if let [generation, "Gen", ..] = words.as_slice() {
        if generation.starts_with(|c: char| c.is_ascii_digit()) {
            words.drain(..2);
        }
    }
    let vendor = match words.first() {
        Some(&"Intel") => "Intel",
        Some(&"AMD") => "AMD",
        _ => return None,
    };
    words.remove(0);
    // "96-Core", "16-Core"; first-generation E5's stray "0"
    words.retain(|w| !w.ends_with("-Core") && *w != "0");
    if words.is_empty() {
        return None;
    }
    Some((vendor, words.join(" ")))
}

/// The model of the table that a cpuinfo `model name` names, if any.
pub fn lookup(model_name: &str) -> Option<&'static CpuModel> {
    let (vendor, key) = normalize(model_name)?;
    all()
        .iter()
        .find(|m| m.vendor == vendor && m.model.eq_ignore_ascii_case(&key))
}

/// The first `model name` of `<proc_root>/cpuinfo`, if any.
pub fn cpuinfo_model_name(proc_root: &Path) -> Option<String> {
    let text = std::fs::read_to_string(proc_root.join("cpuinfo")).ok()?;
    text.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_parses_and_is_plausible() {
        let lines = TABLE.lines().skip(1).filter(|l| !l.is_empty()).count();
        assert_eq!(all().len(), lines, "a row does not parse");
        assert!(all().len() >= 200);
        for m in all() {
            assert!(m.vendor == "Intel" || m.vendor == "AMD", "{m:?}");
            assert!(m.threads >= m.cores && m.cores > 0, "{m:?}");
            assert!(m.tdp_w >= 5.0 && m.tdp_w <= 600.0, "{m:?}");
            assert!(!m.source.is_empty(), "{m:?}");
            assert_eq!(
                normalize(&format!("{} {}", m.vendor, m.model)).map(|(_, k)| k),
                Some(m.model.clone()),
                "{m:?}"
            );
        }
        let mut keys: Vec<(&str, String)> = all()
            .iter()
            .map(|m| (m.vendor.as_str(), m.model.to_ascii_lowercase()))
            .collect();
        keys.sort();
        let before = keys.len();
        keys.dedup();
        assert_eq!(keys.len(), before, "duplicate models");
    }

    #[test]
    fn cpuinfo_names_are_normalized_to_the_table_keys() {
        for (raw, vendor, key) in [
            (
                "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz",
                "Intel",
                "Xeon Platinum 8375C",
            ),
            (
                "Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz",
                "Intel",
                "Xeon E5-2686 v4",
            ),
            ("AMD EPYC 7R13 Processor", "AMD", "EPYC 7R13"),
            ("AMD EPYC 9654 96-Core Processor", "AMD", "EPYC 9654"),
            (
                "Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz",
                "Intel",
                "Core i7-8650U",
            ),
            (
                "11th Gen Intel(R) Core(TM) i7-1165G7 @ 2.80GHz",
                "Intel",
                "Core i7-1165G7",
            ),
            (
                "AMD Ryzen 7 7840U w/ Radeon 780M Graphics",
                "AMD",
                "Ryzen 7 7840U",
            ),
            (
                "AMD Ryzen 9 5950X 16-Core Processor",
                "AMD",
                "Ryzen 9 5950X",
            ),
        ] {
            assert_eq!(normalize(raw), Some((vendor, key.to_owned())), "{raw}");
        }
        // This project's CI machines: a generic name, in no table.
        assert_eq!(
            normalize("Intel(R) Xeon(R) Processor"),
            Some(("Intel", "Xeon".to_owned()))
        );
        assert!(lookup("Intel(R) Xeon(R) Processor").is_none());
        assert!(normalize("ARMv8 Processor rev 1 (v8l)").is_none());
    }

    #[test]
    fn known_cloud_cpus_are_found_with_their_figures() {
        let m = lookup("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz").unwrap();
        assert_eq!((m.threads, m.tdp_w), (64, 300.0));
        let m = lookup("AMD EPYC 7R13 Processor").unwrap();
        assert_eq!((m.threads, m.tdp_w), (96, 225.0));
    }

    #[test]
    fn the_model_name_is_the_first_one_of_cpuinfo() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(cpuinfo_model_name(dir.path()), None);
        std::fs::write(
            dir.path().join("cpuinfo"),
            "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz\n\nprocessor\t: 1\nmodel name\t: other\n",
        )
        .unwrap();
        assert_eq!(
            cpuinfo_model_name(dir.path()).as_deref(),
            Some("Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz")
        );
    }
}
