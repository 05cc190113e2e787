//! `cargo +nightly fuzz run extract`: see the README's "Fuzzing" section.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tokengate_fuzz::extract(data));
