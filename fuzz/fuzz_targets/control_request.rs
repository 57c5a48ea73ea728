//! Fuzz target `control_request`: see `alumet_fuzz_targets::control_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| alumet_fuzz_targets::control_request(data));
