//! The process source: CPU time, CPU usage and memory of each watched
//! process, from /proc/PID/stat.
//!
//! A process is identified by its pid AND its start time (field 22): when a
//! pid comes back with another start time, it is another process and its
//! series starts over (no delta across two processes). Which processes are
//! watched is decided at each refresh (see [`WatchRules`]); a process that
//! is gone ends its series without a word above debug level.
//!
//! A process first seen at a poll gives no delta, except when it started
//! after the previous poll: then all of its CPU time belongs to this
//! interval and is reported, so short-lived processes are not lost to
//! energy attribution.
//!
//! Processes that start and end between two polls are never seen, but
//! their parent's `cutime`/`cstime` (fields 16-17) grow by their CPU time
//! when it reaps them. That growth, less what was already reported for the
//! watched children that vanished in the interval, is reported as
//! `process_cpu_time` with `mode=children` on the parent: the whole CPU
//! time of a process tree is then counted, short-lived descendants
//! included (except those re-parented away from it).
//!
//! A single-threaded process whose CPU runtime in /proc/PID/schedstat (ns,
//! cheap for the kernel to print) has not moved since the last full read has
//! not run: its CPU time, children's CPU time (a parent reaps a child by
//! running `wait`), name and virtual size cannot have changed, so
//! /proc/PID/stat (the costly file: 71 % of the agent's CPU time with 3 000
//! processes, BENCHMARKS.md) is not re-read and its last values are
//! reported again. Two things can change without the process running: its
//! resident size (reclaim, swap), bounded by a full read at least every
//! [`ProcessOptions::idle_full_read_max_age_ns`] (`idle_process_memory_max_age`),
//! and its parent, when the parent ends and the kernel re-parents it: the
//! processes whose recorded parent ended are re-read for their parent in the
//! same poll (see [`ProcessSource::recheck_orphans`]), else the CPU time
//! reported for such a process would, when it ends, not be subtracted from
//! its new parent's reaped children's time, and would count twice. A
//! process with several threads is always read in full (schedstat covers
//! the main thread only), and so is one whose schedstat cannot be read
//! through a kept descriptor (absent file, spent fd budget, new process).
//! schedstat is opened only after the first two full reads of a process,
//! so one seen at one or two polls (short-lived, or any during a short
//! `exec`) costs one file, not two.
//!
//! While `alumet-agent exec` runs a command, each process is checked once,
//! when it is measured, for whether it descends from the command, and the
//! verdict is recorded in the [`ExecTarget`] (so that a process that has
//! ended by the time its points reach an output still counts).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use alumet::exec::ExecTarget;
use alumet::measurement::{
    MeasurementBuffer, MeasurementPoint, Resource, ResourceConsumer, Timestamp,
};
use alumet::metrics::MetricId;
use alumet::pipeline::{PollError, Source};

use crate::host::HostParams;
use crate::names::Names;
use crate::parse;
use alumet_kernelfs::file::{KernelFile, ReadBuf};
use alumet_kernelfs::glob::Glob;
use alumet_kernelfs::pids::{Listing, PidLister};

mod read;
use read::{poll_process, PollContext, ProcessAttributes, Watched};

/// Ids of the metrics the process source emits.
#[derive(Debug, Clone, Copy)]
pub struct ProcessMetricIds {
    /// `process_cpu_time`.
    pub cpu_time: MetricId,
    /// `process_cpu_usage`.
    pub cpu_usage: MetricId,
    /// `process_memory_resident`.
    pub memory_resident: MetricId,
    /// `process_memory_virtual`.
    pub memory_virtual: MetricId,
}

/// Which processes are watched.
#[derive(Debug, Clone, Default)]
pub struct WatchRules {
    /// Every process on the machine (the other rules are then moot).
    pub all: bool,
    /// These pids.
    pub pids: Vec<u32>,
    /// Processes whose name (comm) or command line matches one of these.
    pub patterns: Vec<Glob>,
    /// The process tree of the `exec` command.
    pub exec_tree: bool,
}

/// Longest parent chain followed to decide whether a process descends from
/// the exec target (guards against cycles made of recycled pids).
const MAX_TREE_DEPTH: usize = 4096;

