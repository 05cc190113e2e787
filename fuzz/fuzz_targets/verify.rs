//! `cargo +nightly fuzz run verify`: see the README's "Fuzzing" section.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tokengate_fuzz::verify_bytes(data));
