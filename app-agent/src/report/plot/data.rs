//! What a plot shows, gathered the same way from a CSV the agent wrote and
//! from the points of a running `exec`: energy per domain (turned into power
//! from the deltas), the command's attributed energy, the machine's CPU
//! usage, and the command's window; then downsampled for drawing.

use std::collections::{BTreeMap, BTreeSet};

use crate::report::series::{energy_label, ENERGY_METRICS};

/// Most points drawn per line: a 10-hour run at 1 kHz stays readable (and small).
pub const MAX_POINTS: usize = 1500;

/// Who a point is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consumer {
    /// The whole machine.
    Machine,
    /// The measured command (its cgroup or its process tree).
    Command,
    /// Anyone else.
    Other,
}

/// One point, as much of it as a plot needs.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    /// Wall clock, ns.
    pub t_ns: u64,
    /// Metric name.
    pub metric: &'a str,
    /// Value in the metric's unit.
    pub value: f64,
    /// The resource, for the domain's label.
    pub resource: &'a alumet::measurement::Resource,
    /// Who.
    pub consumer: Consumer,
    /// Attribute `domain`.
    pub domain: Option<&'a str>,
    /// Attribute `estimated` is true.
    pub estimated: bool,
    /// Attribute `state` (cpu_time).
    pub state: Option<&'a str>,
}

/// Busy states of `cpu_time` (guest time is inside user time).
const BUSY_STATES: [&str; 5] = ["user", "nice", "system", "irq", "softirq"];
/// Every state counted in the total.
const COUNTED_STATES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

/// Everything gathered for a plot.
#[derive(Debug, Default)]
pub struct PlotData {
    /// Title of the figure.
    pub title: String,
    /// Domain label → timestamp → joules (the machine's).
    energy: BTreeMap<String, BTreeMap<u64, f64>>,
    /// Labels of estimated domains.
    estimated: BTreeSet<String>,
    /// Domain label → timestamp → joules attributed to the command.
    command_energy: BTreeMap<String, BTreeMap<u64, f64>>,
    /// Timestamp → (busy s, total s) of the machine.
    cpu: BTreeMap<u64, (f64, f64)>,
    /// The command's start and end, ns.
    pub window_ns: (Option<u64>, Option<u64>),
    /// First and last timestamp of any command point (to guess the window from a CSV).
    command_seen_ns: Option<(u64, u64)>,
}

/// A line, time in seconds since the origin.
#[derive(Debug, Clone)]
pub struct Line {
    /// Legend label.
    pub label: String,
    /// Whether it is a model's estimate.
    pub estimated: bool,
    /// (s, value) points.
    pub points: Vec<(f64, f64)>,
}

/// What the renderer draws.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Title.
    pub title: String,
    /// Power per domain, W (steps).
    pub power: Vec<Line>,
    /// The command's attributed power per domain, W (same labels as `power`).
    pub command: Vec<Line>,
    /// Machine CPU usage, %.
    pub cpu: Vec<(f64, f64)>,
    /// Command start and end, s since the origin.
    pub window_s: (Option<f64>, Option<f64>),
    /// Time span drawn, s.
    pub span_s: f64,
}

fn domain_label(s: &Sample<'_>) -> String {
    let domain = s.domain.unwrap_or("gpu");
    let label = energy_label(s.resource, domain);
    if s.estimated {
        format!("{label} (estimated)")
    } else {
        label
    }
}

impl PlotData {
    /// An empty plot with this title.
    pub fn titled(title: String) -> Self {
        Self {
            title,
            ..Self::default()
        }
    }

    /// Takes in one point (ignored if the plot does not use it).
    pub fn add(&mut self, s: &Sample<'_>) {
        if !s.value.is_finite() {
            return;
        }
        if s.consumer == Consumer::Command {
            let (a, b) = self.command_seen_ns.unwrap_or((s.t_ns, s.t_ns));
            self.command_seen_ns = Some((a.min(s.t_ns), b.max(s.t_ns)));
        }
        if ENERGY_METRICS.contains(&s.metric) && s.consumer == Consumer::Machine {
            let label = domain_label(s);
            if s.estimated {
                self.estimated.insert(label.clone());
            }
            *self
                .energy
                .entry(label)
                .or_default()
                .entry(s.t_ns)
                .or_default() += s.value;
        } else if s.metric == "attributed_energy" && s.consumer == Consumer::Command {
            *self
                .command_energy
                .entry(domain_label(s))
                .or_default()
                .entry(s.t_ns)
                .or_default() += s.value;
        } else if s.metric == "cpu_time"
            && s.consumer == Consumer::Machine
            && *s.resource == alumet::measurement::Resource::LocalMachine
        {
            let Some(state) = s.state else { return };
            if !COUNTED_STATES.contains(&state) {
                return;
            }
            let entry = self.cpu.entry(s.t_ns).or_default();
            entry.1 += s.value;
            if BUSY_STATES.contains(&state) {
                entry.0 += s.value;
            }
        }
    }

