//! The hwmon files of sysfs: a device's `name`, its channels' labels
//! (`*_label`, Grace's `power1_oem_info`), `power*_average_interval`, the
//! PCI slot in `device/uevent`, and the channels' values. A driver, its
//! firmware (a BMC's power meter, a GPU's) or a configured `sysfs_root`
//! writes them.
//!
//! The input is the files' contents, NUL-separated, in a fixed layout
//! (see [`ATTRIBUTES`] and [`VALUES`]): two devices, `hwmon0` with two
//! power channels and an INA3221-style rail, `hwmon1` with two energy
//! counters. After the attributes come the values of each poll, one
//! content per file of [`VALUES`]. The tree is discovered and read as the
//! plugin does, on a hand-driven clock (1 s between polls).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use alumet::measurement::{MeasurementValue, Resource, Timestamp};
use alumet::metrics::MetricRegistry;
use alumet::pipeline::Source;
use alumet_kernelfs::host::ManualClock;
use plugin_hwmon::discovery::{discover, ChannelKind, DriverFilter};
use plugin_hwmon::domain::{canonical_driver, enclosing, grace_socket, jetson_rail, place, Domain};
use plugin_hwmon::source::{ChannelReader, HwmonSource, SourceMetrics};
use plugin_hwmon::DEFAULT_MAX_POWER_W;

/// The attribute files, in the input's order.
const ATTRIBUTES: &[&str] = &[
    "class/hwmon/hwmon0/name",
    "class/hwmon/hwmon0/power1_average_interval",
    "class/hwmon/hwmon0/power1_oem_info",
    "class/hwmon/hwmon0/power2_label",
    "class/hwmon/hwmon0/in3_label",
    "class/hwmon/hwmon0/device/uevent",
    "class/hwmon/hwmon1/name",
    "class/hwmon/hwmon1/energy1_label",
    "class/hwmon/hwmon1/energy2_label",
];

/// The value files, in each poll's order.
const VALUES: &[&str] = &[
    "class/hwmon/hwmon0/power1_average",
    "class/hwmon/hwmon0/power2_input",
    "class/hwmon/hwmon0/in3_input",
    "class/hwmon/hwmon0/curr3_input",
    "class/hwmon/hwmon1/energy1_input",
    "class/hwmon/hwmon1/energy2_input",
];

/// Most polls.
const MAX_POLLS: usize = 8;

fn metrics() -> SourceMetrics {
    static METRICS: OnceLock<SourceMetrics> = OnceLock::new();
    *METRICS.get_or_init(|| {
        let mut r = MetricRegistry::new();
        SourceMetrics {
            energy: r.register(plugin_hwmon::energy_metric()).unwrap(),
            power: r.register(plugin_hwmon::power_metric()).unwrap(),
            unmeasured: r.register(alumet_energy::unmeasured_metric()).unwrap(),
        }
    })
}

/// What the plugin must make of a value file's text, if it accepts it: a
/// decimal integer, trimmed, non-negative, not all ones.
fn accepted(text: &[u8], sixteen_bit: bool) -> Option<u64> {
    let raw: i128 = String::from_utf8_lossy(text).trim().parse().ok()?;
    let raw = u64::try_from(raw).ok()?;
    let all_ones = matches!(raw, 0xFFFF_FFFF | u64::MAX) || (sixteen_bit && raw == 0xFFFF);
    (!all_ones).then_some(raw)
}

/// The label → domain mapping, on `label` as any label file may hold it:
/// deterministic, blind to case and to surrounding blanks, and a Grace
/// socket label written back maps to the same domain and socket.
fn check_mapping(driver: &str, label: &str) {
    let spaced = format!(" {label}\n");
    let lower = label.to_ascii_lowercase();
    let upper = label.to_ascii_uppercase();
    assert_eq!(jetson_rail(label), jetson_rail(&spaced));
    assert_eq!(jetson_rail(&lower), jetson_rail(&upper));
    assert_eq!(grace_socket(label), grace_socket(&spaced));
    if let Some((domain, socket)) = grace_socket(label) {
        let kind = match domain {
            Domain::Module => "Module",
            Domain::Grace => "Grace",
            Domain::Cpu => "CPU",
            Domain::Soc => "SysIO",
            other => panic!("{label:?}: {other} is no Grace domain"),
        };
        let again = format!("{kind} Power Socket {socket}");
        assert_eq!(grace_socket(&again), Some((domain, socket)), "{label:?}");
    }
    for bus in [None, Some("0000:0A:00.0")] {
        let placement = place(driver, Some(label), bus);
        assert_eq!(place(driver, Some(label), bus), placement);
        if driver == "acpi_power_meter" {
            let socket = grace_socket(label).map(|(_, s)| s);
            match placement.resource {
                Resource::CpuPackage { id } => assert_eq!(Some(id), socket),
                Resource::LocalMachine => assert_eq!(socket, None),
                ref other => panic!("{label:?}: {other:?}"),
            }
        }
        let all = [
            Domain::Node,
            Domain::Module,
            Domain::Cpu,
            Domain::Soc,
            Domain::Grace,
            Domain::Gpu,
            Domain::Memory,
            Domain::Other,
        ];
        let outer = enclosing(driver, placement.domain, &all);
        assert_ne!(outer, Some(placement.domain), "{label:?}");
    }
}

/// Writes `files` under `root` (contents by path).
fn write(root: &Path, path: &str, content: &[u8]) {
    let path = root.join(path);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("a directory");
    }
    std::fs::write(path, content).expect("a file");
}

