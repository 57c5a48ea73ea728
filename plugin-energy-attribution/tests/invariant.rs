//! Property-style test: random sources, intervals, processes and delivery
//! orders; for every energy interval, what is attributed (or reported as
//! unattributed) adds up to the interval's dynamic (and shared static)
//! energy to 1e-9 relative, and nothing is negative.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use alumet::measurement::{MeasurementBuffer, MeasurementPoint, Resource, ResourceConsumer};
use plugin_energy_attribution::Config;

use common::{cpu, point, registry, run, ts};

/// xorshift64*: a small deterministic generator, so failures reproduce by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const DOMAINS: [(&str, Resource); 4] = [
    ("package", Resource::CpuPackage { id: 0 }),
    ("package", Resource::CpuPackage { id: 1 }),
    ("dram", Resource::Dram { pkg_id: 0 }),
    ("psys", Resource::LocalMachine),
];

struct Scenario {
    config: Config,
    buffers: Vec<MeasurementBuffer>,
    /// (domain index, end ms) → (start ms, energy J), for every interval after a domain's first point.
    intervals: HashMap<(usize, u64), (u64, f64)>,
    /// (domain index, ms) → energy J of each domain's first point, whose
    /// start is unknown: it must come back whole as unattributed.
    firsts: HashMap<(usize, u64), f64>,
}

fn scenario(seed: u64) -> Scenario {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let (reg, _) = registry(None);
    let mut config = Config {
        share_static: rng.below(2) == 0,
        idle_percentile: rng.unit() * 20.0,
        idle_window: Duration::from_secs(1 + rng.below(20)),
        max_delay: Duration::from_millis(500 + rng.below(5000)),
        ..Config::default()
    };
    if rng.below(2) == 0 {
        config
            .idle_power_w
            .insert("package".into(), rng.unit() * 30.0);
    }
    let end_ms = 5_000 + rng.below(20_000);

    // rapl: all domains polled together, flushed every 1..5 polls.
    let mut rapl_buffers = Vec::new();
    let mut intervals = HashMap::new();
    let mut firsts = HashMap::new();
    let mut last: [Option<u64>; 4] = [None; 4];
    let mut t = rng.below(300);
    let mut pending = MeasurementBuffer::new();
    let mut flush_in = 1 + rng.below(5);
    while t < end_ms {
        for (d, (name, resource)) in DOMAINS.iter().enumerate() {
            let energy = match rng.below(20) {
                0 => 0.0,
                1 => f64::NAN,
                _ => rng.unit() * 40.0,
            };
            pending.push(
                point(
                    &reg,
                    t as f64,
                    "rapl_consumed_energy",
                    resource.clone(),
                    ResourceConsumer::LocalMachine,
                    energy,
                )
                .with_attr("domain", *name),
            );
            match last[d] {
                Some(start) => {
                    intervals.insert((d, t), (start, energy));
                }
                None => {
                    firsts.insert((d, t), energy);
                }
            }
            last[d] = Some(t);
        }
        flush_in -= 1;
        if flush_in == 0 {
            rapl_buffers.push(std::mem::take(&mut pending));
            flush_in = 1 + rng.below(5);
        }
        t += 20 + rng.below(300);
    }
    rapl_buffers.push(pending);

    // procfs: 0..30 processes, each alive over a random span, polled every 0.2..2 s.
    let lifetimes: Vec<(u64, u64)> = (0..rng.below(30))
        .map(|_| {
            let a = rng.below(end_ms);
            (a, a + rng.below(end_ms))
        })
        .collect();
    let mut procfs_buffers = Vec::new();
    let mut t = rng.below(1000);
    while t < end_ms + 2000 {
        let mut b = MeasurementBuffer::new();
        for (i, &(born, died)) in lifetimes.iter().enumerate() {
            if born <= t && t <= died {
                let busy = if rng.below(4) == 0 {
                    0.0
                } else {
                    rng.unit() * 1.5
                };
                b.push(cpu(&reg, t as f64, 1000 + i as u32, &format!("p{i}"), busy));
            }
        }
        if b.is_empty() {
            // An idle poll still has the agent itself in it.
            b.push(cpu(&reg, t as f64, 1, "alumet-agent", 0.0));
        }
        procfs_buffers.push(b);
        t += 200 + rng.below(1800);
    }

    // Deliver the two streams interleaved at random, each in its own order.
    let mut buffers = Vec::new();
    let (mut r, mut p) = (
        rapl_buffers.into_iter().peekable(),
        procfs_buffers.into_iter().peekable(),
    );
    while r.peek().is_some() || p.peek().is_some() {
        let take_rapl = p.peek().is_none() || (r.peek().is_some() && rng.below(3) != 0);
        buffers.push(if take_rapl {
            r.next().unwrap()
        } else {
            p.next().unwrap()
        });
    }
    Scenario {
        config,
        buffers,
        intervals,
        firsts,
    }
}

