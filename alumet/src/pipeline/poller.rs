//! Poller threads: poll managed sources on absolute deadlines.
//!
//! Deadlines advance by whole intervals from the first one, so polling does
//! not drift. A deadline that is already more than one interval in the past
//! when it is reached is counted as missed and skipped over (the source is
//! polled once, late, not several times in a burst).
//!
//! Sources join and leave a running poller (a plugin restarted at a
//! reload) without touching the schedule of the others; a source that
//! leaves is polled a last time and its points queued, as at shutdown. A
//! poller left without sources ends.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::measurement::{MeasurementBuffer, Timestamp};

use super::messages::{ManagedSource, PollerCommand, SourceSelector, StageMessage};
use super::stats::{should_log, PipelineStats};
use super::PollError;

struct Scheduled {
    m: ManagedSource,
    next_poll: Instant,
    next_flush: Instant,
    buffer: MeasurementBuffer,
    /// Size of the last batch handed over: the next buffer is made for it.
    last_batch: usize,
    paused: bool,
    failed: bool,
}

pub(crate) struct Poller {
    /// Sources given at creation, scheduled when the thread runs.
    pending: Vec<ManagedSource>,
    sources: Vec<Scheduled>,
    commands: mpsc::Receiver<PollerCommand>,
    queue: tokio::sync::mpsc::Sender<StageMessage>,
    stats: Arc<PipelineStats>,
    max_points_per_buffer: usize,
    first_poll_at_start: bool,
}

impl Poller {
    pub(crate) fn new(
        sources: Vec<ManagedSource>,
        commands: mpsc::Receiver<PollerCommand>,
        queue: tokio::sync::mpsc::Sender<StageMessage>,
        stats: Arc<PipelineStats>,
        max_points_per_buffer: usize,
        first_poll_at_start: bool,
    ) -> Self {
        Self {
            pending: sources,
            sources: Vec::new(),
            commands,
            queue,
            stats,
            max_points_per_buffer,
            first_poll_at_start,
        }
    }

    /// Schedules new sources: a source with the same interval as one
    /// already here is polled on its ticks (so that their points share
    /// timestamps), any other from now on.
    /// Runs on the poller's thread (the timer slack is per thread).
    fn add(&mut self, sources: Vec<ManagedSource>) {
        if let Some(min) = sources.iter().map(|s| s.trigger.poll_interval).min() {
            tighten_timer_slack(min);
        }
        let now = Instant::now();
        for m in sources {
            let peer = self
                .sources
                .iter()
                .find(|s| !s.paused && !s.failed && s.m.trigger == m.trigger);
            let (next_poll, next_flush) = match peer {
                Some(p) => (p.next_poll, p.next_flush),
                None => (now, now + m.trigger.flush_interval),
            };
            self.sources.push(Scheduled {
                next_poll,
                next_flush,
                buffer: Vec::new(),
                last_batch: 0,
                paused: false,
                failed: false,
                m,
            });
        }
    }

    /// Polls the sources of `plugins` a last time, queues their points
    /// (waiting for room), and forgets them.
    fn remove(&mut self, plugins: &[String]) {
        let timestamp = Timestamp::now();
        for i in 0..self.sources.len() {
            if !plugins.contains(&self.sources[i].m.plugin) {
                continue;
            }
            if !self.sources[i].failed {
                self.poll_one(i, timestamp);
            }
            if !self.sources[i].buffer.is_empty() {
                self.flush_one(i, true);
            }
        }
        self.sources.retain(|s| !plugins.contains(&s.m.plugin));
    }

