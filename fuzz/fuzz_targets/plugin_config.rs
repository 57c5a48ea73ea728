//! Fuzz target `plugin_config`: see `alumet_fuzz_targets::plugin_config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| alumet_fuzz_targets::plugin_config(data));
