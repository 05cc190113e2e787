//! Memory per revoked id: the growth of the process's resident set (`VmRSS` in
//! `/proc/self/status`) while an index loads N token ids, for N = 1 000, 1 000 000 and
//! 10 000 000. Each size is measured in a fresh child process, so memory freed by an earlier
//! size cannot be reused and hide the cost. Prints a table; no timing.
//!
//! `cargo bench -p tokengate-core --bench index_memory`
//!
//! The ids are generated on the fly (nothing but the index is allocated during the load);
//! their expiries are spread over 15 minutes, the access-token lifetime. Two ways of filling:
//! `load` (one bulk load, as at start-up: each shard sized once) and `apply` (one revocation
//! at a time, as sign-outs arrive: shards grow by half when 7/8 full, so the figure depends
//! on where N falls between two growths). RSS covers everything the index allocated, as the
//! system allocator (glibc malloc) gave it; `table` is the index's own count of its slots
//! (`RevocationIndex::table_bytes`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

// Only `id`, `rss_bytes`, `at` and `T0` are used here: no timing, no claims.
#[allow(dead_code)]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use tokengate_core::{Revocation, RevocationIndex};

use common::fixtures::{at, T0};
use common::{id, rss_bytes};

const CHILD_ENV: &str = "TOKENGATE_BENCH_MEMORY_N";
const SIZES: [u64; 3] = [1_000, 1_000_000, 10_000_000];

/// Fill an index with `n` ids (`mode` `load` or `apply`) and print
/// `n rss_before rss_after secs table_bytes` on one line.
fn child(n: u64, mode: &str) {
    let index = RevocationIndex::new(Duration::from_secs(30));
    let now = at(T0);
    let revs = (0..n).map(|i| Revocation::Token {
        jti: id(i),
        exp: at(T0 + 60 + (i % 900) as i64),
    });
    let before = rss_bytes();
    let start = Instant::now();
    if mode == "apply" {
        for rev in revs {
            assert!(index.apply(&rev, now));
        }
    } else {
        assert_eq!(index.load(revs, now) as u64, n);
    }
    let took = start.elapsed();
    let after = rss_bytes();
    let table = index.table_bytes();
    println!("{n} {before} {after} {} {table}", took.as_secs_f64());
    drop(index);
}

fn main() {
    if let Ok(job) = std::env::var(CHILD_ENV) {
        let (n, mode) = job.split_once(' ').unwrap();
        child(n.parse().unwrap(), mode);
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
        "{:>12} {:>6} {:>12} {:>12} {:>12} {:>10}",
        "entries", "fill", "RSS growth", "RSS B/id", "table B/id", "time"
    );
    for (n, mode) in SIZES.into_iter().flat_map(|n| [(n, "load"), (n, "apply")]) {
        if !filter.is_empty() && !filter.iter().any(|f| n.to_string().contains(f.as_str())) {
            continue;
        }
        let out = Command::new(&exe)
            .env(CHILD_ENV, format!("{n} {mode}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "child for {n} failed: {out:?}");
        let line = String::from_utf8(out.stdout).unwrap();
        let fields: Vec<f64> = line
            .split_whitespace()
            .map(|f| f.parse().unwrap())
            .collect();
        let (before, after, secs, table) = (fields[1], fields[2], fields[3], fields[4]);
        let growth = after - before;
        println!(
            "{n:>12} {mode:>6} {:>8.1} MiB {:>12.1} {:>12.1} {:>8.2} s",
            growth / (1024.0 * 1024.0),
            growth / n as f64,
            table / n as f64,
            secs
        );
    }
}
