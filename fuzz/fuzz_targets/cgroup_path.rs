//! Fuzz target `cgroup_path`: see `alumet_fuzz_targets::cgroup_path`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| alumet_fuzz_targets::cgroup_path(data));
