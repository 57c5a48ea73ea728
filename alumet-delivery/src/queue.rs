//! The bounded queue of encoded batches between the output (which encodes)
//! and the sender thread (which talks to the server).
//!
//! It is bounded in points, not batches, because points are what the user
//! sizes (`max_buffer_points`). When a new batch would exceed the bound, the
//! oldest queued batches are evicted: while the server is down, the newest
//! data is the most useful, and the eviction is returned to the caller so
//! that it is counted. The batch the sender is working on is out of the
//! queue and never evicted, so memory stays below `max_buffer_points` plus
//! one batch.
//!
//! With a disk part ([`crate::spill`], `buffer_dir`), the oldest batches
//! move to disk instead of being evicted, and are delivered first; at
//! shutdown what is left goes to disk too, for the next start.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::spill::DiskBuffer;

/// Encoded points, ready to be sent as one request body.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The encoded points (line protocol, protobuf...).
    pub body: Vec<u8>,
    /// Number of points in it.
    pub points: usize,
}

impl Batch {
    /// True if it holds no point.
    pub fn is_empty(&self) -> bool {
        self.points == 0
    }
}

#[derive(Debug, Default)]
struct State {
    batches: VecDeque<Batch>,
    queued_points: usize,
    /// Set by `close`: no more batches will come; deliver until this instant.
    deadline: Option<Instant>,
    /// Older batches than those in memory, when the output has a disk part.
    disk: Option<DiskBuffer>,
    /// Whether a failed disk write was logged (once per run).
    disk_error_logged: bool,
}

impl State {
    /// Moves `batch` to disk if there is a disk part (`front`: before the
    /// others); returns the points lost (all of them without a disk part).
    fn spill(&mut self, batch: &Batch, front: bool) -> usize {
        let Some(disk) = &mut self.disk else {
            return batch.points;
        };
        let (lost, error) = disk.push(&batch.body, batch.points, front);
        if let Some(e) = error {
            if !self.disk_error_logged {
                self.disk_error_logged = true;
                log::error!(
                    "cannot write a batch of {} points to the disk buffer: {e} (such points are dropped and counted; logged once)",
                    batch.points
                );
            }
        }
        lost
    }
}

/// What the sender gets from [`BatchQueue::next`].
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Points to send.
    Batch(Batch),
    /// The queue is closed and empty: the sender can stop.
    Closed,
    /// A batch on disk could not be read back: these points are lost, and why.
    Unreadable(usize, String),
}

/// A queue of batches bounded in points, shared by the output and its sender.
#[derive(Debug)]
pub struct BatchQueue {
    state: Mutex<State>,
    changed: Condvar,
    max_points: usize,
    concatenable: bool,
}

impl BatchQueue {
    /// A queue that holds at most `max_points` points. When
    /// `concatenable`, two bodies one after the other are one valid body
    /// (line protocol, protobuf messages), so small batches are merged.
    pub fn new(max_points: usize, concatenable: bool) -> Self {
        Self {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            max_points: max_points.max(1),
            concatenable,
        }
    }