/// Longest time between two listings of every pid: the ones in between
/// list only the pids allocated since (see [`PidLister`]).
pub const WHOLE_LISTING_EVERY_NS: u64 = 30_000_000_000;

#[derive(Debug, Clone, Copy)]
struct PollMark {
    at_ns: u64,
    uptime_s: Option<f64>,
}

/// Reads the watched processes at every poll, and looks for new ones at
/// every refresh.
pub struct ProcessSource {
    root: PathBuf,
    rules: WatchRules,
    exec_target: ExecTarget,
    last_exec_target: Option<u32>,
    host: HostParams,
    seconds_per_tick: f64,
    refresh_interval_ns: u64,
    last_refresh_ns: Option<u64>,
    /// Sorted by pid.
    watched: Vec<Watched>,
    uptime: KernelFile,
    stat: KernelFile,
    online_cpus: u32,
    previous_poll: Option<PollMark>,
    buf: ReadBuf,
    /// Lists only the pids allocated since the previous refresh where it can.
    pids: PidLister,
    listing: Vec<u32>,
    parents: Vec<(u32, u32)>,
    /// (last parent, CPU ticks reported so far) of watched processes that
    /// vanished since the previous poll: their parent's `cutime` now holds them.
    vanished: Vec<(u32, u64)>,
    /// Pids of the watched processes that ended since the previous poll
    /// (their children have a new parent).
    ended: Vec<u32>,
    /// Longest time an idle process goes without a full read.
    idle_full_read_max_age_ns: u64,
    /// How many descriptors of /proc/PID/stat may be kept open.
    open_budget: usize,
    open_count: usize,
    names: Names,
    ids: ProcessMetricIds,
}

/// Settings of a [`ProcessSource`].
#[derive(Debug, Clone)]
pub struct ProcessOptions {
    /// Which processes.
    pub rules: WatchRules,
    /// How often the process list is scanned for new processes.
    pub refresh_interval_ns: u64,
    /// How many /proc/PID/stat descriptors may be kept open; beyond that,
    /// processes are read with open/read/close.
    pub open_budget: usize,
    /// Longest time an idle process goes without a full read of
    /// /proc/PID/stat: how old its resident size may be (0: every poll).
    pub idle_full_read_max_age_ns: u64,
}

impl ProcessSource {
    /// A source reading /proc/PID/stat under `proc_root`.
    pub fn new(
        proc_root: &Path,
        options: ProcessOptions,
        exec_target: ExecTarget,
        host: HostParams,
        ids: ProcessMetricIds,
    ) -> Self {
        let mut rules = options.rules;
        rules.pids.sort_unstable();
        rules.pids.dedup();
        // A process that an explicit rule did not select may match later
        // (after an exec): then every refresh must see them all.
        let whole_listing_every_ns = if rules.all { WHOLE_LISTING_EVERY_NS } else { 0 };
        Self {
            root: proc_root.to_path_buf(),
            rules,
            exec_target,
            last_exec_target: None,
            seconds_per_tick: 1.0 / host.clock_ticks_per_second.max(1) as f64,
            host,
            refresh_interval_ns: options.refresh_interval_ns,
            last_refresh_ns: None,
            watched: Vec::new(),
            uptime: KernelFile::new(proc_root.join("uptime"), true),
            stat: KernelFile::new(proc_root.join("stat"), true),
            online_cpus: 1,
            previous_poll: None,
            buf: ReadBuf::with_capacity(4096),
            // A process that an explicit rule did not select may match
            // later (after an exec): every refresh must see them all.
            pids: PidLister::new(proc_root, whole_listing_every_ns),
            listing: Vec::new(),
            parents: Vec::new(),
            vanished: Vec::new(),
            ended: Vec::new(),
            idle_full_read_max_age_ns: options.idle_full_read_max_age_ns,
            open_budget: options.open_budget,
            open_count: 0,
            names: Names::default(),
            ids,
        }
    }

    /// Pids watched now, in order (for tests and diagnostics).
    pub fn watched_pids(&self) -> Vec<u32> {
        self.watched.iter().map(|w| w.pid).collect()
    }

    fn read_uptime(&mut self) -> Option<f64> {
        match self.uptime.read_into(&mut self.buf) {
            Ok(_) => parse::parse_uptime_seconds(self.buf.bytes()),
            Err(e) => {
                log::debug!("cannot read {}: {e}", self.uptime.path().display());
                None
            }
        }
    }

