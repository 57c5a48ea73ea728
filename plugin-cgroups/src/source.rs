//! The cgroups source: at each poll, finds what changed in the hierarchy,
//! reads every measured cgroup and emits its CPU time, CPU usage, memory
//! and I/O, with the cgroup's classification as attributes.
//!
//! Deltas are exact across polls (the kernel's counters are exact and
//! include exited processes). A cgroup first seen at a poll gives no delta,
//! except when it was created after the previous poll, which is known when
//! the previous poll had a complete view of the tree (inotify without loss,
//! or a walk at that poll): then everything it used belongs to this interval.
//! A cgroup that disappears ends its series, logged at debug level only.
//! On a cgroup filesystem, cgroups under an ancestor whose CPU time did not
//! move are not read for it (see [`crate::prune`]): the figures are the same.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use alumet::exec::ExecTarget;
use alumet::measurement::{
    AttributeValue, Attributes, MeasurementBuffer, MeasurementPoint, MeasurementValue, Resource,
    ResourceConsumer, Timestamp,
};
use alumet::metrics::{Metric, MetricError, MetricId, MetricRegistry};
use alumet::pipeline::{PollError, Source};
use alumet_kernelfs::cgroup::{dir_of, Accounting};
use alumet_kernelfs::file::ReadBuf;
use alumet_kernelfs::host::HostParams;
use alumet_workloads::resolver::{NameState, Resolver, Workload};

use crate::classify::classify;
use crate::discovery::Discovery;
use crate::prune::{guard_paths, CgroupKey, KnownCpu, PruneWalk};
use crate::reader::{CgroupFiles, CgroupReading, CpuTime, ReadError, Wanted};
use crate::select::Selection;

/// Ids of the metrics the source emits.
#[derive(Debug, Clone, Copy)]
pub struct CgroupMetricIds {
    /// `cgroup_cpu_time` (s, delta, `mode`).
    pub cpu_time: MetricId,
    /// `cgroup_cpu_usage` (%, gauge).
    pub cpu_usage: MetricId,
    /// `cgroup_memory_current` (By, gauge).
    pub memory_current: MetricId,
    /// `cgroup_memory_peak` (By, gauge).
    pub memory_peak: MetricId,
    /// `cgroup_io_read` (By, delta).
    pub io_read: MetricId,
    /// `cgroup_io_write` (By, delta).
    pub io_write: MetricId,
    /// `cgroups_measured` (gauge, every poll: also marks the poll times).
    pub measured: MetricId,
}

impl CgroupMetricIds {
    /// Registers the plugin's metrics with `register` (a plugin's start
    /// context, or a registry of its own outside a pipeline).
    pub fn register_with<E>(
        mut register: impl FnMut(Metric) -> Result<MetricId, E>,
    ) -> Result<Self, E> {
        let [a, b, c, d, e, f, g] = crate::metric_definitions();
        Ok(Self {
            cpu_time: register(a)?,
            cpu_usage: register(b)?,
            memory_current: register(c)?,
            memory_peak: register(d)?,
            io_read: register(e)?,
            io_write: register(f)?,
            measured: register(g)?,
        })
    }

    /// Registers the plugin's metrics in `registry`: for a source used
    /// outside a pipeline (benchmarks, tests).
    pub fn register_in(registry: &mut MetricRegistry) -> Result<Self, MetricError> {
        Self::register_with(|m| registry.register(m))
    }
}

/// Settings of a [`CgroupSource`].
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// Which cgroups.
    pub selection: Selection,
    /// Most cgroups measured at once (the root excluded).
    pub max_cgroups: usize,
    /// Walk the whole tree at least this often (ns).
    pub rescan_interval_ns: u64,
    /// Start inotify this long after the first poll (ns); see [`Discovery`].
    pub watch_after_ns: u64,
    /// Read memory and I/O at most this often (ns); CPU time at every poll.
    pub memory_io_interval_ns: u64,
    /// Re-read the memory and I/O of a cgroup whose CPU time did not move
    /// since their last reading only this often (ns); 0: at every reading.
    pub idle_memory_io_max_age_ns: u64,
    /// Figures besides CPU time.
    pub wanted: Wanted,
    /// Descriptors this source may keep open.
    pub open_budget: usize,
    /// Carry the CPU time of cgroups under an idle ancestor over instead of
    /// reading it (see [`crate::prune`]): only where the files are the
    /// kernel's, whose figures include their descendants'.
    pub prune_idle_subtrees: bool,
    /// `Some(mount)`: this source measures only the cgroups that the CPU
    /// hierarchy mounted there does not hold, itself or through an ancestor
    /// (hybrid machines: the v2 tree beside v1 `cpuacct`, see
    /// `lanes.rs`); it reports neither the root nor `cgroups_measured`.
    pub unaccounted_by: Option<std::path::PathBuf>,
    /// Where workloads' names are looked up (shared by both lanes); `None`:
    /// workloads keep the ids of their paths.
    pub resolver: Option<std::sync::Arc<Resolver>>,
}

