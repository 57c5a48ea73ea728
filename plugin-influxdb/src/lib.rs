//! Plugin `influxdb` (work in progress).
