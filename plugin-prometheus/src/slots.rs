//! The HTTP server's connection slots, and which connection gives its slot
//! up when a new one arrives and every slot is taken.
//!
//! A slot is either *waiting* (for a request head: a new connection, its
//! TLS handshake, or an idle keep-alive between two requests) or
//! *serving* (its request head is read; until its response is written to
//! the socket). A waiting slot is *stalled* when a read found nothing more
//! to read, the head still incomplete, and either the client had sent
//! something since it was last its turn to talk, or it has been its turn
//! for [`QUIET_GRACE`]. When every slot is taken, the new connection takes
//! the slot of a stalled one: of the peer address holding the most slots,
//! the one waiting longest. A serving slot is never taken. When no slot is
//! stalled, the server accepts no more connections until one is: they wait
//! in the kernel's listen queue, in order, and cost the agent nothing.
//!
//! Why evict rather than refuse: a client that trickles its head a byte at
//! a time holds its slot until the head deadline, and clients that
//! reconnect at once when closed then keep every slot taken: with refusal,
//! no scrape would get in. A scraper sends its whole head right after
//! connecting, so its slot serves from its first read, while a trickling
//! client's slot stalls at once and waits longest: taking that one lets
//! the scrape in and costs the trickler nothing it was owed.
//!
//! Why only stalled slots, and why the grace: clients flooding faster than
//! the server reads could otherwise take a new scraper's slot before its
//! head is read, or before it is sent (a scraper on a busy machine may
//! write its head a little after connecting); a silent connection stalls
//! after the grace, so silence holds a slot no longer than that. Waiting in
//! the listen queue instead of being refused keeps a scraper's turn,
//! before the clients that come back after it. Preferring the peer with
//! the most slots keeps one flooding address from taking the slot of
//! another address (a Prometheus server's idle keep-alive) while it holds
//! more. `max_connections` still bounds the tasks and buffers: an evicted
//! connection is told to close and goes at its task's next poll.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// How long a waiting connection that sent nothing since its turn began
/// keeps its slot from being taken (a round trip, with room).
pub const QUIET_GRACE: Duration = Duration::from_secs(1);

/// What a slot's connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request head (since the connection came or its last
    /// response was written).
    Waiting,
    /// A request head was read; its response is not written yet.
    Serving,
}

struct Entry {
    peer: IpAddr,
    phase: Phase,
    /// When the phase began.
    since: Instant,
    /// When it last became the client's turn to send (the phase began, or
    /// the server wrote, as in a TLS handshake).
    turn: Instant,
    /// The client sent bytes since `turn`.
    heard: bool,
    /// The last read found nothing to read.
    blocked: bool,
    evict: Arc<Notify>,
}

impl Entry {
    fn stalled(&self, now: Instant) -> bool {
        self.phase == Phase::Waiting
            && self.blocked
            && (self.heard || now >= self.turn + QUIET_GRACE)
    }

    /// When this slot would stall if nothing else happened to it.
    fn stalls_at(&self) -> Option<Instant> {
        (self.phase == Phase::Waiting && self.blocked && !self.heard)
            .then_some(self.turn + QUIET_GRACE)
    }

    fn begin(&mut self, phase: Phase, now: Instant) {
        self.phase = phase;
        self.since = now;
        self.turn = now;
        self.heard = false;
        self.blocked = false;
    }
}

struct Table {
    next_id: u64,
    entries: HashMap<u64, Entry>,
    per_peer: HashMap<IpAddr, usize>,
}

impl Table {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.entries.remove(&id)?;
        if let Some(n) = self.per_peer.get_mut(&entry.peer) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&entry.peer);
            }
        }
        Some(entry)
    }

    /// The stalled slot to give up: of the peer holding the most slots,
    /// the one waiting longest.
    fn victim(&self, now: Instant) -> Option<u64> {
        self.entries
            .iter()
            .filter(|(_, e)| e.stalled(now))
            .max_by_key(|(_, e)| {
                let held = self.per_peer.get(&e.peer).copied().unwrap_or(0);
                (held, Reverse(e.since))
            })
            .map(|(id, _)| *id)
    }
}

/// Every slot of one server.
pub struct Slots {
    capacity: usize,
    head_timeout: Duration,
    response_timeout: Duration,
    table: Mutex<Table>,
    /// A slot was given back or stalled: a refused admission may succeed now.
    changed: Notify,
}

/// What became of a new connection.
pub enum Admission {
    /// A slot was free.
    Admitted(Arc<Slot>),
    /// It took the slot of a stalled connection (from `peer`, waiting for
    /// `waited`), which is told to close.
    Evicted {
        /// The new connection's slot.
        slot: Arc<Slot>,
        /// Who lost its slot.
        peer: IpAddr,
        /// How long that one had waited for its request.
        waited: Duration,
    },
    /// No slot is free or stalled. Try again once [`Slots::changed`]
    /// completes, or at `retry_at`, when a quiet slot stalls.
    Refused {
        /// The first time a quiet slot stalls, if one will.
        retry_at: Option<Instant>,
    },
}

