//! `VerifiedCache` with `Claims` values: a hit (one hot token, and 100 000 cached tokens
//! looked up in random order), a miss, an insertion that evicts (100 000 entries, full); the
//! hits again with `Arc<Claims>` values; and what a request whose token was seen before
//! costs: a hit plus `RevocationIndex::check` against 1 000 000 revoked ids, for one hot token
//! and for random ones of the 100 000.
//!
//! `cargo bench -p tokengate-core --bench cache`
//!
//! Tokens are as long as the server's EdDSA (about 450 bytes) or RS256 (about 700) access
//! tokens: a real signed token, and copies of it with the last 16 characters of the signature
//! replaced by a counter in hex (the cache only hashes and compares bytes, so those cost what
//! real tokens would). Values are `Claims` shaped like the server's; a hit returns a clone
//! (three small strings allocated). Memory per entry is the `cache_memory` bench's.
//!
//! Times are the benchmark thread's on-CPU time by default (see `timed`), so that other work
//! on a shared machine does not inflate them; `TOKENGATE_BENCH_CLOCK=wall` for wall time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

// Not every shared helper is used here (`now`, `rss_bytes`).
#[allow(dead_code)]
mod common;

use std::hint::black_box;
use std::mem;
use std::sync::Arc;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion};
use tokengate_core::cache::{allocation_cost, claims_heap_bytes, CacheLimits, VerifiedCache};
use tokengate_core::{Algorithm, Claims, Revocation, RevocationIndex, SigningKey, Timestamp};
use uuid::Uuid;

use common::fixtures::{at, claims, T0};
use common::{flat, id, mix, timed};

const LEEWAY: Duration = Duration::from_secs(30);
/// Entries in the 100k cache.
const ENTRIES: u64 = 100_000;
/// Pre-drawn probe positions, a power of two.
const PROBES: usize = 1 << 16;

/// A real token signed with `alg`.
fn signed(alg: Algorithm, claims: &Claims) -> String {
    SigningKey::generate(alg).unwrap().sign(claims).unwrap()
}

/// `template` with its last 16 characters replaced by `n` in hex, in place (no allocation).
fn stamp(token: &mut String, n: u64) {
    let mut hex = [0u8; 16];
    for (i, digit) in hex.iter_mut().enumerate() {
        *digit = b"0123456789abcdef"[(n >> (60 - 4 * i)) as usize & 0xf];
    }
    let start = token.len() - 16;
    token.replace_range(start.., std::str::from_utf8(&hex).unwrap());
}

fn variant(template: &str, n: u64) -> String {
    let mut token = template.to_owned();
    stamp(&mut token, n);
    token
}

/// The limits of the 100k caches: the entry bound binds, not the bytes.
const LIMITS_100K: CacheLimits = CacheLimits {
    max_entries: ENTRIES as usize,
    max_bytes: 1 << 30,
};

/// `value` as the `n`-th token's: its own `jti`, `sid` and `sub` (none of them revoked), so
/// that revocation checks of different tokens read different parts of the index.
fn nth(value: &Claims, n: u64) -> Claims {
    let mut claims = value.clone();
    claims.jti = Uuid::from_u64_pair(n, 1);
    claims.sid = Uuid::from_u64_pair(n, 2);
    claims.sub = Uuid::from_u64_pair(n, 3);
    claims
}

/// Fill `cache` with `ENTRIES` copies of `template` (the `n`-th stamped `mix(n)`: the
/// counters of later insertions never collide with these).
fn fill<V: Clone>(cache: &VerifiedCache<V>, template: &str, value: impl Fn(u64) -> V) {
    for n in 0..ENTRIES {
        let token = variant(template, mix(n));
        assert!(cache.insert(&token, value(n), at(T0 + 900), 1, at(T0)));
    }
}

fn filled(template: &str, value: &Claims) -> VerifiedCache<Claims> {
    let cache = VerifiedCache::for_claims(LIMITS_100K);
    fill(&cache, template, |n| nth(value, n));
    cache
}

/// Up to `PROBES` of the filled tokens (those still cached), in random order, and a mask
/// (a power of two less one) to cycle through them.
fn cached_probes<V: Clone>(cache: &VerifiedCache<V>, template: &str) -> (Vec<String>, usize) {
    let now = at(T0 + 60);
    let probes: Vec<String> = (0..PROBES as u64)
        .map(|i| variant(template, mix(mix(i ^ 0xabcd) % ENTRIES)))
        .filter(|token| cache.get(token, now).is_some())
        .collect();
    assert!(probes.len() > PROBES / 2);
    let mask = probes.len().next_power_of_two() / 2 - 1;
    (probes, mask)
}

/// `hit_hot` (one cached token again and again) and `hit_100k_random` (probes drawn from
/// what is cached: each lookup a different token, mostly not in the CPU caches, neither the
/// probe nor the entry, the worst case for a hit) on `cache`, filled from `template`.
fn bench_hits<V: Clone>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    label: &str,
    cache: &VerifiedCache<V>,
    template: &str,
    now: Timestamp,
) {
    let (hits, mask) = cached_probes(cache, template);
    let hot = hits[0].clone();
    group.bench_function(BenchmarkId::new("hit_hot", label), |b| {
        b.iter_custom(|iters| {
            timed(|| {
                for _ in 0..iters {
                    black_box(cache.get(black_box(&hot), now).unwrap());
                }
            })
        })
    });
    group.bench_function(BenchmarkId::new("hit_100k_random", label), |b| {
        b.iter_custom(|iters| {
            timed(|| {
                for i in 0..iters as usize {
                    black_box(cache.get(black_box(&hits[i & mask]), now).unwrap());
                }
            })
        })
    });
}