fn domain_of(p: &MeasurementPoint) -> usize {
    let name = p.attr("domain").unwrap().to_string();
    DOMAINS
        .iter()
        .position(|(n, r)| *n == name && *r == p.resource)
        .unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) || (a - b).abs() < 1e-12
}

#[test]
fn attributed_energy_adds_up_to_the_dynamic_energy_and_is_never_negative() {
    let mut attributed_intervals = 0;
    for seed in 0..300 {
        let s = scenario(seed);
        let (reg, outputs) = registry(None);
        let share_static = s.config.share_static;
        let configured = s.config.idle_power_w.get("package").copied();
        let result = run(s.config, reg, outputs, s.buffers);
        assert_eq!(result.stats.energy_points_too_late, 0, "seed {seed}");

        let mut idle: HashMap<(usize, u64), f64> = HashMap::new();
        let mut sums: HashMap<(usize, u64, String), f64> = HashMap::new();
        let mut unattributed: HashMap<(usize, u64, String), f64> = HashMap::new();
        for p in &result.added {
            let v = p.value.as_f64();
            assert!(v.is_finite() && v >= 0.0, "seed {seed}: {p:?}");
            let end_ms = (p.timestamp.unix_nanos() - ts(0.0).unix_nanos()) / 1_000_000;
            let key = (domain_of(p), end_ms);
            let name = &result.registry.get(p.metric).unwrap().name;
            let part = p.attr("part").map(|a| a.to_string()).unwrap_or_default();
            match name.as_str() {
                "idle_power" => assert!(
                    idle.insert(key, v).is_none(),
                    "seed {seed}: two idle points"
                ),
                "attributed_energy" => *sums.entry((key.0, key.1, part)).or_default() += v,
                "unattributed_energy" => {
                    *unattributed.entry((key.0, key.1, part)).or_default() += v
                }
                other => panic!("unexpected metric {other}"),
            }
        }
        for (&(d, end), &(start, energy)) in &s.intervals {
            let Some(&p_idle) = idle.get(&(d, end)) else {
                assert!(
                    energy.is_nan(),
                    "seed {seed}: valid interval {d} {start}..{end} got no idle_power"
                );
                continue;
            };
            if DOMAINS[d].0 == "package" {
                if let Some(w) = configured {
                    assert_eq!(p_idle, w);
                }
            }
            let dt = (end - start) as f64 / 1000.0;
            let static_j = energy.min(p_idle * dt);
            let dynamic_j = energy - static_j;
            for (part, expected) in [
                ("dynamic", dynamic_j),
                ("static", if share_static { static_j } else { 0.0 }),
            ] {
                let key = (d, end, part.to_owned());
                let got = sums.get(&key).copied();
                let lost = unattributed.get(&key).copied();
                match (got, lost) {
                    (Some(g), None) => {
                        assert!(
                            close(g, expected),
                            "seed {seed}: {part} of {d} {start}..{end}: {g} != {expected}"
                        );
                        attributed_intervals += 1;
                    }
                    (None, Some(l)) => assert!(
                        close(l, expected),
                        "seed {seed}: unattributed {l} != {expected}"
                    ),
                    (None, None) => assert!(
                        expected == 0.0,
                        "seed {seed}: {expected} J of {d} {start}..{end} vanished"
                    ),
                    (Some(_), Some(_)) => {
                        panic!("seed {seed}: interval both attributed and unattributed")
                    }
                }
            }
        }
        // A first point's energy (its start unknown) comes back whole,
        // unattributed; nothing else is emitted for it.
        for (&(d, t), &energy) in &s.firsts {
            let lost = unattributed.get(&(d, t, "total".to_owned())).copied();
            if energy.is_finite() && energy > 0.0 {
                assert_eq!(lost, Some(energy), "seed {seed}: first point of {d} at {t}");
            } else {
                assert_eq!(lost, None, "seed {seed}");
            }
        }
        // Nothing is emitted for an interval that does not exist.
        for (d, end, part) in sums.keys().chain(unattributed.keys()) {
            if part == "total" {
                assert!(s.firsts.contains_key(&(*d, *end)), "seed {seed}");
                continue;
            }
            assert!(s.intervals.contains_key(&(*d, *end)), "seed {seed}");
        }
    }
    eprintln!("attributed parts: {attributed_intervals}");
    assert!(
        attributed_intervals > 10_000,
        "the scenarios exercise too little: {attributed_intervals}"
    );
}
