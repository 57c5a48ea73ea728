//! Fuzz target `prometheus_request`: see `alumet_fuzz_targets::prometheus_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| alumet_fuzz_targets::prometheus_request(data));
