//! Fuzz target `otlp_response`: see `alumet_fuzz_targets::otlp_response`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| alumet_fuzz_targets::otlp_response(data));
