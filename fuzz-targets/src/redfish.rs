//! A BMC's Redfish documents: the service root, the Chassis collection,
//! each Chassis, its EnvironmentMetrics, its Sensors collection and
//! sensors, and the older Power resource. The BMC, or whoever answers on
//! its address, writes them.
//!
//! The input is the BMC's resources: `path NUL body NUL path NUL body...`
//! (an input without NUL is the body of every resource). Discovery reads
//! the first body of each path; the source's `k`-th poll reads its
//! `k`-th (the last one again when there are fewer), so that readings
//! change between polls. Everything goes through the plugin's own client
//! (`plugin_redfish::client::Client`) over an in-memory transport.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use alumet::measurement::{MeasurementValue, Timestamp};
use alumet::metrics::MetricRegistry;
use alumet::pipeline::Source;
use alumet::secret::Secret;
use plugin_redfish::client::{Client, Method, Request, Response, Transport, TransportError};
use plugin_redfish::discovery::{
    discover, Discovery, DiscoveryError, MAX_MEMBERS, NODE_CHASSIS_TYPES,
};
use plugin_redfish::source::{BmcSource, SourceMetrics, MIN_FREEZE_AFTER};

/// Most resources (path and body pairs) in an input.
const MAX_RESOURCES: usize = 256;

/// Most polls of the source.
const MAX_POLLS: usize = 8;

/// The most GETs a discovery may make: the root, the collection, and per
/// chassis (at most [`MAX_MEMBERS`]) itself, its EnvironmentMetrics, its
/// Sensors collection and sensors, its Power.
const MAX_DISCOVERY_GETS: u64 = 2 + MAX_MEMBERS as u64 * (4 + MAX_MEMBERS as u64);

/// The BMC of one input.
struct Bmc {
    /// Bodies by path, in the input's order; `None`: every path has `all`.
    resources: Option<HashMap<String, Vec<String>>>,
    all: String,
    /// Which body of each path a GET answers (0: discovery's).
    round: AtomicUsize,
    gets: AtomicU64,
}

impl Bmc {
    fn new(data: &[u8]) -> Self {
        if !data.contains(&0) {
            return Self {
                resources: None,
                all: String::from_utf8_lossy(data).into_owned(),
                round: AtomicUsize::new(0),
                gets: AtomicU64::new(0),
            };
        }
        let mut resources: HashMap<String, Vec<String>> = HashMap::new();
        let mut parts = data.split(|&b| b == 0);
        for _ in 0..MAX_RESOURCES {
            let (Some(path), Some(body)) = (parts.next(), parts.next()) else {
                break;
            };
            resources
                .entry(String::from_utf8_lossy(path).into_owned())
                .or_default()
                .push(String::from_utf8_lossy(body).into_owned());
        }
        Self {
            resources: Some(resources),
            all: String::new(),
            round: AtomicUsize::new(0),
            gets: AtomicU64::new(0),
        }
    }

    /// The most bodies any path has.
    fn rounds(&self) -> usize {
        self.resources
            .as_ref()
            .and_then(|r| r.values().map(Vec::len).max())
            .unwrap_or(1)
    }
}

/// A transport to a shared [`Bmc`].
struct Shared(Arc<Bmc>);

impl Transport for Shared {
    fn send(&self, request: &Request<'_>) -> Result<Response, TransportError> {
        let bmc = &self.0;
        match request.method {
            // A SessionService that accepts anyone.
            Method::Post => Ok(Response {
                status: 201,
                auth_token: Some("token".to_owned()),
                location: Some("/redfish/v1/SessionService/Sessions/1".to_owned()),
                body: "{}".to_owned(),
            }),
            Method::Delete => Ok(Response {
                status: 204,
                ..Response::default()
            }),
            Method::Get => {
                bmc.gets.fetch_add(1, Ordering::Relaxed);
                let body = match &bmc.resources {
                    None => Some(bmc.all.clone()),
                    Some(resources) => resources.get(request.path).map(|bodies| {
                        let k = bmc.round.load(Ordering::Relaxed).min(bodies.len() - 1);
                        bodies[k].clone()
                    }),
                };
                Ok(match body {
                    Some(body) => Response {
                        status: 200,
                        body,
                        ..Response::default()
                    },
                    None => Response {
                        status: 404,
                        ..Response::default()
                    },
                })
            }
        }
    }
}