    /// Counts the `cpuN` lines of /proc/stat: the online CPUs, which bound
    /// the CPU usage of a process.
    fn count_online_cpus(&mut self) -> u32 {
        let counted = match self.stat.read_into(&mut self.buf) {
            Ok(_) => parse::lines(self.buf.bytes())
                .take_while(|l| l.starts_with(b"cpu"))
                .filter(|l| l.get(3).is_some_and(u8::is_ascii_digit))
                .count() as u32,
            Err(e) => {
                log::debug!("cannot read {}: {e}", self.stat.path().display());
                0
            }
        };
        if counted > 0 {
            counted
        } else {
            HostParams::online_cpus_fallback()
        }
    }

    fn new_watched(&mut self, pid: u32, file: Option<KernelFile>) -> Watched {
        // Two descriptors: stat and schedstat.
        let keep = self.open_count + 2 <= self.open_budget;
        let file = match file {
            Some(f) if keep => f,
            _ => KernelFile::new(self.pid_path(pid, "stat"), keep),
        };
        if keep {
            self.open_count += 2;
        }
        Watched {
            pid,
            file,
            sched: keep.then(|| KernelFile::new(self.pid_path(pid, "schedstat"), true)),
            last_full: None,
            full_reads: 0,
            start_ticks: None,
            ppid: 0,
            exe: Cow::Borrowed(""),
            attrs: ProcessAttributes::default(),
            previous: None,
            children_delta_ticks: 0,
            in_exec_tree: None,
        }
    }

    /// Start time of `pid` in clock ticks, if it can be read.
    fn start_ticks_of(&mut self, pid: u32) -> Option<u64> {
        let mut file = KernelFile::new(self.pid_path(pid, "stat"), false);
        file.read_into(&mut self.buf).ok()?;
        parse::parse_pid_stat(self.buf.bytes()).map(|stat| stat.start_ticks)
    }

    fn pid_path(&self, pid: u32, file: &str) -> PathBuf {
        let mut path = self.root.join(pid.to_string());
        path.push(file);
        path
    }

    /// Scans the process list: drops the processes that are gone, adds the
    /// new ones that the rules select.
    fn refresh(&mut self, now_ns: u64) -> Result<(), PollError> {
        self.online_cpus = self.count_online_cpus();
        let kind = self.pids.list(&mut self.listing, now_ns).map_err(|e| {
            PollError::transient(format!("cannot list {}: {e}", self.root.display()))
        })?;
        let before = self.watched.len();
        let listing = &self.listing;
        let mut closed = 0;
        let vanished = &mut self.vanished;
        let ended_pids = &mut self.ended;
        self.watched.retain(|w| {
            // Listed or not, a process that ended fails its next read.
            let alive = kind == Listing::New || listing.binary_search(&w.pid).is_ok();
            if !alive {
                log::debug!("process {} ({}) ended", w.pid, w.exe);
                closed += w.open_fds();
                ended_pids.push(w.pid);
                if let Some(prev) = w.previous {
                    vanished.push((w.ppid, prev.total_ticks()));
                }
            }
            alive
        });
        self.open_count = self.open_count.saturating_sub(closed);
        let ended = before - self.watched.len();

        let candidates: Vec<u32> = self
            .listing
            .iter()
            .copied()
            .filter(|pid| self.watched.binary_search_by_key(pid, |w| w.pid).is_err())
            .collect();
        let added = if self.rules.all {
            for &pid in &candidates {
                let w = self.new_watched(pid, None);
                self.watched.push(w);
            }
            candidates.len()
        } else {
            self.add_selected(&candidates)
        };
        if added > 0 {
            self.watched.sort_unstable_by_key(|w| w.pid);
        }
        log::debug!(
            "process refresh: {} watched, {added} new, {ended} ended, {} CPUs",
            self.watched.len(),
            self.online_cpus
        );
        Ok(())
    }

