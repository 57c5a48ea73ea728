//! Fuzz target `carbon_intensity`: see `alumet_fuzz_targets::carbon_intensity`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| alumet_fuzz_targets::carbon_intensity(data));