impl Slots {
    /// `capacity` slots; a slot may wait for a head for `head_timeout` and
    /// take `response_timeout` to write a response.
    pub fn new(capacity: usize, head_timeout: Duration, response_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            capacity,
            head_timeout,
            response_timeout,
            table: Mutex::new(Table {
                next_id: 0,
                entries: HashMap::new(),
                per_peer: HashMap::new(),
            }),
            changed: Notify::new(),
        })
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // Every change keeps the table consistent before any call that could panic.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Completes once a slot was given back or stalled since the last
    /// time it completed (for one waiter: the accept loop).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// A slot, waiting from `now`, for a connection from `peer`.
    pub fn admit(self: &Arc<Self>, peer: IpAddr, now: Instant) -> Admission {
        let peer = peer.to_canonical();
        let mut table = self.table();
        let mut evicted = None;
        if table.entries.len() >= self.capacity {
            let Some(victim) = table.victim(now) else {
                let retry_at = table.entries.values().filter_map(Entry::stalls_at).min();
                return Admission::Refused { retry_at };
            };
            if let Some(entry) = table.remove(victim) {
                entry.evict.notify_one();
                evicted = Some((entry.peer, now.saturating_duration_since(entry.since)));
            }
        }
        let id = table.next_id;
        table.next_id += 1;
        let evict = Arc::new(Notify::new());
        table.entries.insert(
            id,
            Entry {
                peer,
                phase: Phase::Waiting,
                since: now,
                turn: now,
                heard: false,
                blocked: false,
                evict: evict.clone(),
            },
        );
        *table.per_peer.entry(peer).or_insert(0) += 1;
        drop(table);
        let slot = Arc::new(Slot {
            slots: self.clone(),
            id,
            evict,
            response_handed_over: AtomicBool::new(false),
        });
        match evicted {
            None => Admission::Admitted(slot),
            Some((peer, waited)) => Admission::Evicted { slot, peer, waited },
        }
    }

    /// Slots taken now.
    pub fn taken(&self) -> usize {
        self.table().entries.len()
    }
}

/// One connection's slot, given back when the last reference goes (its task ended).
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
    evict: Arc<Notify>,
    response_handed_over: AtomicBool,
}

impl Slot {
    /// Applies `change` to this slot's entry, if it still has one.
    fn with_entry<T>(&self, change: impl FnOnce(&mut Entry) -> T) -> Option<T> {
        self.slots.table().entries.get_mut(&self.id).map(change)
    }

    /// A request head was read at `now`: the slot serves, and can no
    /// longer be taken. False if it was taken already (the connection must close).
    pub fn begin_request(&self, now: Instant) -> bool {
        self.with_entry(|e| e.begin(Phase::Serving, now)).is_some()
    }

    /// The server has the whole response body; it is written once the
    /// connection's buffers are next flushed ([`Slot::flushed`]).
    pub fn response_handed_over(&self) {
        self.response_handed_over.store(true, Ordering::Release);
    }

    /// The connection's buffers went to the socket at `now`: a response
    /// handed over before is written, and the slot waits for the next request.
    pub fn flushed(&self, now: Instant) {
        if self.response_handed_over.swap(false, Ordering::AcqRel) {
            self.with_entry(|e| e.begin(Phase::Waiting, now));
        }
    }

    /// The client sent bytes.
    pub fn read_some(&self) {
        self.with_entry(|e| {
            e.heard = true;
            e.blocked = false;
        });
    }

    /// A read found nothing to read.
    pub fn read_would_block(&self) {
        // Stalled now, or from a time a refused admission must learn.
        let newly_blocked = self.with_entry(|e| {
            let newly = e.phase == Phase::Waiting && !e.blocked;
            e.blocked = true;
            newly
        });
        if newly_blocked == Some(true) {
            self.slots.changed.notify_one();
        }
    }

    /// The server wrote to the client at `now`: while waiting (a TLS
    /// handshake), it is the client's turn to answer again.
    pub fn wrote(&self, now: Instant) {
        self.with_entry(|e| {
            if e.phase == Phase::Waiting {
                e.turn = now;
                e.heard = false;
            }
        });
    }

    /// When the connection must be closed if its phase has not changed:
    /// the head deadline while waiting, the response deadline while
    /// serving. `None` once the slot was taken.
    pub fn deadline(&self) -> Option<Instant> {
        let (head, response) = (self.slots.head_timeout, self.slots.response_timeout);
        self.with_entry(|e| match e.phase {
            Phase::Waiting => e.since + head,
            Phase::Serving => e.since + response,
        })
    }

