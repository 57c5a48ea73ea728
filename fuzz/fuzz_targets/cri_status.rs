//! Fuzz target `cri_status`: see `alumet_fuzz_targets::cri_status`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| alumet_fuzz_targets::cri_status(data));
