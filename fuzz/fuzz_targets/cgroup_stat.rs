//! Fuzz target `cgroup_stat`: see `alumet_fuzz_targets::cgroup_stat`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| alumet_fuzz_targets::cgroup_stat(data));
