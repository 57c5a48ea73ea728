//! The cgroup level of attribution: the dynamic energy of a CPU domain is
//! shared among cgroups by their `cgroup_cpu_time`, that of a GPU by the
//! utilisation of the GPU's processes, grouped by the cgroup each runs in.
//!
//! The cgroups attributed in an interval are disjoint: only the innermost
//! measured cgroups (those with no measured descendant alive in the
//! interval) receive energy, and their classification attributes (`job_id`,
//! `pod_uid`, `unit`...) say what encloses them, so a job's or a pod's
//! energy is one filter. Each cgroup's share is its CPU time over the
//! machine's (the hierarchy root `/`, which every cgroup source reports);
//! what the innermost cgroups do not cover (processes outside any measured
//! cgroup, or in a measured cgroup beside its measured children) is
//! `unattributed_energy` with reason `outside_selected_cgroups`. Every point
//! of this level carries `level=cgroup`; per domain and interval,
//! Σ attributed + unattributed = the dynamic energy.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use alumet::measurement::{
    AttributeValue, MeasurementBuffer, MeasurementPoint, MeasurementValue, Resource,
    ResourceConsumer, Timestamp,
};
use alumet_kernelfs::cgroup::parse_proc_cgroup;

use crate::activity::{ActivityStore, SampleKind};
use crate::outputs::OutputMetrics;

/// Path of the hierarchy root: the whole machine.
const ROOT: &str = "/";