struct Tracked {
    files: CgroupFiles,
    consumer: ResourceConsumer,
    /// Its points' attributes (the job's, pod's... labels, `workload`),
    /// built once and shared by every point; with `mode=user` and
    /// `mode=system` added for CPU time.
    attributes: Attributes,
    user_attributes: Attributes,
    system_attributes: Attributes,
    cpu: KnownCpu,
    /// Bytes read and written at the last reading of I/O.
    previous_io: Option<(u64, u64)>,
    /// The last reading of memory and I/O (its CPU time too), and when (ns).
    details: Option<(CgroupReading, u64)>,
    /// Created after the previous poll: its first reading is all new.
    born_after_previous_poll: bool,
    /// The key of its names in the resolver, and whether they are applied
    /// (or will never come).
    names: Option<(String, bool)>,
}

/// A directory that is not measured, read only to prune (see [`crate::prune`]).
struct Guard {
    files: CgroupFiles,
    cpu: KnownCpu,
}

/// The source.
pub struct CgroupSource {
    accounting: Accounting,
    discovery: Discovery,
    options: SourceOptions,
    exec_target: ExecTarget,
    host: HostParams,
    online_cpus: u32,
    /// Every cgroup of the hierarchy we know of.
    known: BTreeSet<String>,
    /// The measured ones, by path, in depth-first order.
    tracked: BTreeMap<CgroupKey, Tracked>,
    /// Where measured cgroups branch off (when pruning).
    guards: BTreeMap<CgroupKey, Guard>,
    /// `tracked` changed since `guards` were chosen.
    guards_stale: bool,
    /// CPU-time reads not made since the start (carried over from an idle ancestor).
    cpu_reads_skipped: u64,
    open_count: usize,
    first_poll_ns: Option<u64>,
    last_scan_ns: Option<u64>,
    previous_poll_ns: Option<u64>,
    last_details_ns: Option<u64>,
    view_complete_at_previous_poll: bool,
    over_cap: u64,
    /// Measured cgroups whose names are still being looked up.
    unnamed: usize,
    buf: ReadBuf,
    ids: CgroupMetricIds,
}

impl CgroupSource {
    /// A source over the hierarchy of `accounting`.
    pub fn new(
        accounting: Accounting,
        discovery: Discovery,
        options: SourceOptions,
        exec_target: ExecTarget,
        host: HostParams,
        online_cpus: u32,
        ids: CgroupMetricIds,
    ) -> Self {
        Self {
            accounting,
            discovery,
            options,
            exec_target,
            host,
            online_cpus: online_cpus.max(1),
            known: BTreeSet::new(),
            tracked: BTreeMap::new(),
            guards: BTreeMap::new(),
            guards_stale: false,
            cpu_reads_skipped: 0,
            open_count: 0,
            first_poll_ns: None,
            last_scan_ns: None,
            previous_poll_ns: None,
            last_details_ns: None,
            view_complete_at_previous_poll: false,
            over_cap: 0,
            unnamed: 0,
            buf: ReadBuf::with_capacity(1024),
            ids,
        }
    }

    /// Paths measured now (for tests and diagnostics).
    pub fn measured_paths(&self) -> Vec<String> {
        self.tracked.keys().map(|k| k.as_str().to_owned()).collect()
    }

    /// The directories read only to prune, now.
    pub fn guard_paths(&self) -> Vec<String> {
        self.guards.keys().map(|k| k.as_str().to_owned()).collect()
    }

    /// CPU-time reads of measured cgroups and guards not made since the
    /// start, their figures carried over from an idle ancestor.
    pub fn cpu_reads_skipped(&self) -> u64 {
        self.cpu_reads_skipped
    }

    fn is_exec_cgroup(&self, path: &str) -> bool {
        self.exec_target.cgroup() == Some(path)
    }

