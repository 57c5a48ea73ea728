//! Fuzz target `agent_config`: see `alumet_fuzz_targets::agent_config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| alumet_fuzz_targets::agent_config(data));