    /// Whether anything plottable was gathered.
    pub fn is_empty(&self) -> bool {
        self.energy.is_empty() && self.cpu.is_empty()
    }

    /// The window: the one set, else the first and last command points.
    fn window(&self) -> (Option<u64>, Option<u64>) {
        match (self.window_ns, self.command_seen_ns) {
            ((None, None), Some((a, b))) => (Some(a), Some(b)),
            (w, _) => w,
        }
    }

    /// Power lines, downsampled to at most `max_points` steps each.
    pub fn prepare(&self, max_points: usize) -> Prepared {
        let window = self.window();
        let first = self
            .energy
            .values()
            .filter_map(|m| m.keys().next().copied())
            .chain(self.cpu.keys().next().copied())
            .chain(window.0)
            .min()
            .unwrap_or(0);
        let last = self
            .energy
            .values()
            .filter_map(|m| m.keys().next_back().copied())
            .chain(self.cpu.keys().next_back().copied())
            .chain(window.1)
            .max()
            .unwrap_or(first);
        let span_s = ((last.saturating_sub(first)) as f64 / 1e9).max(1e-3);
        let grid = Grid {
            origin_ns: first,
            width_s: span_s / max_points.max(1) as f64,
            last_bucket: max_points.saturating_sub(1) as u64,
        };
        let to_s = |t: u64| t.saturating_sub(first) as f64 / 1e9;
        let mut power = Vec::new();
        let mut command = Vec::new();
        for (label, series) in &self.energy {
            // An energy delta covers the time since the previous point of its series.
            let intervals: Vec<(u64, u64, f64)> = merge_short(
                series
                    .iter()
                    .zip(series.iter().skip(1))
                    .map(|((&t0, _), (&t1, &j))| (t0, t1, j))
                    .collect(),
            );
            let estimated = self.estimated.contains(label);
            power.push(Line {
                label: label.clone(),
                estimated,
                points: grid.steps(&intervals, max_points),
            });
            if let Some(cmd) = self.command_energy.get(label) {
                let intervals: Vec<(u64, u64, f64)> = cmd
                    .iter()
                    .filter_map(|(&t1, &j)| {
                        let (&t0, _) = series.range(..t1).next_back()?;
                        Some((t0, t1, j))
                    })
                    .collect();
                command.push(Line {
                    label: label.clone(),
                    estimated,
                    points: grid.steps(&intervals, max_points),
                });
            }
        }
        let cpu_points: Vec<(u64, f64)> = self
            .cpu
            .iter()
            .filter(|(_, (_, total))| *total > 0.0)
            .map(|(&t, &(busy, total))| (t, 100.0 * busy / total))
            .collect();
        Prepared {
            title: self.title.clone(),
            power,
            command,
            cpu: grid.average(&cpu_points, max_points),
            window_s: (window.0.map(to_s), window.1.map(to_s)),
            span_s,
        }
    }
}

/// Merges intervals far shorter than the usual one into the one before (the
/// extra polls at the command's start and end last milliseconds, and a
/// counter's granularity makes their power meaningless); energy is kept.
fn merge_short(intervals: Vec<(u64, u64, f64)>) -> Vec<(u64, u64, f64)> {
    let mut lengths: Vec<u64> = intervals.iter().map(|(a, b, _)| b - a).collect();
    if lengths.len() < 3 {
        return intervals;
    }
    lengths.sort_unstable();
    let short = lengths[lengths.len() / 2] / 4;
    let mut out: Vec<(u64, u64, f64)> = Vec::with_capacity(intervals.len());
    for (t0, t1, j) in intervals {
        match out.last_mut() {
            Some(last) if t1 - t0 < short && last.1 == t0 => {
                last.1 = t1;
                last.2 += j;
            }
            _ => out.push((t0, t1, j)),
        }
    }
    out
}

/// Buckets of equal width from the origin.
struct Grid {
    origin_ns: u64,
    width_s: f64,
    /// The span's end falls in the last bucket, not one past it.
    last_bucket: u64,
}

impl Grid {
    fn s(&self, t: u64) -> f64 {
        t.saturating_sub(self.origin_ns) as f64 / 1e9
    }

    fn bucket(&self, t: u64) -> u64 {
        ((self.s(t) / self.width_s).floor().max(0.0) as u64).min(self.last_bucket)
    }

