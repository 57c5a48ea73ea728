//! The sender thread: takes batches from the queue and delivers them,
//! retrying on transient failures, so that the pipeline's output thread
//! never waits on the network.
//!
//! - 2xx: delivered.
//! - 5xx, 408, timeouts, connection errors: the same batch again, after an
//!   exponential backoff with jitter (so that a fleet of agents does not
//!   hammer a restarting server in step), for as long as it takes; the
//!   queue's bound protects memory meanwhile.
//! - 429 and 503: as above, but waiting what Retry-After says when present.
//! - other 4xx: the server refuses this batch; it is dropped and counted,
//!   and the server's message is logged once per distinct status.
//! - 2xx with a partial success: the points the server names are counted
//!   as rejected, the rest as delivered.
//! - a TLS certificate problem: an error line naming the host, once per
//!   distinct problem; the points stay buffered and the batch is retried
//!   every `retry_max_delay` (a renewed certificate or a fixed CA file
//!   gets them through).
//! - after `close`, delivery goes on until the deadline; what is left then
//!   goes to the disk buffer for the next start (`buffer_dir`), or else is
//!   counted as undelivered.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::http::{gzip, PartialRejection, SendOutcome, Transport};
use crate::queue::{Batch, BatchQueue, Next};
use crate::settings::DeliverySettings;
use crate::stats::Counters;

/// Bodies smaller than this are sent as they are: gzip would save little
/// and cost a header and CPU.
pub const GZIP_MIN_BYTES: usize = 4096;

/// State shared between the output and its sender thread.
#[derive(Debug)]
pub struct Shared {
    /// The batches waiting.
    pub queue: BatchQueue,
    /// Points of the batch being sent; whoever swaps it to zero owns their fate.
    pub in_flight_points: AtomicUsize,
    pub(crate) counters: Arc<Counters>,
}

impl Shared {
    pub(crate) fn new(
        max_buffer_points: usize,
        concatenable: bool,
        disk: Option<crate::spill::DiskBuffer>,
        counters: Arc<Counters>,
    ) -> Self {
        let queue = BatchQueue::new(max_buffer_points, concatenable);
        Self {
            queue: match disk {
                Some(disk) => queue.with_disk(disk),
                None => queue,
            },
            in_flight_points: AtomicUsize::new(0),
            counters,
        }
    }

    /// Counts every point not yet delivered and not kept on disk as
    /// undelivered; returns how many.
    pub fn abandon_all(&self) -> usize {
        let n = self.in_flight_points.swap(0, Ordering::AcqRel) + self.queue.take_all();
        self.counters
            .lose(&self.counters.undelivered_at_shutdown_points, n);
        self.refresh_buffered();
        n
    }

    /// Updates the `buffered_points` level (queued plus in flight).
    pub fn refresh_buffered(&self) {
        let n = self.queue.queued_points() + self.in_flight_points.load(Ordering::Acquire);
        self.counters
            .buffered_points
            .store(n as u64, Ordering::Relaxed);
        self.counters
            .peak_buffered_points
            .fetch_max(n as u64, Ordering::Relaxed);
    }
}

/// Delivers batches until the queue is closed and empty.
pub struct Sender<T: Transport> {
    transport: T,
    shared: Arc<Shared>,
    settings: DeliverySettings,
    compressed: Vec<u8>,
    logged_statuses: Vec<u16>,
    logged_misconfigurations: Vec<String>,
    logged_partial: bool,
    outage: Option<Outage>,
    jitter_state: u64,
}

struct Outage {
    since: Instant,
    failures: u64,
}

