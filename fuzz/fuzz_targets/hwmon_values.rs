//! Fuzz target `hwmon_values`: see `alumet_fuzz_targets::hwmon_values`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| alumet_fuzz_targets::hwmon_values(data));