    /// Runs until shutdown; then polls every source a last time and queues
    /// every buffer, waiting for room rather than dropping.
    pub(crate) fn run(mut self) {
        let pending = std::mem::take(&mut self.pending);
        self.add(pending);
        if self.first_poll_at_start {
            // The first poll of every source comes before any command, so that a
            // trigger sent right after start is a second, distinct poll.
            self.poll_due();
        } else {
            for s in &mut self.sources {
                s.next_poll += s.m.trigger.poll_interval;
            }
        }
        loop {
            let next_deadline = self
                .sources
                .iter()
                .filter(|s| !s.paused && !s.failed)
                .map(|s| {
                    if s.buffer.is_empty() {
                        s.next_poll
                    } else {
                        s.next_poll.min(s.next_flush)
                    }
                })
                .min();
            let received = match next_deadline {
                None => self
                    .commands
                    .recv()
                    .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                Some(deadline) => {
                    let wait = deadline.saturating_duration_since(Instant::now());
                    if wait.is_zero() {
                        self.commands.try_recv().map_err(|e| match e {
                            mpsc::TryRecvError::Empty => mpsc::RecvTimeoutError::Timeout,
                            mpsc::TryRecvError::Disconnected => {
                                mpsc::RecvTimeoutError::Disconnected
                            }
                        })
                    } else {
                        self.commands.recv_timeout(wait)
                    }
                }
            };
            match received {
                Ok(PollerCommand::Shutdown) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Ok(PollerCommand::Remove(plugins, done)) => {
                    self.remove(&plugins);
                    let empty = self.sources.is_empty();
                    let _ = done.send(empty);
                    if empty {
                        return;
                    }
                }
                Ok(command) => self.handle(command),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            self.poll_due();
        }
        self.last_poll_and_drain();
    }

    fn handle(&mut self, command: PollerCommand) {
        let now = Instant::now();
        match command {
            PollerCommand::Pause(sel) => {
                for s in self.matching(&sel) {
                    s.paused = true;
                }
            }
            PollerCommand::Resume(sel) => {
                for s in self.matching(&sel) {
                    if s.paused {
                        s.paused = false;
                        s.next_poll = now;
                        s.next_flush = now + s.m.trigger.flush_interval;
                    }
                }
            }
            PollerCommand::SetInterval(sel, interval) => {
                for s in self.matching(&sel) {
                    let last_poll = s
                        .next_poll
                        .checked_sub(s.m.trigger.poll_interval)
                        .unwrap_or(now);
                    s.m.trigger.poll_interval = interval;
                    s.next_poll = (last_poll + interval).max(now);
                    if s.m.trigger.flush_interval < interval {
                        s.m.trigger.flush_interval = interval;
                    }
                }
            }
            PollerCommand::TriggerNow(sel, ack) => {
                let timestamp = Timestamp::now();
                let indices: Vec<usize> = (0..self.sources.len())
                    .filter(|&i| {
                        let s = &self.sources[i];
                        !s.failed && sel.matches(&s.m.plugin, &s.m.name)
                    })
                    .collect();
                // A triggered poll is delivered at once, not at the next flush.
                for &i in &indices {
                    self.poll_one(i, timestamp);
                }
                for i in indices {
                    if !self.sources[i].buffer.is_empty() {
                        self.flush_one(i, false);
                    }
                }
                let _ = ack.send(());
            }
            PollerCommand::Ping(ack) => {
                let _ = ack.send(());
            }
            PollerCommand::Add(sources) => self.add(sources),
            PollerCommand::Remove(..) | PollerCommand::Shutdown => {}
        }
    }

    fn matching<'a>(
        &'a mut self,
        sel: &'a SourceSelector,
    ) -> impl Iterator<Item = &'a mut Scheduled> + 'a {
        self.sources
            .iter_mut()
            .filter(move |s| sel.matches(&s.m.plugin, &s.m.name))
    }