    /// Starts measuring `path` if the rules select it and the cap allows.
    fn consider(&mut self, path: &str, born_after_previous_poll: bool) {
        let key = CgroupKey::from(path);
        if self.tracked.contains_key(&key) {
            return;
        }
        let is_root = path == "/";
        if let Some(primary) = &self.options.unaccounted_by {
            if is_root || alumet_kernelfs::cgroup::holds(primary, path) {
                return;
            }
        }
        let class = classify(path);
        if !(is_root || self.is_exec_cgroup(path) || self.options.selection.selects(path, &class)) {
            return;
        }
        if !is_root && self.tracked.len() > self.options.max_cgroups {
            self.over_cap += 1;
            if self.over_cap.is_power_of_two() {
                log::warn!(
                    "cgroups: {} cgroup(s) not measured so far: max_cgroups = {} is reached (raise plugins.cgroups.max_cgroups, or narrow the selection)",
                    self.over_cap,
                    self.options.max_cgroups
                );
            }
            return;
        }
        let budget = self.options.open_budget;
        let open_count = &mut self.open_count;
        let files = CgroupFiles::open(&self.accounting, path, self.options.wanted, || {
            let keep = *open_count < budget;
            *open_count += usize::from(keep);
            keep
        });
        let names = match &self.options.resolver {
            Some(resolver) if class.is_workload() => resolver
                .request(&Workload {
                    kind: class.workload.to_owned(),
                    attributes: class
                        .attributes
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), v.clone()))
                        .collect(),
                    cgroup_dir: dir_of(&self.accounting.cpu, path),
                })
                .map(|key| (key, false)),
            _ => None,
        };
        if names.is_some() {
            self.unnamed += 1;
        }
        let mut attributes: Vec<(Cow<'static, str>, AttributeValue)> = class
            .attributes
            .into_iter()
            .map(|(k, v)| (Cow::Borrowed(k), AttributeValue::from(v)))
            .collect();
        attributes.push((
            Cow::Borrowed("workload"),
            AttributeValue::from(class.workload),
        ));
        let with_mode = |mode: &'static str| {
            let mut list = attributes.clone();
            list.push((Cow::Borrowed("mode"), AttributeValue::from(mode)));
            Attributes::from(list)
        };
        let (user_attributes, system_attributes) = (with_mode("user"), with_mode("system"));
        log::debug!("cgroups: measuring {path} ({})", class.workload);
        self.guards_stale = true;
        self.tracked.insert(
            key,
            Tracked {
                files,
                consumer: ResourceConsumer::ControlGroup { path: path.into() },
                attributes: attributes.into(),
                user_attributes,
                system_attributes,
                cpu: KnownCpu::default(),
                previous_io: None,
                details: None,
                born_after_previous_poll,
                names,
            },
        );
    }

    /// Adds the names that lookups found since the last poll to their
    /// cgroups' attributes: from now on, their points carry them.
    fn apply_names(&mut self) {
        let Some(resolver) = &self.options.resolver else {
            return;
        };
        if self.unnamed == 0 {
            return;
        }
        for t in self.tracked.values_mut() {
            let Some((key, applied @ false)) = &mut t.names else {
                continue;
            };
            match resolver.names(key) {
                NameState::Pending => continue,
                NameState::Known(names) => {
                    for (k, v) in names.0 {
                        let attribute = (Cow::Owned(k), AttributeValue::from(v));
                        t.attributes.push(attribute.clone());
                        t.user_attributes.push(attribute.clone());
                        t.system_attributes.push(attribute);
                    }
                }
                NameState::None => {}
            }
            *applied = true;
            self.unnamed -= 1;
        }
    }

    fn forget(&mut self, path: &str) {
        self.known.remove(path);
        if let Some(t) = self.tracked.remove(&CgroupKey::from(path)) {
            log::debug!("cgroups: {path} is gone; its series ends");
            if let (Some(resolver), Some((key, applied))) = (&self.options.resolver, &t.names) {
                resolver.release(key);
                if !applied {
                    self.unnamed -= 1;
                }
            }
            self.open_count = self.open_count.saturating_sub(t.files.kept_descriptors());
            self.guards_stale = true;
        }
    }

    /// Chooses the guards again after `tracked` changed.
    fn refresh_guards(&mut self) {
        if !self.options.prune_idle_subtrees || !self.guards_stale {
            return;
        }
        self.guards_stale = false;
        let wanted = guard_paths(self.tracked.keys().map(CgroupKey::as_str));
        let open_count = &mut self.open_count;
        self.guards.retain(|key, guard| {
            let keep = wanted.contains(key.as_str());
            if !keep {
                *open_count = open_count.saturating_sub(guard.files.kept_descriptors());
            }
            keep
        });
        let budget = self.options.open_budget;
        let cpu_only = Wanted {
            memory: false,
            io: false,
        };
        for path in wanted {
            let key = CgroupKey::from(path.as_str());
            if self.guards.contains_key(&key) {
                continue;
            }
            let open_count = &mut self.open_count;
            let files = CgroupFiles::open(&self.accounting, &path, cpu_only, || {
                let keep = *open_count < budget;
                *open_count += usize::from(keep);
                keep
            });
            let cpu = KnownCpu::default();
            self.guards.insert(key, Guard { files, cpu });
        }
    }

    /// Brings `known` and `tracked` up to date; returns whether the view of
    /// the tree is complete at this poll.
    fn discover(&mut self, now_ns: u64) -> bool {
        let born = self.previous_poll_ns.is_some() && self.view_complete_at_previous_poll;
        let mut complete = false;
        let first = *self.first_poll_ns.get_or_insert(now_ns);
        let mut watch_started = false;
        if self.discovery.can_start_watching()
            && now_ns.saturating_sub(first) >= self.options.watch_after_ns
        {
            // The walk below adds the watches.
            watch_started = self.discovery.start_watching();
        }
        if let Some(changes) = self.discovery.events() {
            for path in &changes.removed {
                let gone: Vec<String> = self
                    .known
                    .iter()
                    .filter(|k| *k == path || alumet_kernelfs::cgroup::is_strict_ancestor(path, k))
                    .cloned()
                    .collect();
                for g in gone {
                    self.forget(&g);
                }
            }
            for path in changes.created {
                self.known.insert(path.clone());
                self.consider(&path, born);
            }
            complete = changes.complete && self.last_scan_ns.is_some();
        }
        let scan_due = watch_started
            || !complete
                && self.last_scan_ns.is_none_or(|last| {
                    now_ns.saturating_sub(last) >= self.options.rescan_interval_ns
                })
            || self.last_scan_ns.is_none();
        if scan_due {
            self.last_scan_ns = Some(now_ns);
            let found: BTreeSet<String> = self.discovery.scan().into_iter().collect();
            let gone: Vec<String> = self.known.difference(&found).cloned().collect();
            for g in gone {
                self.forget(&g);
            }
            for path in &found {
                let new = !self.known.contains(path);
                // Known but not measured (cap, rules): considered again.
                self.consider(path, new && born);
            }
            self.known = found;
            complete = true;
        }
        if let Some(exec) = self.exec_target.cgroup().map(str::to_owned) {
            if !self.tracked.contains_key(&CgroupKey::from(exec.as_str())) {
                self.known.insert(exec.clone());
                self.consider(&exec, false);
            }
        }
        complete
    }
}

