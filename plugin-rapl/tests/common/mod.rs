//! Shared helpers of the fixture tests: copy a fixture sysfs tree into a
//! temp dir, advance its counters in place, run the plugin in a test
//! pipeline, and doubles for the perf and file-opening boundaries.
#![allow(clippy::unwrap_used, dead_code, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alumet::measurement::{MeasurementPoint, ResourceConsumer};
use alumet::testing::TestPipeline;
use plugin_rapl::perf::{PerfCounterOpener, PerfEnergyEvent};
use plugin_rapl::powercap::EnergyFileOpener;
use plugin_rapl::source::RawEnergyReader;
use plugin_rapl::{Backends, Interface, RaplConfig, RaplPlugin, METRIC_NAME};

/// `tests/fixtures/<case>`.
pub fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(case)
}

/// Copies the tree `from` into `to` (created if needed).
pub use alumet::testing::fixture::copy_tree;

/// Writes `contents` into the existing file `path` in place (same inode),
/// as the kernel updates sysfs: the plugin keeps its
/// `energy_uj` files open, so replacing them (rename) would go unnoticed.
pub fn write_in_place(path: &Path, contents: &str) {
    // Not truncated first: a reader between the truncation and the write
    // would see an empty file, which no sysfs file ever is. A growing
    // counter's text is never shorter, so it is overwritten whole; a
    // shorter one (a wrap) is cut after.
    let mut f = OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.write_all(contents.as_bytes()).unwrap();
    f.set_len(contents.len() as u64).unwrap();
}

/// Applies the snapshot tree `snapshot` (only the files that change) onto `root`.
pub fn apply_snapshot(snapshot: &Path, root: &Path) {
    for entry in fs::read_dir(snapshot).unwrap() {
        let entry = entry.unwrap();
        let target = root.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            apply_snapshot(&entry.path(), &target);
        } else {
            write_in_place(&target, &fs::read_to_string(entry.path()).unwrap());
        }
    }
}

/// A fixture case copied into a temp dir (`sys0`), ready to be advanced.
pub struct SysfsCopy {
    pub dir: tempfile::TempDir,
    pub case: PathBuf,
}

impl SysfsCopy {
    pub fn of(case: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let case = fixture(case);
        copy_tree(&case.join("sys0"), dir.path());
        Self { dir, case }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Number of snapshots after sys0 (sys1, sys2, ...).
    pub fn snapshot_count(&self) -> usize {
        (1..)
            .take_while(|i| self.case.join(format!("sys{i}")).is_dir())
            .count()
    }

    /// Applies `sys<i>`.
    pub fn advance_to(&self, i: usize) {
        apply_snapshot(&self.case.join(format!("sys{i}")), self.root());
    }
}

/// One emitted point, in the form of expected.csv.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub poll: usize,
    pub resource_kind: String,
    pub resource_id: String,
    pub domain: String,
    pub energy_j: f64,
    /// The `die` attribute; empty when the point has none.
    pub die: String,
}

impl Row {
    fn key(&self) -> (usize, String, String, String, String) {
        (
            self.poll,
            self.resource_kind.clone(),
            self.resource_id.clone(),
            self.domain.clone(),
            self.die.clone(),
        )
    }
}

/// Reads `tests/fixtures/<case>/expected.csv`, sorted. A sixth column, when
/// the header has one, is the `die` attribute.
pub fn expected_rows(case: &str) -> Vec<Row> {
    let text = fs::read_to_string(fixture(case).join("expected.csv")).unwrap();
    let mut rows: Vec<Row> = text
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            assert!(f.len() == 5 || f.len() == 6, "bad expected line {line:?}");
            Row {
                poll: f[0].parse().unwrap(),
                resource_kind: f[1].into(),
                resource_id: f[2].into(),
                domain: f[3].into(),
                energy_j: f[4].parse().unwrap(),
                die: f.get(5).map(|d| d.to_string()).unwrap_or_default(),
            }
        })
        .collect();
    rows.sort_by_key(Row::key);
    rows
}

/// Asserts that `actual` and `expected` hold the same rows, energies equal
/// to well below a microjoule.
pub fn assert_rows_match(actual: &[Row], expected: &[Row]) {
    let mut actual = actual.to_vec();
    actual.sort_by_key(Row::key);
    let keys = |rows: &[Row]| rows.iter().map(Row::key).collect::<Vec<_>>();
    assert_eq!(keys(&actual), keys(expected), "points differ: {actual:#?}");
    for (a, e) in actual.iter().zip(expected) {
        assert!(
            (a.energy_j - e.energy_j).abs() < 1e-9,
            "{:?}: got {} J, expected {} J",
            a.key(),
            a.energy_j,
            e.energy_j
        );
    }
}