fn bench_cache(c: &mut Criterion) {
    let value = claims();
    let now = at(T0 + 60);
    let mut group = c.benchmark_group("cache");
    flat(&mut group);
    for alg in [Algorithm::EdDSA, Algorithm::RS256] {
        let template = signed(alg, &value);
        let label = format!("{}_{}B", alg.as_str(), template.len());
        eprintln!("{label}: filling a cache of {ENTRIES} tokens");
        let cache = filled(&template, &value);
        // Shards are 1 562 entries each: some are full, the rest close to it.
        eprintln!(
            "{label}: {} entries, {:.1} MiB counted",
            cache.len(),
            cache.bytes() as f64 / f64::from(1 << 20)
        );

        bench_hits(&mut group, &label, &cache, &template, now);

        let misses: Vec<String> = (0..PROBES as u64)
            .map(|i| variant(&template, i | 1 << 63))
            .collect();
        assert!(cache.get(&misses[0], now).is_none());
        group.bench_function(BenchmarkId::new("miss_100k", &label), |b| {
            b.iter_custom(|iters| {
                timed(|| {
                    for i in 0..iters as usize {
                        assert!(cache
                            .get(black_box(&misses[i & (PROBES - 1)]), now)
                            .is_none());
                    }
                })
            })
        });

        // Every insertion is a new token into full shards: each one evicts. The value is
        // cloned per insertion, as a caller keeping the verified claims would.
        let mut next = 0u64;
        let mut token = template.clone();
        group.bench_function(BenchmarkId::new("insert_evict_100k", &label), |b| {
            b.iter_custom(|iters| {
                timed(|| {
                    for _ in 0..iters {
                        next += 1;
                        stamp(&mut token, next);
                        black_box(cache.insert(&token, value.clone(), value.exp, 1, now));
                    }
                })
            })
        });
        assert!(cache.len() <= ENTRIES as usize);
    }
    group.finish();
}

/// A request whose token was seen before: the cache hit, then the revocation check that
/// every request makes, against 1 000 000 revoked token ids.
fn bench_seen_before(c: &mut Criterion) {
    const REVOKED: u64 = 1_000_000;
    let now = at(T0 + 60);
    let index = RevocationIndex::new(LEEWAY);
    let revoked = (0..REVOKED).map(|n| Revocation::Token {
        jti: id(n),
        exp: at(T0 + 3_600),
    });
    assert_eq!(index.load(revoked, now) as u64, REVOKED);

    let mut group = c.benchmark_group("seen_before_1M_revoked");
    flat(&mut group);
    for alg in [Algorithm::EdDSA, Algorithm::RS256] {
        let value = claims();
        let token = signed(alg, &value);
        let cache = filled(&token, &value);
        assert!(cache.insert(&token, value.clone(), value.exp.plus(LEEWAY), 1, now));
        // The same token again and again: everything it touches stays in the CPU caches.
        group.bench_function(BenchmarkId::new("hot", alg.as_str()), |b| {
            b.iter_custom(|iters| {
                timed(|| {
                    for _ in 0..iters {
                        let claims = cache.get(black_box(&token), now).unwrap();
                        index.check(&claims, now).unwrap();
                        black_box(claims);
                    }
                })
            })
        });
        // A different cached token (its own jti, sid and sub) each time.
        let (probes, mask) = cached_probes(&cache, &token);
        group.bench_function(BenchmarkId::new("100k_random", alg.as_str()), |b| {
            b.iter_custom(|iters| {
                timed(|| {
                    for i in 0..iters as usize {
                        let claims = cache.get(black_box(&probes[i & mask]), now).unwrap();
                        index.check(&claims, now).unwrap();
                        black_box(claims);
                    }
                })
            })
        });
    }
    group.finish();
}

/// The hits again with `Arc<Claims>` values: a clone is then one reference count, not three
/// strings, which matters when the entries are not in the CPU caches.
fn bench_arc(c: &mut Criterion) {
    let value = claims();
    let now = at(T0 + 60);
    let template = signed(Algorithm::EdDSA, &value);
    let label = format!("EdDSA_{}B", template.len());
    let cache: VerifiedCache<Arc<Claims>> = VerifiedCache::new(LIMITS_100K, |claims| {
        allocation_cost(mem::size_of::<Claims>() + 16) + claims_heap_bytes(claims)
    });
    fill(&cache, &template, |n| Arc::new(nth(&value, n)));

    let mut group = c.benchmark_group("cache_arc");
    flat(&mut group);
    bench_hits(&mut group, &label, &cache, &template, now);
    group.finish();
}

criterion_group!(benches, bench_cache, bench_arc, bench_seen_before);
criterion_main!(benches);
