//! Plugin `procfs` (work in progress).