    /// Adds the candidates that an explicit rule selects; returns how many.
    fn add_selected(&mut self, candidates: &[u32]) -> usize {
        let target = if self.rules.exec_tree {
            self.exec_target.get()
        } else {
            None
        };
        let needs_stat = target.is_some() || !self.rules.patterns.is_empty();
        // (pid, ppid, its opened stat file) of candidates not selected yet.
        let mut undecided: Vec<(u32, u32, KernelFile)> = Vec::new();
        let mut selected: Vec<(u32, Option<KernelFile>)> = Vec::new();
        for &pid in candidates {
            if self.rules.pids.binary_search(&pid).is_ok() || Some(pid) == target {
                selected.push((pid, None));
                continue;
            }
            if !needs_stat {
                continue;
            }
            let mut file = KernelFile::new(self.pid_path(pid, "stat"), true);
            if file.read_into(&mut self.buf).is_err() {
                continue; // gone already
            }
            let Some(stat) = parse::parse_pid_stat(self.buf.bytes()) else {
                continue;
            };
            let ppid = stat.ppid;
            if self.rules.patterns.iter().any(|g| g.matches(stat.comm)) || self.cmdline_matches(pid)
            {
                selected.push((pid, Some(file)));
            } else {
                undecided.push((pid, ppid, file));
            }
        }
        if let Some(target) = target {
            // Parents of every process we know of, to follow chains upwards.
            self.parents.clear();
            self.parents
                .extend(self.watched.iter().map(|w| (w.pid, w.ppid)));
            self.parents
                .extend(undecided.iter().map(|(p, pp, _)| (*p, *pp)));
            self.parents.sort_unstable();
            for (pid, ppid, file) in undecided {
                if descends_from(ppid, target, &self.parents) {
                    selected.push((pid, Some(file)));
                }
            }
        }
        let added = selected.len();
        for (pid, file) in selected {
            let w = self.new_watched(pid, file);
            self.watched.push(w);
        }
        added
    }

    fn cmdline_matches(&mut self, pid: u32) -> bool {
        if self.rules.patterns.is_empty() {
            return false;
        }
        let Ok(mut cmdline) = std::fs::read(self.pid_path(pid, "cmdline")) else {
            return false;
        };
        // Arguments are NUL-separated, with a trailing NUL.
        while cmdline.last() == Some(&0) {
            cmdline.pop();
        }
        for b in &mut cmdline {
            if *b == 0 {
                *b = b' ';
            }
        }
        self.rules.patterns.iter().any(|g| g.matches(&cmdline))
    }
}

impl ProcessSource {
    /// Re-reads the parent of each process whose recorded parent ended since
    /// the previous poll: the kernel gave it another (init, or the nearest
    /// subreaper), which an idle process, not re-read, would not show. Only
    /// the parent is taken from this read; the process's points of this
    /// poll are already out.
    fn recheck_orphans(&mut self) {
        if self.ended.is_empty() {
            return;
        }
        self.ended.sort_unstable();
        for w in &mut self.watched {
            if self.ended.binary_search(&w.ppid).is_err() || w.start_ticks.is_none() {
                continue;
            }
            // Gone too: its next read ends its series.
            if w.file.read_into(&mut self.buf).is_err() {
                continue;
            }
            match parse::parse_pid_stat(self.buf.bytes()) {
                Some(stat) if Some(stat.start_ticks) == w.start_ticks => {
                    if stat.ppid != w.ppid {
                        log::debug!(
                            "process {} ({}): parent {} ended, now {}",
                            w.pid,
                            w.exe,
                            w.ppid,
                            stat.ppid
                        );
                    }
                    w.ppid = stat.ppid;
                }
                // Another process with this pid: its next poll starts it over.
                _ => {}
            }
        }
        self.ended.clear();
    }

    /// Reports, for each process, the CPU time of the children it reaped in
    /// the interval that was not reported for them already.
    fn emit_children(&mut self, into: &mut MeasurementBuffer, ts: Timestamp) {
        let mut vanished = std::mem::take(&mut self.vanished);
        vanished.sort_unstable();
        for w in &mut self.watched {
            let raw = std::mem::take(&mut w.children_delta_ticks);
            if raw == 0 {
                continue;
            }
            let start = vanished.partition_point(|(ppid, _)| *ppid < w.pid);
            let already: u64 = vanished[start..]
                .iter()
                .take_while(|(ppid, _)| *ppid == w.pid)
                .map(|(_, t)| *t)
                .sum();
            let ticks = raw.saturating_sub(already);
            if ticks == 0 {
                continue;
            }
            let seconds = ticks as f64 * self.seconds_per_tick;
            into.push(
                MeasurementPoint::new(
                    ts,
                    self.ids.cpu_time,
                    Resource::LocalMachine,
                    ResourceConsumer::Process { pid: w.pid },
                    seconds,
                )
                .with_attributes(&w.attrs.children),
            );
        }
        vanished.clear();
        self.vanished = vanished;
    }

