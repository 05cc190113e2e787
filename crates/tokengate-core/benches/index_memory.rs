//! Memory per revoked id: the growth of the process's resident set (`VmRSS` in
//! `/proc/self/status`) while an index loads N token ids, for N = 1 000, 1 000 000 and
//! 10 000 000. Each size is measured in a fresh child process, so memory freed by an earlier
//! size cannot be reused and hide the cost. Prints a table; no timing.
//!
//! `cargo bench -p tokengate-core --bench index_memory`
//!
//! The ids are generated on the fly (nothing but the index is allocated during the load);
//! their expiries are spread over 15 minutes, the access-token lifetime. The figure covers
//! the three maps' tables, their boxed entries and the expiry queue, as allocated by the
//! system allocator (glibc malloc).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use tokengate_core::{Revocation, RevocationIndex, Timestamp};
use uuid::Uuid;

const T0: i64 = 1_700_000_000;
const CHILD_ENV: &str = "TOKENGATE_BENCH_MEMORY_N";
const SIZES: [u64; 3] = [1_000, 1_000_000, 10_000_000];

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Load `n` ids and print `n rss_before rss_after load_secs` on one line.
fn child(n: u64) {
    let index = RevocationIndex::new(Duration::from_secs(30));
    let revs = (0..n).map(|i| Revocation::Token {
        jti: Uuid::from_u64_pair(mix(2 * i), mix(2 * i + 1)),
        exp: Timestamp::from_secs(T0 + 60 + (i % 900) as i64),
    });
    let before = rss_bytes();
    let start = Instant::now();
    assert_eq!(index.load(revs, Timestamp::from_secs(T0)) as u64, n);
    let took = start.elapsed();
    let after = rss_bytes();
    println!("{n} {before} {after} {}", took.as_secs_f64());
    drop(index);
}

fn main() {
    if let Ok(n) = std::env::var(CHILD_ENV) {
        child(n.parse().unwrap());
        return;
    }
    // `cargo bench` passes `--bench`; a filter argument picks sizes by their number.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let exe = std::env::current_exe().unwrap();
    println!(
        "index memory per revoked token id (RSS growth while loading, fresh process per size)"
    );
    println!(
        "{:>12} {:>12} {:>14} {:>10}",
        "entries", "RSS growth", "bytes/entry", "load"
    );
    for n in SIZES {
        if !filter.is_empty() && !filter.iter().any(|f| n.to_string().contains(f.as_str())) {
            continue;
        }
        let out = Command::new(&exe)
            .env(CHILD_ENV, n.to_string())
            .output()
            .unwrap();
        assert!(out.status.success(), "child for {n} failed: {out:?}");
        let line = String::from_utf8(out.stdout).unwrap();
        let fields: Vec<f64> = line
            .split_whitespace()
            .map(|f| f.parse().unwrap())
            .collect();
        let (before, after, secs) = (fields[1], fields[2], fields[3]);
        let growth = after - before;
        println!(
            "{n:>12} {:>9.1} MiB {:>14.1} {:>8.2} s",
            growth / (1024.0 * 1024.0),
            growth / n as f64,
            secs
        );
    }
}