/// What a run of the plugin produced.
pub struct Run {
    /// Points of every poll after the priming one (whose points, all 0 J,
    /// are checked and left out), by poll (1-based), including the last
    /// poll at shutdown.
    pub polls: Vec<Vec<Row>>,
    /// The interface the plugin chose.
    pub interface: Interface,
}

impl Run {
    /// Rows of polls `1..=n`.
    pub fn rows_up_to(&self, n: usize) -> Vec<Row> {
        self.polls.iter().take(n).flatten().cloned().collect()
    }
}

fn to_row(poll: usize, p: &MeasurementPoint) -> Row {
    assert_eq!(p.consumer, ResourceConsumer::LocalMachine);
    let die = p.attr("die").map(|d| d.to_string()).unwrap_or_default();
    let expected_attributes = if die.is_empty() { 1 } else { 2 };
    assert_eq!(
        p.attributes.len(),
        expected_attributes,
        "only the domain (and die) attributes: {p:?}"
    );
    Row {
        poll,
        resource_kind: p.resource.kind().to_owned(),
        resource_id: p.resource.id().into_owned(),
        domain: p.attr("domain").unwrap().to_string(),
        energy_j: p.value.as_f64(),
        die,
    }
}

/// A config reading `root`, polled only by hand (the interval is a day).
/// The fixture's counters move only when the test says, so the start-up
/// check that they count is off (`tests/counting.rs` tests it), and so is
/// the proc root's say on virtual machines (an empty directory: bare metal).
pub fn manual_config(root: &Path) -> RaplConfig {
    RaplConfig {
        sysfs_root: root.to_owned(),
        poll_interval: Duration::from_secs(24 * 3600),
        flush_interval: Duration::from_secs(24 * 3600),
        counting_check: Duration::ZERO,
        proc_root: root.join("no-proc"),
        ..RaplConfig::default()
    }
}

/// How long a step of [`run_plugin`] lasts.
pub const STEP: Duration = Duration::from_millis(160);

/// Starts the plugin, waits for its priming poll, then for each step calls
/// `before_step(step)` and polls; shuts down (one last poll) and returns
/// the points grouped by poll.
pub fn run_plugin(
    config: RaplConfig,
    backends: Backends,
    steps: usize,
    mut before_step: impl FnMut(usize),
) -> Run {
    let mut plugin = RaplPlugin::with_backends(config, backends).unwrap();
    let mut t = TestPipeline::builder();
    t.start_plugin("rapl", &mut plugin)
        .unwrap_or_else(|e| panic!("plugin failed to start: {e}"));
    let interface = plugin.interface().unwrap();
    let running = t.start();
    // The pipeline polls every source once at start: that poll primes the
    // counters, and must happen before the files change.
    assert!(
        running.wait_for_polls("rapl/energy", 1, Duration::from_secs(10)),
        "no first poll"
    );
    for step in 1..=steps {
        // Each step lasts a real STEP: the fixtures advance by up to
        // 150 J a step, within what a domain can draw (an advance of more
        // than twice its highest power is implausible and skipped).
        std::thread::sleep(STEP);
        before_step(step);
        running.trigger_all();
    }
    let result = running.finish();
    let metric = result.metrics.by_name(METRIC_NAME).unwrap();
    let def = result.metrics.get(metric).unwrap();
    assert_eq!(def.unit.ucum_code(), "J");
    assert_eq!(def.kind, alumet::metrics::MetricKind::Delta);
    assert_eq!(def.value_type, alumet::metrics::ValueType::F64);

    // Every point of one poll has that poll's timestamp.
    let points = result.points_of(METRIC_NAME);
    let mut timestamps: Vec<_> = points.iter().map(|p| p.timestamp).collect();
    timestamps.dedup();
    let mut polls = timestamps
        .iter()
        .enumerate()
        .map(|(i, ts)| {
            points
                .iter()
                .filter(|p| p.timestamp == *ts)
                .map(|p| to_row(i, p))
                .collect()
        })
        .collect::<Vec<Vec<Row>>>();
    // The priming poll says when the first interval starts: 0 J for every
    // counter it reads.
    assert!(!polls.is_empty(), "no priming poll");
    let priming = polls.remove(0);
    assert!(
        !priming.is_empty() && priming.iter().all(|r| r.energy_j == 0.0),
        "the priming poll gives 0 J for every counter: {priming:?}"
    );
    assert_eq!(
        polls.len(),
        steps + 1,
        "expected {steps} triggered polls and the last one, got {polls:#?}"
    );
    Run { polls, interface }
}

