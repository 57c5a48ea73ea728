//! Fuzz target `rapl_sysfs`: see `alumet_fuzz_targets::rapl_sysfs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| alumet_fuzz_targets::rapl_sysfs(data));
