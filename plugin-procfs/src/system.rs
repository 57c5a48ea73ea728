//! The system source: machine-wide activity from /proc/stat, /proc/meminfo
//! and /proc/net/dev.
//!
//! Kernel counters become deltas over the poll interval. A counter that
//! goes backwards (a CPU unplugged from the sum, a driver resetting its
//! statistics) gives no delta for that interval: the new value becomes the
//! reference (a debug log says so), so no negative or huge value is emitted.

use std::borrow::Cow;
use std::path::Path;

use alumet::measurement::{
    MeasurementBuffer, MeasurementPoint, Resource, ResourceConsumer, Timestamp,
};
use alumet::metrics::MetricId;
use alumet::pipeline::{PollError, Source};

use crate::parse::{self, CpuLine, CpuTicks, NetCounters, CPU_STATE_NAMES};
use alumet_kernelfs::file::{KernelFile, ReadBuf};

/// Ids of the metrics the system source emits.
#[derive(Debug, Clone, Copy)]
pub struct SystemMetricIds {
    /// `cpu_time`.
    pub cpu_time: MetricId,
    /// `context_switches`.
    pub context_switches: MetricId,
    /// `processes_created`.
    pub processes_created: MetricId,
    /// `tasks_running`.
    pub tasks_running: MetricId,
    /// `tasks_blocked`.
    pub tasks_blocked: MetricId,
    /// `system_memory`.
    pub system_memory: MetricId,
    /// `network_bytes`.
    pub network_bytes: MetricId,
    /// `network_packets`.
    pub network_packets: MetricId,
    /// `network_errors`.
    pub network_errors: MetricId,
    /// `network_drops`.
    pub network_drops: MetricId,
}

/// What the system source reads, beyond /proc/stat.
#[derive(Debug, Clone)]
pub struct SystemOptions {
    /// Emit `cpu_time` per CPU as well as machine-wide.
    pub per_cpu: bool,
    /// /proc/meminfo keys to report; empty: /proc/meminfo is not read.
    pub meminfo_fields: Vec<String>,
    /// Read /proc/net/dev.
    pub network: bool,
    /// Interfaces to report; empty: all of them.
    pub network_interfaces: Vec<String>,
}

/// CPU numbers at or above this are taken for garbage (the per-CPU state is
/// a table indexed by CPU number).
const MAX_CPUS: u32 = 1 << 16;

/// The new value minus the previous one, or `None` (with a debug log) when
/// the counter went backwards.
fn counter_delta(previous: u64, current: u64, what: &dyn Fn() -> String) -> Option<u64> {
    if current >= previous {
        Some(current - previous)
    } else {
        log::debug!(
            "{} went backwards ({previous} -> {current}); no delta this interval",
            what()
        );
        None
    }
}

struct Interface {
    name: String,
    resource: Resource,
    previous: NetCounters,
    seen: bool,
}

/// Reads /proc/stat, /proc/meminfo and /proc/net/dev at every poll.
pub struct SystemSource {
    stat: KernelFile,
    meminfo: Option<KernelFile>,
    netdev: Option<KernelFile>,
    buf: ReadBuf,
    seconds_per_tick: f64,
    options: SystemOptions,
    ids: SystemMetricIds,
    total_previous: Option<CpuTicks>,
    /// Indexed by CPU number.
    per_cpu_previous: Vec<Option<CpuTicks>>,
    per_cpu_seen: Vec<bool>,
    context_switches_previous: Option<u64>,
    processes_created_previous: Option<u64>,
    interfaces: Vec<Interface>,
}

impl SystemSource {
    /// A source reading the files under `proc_root`.
    pub fn new(
        proc_root: &Path,
        clock_ticks_per_second: u64,
        options: SystemOptions,
        ids: SystemMetricIds,
    ) -> Self {
        let meminfo = (!options.meminfo_fields.is_empty())
            .then(|| KernelFile::new(proc_root.join("meminfo"), true));
        let netdev = options
            .network
            .then(|| KernelFile::new(proc_root.join("net/dev"), true));
        Self {
            stat: KernelFile::new(proc_root.join("stat"), true),
            meminfo,
            netdev,
            buf: ReadBuf::with_capacity(16 * 1024),
            seconds_per_tick: 1.0 / clock_ticks_per_second.max(1) as f64,
            options,
            ids,
            total_previous: None,
            per_cpu_previous: Vec::new(),
            per_cpu_seen: Vec::new(),
            context_switches_previous: None,
            processes_created_previous: None,
            interfaces: Vec::new(),
        }
    }

