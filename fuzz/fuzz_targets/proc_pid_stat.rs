//! Fuzz target `proc_pid_stat`: see `alumet_fuzz_targets::proc_pid_stat`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| alumet_fuzz_targets::proc_pid_stat(data));
