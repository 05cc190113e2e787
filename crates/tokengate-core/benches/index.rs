//! `RevocationIndex::check` for a revoked token (hit) and a live one (miss) with 1 000,
//! 1 000 000 and 10 000 000 revoked token ids, and `purge` of 1 000 000 expired entries in
//! the server's batches of 10 000.
//!
//! `cargo bench -p tokengate-core --bench index`
//!
//! Each index is built once per size (10 000 000 entries take about a gigabyte and several
//! seconds to load). Lookups cycle through 262 144 pre-drawn random ids, so most of them miss
//! the CPU caches at the larger sizes, as a server's requests would.
//!
//! Times are the benchmark thread's on-CPU time by default (see `timed`), so that other work
//! on a shared machine does not inflate them; `TOKENGATE_BENCH_CLOCK=wall` for wall time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

// Not every shared helper is used here (`flat`, `now`, `rss_bytes`).
#[allow(dead_code)]
mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use tokengate_core::index::PURGE_GRACE_SECS;
use tokengate_core::{Revocation, RevocationIndex, RevocationKind};
use uuid::Uuid;

use common::fixtures::{at, claims, T0};
use common::{id, mix, timed};

const LEEWAY: Duration = Duration::from_secs(30);
/// Pre-drawn probe ids (4 MiB), a power of two.
const PROBES: usize = 1 << 18;
/// The server's purge batch (`INDEX_PURGE_BATCH` in tokengate-server).
const PURGE_BATCH: usize = 10_000;

/// `n` revoked token ids with expiries spread over the next 15 minutes (the access-token
/// lifetime), plus 1 000 revoked sessions and 100 revoked users so that every map a check
/// walks holds something.
fn build(n: u64) -> RevocationIndex {
    let index = RevocationIndex::new(LEEWAY);
    let tokens = (0..n).map(|i| Revocation::Token {
        jti: id(i),
        exp: at(T0 + 60 + (i % 900) as i64),
    });
    assert_eq!(index.load(tokens, at(T0)) as u64, n);
    let others = (0..1_000u64).map(|i| Revocation::Session {
        sid: id(u64::MAX / 2 + i),
        exp: at(T0 + 900),
    });
    let users = (0..100u64).map(|i| Revocation::User {
        sub: id(u64::MAX / 4 + i),
        issued_before: at(T0),
        exp: at(T0 + 900),
    });
    index.load(others.chain(users), at(T0));
    index
}

/// Cheap pseudo-random probe positions.
fn probe_positions(seed: u64, below: u64) -> impl Iterator<Item = u64> {
    (0..PROBES as u64).map(move |i| mix(seed ^ i) % below)
}

fn bench_check(c: &mut Criterion) {
    let mut group = c.benchmark_group("check");
    group
        .sample_size(20)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4));
    for (label, n) in [("1k", 1_000u64), ("1M", 1_000_000), ("10M", 10_000_000)] {
        let started = Instant::now();
        let index = build(n);
        eprintln!(
            "built an index of {n} revoked ids in {:.2?}",
            started.elapsed()
        );

        let hits: Vec<Uuid> = probe_positions(1, n).map(id).collect();
        let misses: Vec<Uuid> = (0..PROBES).map(|_| Uuid::new_v4()).collect();
        let template = claims();
        let now = at(T0);

        // Sanity, outside the timing: the probes hit and miss as labelled.
        let mut probe = template.clone();
        probe.jti = hits[0];
        assert_eq!(index.check(&probe, now), Err(RevocationKind::Token));
        probe.jti = misses[0];
        assert_eq!(index.check(&probe, now), Ok(()));

        group.bench_function(BenchmarkId::new("hit", label), |b| {
            b.iter_custom(|iters| {
                let mut claims = template.clone();
                timed(|| {
                    for i in 0..iters as usize {
                        claims.jti = hits[i & (PROBES - 1)];
                        black_box(index.check(black_box(&claims), now)).unwrap_err();
                    }
                })
            })
        });
        // A miss walks all three maps (jti, sid, sub) and the global cutoff: the common case.
        group.bench_function(BenchmarkId::new("miss", label), |b| {
            b.iter_custom(|iters| {
                let mut claims = template.clone();
                timed(|| {
                    for i in 0..iters as usize {
                        claims.jti = misses[i & (PROBES - 1)];
                        claims.sid = misses[(i + 1) & (PROBES - 1)];
                        claims.sub = misses[(i + 2) & (PROBES - 1)];
                        black_box(index.check(black_box(&claims), now)).unwrap();
                    }
                })
            })
        });
        let started = Instant::now();
        drop(index);
        eprintln!("dropped it in {:.2?}", started.elapsed());
    }
    group.finish();
}

/// Purge 1 000 000 expired token ids the way the server's purge task does: batches of
/// 10 000 until a batch comes back short. Each sample builds a fresh index (not timed).
fn bench_purge(c: &mut Criterion) {
    const N: u64 = 1_000_000;
    let mut group = c.benchmark_group("purge");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(5));
    // Every entry is dead, and every shard due for a sweep, at `now`.
    let now = at(T0 + 60 + 900 + 30 + 2 * PURGE_GRACE_SECS);
    let mut longest_batch = Duration::ZERO;
    let mut batches = 0usize;
    group.bench_function("1M_expired_batch_10k", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let index = build(N);
                total += timed(|| loop {
                    let mut removed = 0;
                    let batch = timed(|| removed = index.purge(now, PURGE_BATCH));
                    longest_batch = longest_batch.max(batch);
                    batches += 1;
                    if removed < PURGE_BATCH {
                        break;
                    }
                });
                // Everything is dead at `now`, the sessions and users too.
                assert!(index.is_empty());
                assert_eq!(index.len_of(RevocationKind::Token), 0);
                drop(black_box(index));
            }
            total
        })
    });
    group.finish();
    eprintln!(
        "purge: {batches} batches of up to {PURGE_BATCH}; the longest took {longest_batch:.2?}"
    );
}

/// For scale: one random read from memory on this machine, as a dependent chain through a
/// 64 MiB random cycle (twice the 32 MiB L3 cache here), so no two reads overlap. A lookup that
/// misses the caches cannot cost less than this.
fn bench_memory_latency(c: &mut Criterion) {
    const LEN: usize = 1 << 24;
    // Sattolo's shuffle: one cycle through every slot.
    let mut next: Vec<u32> = (0..LEN as u32).collect();
    for i in (1..LEN).rev() {
        let j = (mix(i as u64) % i as u64) as usize;
        next.swap(i, j);
    }
    let mut group = c.benchmark_group("reference");
    group
        .sample_size(20)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let mut at = 0u32;
    group.bench_function("dram_random_read_64MiB", |b| {
        b.iter_custom(|iters| {
            timed(|| {
                for _ in 0..iters {
                    at = next[at as usize];
                }
                black_box(at);
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench_check, bench_purge, bench_memory_latency);
criterion_main!(benches);
