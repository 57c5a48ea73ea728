//! Crate `alumet-delivery`: the delivery machinery every network output of
//! Alumet shares (InfluxDB, OpenTelemetry, any later HTTP output), so that
//! an output plugin only encodes.
//!
//! It gives each output the same guarantees: a bounded buffer that drops
//! the oldest points first and counts them, batching by size and time,
//! retries with exponential backoff and jitter on 5xx, timeouts and dropped
//! connections, `Retry-After` on 429/503, other 4xx dropping that batch and
//! counting it, partial successes counted, TLS with the system's trust
//! store, a private CA or mutual TLS, a shutdown deadline, and every loss
//! reported to the pipeline.
//!
//! - [`output`]: the pipeline output ([`output::DeliveryOutput`]) over a
//!   plugin's [`output::BatchEncoder`];
//! - [`queue`]: the bounded buffer of encoded batches;
//! - [`spill`]: its disk part (`buffer_dir`), across outages and restarts;
//! - [`sender`]: the thread that delivers and retries;
//! - [`http`]: the HTTP boundary (ureq with rustls) and its outcomes;
//! - [`tls`]: trust store, `ca_file`, client certificate;
//! - [`secret`]: secrets from config, env or file, never logged;
//! - [`settings`]: the delivery keys and their validation;
//! - [`stats`]: what was delivered, dropped and why;
//! - [`self_metrics`]: those figures as the output's own metrics;
//! - `testing` (feature `testing`): the kit of the outputs' tests and benches.

pub mod http;
pub mod output;
pub mod queue;
pub mod secret;
pub mod self_metrics;
pub mod sender;
pub mod settings;
pub mod spill;
pub mod stats;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;

/// The kernel's host name (for `host` tags and `host.name`), if it has one.
pub fn host_name() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .find(|s| !s.is_empty())
}

pub use http::{HttpTarget, HttpTransport, PartialRejection, SendOutcome, Transport};
pub use output::{add_delivery_output, BatchEncoder, DeliveryOutput};
pub use secret::{Redactor, Secret, SecretSource};
pub use settings::{DeliveryKeys, DeliverySettings, DELIVERY_KEY_DOCS};
pub use stats::{DeliveryStats, StatsHandle};
pub use tls::TlsFiles;
