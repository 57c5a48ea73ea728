//! Fuzz target `mountinfo`: see `alumet_fuzz_targets::mountinfo`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| alumet_fuzz_targets::mountinfo(data));