struct Emit<'a> {
    into: &'a mut MeasurementBuffer,
    ts: Timestamp,
    ids: CgroupMetricIds,
    interval_ns: Option<u64>,
    max_usage_percent: f64,
}

impl Emit<'_> {
    fn point(
        &mut self,
        t: &Tracked,
        metric: MetricId,
        value: MeasurementValue,
        attributes: &Attributes,
    ) {
        self.into.push(MeasurementPoint {
            timestamp: self.ts,
            metric,
            resource: Resource::LocalMachine,
            consumer: t.consumer.clone(),
            value,
            attributes: attributes.clone(),
        });
    }

    /// `before`: the CPU time known before this poll, and when.
    fn cgroup(
        &mut self,
        path: &str,
        t: &Tracked,
        before: Option<(CpuTime, u64)>,
        now: &CgroupReading,
        now_ns: u64,
    ) {
        let ids = self.ids;
        if let Some(v) = now.memory_current {
            self.point(t, ids.memory_current, v.into(), &t.attributes);
        }
        if let Some(v) = now.memory_peak {
            self.point(t, ids.memory_peak, v.into(), &t.attributes);
        }
        let (before, interval_ns) = match before {
            Some((prev, at_ns)) => (prev, now_ns.saturating_sub(at_ns)),
            None if t.born_after_previous_poll => match self.interval_ns {
                Some(i) => (CpuTime::default(), i),
                None => return,
            },
            None => return,
        };
        let Some((user_s, system_s)) = now.cpu.delta_since(&before) else {
            log::debug!("cgroups: CPU time of {path} went backwards (cgroup re-created?); no delta this interval");
            return;
        };
        self.point(t, ids.cpu_time, user_s.into(), &t.user_attributes);
        self.point(t, ids.cpu_time, system_s.into(), &t.system_attributes);
        if interval_ns > 0 {
            let usage = ((user_s + system_s) / (interval_ns as f64 / 1e9) * 100.0)
                .min(self.max_usage_percent);
            self.point(t, ids.cpu_usage, usage.into(), &t.attributes);
        }
    }

    /// The I/O since the last reading of I/O (everything, for a cgroup born since the previous poll).
    fn io(&mut self, t: &Tracked, now: &CgroupReading) {
        let (Some(read), Some(write)) = (now.io_read, now.io_write) else {
            return;
        };
        let before = match t.previous_io {
            Some(b) => b,
            None if t.born_after_previous_poll => (0, 0),
            None => return,
        };
        if read < before.0 || write < before.1 {
            return;
        }
        let ids = self.ids;
        self.point(t, ids.io_read, (read - before.0).into(), &t.attributes);
        self.point(t, ids.io_write, (write - before.1).into(), &t.attributes);
    }
}

