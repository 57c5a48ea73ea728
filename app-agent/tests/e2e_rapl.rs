//! The agent with the `rapl` plugin, end to end: the real binary reads a
//! fixture powercap tree whose `energy_uj` files a helper thread advances
//! (wrap included) while the agent polls every 20 ms; after SIGTERM, the CSV
//! holds, per domain, exactly the energy the helper added. Also: without
//! RAPL the agent says why in one line and goes on, and the README shows
//! the block `config regen` writes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use alumet::testing::fixture::copy_tree;
use common::{read_u64, sigterm_and_wait as stop, write_in_place};

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn rapl_crate() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-rapl")
}

fn agent(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = common::agent_command();
    cmd.current_dir(dir)
        .args(["--config", dir.join("alumet-config.toml").to_str().unwrap()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn wait_for_csv_rows(csv: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lines = fs::read_to_string(csv)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if lines > 1 {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the agent exited early with {status}");
        }
        assert!(Instant::now() < deadline, "the agent wrote no rows in 30 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A zone the helper advances: its file, range, and (resource, domain) key.
struct Zone {
    energy_uj: PathBuf,
    max_energy_range_uj: u64,
    key: (String, String, String),
    added_uj: u64,
}

#[test]
fn csv_totals_equal_the_energy_added_to_the_microjoule() {
    let dir = tempfile::tempdir().unwrap();
    let sys = dir.path().join("sys");
    copy_tree(
        &rapl_crate().join("tests/fixtures/intel_2socket/sys0"),
        &sys,
    );
    let powercap = sys.join("class/powercap");
    let zone = |name: &str, kind: &str, id: &str, domain: &str| Zone {
        energy_uj: powercap.join(name).join("energy_uj"),
        max_energy_range_uj: read_u64(&powercap.join(name).join("max_energy_range_uj")),
        key: (kind.into(), id.into(), domain.into()),
        added_uj: 0,
    };
    let mut zones = vec![
        zone("intel-rapl:0", "cpu_package", "0", "package"),
        zone("intel-rapl:0:0", "cpu_package", "0", "core"),
        zone("intel-rapl:0:1", "cpu_package", "0", "uncore"),
        zone("intel-rapl:0:2", "dram", "0", "dram"),
        zone("intel-rapl:1", "local_machine", "", "psys"),
        zone("intel-rapl:2", "cpu_package", "1", "package"),
        zone("intel-rapl:2:0", "cpu_package", "1", "core"),
        zone("intel-rapl:2:1", "cpu_package", "1", "uncore"),
        zone("intel-rapl:2:2", "dram", "1", "dram"),
    ];
    let mmio = powercap.join("intel-rapl-mmio:0/energy_uj");

    let top = zones[5].max_energy_range_uj - 5_000;
    write_in_place(&zones[5].energy_uj, top);
    let csv = dir.path().join("out.csv");
    // The test moves the counters by hand: no start-up check.
    let roots = common::rapl_root_args(&sys, false);
    let mut args: Vec<&str> = roots.iter().map(String::as_str).collect();
    args.extend([
        "--plugins",
        "rapl,csv",
        "--set",
        "plugins.rapl.interface=\"powercap\"",
        "--set",
        "plugins.rapl.poll_interval=\"20ms\"",
        "--set",
        "plugins.rapl.flush_interval=\"20ms\"",
        "--set",
        "plugins.csv.flush_interval=\"20ms\"",
        "--output-file",
        csv.to_str().unwrap(),
        "run",
    ]);
    let mut child = agent(dir.path(), &args).spawn().unwrap();
    // Rows mean at least two polls: the counters are primed, so everything
    // added from now on must show up.
    wait_for_csv_rows(&csv, &mut child);

    // Package 1 starts 5 mJ below the top of its range (set before the agent
    // started) and wraps at the second step. Its total stays below one
    // range, so even polls delayed across several steps can never see two
    // wraps in one interval; each step is what a package can draw in 50 ms.
    let package1 = 5;
    let wrap_steps = [1_000, 12_345, 1_000_000, 0, 777, 31];
    let helper = std::thread::spawn(move || {
        for (step, wrap_delta) in wrap_steps.iter().enumerate() {
            for (i, z) in zones.iter_mut().enumerate() {
                let delta_uj = if i == package1 {
                    *wrap_delta
                } else {
                    // Distinct, non-round amounts per zone and step, each what a
                    // domain can draw in the few ms a late poll may leave.
                    (i as u64 + 1) * 100_003 + step as u64 * 7_919
                };
                let current = read_u64(&z.energy_uj);
                let mut next = current + delta_uj;
                if next > z.max_energy_range_uj {
                    next -= z.max_energy_range_uj;
                }
                write_in_place(&z.energy_uj, next);
                z.added_uj += delta_uj;
            }
            // The MMIO window repeats package 0: advancing it must change nothing.
            write_in_place(&mmio, read_u64(&mmio) + 5_000_000);
            std::thread::sleep(Duration::from_millis(50));
        }
        zones
    });
    let zones = helper.join().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let (code, stderr) = stop(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("reading 9 counters through powercap"),
        "{stderr}"
    );

    let mut reader = csv::Reader::from_path(&csv).unwrap();
    let headers = reader.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (metric, unit, value) = (col("metric"), col("unit"), col("value"));
    let (kind, id, attributes) = (col("resource_kind"), col("resource_id"), col("attributes"));
    let (consumer, consumer_id) = (col("consumer_kind"), col("consumer_id"));
    let mut totals_j: BTreeMap<(String, String, String), f64> = BTreeMap::new();
    let mut rows = 0;
    for record in reader.records() {
        let r = record.unwrap();
        if &r[metric] != "rapl_consumed_energy" {
            continue;
        }
        rows += 1;
        assert_eq!(&r[unit], "J");
        assert_eq!((&r[consumer], &r[consumer_id]), ("local_machine", ""));
        let domain = r[attributes]
            .strip_prefix("domain=")
            .unwrap_or_else(|| panic!("attributes {:?}", &r[attributes]))
            .to_owned();
        let v: f64 = r[value].parse().unwrap();
        assert!(v >= 0.0, "negative energy in {r:?}");
        *totals_j
            .entry((r[kind].to_owned(), r[id].to_owned(), domain))
            .or_default() += v;
    }
    assert!(rows >= 9 * 3, "only {rows} rows");
    let expected: BTreeMap<_, _> = zones
        .iter()
        .map(|z| (z.key.clone(), z.added_uj as f64 / 1e6))
        .collect();
    assert_eq!(
        totals_j.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (key, want) in &expected {
        let got = totals_j[key];
        assert!(
            (got - want).abs() <= 1e-6,
            "{key:?}: the CSV says {got} J, the helper added {want} J"
        );
    }
}

#[test]
fn without_rapl_the_agent_says_why_in_one_line_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let empty_sys = dir.path().join("no-rapl");
    fs::create_dir(&empty_sys).unwrap();
    let csv = dir.path().join("out.csv");
    let roots = common::rapl_root_args(&empty_sys, true);
    let mut args: Vec<&str> = roots.iter().map(String::as_str).collect();
    args.extend([
        "--plugins",
        "rapl,procfs,csv",
        "--set",
        "plugins.procfs.flush_interval=\"100ms\"",
        "--set",
        "plugins.csv.flush_interval=\"100ms\"",
        "--output-file",
        csv.to_str().unwrap(),
        "run",
    ]);
    let mut child = agent(dir.path(), &args).spawn().unwrap();
    wait_for_csv_rows(&csv, &mut child);
    let (code, stderr) = stop(child);
    assert_eq!(code, Some(0), "{stderr}");
    let rapl_lines: Vec<&str> = stderr.lines().filter(|l| l.contains("rapl")).collect();
    assert_eq!(rapl_lines.len(), 1, "{stderr}");
    let line = rapl_lines[0];
    let pmu = empty_sys.join("bus/event_source/devices/power");
    let zones = empty_sys.join("class/powercap");
    assert!(
        line.contains(&format!(
            "no RAPL interface found (no power PMU at {}, no powercap zones at {})",
            pmu.display(),
            zones.display()
        )),
        "{line}"
    );
    assert!(line.contains("virtual machines"), "{line}");
    let text = fs::read_to_string(&csv).unwrap();
    assert!(text.contains(",cpu_time,"), "procfs still measures");
    assert!(!text.contains("rapl_consumed_energy"));
}

#[test]
fn readme_block_is_what_config_regen_writes() {
    let section = common::regen_section("rapl");
    let readme = fs::read_to_string(rapl_crate().join("README.md")).unwrap();
    assert!(
        readme.contains(&section),
        "plugin-rapl/README.md must show the block exactly as regen writes it:\n{section}"
    );
}
