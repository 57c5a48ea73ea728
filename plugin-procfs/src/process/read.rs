//! Reading one watched process: its state between polls ([`Watched`]), the
//! poll that skips /proc/PID/stat for an idle process or reads it in full,
//! and the points it emits (see the parent module for why).

use std::borrow::Cow;

use alumet::measurement::{
    AttributeValue, Attributes, MeasurementBuffer, MeasurementPoint, Resource, ResourceConsumer,
    Timestamp,
};
use alumet_kernelfs::file::{KernelFile, ReadBuf, ReadKind};

use super::{PollMark, ProcessMetricIds};
use crate::names::Names;
use crate::parse::{self, PidStat};

/// The resolution of /proc/uptime, which prints hundredths of a second.
pub(super) const UPTIME_RESOLUTION_S: f64 = 0.01;

/// Full reads of /proc/PID/stat before /proc/PID/schedstat is opened: a
/// process seen at one or two polls only (a short-lived one, or every
/// process during a short `exec`) never costs the open, read and close of a
/// second file; a long-lived one pays one stat read more, once.
pub(super) const FULL_READS_BEFORE_SCHEDSTAT: u8 = 2;

/// What the last full read saw that a poll skipping /proc/PID/stat reports again.
#[derive(Debug, Clone, Copy)]
pub(super) struct LastFullRead {
    /// /proc/PID/schedstat's runtime just before that read.
    pub(super) runtime_ns: u64,
    pub(super) vsize_bytes: u64,
    pub(super) rss_pages: u64,
    pub(super) at_ns: u64,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Sample {
    pub(super) utime_ticks: u64,
    pub(super) stime_ticks: u64,
    pub(super) children_ticks: u64,
    pub(super) at_ns: u64,
}

impl Sample {
    pub(super) fn total_ticks(&self) -> u64 {
        self.utime_ticks
            .saturating_add(self.stime_ticks)
            .saturating_add(self.children_ticks)
    }
}

#[derive(Debug)]
pub(super) struct Watched {
    pub(super) pid: u32,
    pub(super) file: KernelFile,
    /// /proc/PID/schedstat, kept open; None when it cannot be (fd budget) or
    /// could not be read (kernel without CONFIG_SCHED_INFO).
    pub(super) sched: Option<KernelFile>,
    /// Set after a full read of a single-threaded process whose schedstat
    /// was read through the kept descriptor.
    pub(super) last_full: Option<LastFullRead>,
    /// Full reads of this series so far (up to [`FULL_READS_BEFORE_SCHEDSTAT`]).
    pub(super) full_reads: u8,
    /// Start time of the process this series is about (None before the first read).
    pub(super) start_ticks: Option<u64>,
    pub(super) ppid: u32,
    pub(super) exe: Cow<'static, str>,
    /// The attribute lists of its points, built when its name is learnt.
    pub(super) attrs: ProcessAttributes,
    pub(super) previous: Option<Sample>,
    /// Growth of the reaped children's CPU time this poll, not yet reported.
    pub(super) children_delta_ticks: u64,
    /// Whether it descends from the `exec` command (None: not decided yet).
    pub(super) in_exec_tree: Option<bool>,
}

impl Watched {
    /// Descriptors this process holds now.
    pub(super) fn open_fds(&self) -> usize {
        usize::from(self.file.is_open())
            + usize::from(self.sched.as_ref().is_some_and(KernelFile::is_open))
    }
}

/// What reading one process needs from its source.
pub(super) struct PollContext<'a> {
    pub(super) into: &'a mut MeasurementBuffer,
    pub(super) ts: Timestamp,
    pub(super) now_ns: u64,
    pub(super) ids: ProcessMetricIds,
    pub(super) seconds_per_tick: f64,
    pub(super) page_size_bytes: u64,
    pub(super) max_usage_percent: f64,
    pub(super) previous_poll: Option<PollMark>,
    /// Start time (ticks) of the `exec` command when it appeared since the
    /// previous poll: the agent spawned it after that poll, so any process
    /// first seen now that started no earlier was born after that poll too,
    /// even within the same clock tick.
    pub(super) exec_started_ticks: Option<u64>,
    pub(super) closed: usize,
    pub(super) vanished: &'a mut Vec<(u32, u64)>,
    pub(super) ended: &'a mut Vec<u32>,
    pub(super) idle_full_read_max_age_ns: u64,
    pub(super) names: &'a mut Names,
}