    fn poll_stat(&mut self, into: &mut MeasurementBuffer, ts: Timestamp) -> Result<(), PollError> {
        self.stat.read_into(&mut self.buf).map_err(|e| {
            PollError::transient(format!("cannot read {}: {e}", self.stat.path().display()))
        })?;
        self.per_cpu_seen.iter_mut().for_each(|s| *s = false);
        let per_cpu = self.options.per_cpu;
        let ids = self.ids;
        let seconds_per_tick = self.seconds_per_tick;
        for line in parse::lines(self.buf.bytes()) {
            if line.starts_with(b"cpu") {
                let Some((which, ticks)) = parse::parse_cpu_line(line) else {
                    log::debug!(
                        "skipping odd /proc/stat line: {:?}",
                        String::from_utf8_lossy(&line[..line.len().min(80)])
                    );
                    continue;
                };
                match which {
                    CpuLine::Total => {
                        let previous = self.total_previous.replace(ticks);
                        emit_cpu_deltas(
                            into,
                            ts,
                            ids.cpu_time,
                            Resource::LocalMachine,
                            previous,
                            ticks,
                            seconds_per_tick,
                        );
                    }
                    CpuLine::Core(cpu) if per_cpu && cpu >= MAX_CPUS => {
                        log::debug!(
                            "ignoring /proc/stat line of cpu{cpu}: CPU number out of range"
                        );
                    }
                    CpuLine::Core(cpu) if per_cpu => {
                        let i = cpu as usize;
                        if i >= self.per_cpu_previous.len() {
                            self.per_cpu_previous.resize(i + 1, None);
                            self.per_cpu_seen.resize(i + 1, false);
                        }
                        self.per_cpu_seen[i] = true;
                        let previous = self.per_cpu_previous[i].replace(ticks);
                        emit_cpu_deltas(
                            into,
                            ts,
                            ids.cpu_time,
                            Resource::CpuCore { id: cpu },
                            previous,
                            ticks,
                            seconds_per_tick,
                        );
                    }
                    CpuLine::Core(_) => {}
                }
                continue;
            }
            // Only a few short lines matter; the long `intr` and `softirq`
            // lines are skipped on their first bytes.
            let wanted = [
                &b"ctxt "[..],
                b"processes ",
                b"procs_running ",
                b"procs_blocked ",
            ];
            if !wanted.iter().any(|w| line.starts_with(w)) {
                continue;
            }
            let Some((key, value)) = parse::parse_key_value(line) else {
                log::debug!(
                    "skipping odd /proc/stat line: {:?}",
                    String::from_utf8_lossy(line)
                );
                continue;
            };
            let point = |metric, v: u64| {
                MeasurementPoint::new(
                    ts,
                    metric,
                    Resource::LocalMachine,
                    ResourceConsumer::LocalMachine,
                    v,
                )
            };
            match key {
                b"ctxt" => {
                    if let Some(previous) = self.context_switches_previous.replace(value) {
                        if let Some(d) = counter_delta(previous, value, &|| "ctxt".to_owned()) {
                            into.push(point(ids.context_switches, d));
                        }
                    }
                }
                b"processes" => {
                    if let Some(previous) = self.processes_created_previous.replace(value) {
                        if let Some(d) = counter_delta(previous, value, &|| "processes".to_owned())
                        {
                            into.push(point(ids.processes_created, d));
                        }
                    }
                }
                b"procs_running" => into.push(point(ids.tasks_running, value)),
                b"procs_blocked" => into.push(point(ids.tasks_blocked, value)),
                _ => {}
            }
        }
        // A CPU that disappeared (unplugged) starts over when it comes back.
        for (previous, seen) in self.per_cpu_previous.iter_mut().zip(&self.per_cpu_seen) {
            if !seen {
                *previous = None;
            }
        }
        Ok(())
    }

    fn poll_meminfo(
        &mut self,
        into: &mut MeasurementBuffer,
        ts: Timestamp,
    ) -> Result<(), PollError> {
        let Some(file) = &mut self.meminfo else {
            return Ok(());
        };
        file.read_into(&mut self.buf).map_err(|e| {
            PollError::transient(format!("cannot read {}: {e}", file.path().display()))
        })?;
        for line in parse::lines(self.buf.bytes()) {
            let Some((key, value, in_kb)) = parse::parse_meminfo_line(line) else {
                log::debug!(
                    "skipping odd /proc/meminfo line: {:?}",
                    String::from_utf8_lossy(line)
                );
                continue;
            };
            let Some(field) = self
                .options
                .meminfo_fields
                .iter()
                .find(|f| f.as_bytes() == key)
            else {
                continue;
            };
            if !in_kb {
                log::debug!("/proc/meminfo field {field} is not in kB; it is not reported");
                continue;
            }
            let point = MeasurementPoint::new(
                ts,
                self.ids.system_memory,
                Resource::LocalMachine,
                ResourceConsumer::LocalMachine,
                value.saturating_mul(1024),
            )
            .with_attr("field", field.clone());
            into.push(point);
        }
        Ok(())
    }

