//! Plugin `rapl` (work in progress).
