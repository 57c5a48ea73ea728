//! Fuzz target `kube_watch`: see `alumet_fuzz_targets::kube_watch`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| alumet_fuzz_targets::kube_watch(data));
