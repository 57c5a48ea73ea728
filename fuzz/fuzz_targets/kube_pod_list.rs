//! Fuzz target `kube_pod_list`: see `alumet_fuzz_targets::kube_pod_list`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| alumet_fuzz_targets::kube_pod_list(data));