/// The runtime in /proc/PID/schedstat, and whether it was read through the
/// kept descriptor (then it is the same process as at the last read).
pub(super) fn read_runtime(w: &mut Watched, buf: &mut ReadBuf) -> Option<(u64, bool)> {
    let sched = w.sched.as_mut()?;
    match sched.read_into(buf) {
        Ok(kind) => {
            parse::parse_schedstat_runtime_ns(buf.bytes()).map(|ns| (ns, kind == ReadKind::Kept))
        }
        Err(e) => {
            // Absent (or the process is gone, which the read of stat tells):
            // this process is read in full from now on.
            log::debug!(
                "{}: {e}; reading stat at every poll",
                sched.path().display()
            );
            w.sched = None;
            None
        }
    }
}

/// Reports the values of the last full read again when the process has not
/// run since; true if it did.
pub(super) fn poll_unchanged(
    w: &mut Watched,
    runtime: Option<(u64, bool)>,
    ctx: &mut PollContext,
) -> bool {
    let (Some((runtime_ns, true)), Some(last), Some(prev), Some(start_ticks)) =
        (runtime, w.last_full, w.previous, w.start_ticks)
    else {
        return false;
    };
    if runtime_ns != last.runtime_ns
        || ctx.now_ns.saturating_sub(last.at_ns) >= ctx.idle_full_read_max_age_ns
    {
        return false;
    }
    let stat = PidStat {
        comm: &[],
        state: b'S',
        ppid: w.ppid,
        utime_ticks: prev.utime_ticks,
        stime_ticks: prev.stime_ticks,
        children_ticks: prev.children_ticks,
        num_threads: 1,
        start_ticks,
        vsize_bytes: last.vsize_bytes,
        rss_pages: last.rss_pages,
    };
    w.children_delta_ticks = 0;
    emit_process(w, &stat, ctx);
    w.previous = Some(Sample {
        at_ns: ctx.now_ns,
        ..prev
    });
    true
}

/// Reads one process and pushes its points. Returns false when the process
/// is gone (its series ends).
pub(super) fn poll_process(w: &mut Watched, buf: &mut ReadBuf, ctx: &mut PollContext) -> bool {
    let runtime = if w.full_reads >= FULL_READS_BEFORE_SCHEDSTAT {
        read_runtime(w, buf)
    } else {
        None
    };
    if poll_unchanged(w, runtime, ctx) {
        return true;
    }
    if let Err(e) = w.file.read_into(buf) {
        log::debug!("process {} ({}) ended: {e}", w.pid, w.exe);
        ctx.closed += w.open_fds();
        ctx.ended.push(w.pid);
        if let Some(prev) = w.previous {
            ctx.vanished.push((w.ppid, prev.total_ticks()));
        }
        return false;
    }
    let Some(stat) = parse::parse_pid_stat(buf.bytes()) else {
        log::debug!(
            "skipping odd {}: {:?}",
            w.file.path().display(),
            String::from_utf8_lossy(&buf.bytes()[..buf.bytes().len().min(120)])
        );
        return true;
    };
    if w.start_ticks.is_some_and(|s| s != stat.start_ticks) {
        log::debug!(
            "pid {} is a new process ({} started at tick {}); its series starts over",
            w.pid,
            String::from_utf8_lossy(stat.comm),
            stat.start_ticks
        );
        w.previous = None;
        w.in_exec_tree = None;
        w.full_reads = 0;
    }
    w.full_reads = (w.full_reads + 1).min(FULL_READS_BEFORE_SCHEDSTAT);
    w.last_full = match runtime {
        Some((runtime_ns, _)) if stat.num_threads == 1 => Some(LastFullRead {
            runtime_ns,
            vsize_bytes: stat.vsize_bytes,
            rss_pages: stat.rss_pages,
            at_ns: ctx.now_ns,
        }),
        _ => None,
    };
    w.start_ticks = Some(stat.start_ticks);
    w.ppid = stat.ppid;
    let comm = String::from_utf8_lossy(stat.comm);
    if w.exe != comm || w.attrs.exe.is_empty() {
        w.exe = ctx.names.get(&comm);
        w.attrs = ProcessAttributes::of(w.exe.clone());
    }
    w.children_delta_ticks = match w.previous {
        Some(prev) => stat.children_ticks.saturating_sub(prev.children_ticks),
        None if cpu_delta(w, &stat, ctx).is_some() => stat.children_ticks,
        None => 0,
    };
    emit_process(w, &stat, ctx);
    w.previous = Some(Sample {
        utime_ticks: stat.utime_ticks,
        stime_ticks: stat.stime_ticks,
        children_ticks: stat.children_ticks,
        at_ns: ctx.now_ns,
    });
    true
}