    fn poll_netdev(
        &mut self,
        into: &mut MeasurementBuffer,
        ts: Timestamp,
    ) -> Result<(), PollError> {
        let Some(file) = &mut self.netdev else {
            return Ok(());
        };
        file.read_into(&mut self.buf).map_err(|e| {
            PollError::transient(format!("cannot read {}: {e}", file.path().display()))
        })?;
        for iface in &mut self.interfaces {
            iface.seen = false;
        }
        let ids = self.ids;
        for line in parse::lines(self.buf.bytes()) {
            if !line.contains(&b':') {
                continue; // the header lines
            }
            let Some((name, counters)) = parse::parse_netdev_line(line) else {
                log::debug!(
                    "skipping odd /proc/net/dev line: {:?}",
                    String::from_utf8_lossy(line)
                );
                continue;
            };
            if !self.options.network_interfaces.is_empty()
                && !self
                    .options
                    .network_interfaces
                    .iter()
                    .any(|n| n.as_bytes() == name)
            {
                continue;
            }
            let iface = match self
                .interfaces
                .iter()
                .position(|i| i.name.as_bytes() == name)
            {
                Some(i) => &mut self.interfaces[i],
                None => {
                    let name = String::from_utf8_lossy(name).into_owned();
                    self.interfaces.push(Interface {
                        resource: Resource::Custom {
                            kind: Cow::Borrowed("network_interface"),
                            id: Cow::Owned(name.clone()),
                        },
                        name,
                        previous: counters,
                        seen: true,
                    });
                    // Primed now; deltas from the next poll on.
                    continue;
                }
            };
            if std::mem::replace(&mut iface.seen, true) {
                continue; // the same interface twice in one read: keep the first
            }
            let previous = std::mem::replace(&mut iface.previous, counters);
            let metrics = [
                ids.network_bytes,
                ids.network_packets,
                ids.network_errors,
                ids.network_drops,
            ];
            for (direction, prev, cur) in [
                ("received", previous.rx, counters.rx),
                ("sent", previous.tx, counters.tx),
            ] {
                for k in 0..4 {
                    let what = || format!("{} {direction} counter {k}", iface.name);
                    if let Some(d) = counter_delta(prev[k], cur[k], &what) {
                        into.push(
                            MeasurementPoint::new(
                                ts,
                                metrics[k],
                                iface.resource.clone(),
                                ResourceConsumer::LocalMachine,
                                d,
                            )
                            .with_attr("direction", direction),
                        );
                    }
                }
            }
        }
        // An interface that went away starts over if it comes back.
        self.interfaces.retain(|i| i.seen);
        Ok(())
    }
}

/// Pushes one `cpu_time` point per state present in both readings.
fn emit_cpu_deltas(
    into: &mut MeasurementBuffer,
    ts: Timestamp,
    metric: MetricId,
    resource: Resource,
    previous: Option<CpuTicks>,
    current: CpuTicks,
    seconds_per_tick: f64,
) {
    let Some(previous) = previous else {
        return;
    };
    let n = previous.count.min(current.count);
    for (state, name) in CPU_STATE_NAMES.iter().enumerate().take(n) {
        let what = || format!("cpu_time {name} of {resource:?}");
        if let Some(d) = counter_delta(previous.ticks[state], current.ticks[state], &what) {
            into.push(
                MeasurementPoint::new(
                    ts,
                    metric,
                    resource.clone(),
                    ResourceConsumer::LocalMachine,
                    d as f64 * seconds_per_tick,
                )
                .with_attr("state", *name),
            );
        }
    }
}

impl Source for SystemSource {
    fn poll(
        &mut self,
        into: &mut MeasurementBuffer,
        timestamp: Timestamp,
    ) -> Result<(), PollError> {
        // Each file is independent: one failing does not hide the others.
        let stat = self.poll_stat(into, timestamp);
        let meminfo = self.poll_meminfo(into, timestamp);
        let netdev = self.poll_netdev(into, timestamp);
        stat.and(meminfo).and(netdev)
    }
}
