//! Keeps freed point buffers from staying in the agent's resident memory.
//!
//! A source's batch is one large vector (15 000 points of 3 000 processes
//! take a few MiB) that lives for one flush. glibc serves such a request
//! with `mmap` and gives it back at `free`, but its first such `free` raises
//! the threshold to the size of that buffer: from then on batches come from
//! the heap, whose freed space glibc keeps, and the resident size climbs to
//! the highest number of batches ever alive at once (measured: 18.6 MiB
//! where the points alive need less; BENCHMARKS.md, "Node scale"). Fixing
//! the threshold keeps large buffers on `mmap`.

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
