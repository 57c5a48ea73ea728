//! Fuzz target `redfish_documents`: see `alumet_fuzz_targets::redfish_documents`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| alumet_fuzz_targets::redfish_documents(data));