#[derive(Debug)]
struct CgroupInfo {
    path: String,
    consumer: ResourceConsumer,
    /// The classification attributes of the cgroup's points (`mode` left out).
    attributes: Vec<(Cow<'static, str>, AttributeValue)>,
    /// Start of the first interval it has a sample for.
    covers_from: Timestamp,
    /// Latest poll it was reported at.
    last_seen: Timestamp,
}

/// One energy interval of a domain, and how it splits.
pub(crate) struct IntervalToShare<'a> {
    pub(crate) resource: &'a Resource,
    pub(crate) domain: &'a AttributeValue,
    pub(crate) start: Timestamp,
    pub(crate) end: Timestamp,
    /// `("dynamic", J)`, `("static", J)`.
    pub(crate) parts: [(&'static str, f64); 2],
}

/// Cgroup CPU time by poll, the cgroups seen, and where GPU processes run.
pub(crate) struct CgroupActivity {
    pub(crate) store: ActivityStore,
    ids: BTreeMap<String, u32>,
    info: HashMap<u32, CgroupInfo>,
    next_id: u32,
    /// Cgroup path of each GPU process, read from `/proc/PID/cgroup` while it runs.
    pid_cgroups: HashMap<u32, (Vec<String>, Timestamp)>,
    proc_root: PathBuf,
    weights: Vec<(u32, f64)>,
}

impl CgroupActivity {
    /// Empty; `/proc/PID/cgroup` is read under `proc_root`.
    pub(crate) fn new(proc_root: &Path) -> Self {
        Self {
            store: ActivityStore::new(SampleKind::Amount),
            ids: BTreeMap::new(),
            info: HashMap::new(),
            next_id: 0,
            pid_cgroups: HashMap::new(),
            proc_root: proc_root.to_path_buf(),
            weights: Vec::new(),
        }
    }

    /// A cgroup poll (the `cgroups_measured` point).
    pub(crate) fn mark_poll(&mut self, t: Timestamp) {
        self.store.mark_poll(t);
    }

    /// The latest cgroup poll seen.
    pub(crate) fn watermark(&self) -> Option<Timestamp> {
        self.store.watermark()
    }

    /// Ingests a `cgroup_cpu_time` point (seconds after `scale`); returns
    /// false when its value was invalid.
    pub(crate) fn ingest_cpu_time(&mut self, p: &MeasurementPoint, scale: f64) -> bool {
        let ResourceConsumer::ControlGroup { path } = &p.consumer else {
            self.store.mark_poll(p.timestamp);
            return true;
        };
        let covers_from = self.store.poll_before(p.timestamp).unwrap_or(p.timestamp);
        let id = match self.ids.get(path.as_ref()) {
            Some(&id) => id,
            None => {
                let id = self.next_id;
                self.next_id = self.next_id.wrapping_add(1);
                self.ids.insert(path.to_string(), id);
                self.info.insert(
                    id,
                    CgroupInfo {
                        path: path.to_string(),
                        consumer: p.consumer.clone(),
                        attributes: p
                            .attributes
                            .iter()
                            .filter(|(k, _)| k != "mode")
                            .cloned()
                            .collect(),
                        covers_from,
                        last_seen: p.timestamp,
                    },
                );
                id
            }
        };
        if let Some(info) = self.info.get_mut(&id) {
            info.last_seen = info.last_seen.max(p.timestamp);
            // Names found after the cgroup's first points are added to its
            // attributes (never removed): its energy carries them from now on.
            let without_mode = p.attributes.iter().filter(|(k, _)| k != "mode").count();
            if without_mode > info.attributes.len() {
                info.attributes = p
                    .attributes
                    .iter()
                    .filter(|(k, _)| k != "mode")
                    .cloned()
                    .collect();
            }
        }
        let value = p.value.as_f64() * scale;
        self.store.add(p.timestamp, id, value) || value == 0.0
    }

    /// Remembers the cgroups of a GPU process (read now, while it runs).
    pub(crate) fn note_gpu_process(&mut self, pid: u32, t: Timestamp) {
        if let Some(entry) = self.pid_cgroups.get_mut(&pid) {
            entry.1 = entry.1.max(t);
            return;
        }
        let path = self.proc_root.join(pid.to_string()).join("cgroup");
        let paths = std::fs::read_to_string(&path)
            .map(|text| {
                parse_proc_cgroup(&text)
                    .into_iter()
                    .map(|e| e.path)
                    .collect()
            })
            .unwrap_or_default();
        self.pid_cgroups.insert(pid, (paths, t));
    }

    fn live_in(&self, id: u32, start: Timestamp, end: Timestamp) -> bool {
        self.info
            .get(&id)
            .is_some_and(|i| i.last_seen > start && i.covers_from < end)
    }

    /// Whether `id` has no measured descendant alive over `[start, end]`.
    fn is_innermost(&self, id: u32, start: Timestamp, end: Timestamp) -> bool {
        let Some(info) = self.info.get(&id) else {
            return false;
        };
        let (from, to) = if info.path == ROOT {
            ("/".to_owned(), "0".to_owned())
        } else {
            (format!("{}/", info.path), format!("{}0", info.path))
        };
        !self
            .ids
            .range(from..to)
            .any(|(p, &d)| p != ROOT && self.live_in(d, start, end))
    }

    /// The deepest measured cgroup that holds a process whose cgroups (one per hierarchy) are `paths`.
    fn cgroup_holding(&self, paths: &[String]) -> Option<u32> {
        let mut best: Option<(usize, u32)> = None;
        for path in paths {
            let mut p = path.as_str();
            loop {
                if p != ROOT {
                    if let Some(&id) = self.ids.get(p) {
                        if best.is_none_or(|(len, _)| p.len() > len) {
                            best = Some((p.len(), id));
                        }
                        break;
                    }
                }
                match alumet_kernelfs::cgroup::parent_of(p) {
                    Some(parent) => p = parent,
                    None => break,
                }
            }
        }
        best.map(|(_, id)| id)
    }

    /// Shares a CPU domain's interval among the innermost cgroups by CPU
    /// time. `machine_fallback_s`: the machine's CPU time over the interval
    /// from another source, used when the root's is not known.
    pub(crate) fn attribute_cpu(
        &mut self,
        interval: &IntervalToShare,
        machine_fallback_s: f64,
        outputs: &OutputMetrics,
        out: &mut MeasurementBuffer,
    ) {
        let mut weights = std::mem::take(&mut self.weights);
        let coverage = self
            .store
            .weights(interval.start, interval.end, &mut weights);
        let root_id = self.ids.get(ROOT).copied();
        let mut root_s = 0.0;
        let mut shares: Vec<(u32, f64)> = Vec::new();
        for &(id, w) in &weights {
            if Some(id) == root_id {
                root_s = w;
            } else if self.is_innermost(id, interval.start, interval.end) {
                shares.push((id, w));
            }
        }
        self.weights = weights;
        let inner_s: f64 = shares.iter().map(|(_, w)| w).sum();
        let machine_s = if root_s > 0.0 {
            root_s
        } else {
            machine_fallback_s
        };
        let total = machine_s.max(inner_s);
        let reason = if coverage.covered_ns == 0 {
            Some("no_cgroup_data")
        } else if !(total.is_finite() && total > 0.0) {
            Some("no_activity")
        } else {
            None
        };
        self.emit(interval, &shares, total, reason, outputs, out);
    }

    /// Shares a GPU domain's interval among the innermost cgroups holding
    /// its processes, by their utilisation weights `process_weights`.
    pub(crate) fn attribute_gpu(
        &mut self,
        interval: &IntervalToShare,
        process_weights: &[(u32, f64)],
        outputs: &OutputMetrics,
        out: &mut MeasurementBuffer,
    ) {
        let total: f64 = process_weights.iter().map(|(_, w)| w).sum();
        let mut by_cgroup: BTreeMap<u32, f64> = BTreeMap::new();
        for &(pid, w) in process_weights {
            let holder = self
                .pid_cgroups
                .get(&pid)
                .and_then(|(paths, _)| self.cgroup_holding(paths))
                .filter(|&id| self.is_innermost(id, interval.start, interval.end));
            if let Some(id) = holder {
                *by_cgroup.entry(id).or_insert(0.0) += w;
            }
        }
        let shares: Vec<(u32, f64)> = by_cgroup.into_iter().collect();
        let reason = (!(total.is_finite() && total > 0.0)).then_some("no_activity");
        self.emit(interval, &shares, total, reason, outputs, out);
    }

    fn emit(
        &self,
        interval: &IntervalToShare,
        shares: &[(u32, f64)],
        total: f64,
        no_share_reason: Option<&'static str>,
        outputs: &OutputMetrics,
        out: &mut MeasurementBuffer,
    ) {
        for (part, energy) in interval.parts {
            if energy <= 0.0 {
                continue;
            }
            let base = |metric, consumer: ResourceConsumer, value: f64| MeasurementPoint {
                timestamp: interval.end,
                metric,
                resource: interval.resource.clone(),
                consumer,
                value: MeasurementValue::F64(value),
                attributes: vec![
                    (Cow::Borrowed("domain"), interval.domain.clone()),
                    (Cow::Borrowed("part"), AttributeValue::from(part)),
                    (Cow::Borrowed("level"), AttributeValue::from("cgroup")),
                ]
                .into(),
            };
            let mut attributed = 0.0;
            if no_share_reason.is_none() {
                for &(id, w) in shares {
                    let Some(info) = self.info.get(&id) else {
                        continue;
                    };
                    let value = energy * (w / total);
                    attributed += value;
                    let mut p = base(outputs.attributed_energy, info.consumer.clone(), value);
                    p.attributes.extend(info.attributes.iter().cloned());
                    out.push(p);
                }
            }
            let rest = energy - attributed;
            if rest > 0.0 {
                let mut p = base(
                    outputs.unattributed_energy,
                    ResourceConsumer::LocalMachine,
                    rest,
                );
                p.attributes.push((
                    Cow::Borrowed("reason"),
                    AttributeValue::from(no_share_reason.unwrap_or("outside_selected_cgroups")),
                ));
                out.push(p);
            }
        }
    }

    /// Forgets polls and processes that no pending or future interval needs.
    pub(crate) fn prune_before(&mut self, cutoff: Timestamp) -> bool {
        let before = self.store.poll_count();
        self.store.prune_before(cutoff);
        let pruned = before != self.store.poll_count();
        if pruned {
            self.pid_cgroups.retain(|_, (_, seen)| *seen >= cutoff);
            // Cgroups not reported since the cutoff have no sample left.
            let gone: Vec<u32> = self
                .info
                .iter()
                .filter(|(_, i)| i.last_seen < cutoff)
                .map(|(&id, _)| id)
                .collect();
            for id in gone {
                if let Some(info) = self.info.remove(&id) {
                    self.ids.remove(&info.path);
                }
            }
        }
        pruned
    }
}