/// A hwmon tree's attributes and values through discovery and the
/// source: the label → domain mapping is deterministic and case-blind;
/// discovery twice gives the same channels, each placed by the mapping;
/// every point is finite and non-negative, a power comes from a value the
/// plugin accepts (a non-negative integer, not all ones) and is at most
/// `max_power_w`, and each channel has at most one energy or
/// unmeasured-time point per poll.
pub fn hwmon_values(data: &[u8]) {
    let mut parts = data.split(|&b| b == 0);
    let attributes: Vec<&[u8]> = ATTRIBUTES
        .iter()
        .map(|_| parts.next().unwrap_or(b""))
        .collect();
    let rest: Vec<&[u8]> = parts.collect();
    let polls: Vec<&[&[u8]]> = rest.chunks_exact(VALUES.len()).take(MAX_POLLS).collect();

    // The mapping alone, on every text that names something.
    for name in [attributes[0], attributes[6]] {
        let name = String::from_utf8_lossy(name);
        let driver = canonical_driver(name.trim()).to_owned();
        for label in [2, 3, 4, 7, 8] {
            check_mapping(&driver, &String::from_utf8_lossy(attributes[label]));
        }
        check_mapping(&driver, &name);
    }

    let dir = crate::scratch_dir();
    let root = dir.path();
    for (path, content) in ATTRIBUTES.iter().zip(&attributes) {
        write(root, path, content);
    }
    let first = polls.first().copied().unwrap_or(&[]);
    for (i, path) in VALUES.iter().enumerate() {
        write(root, path, first.get(i).copied().unwrap_or(b""));
    }

    let Ok(channels) = discover(root, &DriverFilter::all()) else {
        panic!("a tree with class/hwmon");
    };
    assert_eq!(
        discover(root, &DriverFilter::all()).unwrap(),
        channels,
        "discovery is deterministic"
    );
    let interval: Option<u64> = String::from_utf8_lossy(attributes[1]).trim().parse().ok();
    for c in &channels {
        let _ = c.to_string();
        if let Some(label) = &c.label {
            assert!(!label.is_empty() && label.trim() == label, "{label:?}");
        }
        assert_eq!(
            c.placement.domain,
            place(&c.driver, c.label.as_deref(), None).domain
        );
        assert_ne!(c.part_of, Some(c.placement.domain));
        if let ChannelKind::Power {
            averaging_interval_ms: Some(ms),
            ..
        } = c.kind
        {
            assert_eq!(c.channel, "power1");
            assert_eq!(Some(ms), interval);
        }
    }

    // The files each sensor reads: (value indices, 16-bit registers).
    let reads: HashMap<String, (Vec<usize>, bool)> = channels
        .iter()
        .filter(|c| c.is_read())
        .map(|c| {
            let files = match c.channel.as_str() {
                "power1" => vec![0],
                "power2" => vec![1],
                "in3" => vec![2, 3],
                "energy1" => vec![4],
                "energy2" => vec![5],
                other => panic!("no channel {other} in the tree"),
            };
            (c.sensor(), (files, c.channel == "in3"))
        })
        .collect();
    let readers: Vec<ChannelReader> = channels.iter().filter_map(ChannelReader::new).collect();
    assert_eq!(
        readers.len(),
        channels.iter().filter(|c| c.is_read()).count()
    );
    let metrics = metrics();
    let clock = ManualClock::new();
    let mut source = HwmonSource::new(
        metrics,
        readers,
        Arc::new(clock.clone()),
        DEFAULT_MAX_POWER_W,
    );
    for (k, values) in polls.iter().enumerate() {
        if k > 0 {
            for (path, content) in VALUES.iter().zip(values.iter()) {
                write(root, path, content);
            }
        }
        clock.advance_ns(1_000_000_000);
        let mut points = Vec::new();
        let t = Timestamp::from_unix_nanos(1_700_000_000_000_000_000 + k as u64 * 1_000_000_000);
        source.poll(&mut points, t).unwrap();
        let mut energy_points: HashMap<String, usize> = HashMap::new();
        for p in &points {
            let MeasurementValue::F64(v) = p.value else {
                panic!("{p:?} is not an F64");
            };
            assert!(v.is_finite() && v >= 0.0, "{p:?}");
            let sensor = p.attr("sensor").expect("a sensor").to_string();
            let (files, sixteen_bit) = reads.get(&sensor).expect("a sensor read");
            if p.metric == metrics.power {
                assert!(v <= DEFAULT_MAX_POWER_W, "{p:?}");
                let raw: Vec<u64> = files
                    .iter()
                    .map(|&i| {
                        accepted(values[i], *sixteen_bit).unwrap_or_else(|| {
                            panic!(
                                "{sensor}: {:?} is no value",
                                String::from_utf8_lossy(values[i])
                            )
                        })
                    })
                    .collect();
                let expected = raw.iter().map(|&r| r as f64).product::<f64>() * 1e-6;
                assert_eq!(v, expected, "{sensor}");
            } else {
                if p.metric == metrics.unmeasured {
                    assert_eq!(v, 1.0, "{p:?}");
                } else {
                    assert!(p.metric == metrics.energy, "{p:?}");
                }
                *energy_points.entry(sensor).or_default() += 1;
            }
        }
        for (sensor, n) in energy_points {
            assert_eq!(
                n, 1,
                "{sensor}: {n} energy or unmeasured points in one poll"
            );
        }
    }
}