/// Runs a fixture case through powercap and checks it against expected.csv.
pub fn check_powercap_case(case: &str) {
    let tree = SysfsCopy::of(case);
    let config = RaplConfig {
        interface: plugin_rapl::InterfaceChoice::Powercap,
        ..manual_config(tree.root())
    };
    let steps = tree.snapshot_count();
    // Intervals of a real length (STEP): a counter going backwards is taken
    // for a wrap only when the energy it implies fits the elapsed time at
    // max_power_w_bound (160 ms at 500 W: 80 J).
    let run = run_plugin(config, Backends::real(), steps, |i| tree.advance_to(i));
    assert_eq!(run.interface, Interface::Powercap);
    assert_rows_match(&run.rows_up_to(steps), &expected_rows(case));
    // Nothing changed after the last snapshot: the shutdown poll says 0 J.
    let last = run.polls.last().unwrap();
    assert!(last.iter().all(|r| r.energy_j == 0.0), "{last:?}");
}

/// A perf double: each opened counter replays its list of raw counts, one
/// per read, then repeats the last one.
#[derive(Default)]
pub struct ReplayPerf {
    counts: Mutex<HashMap<(String, u32), Vec<u64>>>,
    opened: Mutex<Vec<(String, u32, f64)>>,
    pmu_dirs: Mutex<Vec<PathBuf>>,
    fail_with: Option<io::ErrorKind>,
}

impl ReplayPerf {
    /// Counters that replay `counts[(event, cpu)]`.
    pub fn new(counts: &[(&str, u32, &[u64])]) -> Self {
        let map = counts
            .iter()
            .map(|(e, cpu, v)| ((e.to_string(), *cpu), v.to_vec()))
            .collect();
        Self {
            counts: Mutex::new(map),
            ..Self::default()
        }
    }

    /// Every open fails with `kind` (EACCES for permission).
    pub fn failing(kind: io::ErrorKind) -> Self {
        Self {
            fail_with: Some(kind),
            ..Self::default()
        }
    }

    /// (event, cpu, scale) of every counter opened, in order.
    pub fn opened(&self) -> Vec<(String, u32, f64)> {
        self.opened.lock().unwrap().clone()
    }

    /// The PMU directory of every counter opened, in order.
    pub fn pmu_dirs(&self) -> Vec<PathBuf> {
        self.pmu_dirs.lock().unwrap().clone()
    }
}

struct ReplayCounter {
    values: Vec<u64>,
    next: usize,
}

impl RawEnergyReader for ReplayCounter {
    fn read_raw(&mut self) -> io::Result<u64> {
        let v = self.values[self.next.min(self.values.len() - 1)];
        self.next += 1;
        Ok(v)
    }
}

impl PerfCounterOpener for ReplayPerf {
    fn open(&self, event: &PerfEnergyEvent, cpu: u32) -> io::Result<Box<dyn RawEnergyReader>> {
        if let Some(kind) = self.fail_with {
            return Err(match kind {
                io::ErrorKind::PermissionDenied => io::Error::from_raw_os_error(libc::EACCES),
                other => io::Error::from(other),
            });
        }
        let values = self
            .counts
            .lock()
            .unwrap()
            .get(&(event.name.clone(), cpu))
            .cloned()
            .unwrap_or_else(|| panic!("no replay values for {} on CPU {cpu}", event.name));
        self.opened
            .lock()
            .unwrap()
            .push((event.name.clone(), cpu, event.scale_j));
        self.pmu_dirs.lock().unwrap().push(event.pmu_dir.clone());
        Ok(Box::new(ReplayCounter { values, next: 0 }))
    }
}

/// Files that only root may read on a real machine: opening one of the
/// listed paths fails with EACCES (tests run as root, for whom chmod 000
/// changes nothing, so the refusal is injected here).
pub struct DenyFiles {
    pub denied: Vec<PathBuf>,
}

impl EnergyFileOpener for DenyFiles {
    fn open(&self, path: &Path) -> io::Result<File> {
        if self.denied.iter().any(|d| d == path) {
            return Err(io::Error::from_raw_os_error(libc::EACCES));
        }
        File::open(path)
    }
}

/// Backends with the given doubles.
pub fn backends(perf: Arc<dyn PerfCounterOpener>, files: Arc<dyn EnergyFileOpener>) -> Backends {
    Backends { perf, files }
}
