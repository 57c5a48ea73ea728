//! Fuzz target `engine_api`: see `alumet_fuzz_targets::engine_api`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| alumet_fuzz_targets::engine_api(data));
