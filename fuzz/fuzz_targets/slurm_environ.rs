//! Fuzz target `slurm_environ`: see `alumet_fuzz_targets::slurm_environ`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| alumet_fuzz_targets::slurm_environ(data));
