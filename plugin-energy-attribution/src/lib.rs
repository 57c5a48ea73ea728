//! Plugin `energy-attribution` (work in progress).
