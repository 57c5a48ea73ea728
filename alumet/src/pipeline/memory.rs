//! Keeps freed point buffers from staying in the agent's resident memory,
//! and reuses the few large ones that a busy source fills again and again.
//!
//! A source's batch is one large vector (15 000 points of 3 000 processes
//! take a few MiB) that lives for one flush. glibc serves such a request
//! with `mmap` and gives it back at `free`, but its first such `free` raises
//! the threshold to the size of that buffer: from then on batches come from
//! the heap, whose freed space glibc keeps, and the resident size climbs to
//! the highest number of batches ever alive at once (measured: 18.6 MiB
//! where the points alive need less; BENCHMARKS.md, "Node scale"). Fixing
//! the threshold keeps large buffers on `mmap`.

use std::sync::{Arc, Mutex};

use crate::measurement::{MeasurementBuffer, MeasurementPoint};

/// Allocations above this size get pages of their own, returned at `free`.
const MMAP_THRESHOLD_BYTES: i32 = 256 * 1024;

/// Sets the allocator's large-buffer threshold for the whole process (once
/// per pipeline start; setting it again is harmless). No-op off glibc.
pub(crate) fn return_large_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes two plain integers and only tunes the allocator.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
    }
}

/// Emptied large point buffers, handed back by the outputs for the sources
/// to fill again. A fresh mmapped buffer costs a page fault for each 4 KiB
/// page as it fills (the kernel hands over zeroed pages on first touch):
/// with 3 000 processes, 7 % of the agent's CPU time went to those faults
/// (BENCHMARKS.md, "Node scale"). Process-wide, like the allocator it
/// stands beside; at most [`POOLED_BUFFERS`] are kept, which bounds what
/// stays resident.
static POOL: BufferPool = BufferPool::new();

/// A source takes its buffer at its next poll, when the output has given
/// the previous batch back: one per busy source (two of them, e.g.
/// processes and cgroups) is enough.
const POOLED_BUFFERS: usize = 2;

/// Buffers smaller than the mmap threshold come from the heap, whose free
/// lists already reuse them.
const fn pooled_points(capacity: usize) -> bool {
    capacity.saturating_mul(std::mem::size_of::<MeasurementPoint>())
        >= MMAP_THRESHOLD_BYTES as usize
}

/// An empty buffer for about `capacity` points: a recycled one when the
/// size is worth it and one is free.
pub(crate) fn fresh_buffer(capacity: usize) -> MeasurementBuffer {
    POOL.take(capacity)
}

/// Takes back a buffer that an output is done with, if no other output
/// holds it and it is large enough to be worth keeping.
pub(crate) fn recycle(buffer: Arc<MeasurementBuffer>) {
    POOL.give(buffer);
}

struct BufferPool(Mutex<Vec<MeasurementBuffer>>);

impl BufferPool {
    const fn new() -> Self {
        Self(Mutex::new(Vec::new()))
    }

    fn take(&self, capacity: usize) -> MeasurementBuffer {
        if pooled_points(capacity) {
            let recycled = self.0.lock().ok().and_then(|mut pool| {
                // The largest: a batch that grew a little still fits, or
                // grows in place (its resident pages are kept either way).
                let i = (0..pool.len()).max_by_key(|&i| pool[i].capacity())?;
                Some(pool.swap_remove(i))
            });
            if let Some(mut buffer) = recycled {
                buffer.reserve(capacity);
                return buffer;
            }
        }
        Vec::with_capacity(capacity)
    }

    fn give(&self, buffer: Arc<MeasurementBuffer>) {
        let Ok(mut buffer) = Arc::try_unwrap(buffer) else {
            return;
        };
        if !pooled_points(buffer.capacity()) {
            return;
        }
        // The points' own allocations are freed here, outside the lock.
        buffer.clear();
        if let Ok(mut pool) = self.0.lock() {
            if pool.len() < POOLED_BUFFERS {
                pool.push(buffer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_buffers_come_back_small_ones_do_not() {
        let pool = BufferPool::new();
        let large = 1 << 16;
        let mut b = pool.take(large);
        b.push(MeasurementPoint::new(
            crate::measurement::Timestamp::from_unix_nanos(1),
            crate::metrics::MetricId(0),
            crate::measurement::Resource::LocalMachine,
            crate::measurement::ResourceConsumer::LocalMachine,
            1u64,
        ));
        let ptr = b.as_ptr();
        pool.give(Arc::new(b));
        let again = pool.take(large);
        assert!(again.is_empty(), "a recycled buffer comes back empty");
        assert_eq!(again.as_ptr(), ptr, "the same memory is reused");

        // Held by another output too: not taken.
        let shared = Arc::new(again);
        let other = shared.clone();
        pool.give(shared);
        assert!(pool.0.lock().unwrap().is_empty());
        drop(other);

        // Small ones are not kept, and the pool keeps at most POOLED_BUFFERS.
        pool.give(Arc::new(pool.take(4)));
        assert!(pool.0.lock().unwrap().is_empty());
        for _ in 0..POOLED_BUFFERS + 2 {
            pool.give(Arc::new(Vec::with_capacity(large)));
        }
        assert_eq!(pool.0.lock().unwrap().len(), POOLED_BUFFERS);
    }
}
