//! `cargo +nightly fuzz run verify_mutated`: see the README's "Fuzzing" section.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tokengate_fuzz::verify_mutated(data));
