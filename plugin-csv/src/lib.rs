//! Plugin `csv` (work in progress).
