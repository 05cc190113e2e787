//! Memory per `VerifiedCache` entry at the default limits (`CacheLimits::DEFAULT`), with
//! `Claims` values: a counting global allocator (`stats_alloc`) gives the bytes the cache's
//! allocations asked for, and `/proc/self/status` the growth of the resident set (which adds
//! the allocator's headers, rounding and free lists). No timing.
//!
//! `cargo bench -p tokengate-core --bench cache_memory`
//!
//! Each case floods a fresh cache (in a fresh child process, so that memory freed by another
//! case cannot hide the cost) with 400 000 distinct tokens, far more than fit: the bounds
//! must hold under that. Cases: tokens as long as the server's EdDSA and RS256 access tokens;
//! 4 KiB tokens (the largest cached) with claims as large as such a token's payload can hold
//! (the byte bound binds); 32-byte tokens (the entry bound binds). Printed per case: entries
//! held, what the cache counts (`bytes()`, the figure bounded by `max_bytes`), what the
//! allocator was asked for (live bytes after the flood, and the largest seen after any
//! insertion), both per entry, and RSS growth.

#![allow(clippy::unwrap_used, clippy::expect_used)]

// Only the claims fixtures and `rss_bytes` are used here: no timing, no ids.
#[allow(dead_code)]
mod common;

use std::alloc::System;
use std::process::Command;

use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};
use tokengate_core::cache::{CacheLimits, VerifiedCache};
use tokengate_core::{Algorithm, Claims, SigningKey};

use common::fixtures::{at, claims, T0};
use common::rss_bytes;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const CHILD_ENV: &str = "TOKENGATE_BENCH_CACHE_MEMORY_CASE";
const FLOOD: u64 = 400_000;
const CASES: [&str; 4] = ["EdDSA", "RS256", "4KiB", "32B"];

fn live_bytes() -> usize {
    let stats = GLOBAL.stats();
    stats.bytes_allocated - stats.bytes_deallocated
}

/// The claims fixture with another email (the one string whose size varies).
fn claims_with(email: String) -> Claims {
    Claims { email, ..claims() }
}

/// `template` with its last 16 characters replaced by `n` in hex.
fn stamp(token: &mut String, n: u64) {
    let hex = format!("{n:016x}");
    let start = token.len() - 16;
    token.replace_range(start.., &hex);
}

/// Flood a default cache with `case`'s tokens and print one line of figures.
fn child(case: &str) {
    let (mut token, value) = match case {
        "EdDSA" | "RS256" => {
            let alg = if case == "EdDSA" {
                Algorithm::EdDSA
            } else {
                Algorithm::RS256
            };
            let value = claims();
            let token = SigningKey::generate(alg).unwrap().sign(&value).unwrap();
            (token, value)
        }
        // A 4 KiB token's payload decodes to at most 3 KiB: claims strings that large.
        "4KiB" => ("x".repeat(4096), claims_with("e".repeat(3 * 1024 - 100))),
        _ => ("x".repeat(32), claims_with("a@example.com".into())),
    };
    let token_len = token.len();
    let before_rss = rss_bytes();
    let before = live_bytes();
    let cache = VerifiedCache::for_claims(CacheLimits::DEFAULT);
    let mut peak = 0;
    for n in 0..FLOOD {
        stamp(&mut token, n);
        cache.insert(&token, value.clone(), value.exp, 1, at(T0));
        // What the cache holds (the token and value are the loop's, reused or freed).
        peak = peak.max(live_bytes() - before);
    }
    let held = live_bytes() - before;
    let rss = rss_bytes().saturating_sub(before_rss);
    println!(
        "{case} {token_len} {} {} {held} {peak} {rss}",
        cache.len(),
        cache.bytes()
    );
    drop(cache);
}

fn main() {
    if let Ok(case) = std::env::var(CHILD_ENV) {
        child(&case);
        return;
    }
    let limits = CacheLimits::DEFAULT;
    println!(
        "VerifiedCache<Claims> memory at the default limits ({} entries, {} MiB), after {FLOOD} distinct insertions",
        limits.max_entries,
        limits.max_bytes >> 20
    );
    println!(
        "{:>6} {:>6} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "case", "token", "entries", "counted", "allocated", "peak", "RSS", "counted/e", "alloc/e"
    );
    let mib = |b: f64| b / f64::from(1 << 20);
    let exe = std::env::current_exe().unwrap();
    for case in CASES {
        let out = Command::new(&exe).env(CHILD_ENV, case).output().unwrap();
        assert!(out.status.success(), "case {case} failed: {out:?}");
        let line = String::from_utf8(out.stdout).unwrap();
        let fields: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap())
            .collect();
        let (token, len, counted, held, peak, rss) = (
            fields[0], fields[1], fields[2], fields[3], fields[4], fields[5],
        );
        assert!(len <= limits.max_entries as f64);
        assert!(counted <= limits.max_bytes as f64);
        assert!(
            held <= counted,
            "{case}: allocated {held} > counted {counted}"
        );
        println!(
            "{case:>6} {token:>6} {len:>8} {:>6.1} MiB {:>6.1} MiB {:>6.1} MiB {:>6.1} MiB {:>10.0} {:>10.0}",
            mib(counted),
            mib(held),
            mib(peak),
            mib(rss),
            counted / len,
            held / len
        );
    }
}
