//! Plugin `nvidia` (work in progress).
