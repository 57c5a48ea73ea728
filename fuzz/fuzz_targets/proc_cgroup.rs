//! Fuzz target `proc_cgroup`: see `alumet_fuzz_targets::proc_cgroup`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| alumet_fuzz_targets::proc_cgroup(data));