    /// The same queue, with `disk` as its disk part (see [`crate::spill`]).
    pub fn with_disk(self, disk: DiskBuffer) -> Self {
        self.lock().disk = Some(disk);
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a batch; returns the number of points evicted to make room
    /// (the oldest batches first). A batch larger than the whole queue
    /// evicts everything and then itself.
    pub fn push(&self, batch: Batch) -> usize {
        if batch.is_empty() {
            return 0;
        }
        let mut evicted = 0;
        let mut state = self.lock();
        while state.queued_points + batch.points > self.max_points {
            match state.batches.pop_front() {
                Some(old) => {
                    state.queued_points -= old.points;
                    evicted += state.spill(&old, false);
                }
                None => break,
            }
        }
        if batch.points > self.max_points {
            evicted += state.spill(&batch, false);
        } else {
            state.queued_points += batch.points;
            state.batches.push_back(batch);
        }
        drop(state);
        self.changed.notify_all();
        evicted
    }

    /// Waits for points and returns up to `max_points` of them (the
    /// oldest, on disk, first), merging
    /// small consecutive batches into one request when bodies can be
    /// concatenated (a queue that filled up during an outage drains in few
    /// requests). Returns
    /// [`Next::Closed`] once closed and empty.
    pub fn next(&self, max_points: usize) -> Next {
        let mut state = self.lock();
        loop {
            // Past the shutdown deadline nothing more is sent: what is left
            // stays (on disk) or is counted by the sender.
            if state.deadline.is_some_and(|d| Instant::now() >= d) {
                return Next::Closed;
            }
            // What is on disk is older than anything in memory.
            if let Some(read) = state.disk.as_mut().and_then(DiskBuffer::pop) {
                return match read {
                    Ok(stored) => Next::Batch(Batch {
                        body: stored.body,
                        points: stored.points,
                    }),
                    Err((lost, why)) => Next::Unreadable(lost, why),
                };
            }
            if let Some(mut batch) = state.batches.pop_front() {
                while let Some(following) = state.batches.front().filter(|_| self.concatenable) {
                    if batch.points + following.points > max_points {
                        break;
                    }
                    if let Some(following) = state.batches.pop_front() {
                        batch.body.extend_from_slice(&following.body);
                        batch.points += following.points;
                    }
                }
                state.queued_points -= batch.points;
                return Next::Batch(batch);
            }
            if state.deadline.is_some() {
                return Next::Closed;
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// No more batches will be pushed; the sender has until `deadline` to
    /// deliver what is queued.
    pub fn close(&self, deadline: Instant) {
        self.lock().deadline = Some(deadline);
        self.changed.notify_all();
    }

    /// The delivery deadline, once closed.
    pub fn deadline(&self) -> Option<Instant> {
        self.lock().deadline
    }

    /// Sleeps for `duration` (a retry backoff). Returns early when `close`
    /// is called meanwhile (so that delivery is tried again at once rather
    /// than after a long backoff), and never sleeps past the deadline.
    pub fn sleep(&self, duration: Duration) {
        let start = Instant::now();
        let mut state = self.lock();
        let closed_before = state.deadline.is_some();
        loop {
            let mut until = start + duration;
            if let Some(deadline) = state.deadline {
                if !closed_before {
                    return;
                }
                until = until.min(deadline);
            }
            let now = Instant::now();
            if now >= until {
                return;
            }
            state = self
                .changed
                .wait_timeout(state, until - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Removes everything queued in memory: to disk when there is a disk
    /// part (kept for the next start), else dropped. Returns the points
    /// lost.
    pub fn take_all(&self) -> usize {
        let mut state = self.lock();
        let mut lost = 0;
        while let Some(batch) = state.batches.pop_front() {
            lost += state.spill(&batch, false);
        }
        state.queued_points = 0;
        lost
    }

    /// Puts `batch` (the one that was being sent) back before everything
    /// on disk, for the next start; returns the points lost (all of them
    /// without a disk part).
    pub fn keep_on_disk(&self, batch: &Batch) -> usize {
        self.lock().spill(batch, true)
    }

    /// Points waiting in the queue, in memory and on disk.
    pub fn queued_points(&self) -> usize {
        let state = self.lock();
        state.queued_points + state.disk.as_ref().map_or(0, DiskBuffer::points)
    }

    /// Points on disk.
    pub fn disk_points(&self) -> usize {
        self.lock().disk.as_ref().map_or(0, DiskBuffer::points)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(points: usize, tag: u8) -> Batch {
        Batch {
            body: vec![tag; points],
            points,
        }
    }

    #[test]
    fn oldest_batches_are_evicted_and_counted_exactly() {
        let q = BatchQueue::new(10, true);
        assert_eq!(q.push(batch(4, b'a')), 0);
        assert_eq!(q.push(batch(4, b'b')), 0);
        assert_eq!(q.queued_points(), 8);
        // 8 + 4 > 10: the oldest (a) goes.
        assert_eq!(q.push(batch(4, b'c')), 4);
        assert_eq!(q.queued_points(), 8);
        // 8 + 10 > 10: everything goes, the new one fits alone.
        assert_eq!(q.push(batch(10, b'd')), 8);
        assert_eq!(q.queued_points(), 10);
        // Larger than the queue: evicts everything, then itself.
        assert_eq!(q.push(batch(11, b'e')), 21);
        assert_eq!(q.queued_points(), 0);
    }

    #[test]
    fn next_merges_small_batches_up_to_the_limit() {
        let q = BatchQueue::new(100, true);
        q.push(batch(2, b'a'));
        q.push(batch(3, b'b'));
        q.push(batch(4, b'c'));
        let Next::Batch(first) = q.next(5) else {
            panic!("expected a batch")
        };
        assert_eq!(first.points, 5);
        assert_eq!(first.body, b"aabbb");
        assert_eq!(q.queued_points(), 4);
        let Next::Batch(second) = q.next(5) else {
            panic!("expected a batch")
        };
        assert_eq!(second.body, b"cccc");
        q.close(Instant::now());
        assert_eq!(q.next(5), Next::Closed);
    }

    #[test]
    fn bodies_that_cannot_be_concatenated_go_one_by_one() {
        let q = BatchQueue::new(100, false);
        q.push(batch(2, b'a'));
        q.push(batch(3, b'b'));
        let Next::Batch(first) = q.next(50) else {
            panic!("expected a batch")
        };
        assert_eq!(first.body, b"aa");
        assert_eq!(q.queued_points(), 3);
    }

    #[test]
    fn closed_queue_still_hands_out_what_it_holds_until_the_deadline() {
        let q = BatchQueue::new(100, true);
        q.push(batch(1, b'a'));
        q.close(Instant::now() + Duration::from_secs(3600));
        assert!(matches!(q.next(10), Next::Batch(_)));
        assert_eq!(q.next(10), Next::Closed);
        // Past the deadline nothing more is handed out; what is left is
        // for take_all to count.
        let q = BatchQueue::new(100, true);
        q.push(batch(3, b'a'));
        q.close(Instant::now());
        assert_eq!(q.next(10), Next::Closed);
        assert_eq!(q.take_all(), 3);
    }

    #[test]
    fn with_a_disk_the_oldest_go_to_disk_instead_of_being_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (disk, _) = DiskBuffer::open(dir.path(), "t", 1 << 20).unwrap();
        let q = BatchQueue::new(10, true).with_disk(disk);
        q.push(batch(4, b'a'));
        q.push(batch(4, b'b'));
        // 8 + 4 > 10: a goes to disk, nothing is lost.
        assert_eq!(q.push(batch(4, b'c')), 0);
        assert_eq!((q.queued_points(), q.disk_points()), (12, 4));
        // The oldest (on disk) comes first, then memory, merged.
        let Next::Batch(first) = q.next(100) else {
            panic!("expected a batch")
        };
        assert_eq!(first.body, b"aaaa");
        let Next::Batch(second) = q.next(100) else {
            panic!("expected a batch")
        };
        assert_eq!(second.body, b"bbbbcccc");
        // At shutdown what is in memory and in flight is kept, in order.
        q.push(batch(2, b'd'));
        assert_eq!(q.keep_on_disk(&second), 0);
        assert_eq!(q.take_all(), 0);
        assert_eq!(q.disk_points(), 10);
        let Next::Batch(again) = q.next(100) else {
            panic!("expected a batch")
        };
        assert_eq!(again.body, b"bbbbcccc");
    }

    #[test]
    fn sleep_ends_when_the_queue_closes() {
        let q = std::sync::Arc::new(BatchQueue::new(10, true));
        let q2 = q.clone();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            q2.close(Instant::now() + Duration::from_secs(3600));
        });
        // Would sleep an hour without the close.
        q.sleep(Duration::from_secs(3600));
        closer.join().unwrap();
        assert!(q.deadline().is_some());
    }

    #[test]
    fn sleep_after_close_ends_at_the_deadline() {
        let q = BatchQueue::new(10, true);
        q.close(Instant::now() + Duration::from_millis(10));
        q.sleep(Duration::from_secs(3600));
        assert!(Instant::now() >= q.deadline().unwrap());
    }
}