    /// Completes once the slot was given to a newer connection.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.slots.table().remove(self.id).is_some() {
            self.slots.changed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    const HEAD: Duration = Duration::from_secs(10);
    const RESPONSE: Duration = Duration::from_secs(30);

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    /// Admitted, sent part of a head, and waiting for more of it.
    fn trickling(a: Admission) -> Arc<Slot> {
        let slot = admitted(a);
        slot.read_some();
        slot.read_would_block();
        slot
    }

    fn admitted(a: Admission) -> Arc<Slot> {
        match a {
            Admission::Admitted(slot) => slot,
            Admission::Evicted { .. } => panic!("evicted"),
            Admission::Refused { .. } => panic!("refused"),
        }
    }

    fn evicted(a: Admission) -> (Arc<Slot>, IpAddr, Duration) {
        match a {
            Admission::Evicted { slot, peer, waited } => (slot, peer, waited),
            Admission::Admitted(_) => panic!("admitted"),
            Admission::Refused { .. } => panic!("refused"),
        }
    }

    fn refused(a: Admission) -> Option<Instant> {
        match a {
            Admission::Refused { retry_at } => retry_at,
            Admission::Admitted(_) => panic!("admitted"),
            Admission::Evicted { .. } => panic!("evicted"),
        }
    }

    fn was_told_to_close(slot: &Slot) -> bool {
        slot.deadline().is_none()
    }

    #[test]
    fn the_longest_waiting_trickler_gives_way_and_serving_slots_never_do() {
        let slots = Slots::new(3, HEAD, RESPONSE);
        let t0 = Instant::now();
        let s = |n| ms(t0, n);
        let oldest = trickling(slots.admit(ip(1), s(0)));
        let serving = trickling(slots.admit(ip(1), s(1)));
        let younger = trickling(slots.admit(ip(1), s(2)));
        // Serving since after `younger` came, yet never taken.
        assert!(serving.begin_request(s(3)));
        serving.read_would_block();
        let (new, peer, waited) = evicted(slots.admit(ip(1), s(10)));
        assert_eq!((peer, waited), (ip(1), Duration::from_millis(10)));
        assert!(was_told_to_close(&oldest));
        assert!(!oldest.begin_request(s(11)), "a taken slot cannot serve");
        // `new` was not read from yet: `younger` goes, then nobody.
        let (newer, _, _) = evicted(slots.admit(ip(1), s(12)));
        assert!(was_told_to_close(&younger));
        assert!(!was_told_to_close(&new));
        assert_eq!(slots.taken(), 3);
        assert_eq!(refused(slots.admit(ip(2), s(13))), None);
        for slot in [&new, &newer] {
            slot.read_some();
            slot.read_would_block();
        }
        let (_third, _, waited) = evicted(slots.admit(ip(2), s(14)));
        assert_eq!(waited, Duration::from_millis(4));
        assert!(was_told_to_close(&new));
        // Serving slots, and a slot not read from yet: full house.
        assert!(newer.begin_request(s(15)));
        assert_eq!(refused(slots.admit(ip(2), s(16))), None);
        assert!(!was_told_to_close(&serving));
    }

    #[test]
    fn a_quiet_connection_keeps_its_slot_for_the_grace_only() {
        let slots = Slots::new(1, HEAD, RESPONSE);
        let t0 = Instant::now();
        // Connected, nothing sent yet (a scraper slow to write its head).
        let quiet = admitted(slots.admit(ip(1), t0));
        quiet.read_would_block();
        let grace_ends = t0 + QUIET_GRACE;
        assert_eq!(refused(slots.admit(ip(2), ms(t0, 500))), Some(grace_ends));
        let (_new, _, waited) = evicted(slots.admit(ip(2), grace_ends));
        assert_eq!(waited, QUIET_GRACE);
        assert!(was_told_to_close(&quiet));
    }

    #[test]
    fn a_server_write_gives_the_client_its_turn_again() {
        let slots = Slots::new(1, HEAD, RESPONSE);
        let t0 = Instant::now();
        // A TLS handshake: the client says hello, the server answers.
        let tls = admitted(slots.admit(ip(1), t0));
        tls.read_some();
        let answered = ms(t0, 800);
        tls.wrote(answered);
        tls.read_would_block();
        // The client's first message does not make it stall while it is its turn.
        assert_eq!(
            refused(slots.admit(ip(2), ms(t0, 1000))),
            Some(answered + QUIET_GRACE)
        );
        // Its answer, partial: stalled.
        tls.read_some();
        tls.read_would_block();
        evicted(slots.admit(ip(2), ms(t0, 1100)));
    }

