//! Fuzz target `slurm_squeue`: see `alumet_fuzz_targets::slurm_squeue`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| alumet_fuzz_targets::slurm_squeue(data));