impl<T: Transport> Sender<T> {
    /// A sender over `transport`.
    pub fn new(transport: T, shared: Arc<Shared>, settings: DeliverySettings) -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15);
        Self {
            transport,
            shared,
            settings,
            compressed: Vec::new(),
            logged_statuses: Vec::new(),
            logged_misconfigurations: Vec::new(),
            logged_partial: false,
            outage: None,
            jitter_state: seed ^ u64::from(std::process::id()),
        }
    }

    /// The thread's body.
    pub fn run(mut self) {
        loop {
            match self.shared.queue.next(self.settings.batch_size.max(1)) {
                Next::Batch(batch) => self.deliver(batch),
                Next::Unreadable(points, why) => {
                    let counters = &self.shared.counters;
                    counters.lose(&counters.buffer_dropped_points, points);
                    log::error!(
                        "{}: a batch of {points} points on the disk buffer could not be read back ({why}); dropped and counted",
                        self.settings.name
                    );
                    self.shared.refresh_buffered();
                }
                Next::Closed => {
                    // Closed past its deadline with points left in memory:
                    // kept on disk if there is one, else counted.
                    let n = self.shared.queue.take_all();
                    let counters = &self.shared.counters;
                    counters.lose(&counters.undelivered_at_shutdown_points, n);
                    self.shared.refresh_buffered();
                    break;
                }
            }
        }
    }

    fn deliver(&mut self, batch: Batch) {
        let counters = self.shared.counters.clone();
        self.shared
            .in_flight_points
            .store(batch.points, Ordering::Release);
        self.shared.refresh_buffered();
        let mut compressed = std::mem::take(&mut self.compressed);
        let gzipped = self.settings.gzip
            && batch.body.len() >= GZIP_MIN_BYTES
            && gzip(&batch.body, &mut compressed).is_ok();
        let body: &[u8] = if gzipped { &compressed } else { &batch.body };
        let mut delay = self.settings.retry_initial_delay;
        loop {
            let timeout = match self.shared.queue.deadline() {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        self.give_up_at_deadline(&batch);
                        break;
                    }
                    left.min(self.settings.request_timeout)
                }
                None => self.settings.request_timeout,
            };
            Counters::add(&counters.requests, 1);
            match self.transport.send(body, gzipped, timeout) {
                SendOutcome::Delivered { partial } => {
                    let n = self.take_in_flight();
                    let refused = partial.as_ref().map_or(0, |p| p.points.min(n));
                    Counters::add(&counters.delivered_points, n - refused);
                    if let Some(p) = partial {
                        counters.lose(&counters.rejected_points, refused);
                        self.log_partial(n, refused, &p);
                    }
                    if let Some(outage) = self.outage.take() {
                        log::info!(
                            "{}: {} reachable again after {:.1?} and {} failed attempts; delivering the buffered points",
                            self.settings.name,
                            self.settings.endpoint,
                            outage.since.elapsed(),
                            outage.failures
                        );
                    }
                    break;
                }
                SendOutcome::Rejected { status, message } => {
                    let n = self.take_in_flight();
                    counters.lose(&counters.rejected_points, n);
                    if self.logged_statuses.contains(&status) {
                        log::debug!(
                            "{}: server refused a batch of {n} points (HTTP {status}): {message}",
                            self.settings.name
                        );
                    } else {
                        self.logged_statuses.push(status);
                        log::error!(
                            "{}: {} refused a batch of {n} points with HTTP {status}: {message} (the batch is dropped and counted; later refusals with this status are logged at debug level)",
                            self.settings.name,
                            self.settings.endpoint
                        );
                    }
                    break;
                }
                SendOutcome::Retry { reason, after } => {
                    Counters::add(&counters.retries, 1);
                    match &mut self.outage {
                        None => {
                            log::warn!(
                                "{}: cannot write to {}: {reason}; points stay buffered and the batch is retried with backoff",
                                self.settings.name,
                                self.settings.endpoint
                            );
                            self.outage = Some(Outage {
                                since: Instant::now(),
                                failures: 1,
                            });
                        }
                        Some(outage) => {
                            outage.failures += 1;
                            log::debug!("{}: write failed again ({reason})", self.settings.name);
                        }
                    }
                    let wait = match after {
                        Some(after) => after.min(self.settings.max_retry_after),
                        None => self.jittered(delay),
                    };
                    delay = (delay * 2).min(self.settings.retry_max_delay);
                    self.shared.queue.sleep(wait);
                }
                SendOutcome::Misconfigured { reason } => {
                    Counters::add(&counters.retries, 1);
                    if self.logged_misconfigurations.contains(&reason) {
                        log::debug!("{}: {reason}", self.settings.name);
                    } else {
                        log::error!(
                            "{}: {reason}; points stay buffered and are retried every {:?}",
                            self.settings.name,
                            self.settings.retry_max_delay
                        );
                        self.logged_misconfigurations.push(reason);
                    }
                    if self.outage.is_none() {
                        self.outage = Some(Outage {
                            since: Instant::now(),
                            failures: 0,
                        });
                    }
                    if let Some(outage) = &mut self.outage {
                        outage.failures += 1;
                    }
                    let wait = self.jittered(self.settings.retry_max_delay);
                    self.shared.queue.sleep(wait);
                }
            }
        }
        self.compressed = compressed;
    }

    fn log_partial(&mut self, n: usize, refused: usize, partial: &PartialRejection) {
        if self.logged_partial {
            log::debug!(
                "{}: the server refused {refused} of {n} points: {}",
                self.settings.name,
                partial.message
            );
        } else {
            self.logged_partial = true;
            log::error!(
                "{}: {} accepted a batch but refused {refused} of its {n} points: {} (they are counted as rejected; later partial refusals are logged at debug level)",
                self.settings.name,
                self.settings.endpoint,
                partial.message
            );
        }
    }

    /// Takes ownership of the in-flight points (zero if `close` gave up on them).
    fn take_in_flight(&self) -> usize {
        let n = self.shared.in_flight_points.swap(0, Ordering::AcqRel);
        self.shared.refresh_buffered();
        n
    }

    /// The deadline has come while `batch` was being sent: it goes back to
    /// disk before the rest (if there is a disk buffer), and so does what
    /// is queued; what cannot be kept is counted as undelivered.
    fn give_up_at_deadline(&self, batch: &Batch) {
        // Zero if `close` gave up on it first (it then counted it).
        let in_flight = self.shared.in_flight_points.swap(0, Ordering::AcqRel);
        let mut n = if in_flight > 0 {
            self.shared.queue.keep_on_disk(batch)
        } else {
            0
        };
        n += self.shared.queue.take_all();
        let counters = &self.shared.counters;
        counters.lose(&counters.undelivered_at_shutdown_points, n);
        self.shared.refresh_buffered();
        if n > 0 {
            log::debug!(
                "{}: shutdown deadline reached with {n} points not delivered",
                self.settings.name
            );
        }
    }

    /// A delay between half and all of `delay`, from a generator seeded by
    /// the clock (no need for a random crate: this only desynchronises agents).
    fn jittered(&mut self, delay: Duration) -> Duration {
        // splitmix64
        self.jitter_state = self.jitter_state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.jitter_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let fraction = (z >> 11) as f64 / (1u64 << 53) as f64;
        delay.mul_f64(0.5 + 0.5 * fraction)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// Each body sent, and whether it was gzipped.
    type SentLog = Arc<Mutex<Vec<(Vec<u8>, bool)>>>;

    /// A transport that answers from a script and records what it got.
    struct Scripted {
        answers: VecDeque<SendOutcome>,
        sent: SentLog,
    }

    impl Transport for Scripted {
        fn send(&mut self, body: &[u8], gzipped: bool, _timeout: Duration) -> SendOutcome {
            self.sent.lock().unwrap().push((body.to_vec(), gzipped));
            self.answers.pop_front().unwrap_or(SendOutcome::DELIVERED)
        }
    }

    fn settings() -> DeliverySettings {
        DeliverySettings {
            batch_size: 10,
            retry_initial_delay: Duration::from_millis(1),
            retry_max_delay: Duration::from_millis(4),
            max_retry_after: Duration::from_millis(5),
            ..DeliverySettings::new("test", "test")
        }
    }

    fn batch(points: usize) -> Batch {
        Batch {
            body: b"m value=1i 1\n".repeat(points),
            points,
        }
    }

    fn run(answers: Vec<SendOutcome>, batches: Vec<Batch>) -> (Arc<Shared>, Vec<(Vec<u8>, bool)>) {
        let counters = Arc::new(Counters::default());
        let shared = Arc::new(Shared::new(1000, true, None, counters));
        for b in batches {
            shared.queue.push(b);
        }
        shared.queue.close(Instant::now() + Duration::from_secs(30));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let transport = Scripted {
            answers: answers.into(),
            sent: sent.clone(),
        };
        Sender::new(transport, shared.clone(), settings()).run();
        let sent = sent.lock().unwrap().clone();
        (shared, sent)
    }

    fn retry() -> SendOutcome {
        SendOutcome::Retry {
            reason: "down".into(),
            after: None,
        }
    }

    #[test]
    fn transient_failures_resend_the_same_batch() {
        let (shared, sent) = run(vec![retry(), retry()], vec![batch(3)]);
        assert_eq!(sent.len(), 3);
        assert!(sent.iter().all(|(body, _)| body == &sent[0].0));
        let c = &shared.counters;
        assert_eq!(c.delivered_points.load(Ordering::Relaxed), 3);
        assert_eq!(c.retries.load(Ordering::Relaxed), 2);
        assert_eq!(c.requests.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn rejected_batches_are_dropped_and_counted_and_the_rest_goes_on() {
        let rejected = SendOutcome::Rejected {
            status: 400,
            message: "bad".into(),
        };
        // batch_size 10: the 6-point batches are not merged.
        let (shared, sent) = run(
            vec![SendOutcome::DELIVERED, rejected],
            vec![batch(6), batch(6), batch(6)],
        );
        assert_eq!(sent.len(), 3);
        let c = &shared.counters;
        assert_eq!(c.delivered_points.load(Ordering::Relaxed), 12);
        assert_eq!(c.rejected_points.load(Ordering::Relaxed), 6);
    }

    #[test]
    fn a_partial_success_counts_the_refused_points() {
        let partial = SendOutcome::Delivered {
            partial: Some(PartialRejection {
                points: 2,
                message: "bad points".into(),
            }),
        };
        let (shared, sent) = run(vec![partial], vec![batch(6), batch(6)]);
        assert_eq!(sent.len(), 2);
        let c = &shared.counters;
        assert_eq!(c.delivered_points.load(Ordering::Relaxed), 10);
        assert_eq!(c.rejected_points.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_misconfiguration_keeps_the_batch_and_retries_it() {
        let tls = SendOutcome::Misconfigured {
            reason: "TLS with host failed".into(),
        };
        let (shared, sent) = run(vec![tls.clone(), tls], vec![batch(3)]);
        assert_eq!(sent.len(), 3);
        let c = &shared.counters;
        assert_eq!(c.delivered_points.load(Ordering::Relaxed), 3);
        assert_eq!(c.retries.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn large_bodies_are_gzipped_small_ones_not() {
        let (_, sent) = run(vec![], vec![batch(2)]);
        assert!(!sent[0].1);
        let mut big = batch(10);
        big.body = vec![b'x'; GZIP_MIN_BYTES * 2];
        let (_, sent) = run(vec![], vec![big]);
        assert!(sent[0].1);
        assert!(sent[0].0.len() < GZIP_MIN_BYTES);
    }

    #[test]
    fn what_is_left_at_the_deadline_is_counted_undelivered() {
        let counters = Arc::new(Counters::default());
        let shared = Arc::new(Shared::new(1000, true, None, counters));
        shared.queue.push(batch(6));
        shared.queue.push(batch(6));
        shared
            .queue
            .close(Instant::now() + Duration::from_millis(30));
        let transport = Scripted {
            answers: std::iter::repeat_with(retry).take(10_000).collect(),
            sent: Arc::new(Mutex::new(Vec::new())),
        };
        Sender::new(transport, shared.clone(), settings()).run();
        let c = &shared.counters;
        assert_eq!(c.undelivered_at_shutdown_points.load(Ordering::Relaxed), 12);
        assert_eq!(c.delivered_points.load(Ordering::Relaxed), 0);
        assert_eq!(shared.queue.queued_points(), 0);
    }

    #[test]
    fn jitter_stays_between_half_and_all_of_the_delay() {
        let shared = Arc::new(Shared::new(10, true, None, Arc::new(Counters::default())));
        let transport = Scripted {
            answers: VecDeque::new(),
            sent: Arc::new(Mutex::new(Vec::new())),
        };
        let mut s = Sender::new(transport, shared, settings());
        let d = Duration::from_millis(1000);
        let waits: Vec<Duration> = (0..100).map(|_| s.jittered(d)).collect();
        assert!(waits.iter().all(|w| *w >= d / 2 && *w <= d));
        assert!(waits.iter().any(|w| *w != waits[0]));
    }
}