fn client(bmc: &Arc<Bmc>) -> Option<Client> {
    let client = Client::new(
        Box::new(Shared(Arc::clone(bmc))),
        "https://bmc.fuzz",
        "alumet",
        Secret::new("password"),
    );
    client.login().ok()?;
    Some(client)
}

fn metrics() -> SourceMetrics {
    static METRICS: OnceLock<SourceMetrics> = OnceLock::new();
    *METRICS.get_or_init(|| {
        let mut r = MetricRegistry::new();
        SourceMetrics {
            energy: r.register(plugin_redfish::energy_metric()).unwrap(),
            power: r.register(plugin_redfish::power_metric()).unwrap(),
            unmeasured: r.register(alumet_energy::unmeasured_metric()).unwrap(),
        }
    })
}

fn check_plans(found: &Discovery, automatic: bool) {
    assert!(found.plans.len() <= MAX_MEMBERS);
    for plan in &found.plans {
        assert!(plan.energy.is_some() || plan.power.is_some(), "{plan:?}");
        // One request per poll, two only for power without a counter
        // (never: power beside a counter is read from the same resource).
        let paths = plan.paths();
        assert_eq!(paths.len(), 1, "{plan:?}");
        if automatic {
            assert!(NODE_CHASSIS_TYPES.contains(&plan.chassis_type.as_str()));
        }
        let _ = plan.describe();
    }
}

/// The documents of a BMC through discovery and the source: discovery
/// makes a bounded number of requests, measures only node-level chassis
/// with a reading (automatic choice), finds again each of them when they
/// are asked by id; the source's points are finite and non-negative, at
/// most one energy or unmeasured-time point per chassis and poll.
pub fn redfish_documents(data: &[u8]) {
    let bmc = Arc::new(Bmc::new(data));
    let Some(first) = client(&bmc) else {
        return;
    };
    let budget = std::time::Duration::from_secs(60);
    let before = bmc.gets.load(Ordering::Relaxed);
    let found = discover(&first, &[], budget);
    assert!(bmc.gets.load(Ordering::Relaxed) - before <= MAX_DISCOVERY_GETS);
    let Ok(found) = found else {
        return;
    };
    check_plans(&found, true);

    // Each chassis measured, asked by id, is found again as it was. Asked
    // by id, a chassis of the same id that the automatic choice skipped
    // (not a whole node) is read too, and a resource of its that cannot be
    // read fails the discovery: only a failed request may.
    let mut ids: Vec<String> = found.plans.iter().map(|p| p.id.clone()).collect();
    ids.dedup();
    if !ids.is_empty() {
        let again = client(&bmc).expect("the same BMC logs in again");
        match discover(&again, &ids, budget) {
            Ok(asked) => {
                check_plans(&asked, false);
                for plan in &found.plans {
                    assert!(asked.plans.contains(plan), "{plan:?} not found by id");
                }
            }
            Err(DiscoveryError::Fetch(_)) => {}
            Err(e) => panic!("asked by id: {e}"),
        }
    }

    let plans = found.plans;
    let counted: HashMap<String, usize> = plans.iter().fold(HashMap::new(), |mut m, p| {
        *m.entry(p.id.clone()).or_default() += 1;
        m
    });
    let metrics = metrics();
    let mut source = BmcSource::new(Arc::new(first), plans, metrics, MIN_FREEZE_AFTER);
    let start = 1_700_000_000_000_000_000u64;
    for k in 0..bmc.rounds().clamp(2, MAX_POLLS) {
        bmc.round.store(k, Ordering::Relaxed);
        let mut points = Vec::new();
        let t = Timestamp::from_unix_nanos(start + k as u64 * 10_000_000_000);
        source.poll(&mut points, t).unwrap();
        let mut energy_points: HashMap<String, usize> = HashMap::new();
        for p in &points {
            let MeasurementValue::F64(v) = p.value else {
                panic!("{p:?} is not an F64");
            };
            assert!(v.is_finite() && v >= 0.0, "{p:?}");
            let chassis = p.attr("chassis").expect("a chassis").to_string();
            assert!(counted.contains_key(&chassis), "{p:?}");
            if p.metric == metrics.energy || p.metric == metrics.unmeasured {
                *energy_points.entry(chassis).or_default() += 1;
            } else {
                assert!(p.metric == metrics.power, "{p:?}");
            }
        }
        for (chassis, n) in energy_points {
            assert!(
                n <= counted[&chassis],
                "chassis {chassis}: {n} energy points"
            );
        }
    }
}