    #[test]
    fn a_written_response_makes_the_slot_wait_again_and_only_then() {
        let slots = Slots::new(1, HEAD, RESPONSE);
        let t0 = Instant::now();
        let slot = trickling(slots.admit(ip(1), t0));
        assert_eq!(slot.deadline(), Some(t0 + HEAD));
        let head_read = t0 + Duration::from_secs(1);
        assert!(slot.begin_request(head_read));
        assert_eq!(slot.deadline(), Some(head_read + RESPONSE));
        // Serving: a read that finds nothing is hyper watching for the client closing.
        slot.read_would_block();
        // A flush before the body is handed over (the head only): still serving.
        slot.flushed(head_read);
        let later = head_read + 2 * QUIET_GRACE;
        assert_eq!(refused(slots.admit(ip(2), later)), None);
        slot.response_handed_over();
        let written = t0 + Duration::from_secs(5);
        slot.flushed(written);
        assert_eq!(slot.deadline(), Some(written + HEAD));
        // Idle keep-alive: hyper reads for the next head and finds nothing;
        // it is the client's turn, for the grace.
        slot.read_would_block();
        assert!(matches!(
            slots.admit(ip(2), written),
            Admission::Refused { .. }
        ));
        let (_, _, waited) = evicted(slots.admit(ip(2), written + QUIET_GRACE));
        assert_eq!(waited, QUIET_GRACE);
    }

    #[test]
    fn the_peer_holding_most_slots_gives_way_first() {
        let slots = Slots::new(4, HEAD, RESPONSE);
        let t0 = Instant::now();
        let s = |n| ms(t0, n);
        // A scraper's connection, the oldest waiting slot of all.
        let scraper = trickling(slots.admit(ip(9), s(0)));
        let flood: Vec<_> = (1..=3)
            .map(|i| trickling(slots.admit(ip(1), s(i))))
            .collect();
        // Each new slot is kept (bound), or it would be given back at once.
        let (new, peer, _) = evicted(slots.admit(ip(1), s(10)));
        assert_eq!(peer, ip(1));
        assert!(was_told_to_close(&flood[0]));
        assert!(!was_told_to_close(&scraper));
        new.read_some();
        new.read_would_block();
        // From another address too, the flood's slots go first.
        let (other, peer, _) = evicted(slots.admit(ip(7), s(11)));
        assert_eq!(peer, ip(1));
        assert!(was_told_to_close(&flood[1]));
        assert!(!was_told_to_close(&scraper));
        other.read_some();
        other.read_would_block();
        // IPv4-mapped IPv6 is the same peer.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let (_mapped, peer, _) = evicted(slots.admit(mapped, s(12)));
        assert_eq!(peer, ip(1));
        assert!(was_told_to_close(&flood[2]));
        assert!(!was_told_to_close(&scraper));
    }

    #[test]
    fn a_slot_is_given_back_when_its_connection_ends() {
        let slots = Slots::new(1, HEAD, RESPONSE);
        let t0 = Instant::now();
        let slot = admitted(slots.admit(ip(1), t0));
        assert!(slot.begin_request(t0));
        assert_eq!(refused(slots.admit(ip(1), t0)), None);
        drop(slot);
        assert_eq!(slots.taken(), 0);
        admitted(slots.admit(ip(1), t0));
    }

    #[tokio::test]
    async fn a_refused_admission_is_told_when_to_try_again() {
        let slots = Slots::new(1, HEAD, RESPONSE);
        let t0 = Instant::now();
        let first = admitted(slots.admit(ip(1), t0));
        assert_eq!(refused(slots.admit(ip(1), t0)), None);
        let wait = Duration::from_secs(5);
        // Read from, nothing there: it will stall after the grace, which
        // the refused one learns by asking again.
        first.read_would_block();
        tokio::time::timeout(wait, slots.changed()).await.unwrap();
        assert_eq!(refused(slots.admit(ip(1), t0)), Some(t0 + QUIET_GRACE));
        first.read_some();
        first.read_would_block();
        tokio::time::timeout(wait, slots.changed()).await.unwrap();
        assert!(first.begin_request(t0));
        assert_eq!(refused(slots.admit(ip(1), t0)), None);
        drop(first);
        tokio::time::timeout(wait, slots.changed()).await.unwrap();
        admitted(slots.admit(ip(1), t0));
    }

    #[tokio::test]
    async fn an_evicted_connection_is_woken() {
        let slots = Slots::new(1, HEAD, RESPONSE);
        let t0 = Instant::now();
        let first = trickling(slots.admit(ip(1), t0));
        let _second = evicted(slots.admit(ip(1), t0));
        // The notification was sent before anyone waited: it is kept.
        tokio::time::timeout(Duration::from_secs(5), first.evicted())
            .await
            .unwrap();
    }
}