/// The CPU ticks (user, system) of the interval that ends now, and its
/// length in ns; `None` when this process has no interval yet.
pub(super) fn cpu_delta(w: &Watched, stat: &PidStat, ctx: &PollContext) -> Option<(u64, u64, u64)> {
    match w.previous {
        Some(prev) => {
            if stat.utime_ticks < prev.utime_ticks || stat.stime_ticks < prev.stime_ticks {
                log::debug!(
                    "CPU time of process {} went backwards; no delta this interval",
                    w.pid
                );
                return None;
            }
            Some((
                stat.utime_ticks - prev.utime_ticks,
                stat.stime_ticks - prev.stime_ticks,
                ctx.now_ns.saturating_sub(prev.at_ns),
            ))
        }
        None => {
            // Born after the previous poll: everything it used is new.
            let poll = ctx.previous_poll?;
            let spawned_by_exec = ctx
                .exec_started_ticks
                .is_some_and(|exec_start| stat.start_ticks >= exec_start);
            let started_s = stat.start_ticks as f64 * ctx.seconds_per_tick;
            let after = spawned_by_exec
                || poll
                    .uptime_s
                    .is_some_and(|uptime_s| started_s >= uptime_s + UPTIME_RESOLUTION_S - 1e-9);
            after.then(|| {
                (
                    stat.utime_ticks,
                    stat.stime_ticks,
                    ctx.now_ns.saturating_sub(poll.at_ns),
                )
            })
        }
    }
}

/// The attribute lists of one process's points, shared by all of them (no
/// allocation per point; see `alumet::measurement::Attributes`).
#[derive(Debug, Default)]
pub(super) struct ProcessAttributes {
    /// `exe`: memory and CPU usage points.
    pub(super) exe: Attributes,
    /// `mode=user`, `exe`.
    pub(super) user: Attributes,
    /// `mode=system`, `exe`.
    pub(super) system: Attributes,
    /// `mode=children`, `exe`.
    pub(super) children: Attributes,
}

impl ProcessAttributes {
    pub(super) fn of(exe: Cow<'static, str>) -> Self {
        let exe_attr = || (Cow::Borrowed("exe"), AttributeValue::Str(exe.clone()));
        let with_mode = |mode: &'static str| {
            Attributes::from(vec![
                (
                    Cow::Borrowed("mode"),
                    AttributeValue::Str(Cow::Borrowed(mode)),
                ),
                exe_attr(),
            ])
        };
        Self {
            exe: vec![exe_attr()].into(),
            user: with_mode("user"),
            system: with_mode("system"),
            children: with_mode("children"),
        }
    }
}

pub(super) fn emit_process(w: &Watched, stat: &PidStat, ctx: &mut PollContext) {
    let consumer = ResourceConsumer::Process { pid: w.pid };
    let ts = ctx.ts;
    let point = |metric, value: alumet::measurement::MeasurementValue, attributes: &Attributes| {
        MeasurementPoint {
            timestamp: ts,
            metric,
            resource: Resource::LocalMachine,
            consumer: consumer.clone(),
            value,
            attributes: attributes.clone(),
        }
    };
    // Kernel threads (and zombies) have no address space: no memory points.
    if stat.vsize_bytes > 0 {
        let resident = stat.rss_pages.saturating_mul(ctx.page_size_bytes);
        ctx.into.extend([
            point(ctx.ids.memory_resident, resident.into(), &w.attrs.exe),
            point(
                ctx.ids.memory_virtual,
                stat.vsize_bytes.into(),
                &w.attrs.exe,
            ),
        ]);
    }

    let Some((user, system, interval_ns)) = cpu_delta(w, stat, ctx) else {
        return;
    };
    let user_s = user as f64 * ctx.seconds_per_tick;
    let system_s = system as f64 * ctx.seconds_per_tick;
    ctx.into.extend([
        point(ctx.ids.cpu_time, user_s.into(), &w.attrs.user),
        point(ctx.ids.cpu_time, system_s.into(), &w.attrs.system),
    ]);
    if interval_ns > 0 {
        // Ticks are sampled, so over a short interval a process can be
        // charged more ticks than the wall time allows; clamp to what the
        // CPUs could really have given it.
        let usage = (user_s + system_s) / (interval_ns as f64 / 1e9) * 100.0;
        let usage = usage.min(ctx.max_usage_percent);
        ctx.into
            .push(point(ctx.ids.cpu_usage, usage.into(), &w.attrs.exe));
    }
}