    /// Decides, for the processes not decided yet, whether they descend
    /// from `target`; parents first, whatever their pids.
    fn decide_exec_tree(&mut self, target: u32) {
        for _ in 0..8 {
            let mut changed = false;
            for w in self
                .watched
                .iter_mut()
                .filter(|w| w.in_exec_tree.is_none() && w.start_ticks.is_some())
            {
                if w.pid == target || self.exec_target.is_tree_member(w.ppid) {
                    self.exec_target.add_tree_member(w.pid);
                    w.in_exec_tree = Some(true);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        for w in self
            .watched
            .iter_mut()
            .filter(|w| w.in_exec_tree.is_none() && w.start_ticks.is_some())
        {
            w.in_exec_tree = Some(false);
        }
    }
}

/// Whether a process whose parent is `ppid` is in the tree rooted at `target`.
fn descends_from(mut ppid: u32, target: u32, parents: &[(u32, u32)]) -> bool {
    for _ in 0..MAX_TREE_DEPTH {
        if ppid == target {
            return true;
        }
        if ppid <= 1 {
            return false;
        }
        match parents.binary_search_by_key(&ppid, |(p, _)| *p) {
            Ok(i) => ppid = parents[i].1,
            Err(_) => return false,
        }
    }
    false
}

impl Source for ProcessSource {
    fn poll(
        &mut self,
        into: &mut MeasurementBuffer,
        timestamp: Timestamp,
    ) -> Result<(), PollError> {
        let now_ns = self.host.clock.now_ns();
        let uptime_s = self.read_uptime();
        let target = if self.rules.exec_tree {
            self.exec_target.get()
        } else {
            None
        };
        let target_changed = target != self.last_exec_target;
        let refresh_due = target_changed
            || self
                .last_refresh_ns
                .is_none_or(|last| now_ns.saturating_sub(last) >= self.refresh_interval_ns);
        let mut result = Ok(());
        if refresh_due {
            self.last_refresh_ns = Some(now_ns);
            self.last_exec_target = target;
            result = self.refresh(now_ns);
        }
        let exec_started_ticks = match target {
            Some(pid) if target_changed => self.start_ticks_of(pid),
            _ => None,
        };
        let buf = &mut self.buf;
        let mut ctx = PollContext {
            into,
            ts: timestamp,
            now_ns,
            ids: self.ids,
            seconds_per_tick: self.seconds_per_tick,
            page_size_bytes: self.host.page_size_bytes,
            max_usage_percent: 100.0 * f64::from(self.online_cpus.max(1)),
            previous_poll: self.previous_poll,
            exec_started_ticks,
            closed: 0,
            vanished: &mut self.vanished,
            ended: &mut self.ended,
            idle_full_read_max_age_ns: self.idle_full_read_max_age_ns,
            names: &mut self.names,
        };
        self.watched.retain_mut(|w| poll_process(w, buf, &mut ctx));
        self.open_count = self.open_count.saturating_sub(ctx.closed);
        self.recheck_orphans();
        self.emit_children(into, timestamp);
        if let Some(command) = self.exec_target.get() {
            self.decide_exec_tree(command);
        }
        self.previous_poll = Some(PollMark {
            at_ns: now_ns,
            uptime_s,
        });
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_membership_follows_parents() {
        // 10 -> 11 -> 12, and 20 is unrelated; 30's parent is unknown.
        let mut parents = vec![(11, 10), (12, 11), (20, 1), (30, 999)];
        parents.sort_unstable();
        assert!(descends_from(10, 10, &parents));
        assert!(descends_from(11, 10, &parents));
        assert!(!descends_from(1, 10, &parents));
        assert!(!descends_from(999, 10, &parents));
        // A cycle of recycled pids does not loop forever.
        let cycle = vec![(5, 6), (6, 5)];
        assert!(!descends_from(5, 10, &cycle));
    }
}