    /// Power as steps over `(start, end, joules)` intervals; past
    /// `max_points` intervals, energy-weighted means per bucket (the energy
    /// under the line stays the same).
    fn steps(&self, intervals: &[(u64, u64, f64)], max_points: usize) -> Vec<(f64, f64)> {
        let mut out: Vec<(f64, f64)> = Vec::new();
        let mut push = |t0: f64, t1: f64, j: f64| {
            if t1 > t0 {
                // A gap (no point for the time between) drops to zero, so
                // that a shaded area does not slope across it.
                if let Some(&(end, _)) = out.last() {
                    if t0 > end + 1e-9 {
                        out.push((end, 0.0));
                        out.push((t0, 0.0));
                    }
                }
                let w = j / (t1 - t0);
                out.push((t0, w));
                out.push((t1, w));
            }
        };
        if intervals.len() <= max_points {
            for &(t0, t1, j) in intervals {
                push(self.s(t0), self.s(t1), j);
            }
            return out;
        }
        let mut current: Option<(u64, f64, f64, f64)> = None; // bucket, start, end, joules
        for &(t0, t1, j) in intervals {
            let b = self.bucket(t1);
            match &mut current {
                Some((cb, _, end, joules)) if *cb == b => {
                    *end = self.s(t1);
                    *joules += j;
                }
                _ => {
                    if let Some((_, s, e, joules)) = current.take() {
                        push(s, e, joules);
                    }
                    current = Some((b, self.s(t0), self.s(t1), j));
                }
            }
        }
        if let Some((_, s, e, joules)) = current {
            push(s, e, joules);
        }
        out
    }

    /// Means of a gauge per bucket, past `max_points` points.
    fn average(&self, points: &[(u64, f64)], max_points: usize) -> Vec<(f64, f64)> {
        if points.len() <= max_points {
            return points.iter().map(|&(t, v)| (self.s(t), v)).collect();
        }
        let mut out: Vec<(f64, f64)> = Vec::new();
        let mut current: Option<(u64, f64, f64, u32)> = None; // bucket, t sum, v sum, n
        for &(t, v) in points {
            let b = self.bucket(t);
            match &mut current {
                Some((cb, ts, vs, n)) if *cb == b => {
                    *ts += self.s(t);
                    *vs += v;
                    *n += 1;
                }
                _ => {
                    if let Some((_, ts, vs, n)) = current.take() {
                        out.push((ts / f64::from(n), vs / f64::from(n)));
                    }
                    current = Some((b, self.s(t), v, 1));
                }
            }
        }
        if let Some((_, ts, vs, n)) = current {
            out.push((ts / f64::from(n), vs / f64::from(n)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alumet::measurement::Resource;

    fn energy(data: &mut PlotData, t_s: u64, j: f64, consumer: Consumer, metric: &str) {
        let pkg = Resource::CpuPackage { id: 0 };
        data.add(&Sample {
            t_ns: t_s * 1_000_000_000,
            metric,
            value: j,
            resource: &pkg,
            consumer,
            domain: Some("package"),
            estimated: false,
            state: None,
        });
    }

    #[test]
    fn power_from_deltas_and_the_command_share() {
        let mut d = PlotData::default();
        for t in 0..=10 {
            energy(&mut d, t, 20.0, Consumer::Machine, "rapl_consumed_energy");
        }
        energy(&mut d, 5, 5.0, Consumer::Command, "attributed_energy");
        let p = d.prepare(MAX_POINTS);
        assert_eq!(p.power.len(), 1);
        assert_eq!(p.power[0].label, "CPU package 0");
        assert_eq!(p.power[0].points.len(), 20);
        assert!(p.power[0].points.iter().all(|&(_, w)| w == 20.0));
        assert_eq!(p.command[0].points, vec![(4.0, 5.0), (5.0, 5.0)]);
        assert_eq!(p.window_s, (Some(5.0), Some(5.0)));
    }

    #[test]
    fn a_poll_milliseconds_after_the_last_is_merged_into_it() {
        let intervals = vec![
            (0, 100, 10.0),
            (100, 200, 10.0),
            (200, 300, 10.0),
            (300, 302, 1.0),
        ];
        assert_eq!(
            merge_short(intervals),
            vec![(0, 100, 10.0), (100, 200, 10.0), (200, 302, 11.0)]
        );
    }

    #[test]
    fn ten_hours_at_one_hertz_are_downsampled_keeping_the_energy() {
        let mut d = PlotData::default();
        let n = 36_000;
        for t in 0..=n {
            let j = if (t / 3600) % 2 == 0 { 10.0 } else { 30.0 };
            energy(&mut d, t, j, Consumer::Machine, "rapl_consumed_energy");
        }
        let p = d.prepare(MAX_POINTS);
        let pts = &p.power[0].points;
        assert!(pts.len() <= 2 * MAX_POINTS, "{}", pts.len());
        let drawn: f64 = pts
            .windows(2)
            .map(|c| (c[1].0 - c[0].0) * c[0].1.min(c[1].1))
            .sum();
        let total: f64 = (1..=n)
            .map(|t| if (t / 3600) % 2 == 0 { 10.0 } else { 30.0 })
            .sum();
        assert!((drawn - total).abs() < 1e-6 * total, "{drawn} vs {total}");
        assert_eq!(p.span_s, 36_000.0);
    }
}
