//! The bounded queue in front of each output, holding only what is queued.
//!
//! `std::sync::mpsc::sync_channel(n)` reserves its `n` slots when it is
//! created: `output_queue_capacity = 100000000` cost 3.1 GB of memory per
//! output before a single point was measured. This queue grows with what
//! it holds, gives memory back once drained, and keeps the channel's
//! semantics the stage and the output rely on (`try_send` fails when full,
//! `send` waits for room, both fail once the output is gone; the output
//! sees the end once the stage is gone and the queue is empty). Batches,
//! not points, go through it (a few per second and output), so a mutex is
//! cheap enough.

use std::collections::VecDeque;
use std::sync::mpsc::{RecvError, RecvTimeoutError, SendError, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Past this many free slots after a drain, the queue's memory is given back.
const KEEP_SLOTS: usize = 64;

struct State<T> {
    items: VecDeque<T>,
    capacity: usize,
    sender_alive: bool,
    receiver_alive: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    not_empty: Condvar,
    not_full: Condvar,
}

impl<T> Shared<T> {
    /// The state; a panic of the other side while it held the lock leaves
    /// a queue that is still consistent (every change is one push or pop).
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A queue of at most `capacity` items (at least one).
pub(crate) fn bounded<T>(capacity: usize) -> (QueueSender<T>, QueueReceiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            capacity: capacity.max(1),
            sender_alive: true,
            receiver_alive: true,
        }),
        not_empty: Condvar::new(),
        not_full: Condvar::new(),
    });
    (
        QueueSender {
            shared: shared.clone(),
        },
        QueueReceiver { shared },
    )
}

/// The stage's side.
pub(crate) struct QueueSender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> QueueSender<T> {
    /// Queues `item` if there is room.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let mut state = self.shared.lock();
        if !state.receiver_alive {
            return Err(TrySendError::Disconnected(item));
        }
        if state.items.len() >= state.capacity {
            return Err(TrySendError::Full(item));
        }
        state.items.push_back(item);
        drop(state);
        self.shared.not_empty.notify_one();
        Ok(())
    }

    /// Queues `item`, waiting for room.
    pub fn send(&self, item: T) -> Result<(), SendError<T>> {
        let mut state = self.shared.lock();
        loop {
            if !state.receiver_alive {
                return Err(SendError(item));
            }
            if state.items.len() < state.capacity {
                state.items.push_back(item);
                drop(state);
                self.shared.not_empty.notify_one();
                return Ok(());
            }
            state = self
                .shared
                .not_full
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl<T> Drop for QueueSender<T> {
    fn drop(&mut self) {
        self.shared.lock().sender_alive = false;
        self.shared.not_empty.notify_all();
    }
}

/// The output's side.
pub(crate) struct QueueReceiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> QueueReceiver<T> {
    fn pop(&self, state: &mut State<T>) -> Option<T> {
        let item = state.items.pop_front()?;
        if state.items.is_empty() && state.items.capacity() > KEEP_SLOTS {
            state.items.shrink_to(KEEP_SLOTS);
        }
        self.shared.not_full.notify_one();
        Some(item)
    }

    /// The next item, waiting for one; `Err` once the sender is gone and
    /// everything it queued was taken.
    pub fn recv(&self) -> Result<T, RecvError> {
        let mut state = self.shared.lock();
        loop {
            if let Some(item) = self.pop(&mut state) {
                return Ok(item);
            }
            if !state.sender_alive {
                return Err(RecvError);
            }
            state = self
                .shared
                .not_empty
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Like [`recv`](Self::recv), waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.shared.lock();
        loop {
            if let Some(item) = self.pop(&mut state) {
                return Ok(item);
            }
            if !state.sender_alive {
                return Err(RecvTimeoutError::Disconnected);
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                // Beyond what an Instant can hold: wait in long steps.
                None => Duration::from_secs(3600),
            };
            if left.is_zero() {
                return Err(RecvTimeoutError::Timeout);
            }
            state = self
                .shared
                .not_empty
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl<T> Drop for QueueReceiver<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receiver_alive = false;
        // What was queued will never be taken: free it now.
        state.items.clear();
        drop(state);
        self.shared.not_full.notify_all();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_capacity_reserves_nothing_and_bounds_what_is_held() {
        let (tx, rx) = bounded::<u64>(100_000_000_000);
        assert_eq!(tx.shared.lock().items.capacity(), 0);
        let (tx2, rx2) = bounded::<u64>(2);
        tx2.try_send(1).unwrap();
        tx2.try_send(2).unwrap();
        assert!(matches!(tx2.try_send(3), Err(TrySendError::Full(3))));
        assert_eq!(rx2.recv().unwrap(), 1);
        tx2.try_send(3).unwrap();
        drop(tx2);
        // Queued items are delivered after the sender is gone, then the end.
        assert_eq!(rx2.recv().unwrap(), 2);
        assert_eq!(rx2.recv().unwrap(), 3);
        assert!(rx2.recv().is_err());
        drop(rx);
        assert!(matches!(tx.try_send(1), Err(TrySendError::Disconnected(1))));
    }

    #[test]
    fn memory_is_given_back_after_a_drain() {
        let (tx, rx) = bounded::<[u8; 64]>(1_000_000);
        for _ in 0..100_000 {
            tx.try_send([0; 64]).unwrap();
        }
        while rx.recv_timeout(Duration::ZERO).is_ok() {}
        assert!(tx.shared.lock().items.capacity() <= KEEP_SLOTS);
    }

    #[test]
    fn send_waits_for_room_and_recv_timeout_times_out() {
        let (tx, rx) = bounded::<u32>(1);
        tx.send(1).unwrap();
        let sender = std::thread::spawn(move || tx.send(2).map_err(|_| ()));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(rx.recv().unwrap(), 1);
        sender.join().unwrap().unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 2);
        assert!(matches!(
            rx.recv_timeout(Duration::from_millis(10)),
            Err(RecvTimeoutError::Disconnected)
        ));
        let (_tx, rx) = bounded::<u32>(1);
        assert!(matches!(
            rx.recv_timeout(Duration::from_millis(10)),
            Err(RecvTimeoutError::Timeout)
        ));
    }

    #[test]
    fn a_blocked_send_fails_once_the_receiver_is_gone() {
        let (tx, rx) = bounded::<u32>(1);
        tx.send(1).unwrap();
        let sender = std::thread::spawn(move || tx.send(2).is_err());
        std::thread::sleep(Duration::from_millis(50));
        drop(rx);
        assert!(sender.join().unwrap());
    }
}