impl Source for CgroupSource {
    fn poll(
        &mut self,
        into: &mut MeasurementBuffer,
        timestamp: Timestamp,
    ) -> Result<(), PollError> {
        let now_ns = self.host.clock.now_ns();
        let complete = self.discover(now_ns);
        self.refresh_guards();
        self.apply_names();
        let mut emit = Emit {
            into,
            ts: timestamp,
            ids: self.ids,
            interval_ns: self.previous_poll_ns.map(|p| now_ns.saturating_sub(p)),
            max_usage_percent: 100.0 * f64::from(self.online_cpus),
        };
        let mut gone = Vec::new();
        let buf = &mut self.buf;
        let details_due = self
            .last_details_ns
            .is_none_or(|last| now_ns.saturating_sub(last) >= self.options.memory_io_interval_ns);
        if details_due {
            self.last_details_ns = Some(now_ns);
        }
        let exec_cgroup = self.exec_target.cgroup();
        let max_age_ns = self.options.idle_memory_io_max_age_ns;
        // Without a complete view, a cgroup removed since the last poll may
        // still be listed: read everything, so that it is found gone.
        let mut walk = PruneWalk::new(
            self.options.prune_idle_subtrees && complete,
            self.previous_poll_ns,
            now_ns,
        );
        let mut guards = self.guards.iter_mut().peekable();
        for (key, t) in &mut self.tracked {
            // The guards above this cgroup come first (depth-first order).
            while let Some((guard_key, guard)) = guards.next_if(|(g, _)| *g < key) {
                let path = guard_key.as_str();
                // A guard that cannot be read only does not prune.
                let _ = walk.cpu_of(path, &mut guard.cpu, &mut guard.files, buf, true);
            }
            let path = key.as_str();
            let is_exec = exec_cgroup == Some(path);
            // A new cgroup's first reading is its baseline for every figure.
            let first = !t.cpu.is_known();
            // The command of `exec` is read in full at every poll.
            match walk.cpu_of(path, &mut t.cpu, &mut t.files, buf, !is_exec) {
                Ok(update) => {
                    let mut reading = CgroupReading {
                        cpu: update.now,
                        ..CgroupReading::default()
                    };
                    let report_details = details_due || first || is_exec;
                    if report_details {
                        match &t.details {
                            // An idle cgroup's memory and I/O are re-read only
                            // once their last reading is old enough; till then
                            // its last values stand.
                            Some((last, at))
                                if last.cpu == update.now
                                    && now_ns.saturating_sub(*at) < max_age_ns
                                    && !is_exec =>
                            {
                                reading = CgroupReading {
                                    cpu: update.now,
                                    ..*last
                                };
                            }
                            _ => {
                                t.files.read_details(buf, &mut reading);
                                t.details = Some((reading, now_ns));
                            }
                        }
                    }
                    emit.cgroup(path, t, update.before, &reading, now_ns);
                    if report_details {
                        emit.io(t, &reading);
                        if let (Some(r), Some(w)) = (reading.io_read, reading.io_write) {
                            t.previous_io = Some((r, w));
                        }
                    }
                    t.born_after_previous_poll = false;
                }
                Err(ReadError::Gone) => gone.push(path.to_owned()),
                Err(ReadError::Other(e)) => log::debug!("cgroups: cannot read {path}: {e}"),
            }
        }
        self.cpu_reads_skipped += walk.skipped;
        let measured = self.tracked.len() as u64;
        if self.options.unaccounted_by.is_none() {
            emit.into.push(MeasurementPoint::new(
                timestamp,
                self.ids.measured,
                Resource::LocalMachine,
                ResourceConsumer::LocalMachine,
                measured,
            ));
        }
        for g in gone {
            self.forget(&g);
        }
        self.previous_poll_ns = Some(now_ns);
        self.view_complete_at_previous_poll = complete;
        Ok(())
    }
}