    fn poll_due(&mut self) {
        let now = Instant::now();
        // One timestamp for every source due at this tick, so that points of
        // sources with the same interval line up exactly.
        let timestamp = Timestamp::now();
        for i in 0..self.sources.len() {
            let s = &mut self.sources[i];
            if s.paused || s.failed || s.next_poll > now {
                continue;
            }
            let interval = s.m.trigger.poll_interval;
            s.next_poll += interval;
            if s.next_poll <= now {
                let late = now.duration_since(s.next_poll);
                let missed = (late.as_nanos() / interval.as_nanos().max(1)) as u32 + 1;
                s.m.stats.missed_ticks.fetch_add(u64::from(missed), Relaxed);
                s.next_poll += interval * missed;
            }
            self.poll_one(i, timestamp);
        }
        for i in 0..self.sources.len() {
            let s = &mut self.sources[i];
            let due = now >= s.next_flush || s.buffer.len() >= self.max_points_per_buffer;
            if !s.buffer.is_empty() && due {
                let flush = s.m.trigger.flush_interval;
                while s.next_flush <= now {
                    s.next_flush += flush;
                }
                self.flush_one(i, false);
            }
        }
    }

    fn poll_one(&mut self, i: usize, timestamp: Timestamp) {
        let s = &mut self.sources[i];
        if s.buffer.capacity() == 0 {
            // Taken only now, not at the hand-over: by then the output is
            // done with the previous batch and gives it back, so one
            // buffer per source is resident, not two.
            s.buffer = super::memory::fresh_buffer(s.last_batch);
        }
        let before = s.buffer.len();
        let result = s.m.source.poll(&mut s.buffer, timestamp);
        s.m.stats.polls.fetch_add(1, Relaxed);
        s.m.stats
            .buffered_points
            .store(s.buffer.len() as u64, Relaxed);
        s.m.stats
            .points
            .fetch_add((s.buffer.len().saturating_sub(before)) as u64, Relaxed);
        match result {
            Ok(()) => {}
            Err(PollError::Transient(e)) => {
                s.m.stats.last_error.set(&e);
                let n = s.m.stats.errors.fetch_add(1, Relaxed) + 1;
                if should_log(n) {
                    log::warn!(
                        "source {}: poll failed ({n} failures so far): {e}",
                        s.m.name
                    );
                }
            }
            Err(PollError::Fatal(e)) => {
                s.m.stats.last_error.set(&e);
                s.m.stats.errors.fetch_add(1, Relaxed);
                log::error!("source {} stopped: {e}", s.m.name);
                s.failed = true;
                if !s.buffer.is_empty() {
                    self.flush_one(i, false);
                }
            }
        }
    }

    fn flush_one(&mut self, i: usize, blocking: bool) {
        let s = &mut self.sources[i];
        s.last_batch = s.buffer.len();
        let buffer = std::mem::take(&mut s.buffer);
        let n = buffer.len() as u64;
        s.m.stats.buffered_points.store(0, Relaxed);
        let message = StageMessage::Buffer(buffer);
        let result = if blocking {
            self.queue.blocking_send(message).map_err(|_| ())
        } else {
            self.queue.try_send(message).map_err(|_| ())
        };
        if result.is_err() {
            let dropped = s.m.stats.dropped_points.fetch_add(n, Relaxed) + n;
            self.stats.count_drop(n);
            if should_log(s.m.stats.dropped_points.load(Relaxed).div_ceil(n.max(1))) {
                log::warn!(
                    "source {}: the queue to the transforms is full; dropped {n} points ({dropped} so far)",
                    s.m.name
                );
            }
        }
    }

    fn last_poll_and_drain(mut self) {
        let timestamp = Timestamp::now();
        for i in 0..self.sources.len() {
            if !self.sources[i].failed {
                self.poll_one(i, timestamp);
            }
            if !self.sources[i].buffer.is_empty() {
                self.flush_one(i, true);
            }
        }
    }
}

/// Puts a high-precision timer on the current thread: the kernel's default
/// timer slack (50 µs) is 5 % of a 1 ms interval.
pub(crate) fn tighten_timer_slack(min_interval: Duration) {
    if min_interval < Duration::from_millis(10) {
        // SAFETY: PR_SET_TIMERSLACK takes a plain integer and affects only this thread.
        unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, 5_000 as libc::c_ulong);
        }
    }
}
