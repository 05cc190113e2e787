#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;

use proptest::prelude::*;

use super::*;

/// The benches' claims fixtures (`claims`, issued at `T0`), shared by path.
#[path = "../../benches/common/fixtures.rs"]
mod fixtures;

use fixtures::{at, claims, T0};

fn limits(max_entries: usize, max_bytes: usize) -> CacheLimits {
    CacheLimits {
        max_entries,
        max_bytes,
    }
}

/// A cache of plain numbers (no heap).
fn numbers(max_entries: usize, max_bytes: usize) -> VerifiedCache<u64> {
    VerifiedCache::new(limits(max_entries, max_bytes), |_| 0)
}

/// A cache whose every token hashes to `42`: one shard, one home bucket, one tag, so every
/// lookup walks past the others and only the byte comparison tells tokens apart.
fn colliding(max_entries: usize, max_bytes: usize) -> VerifiedCache<u64> {
    VerifiedCache::with_parts(
        limits(max_entries, max_bytes),
        |_| 0,
        0,
        TokenHasher::Fixed(|_| 42),
    )
}

/// A one-shard cache with the real hasher: CLOCK's order is then the test's to see.
fn one_shard(max_entries: usize) -> VerifiedCache<u64> {
    VerifiedCache::with_parts(
        limits(max_entries, 1 << 20),
        |_| 0,
        0,
        TokenHasher::Seeded(RandomState::default()),
    )
}

fn token(n: usize) -> String {
    format!("eyJhbGciOiJFZERTQSJ9.eyJqdGkiOiJ7bn0ifQ.sig-{n:08}")
}

/// Every internal invariant of every shard; panics on the first broken one.
fn check_invariants<V: Clone>(cache: &VerifiedCache<V>) {
    let mut total_len = 0;
    let mut total_bytes = 0;
    for shard in cache.shards.iter() {
        let shard = read(shard);
        assert!(
            shard.len <= shard.max_entries,
            "entries over the shard bound"
        );
        assert!(shard.bytes <= shard.max_bytes, "bytes over the shard bound");
        assert_eq!(shard.max_entries, cache.shard_entries);
        assert_eq!(shard.max_bytes, cache.shard_bytes);
        if shard.slots.is_empty() {
            assert!(shard.index.is_empty());
        } else {
            assert!(shard.index.len() >= 2 * shard.slots.len());
            assert!(shard.index.len().is_power_of_two());
        }
        let mut charges = 0;
        let mut full = 0;
        for (slot, s) in shard.slots.iter().enumerate() {
            if let Some(entry) = &s.entry {
                full += 1;
                charges += entry.charge;
                assert_eq!(entry.hash, cache.hasher.hash(&entry.token));
                assert_eq!(shard.find(entry.hash, &entry.token), Some(slot));
                assert!(shard.earliest <= entry.exp);
            }
        }
        assert_eq!(full, shard.len);
        assert_eq!(shard.bytes, shard.arrays_bytes() + charges);
        let used = shard.index.iter().filter(|&&w| w != 0).count();
        assert_eq!(used, shard.len, "index entries");
        for &word in shard.index.iter().filter(|&&w| w != 0) {
            let entry = shard.slots[slot_number(word)].entry.as_ref().unwrap();
            assert_eq!(word >> 32, entry.hash & 0xffff_ffff);
        }
        // The free list: exactly the empty slots, no cycle.
        let mut free = 0;
        let mut at = shard.free;
        while at != NIL {
            assert!(shard.slots[at as usize].entry.is_none());
            free += 1;
            assert!(free <= shard.slots.len(), "free list cycle");
            at = shard.slots[at as usize].next_free;
        }
        assert_eq!(free, shard.slots.len() - shard.len);
        total_len += shard.len;
        total_bytes += shard.bytes;
    }
    assert_eq!(cache.len(), total_len);
    assert_eq!(cache.bytes(), total_bytes);
    assert!(total_len <= cache.limits().max_entries);
    assert!(total_bytes <= cache.limits().max_bytes);
}

#[test]
fn a_hit_needs_the_exact_bytes() {
    let cache = numbers(1_000, 1 << 20);
    let t = "aaa.bbb.ccc";
    assert!(cache.insert(t, 7, at(T0 + 900), 1, at(T0)));
    assert_eq!(cache.get(t, at(T0)), Some(7));
    for other in [
        "aaa.bbb.ccd",
        "baa.bbb.ccc",
        "aaa.bbb.cc",
        "aaa.bbb.ccc.",
        "",
        "AAA.bbb.ccc",
    ] {
        assert_eq!(cache.get(other, at(T0)), None, "{other:?}");
    }
    check_invariants(&cache);
}

#[test]
fn tokens_differing_in_one_byte_in_the_same_bucket_are_told_apart() {
    let cache = colliding(1_000, 1 << 20);
    let base = token(1);
    let mut variants = vec![base.clone()];
    for i in 0..base.len() {
        let mut bytes = base.clone().into_bytes();
        bytes[i] ^= 0x01;
        variants.push(String::from_utf8(bytes).unwrap());
    }
    assert!(cache.insert(&base, 0, at(T0 + 900), 1, at(T0)));
    for v in &variants[1..] {
        assert_eq!(cache.get(v, at(T0)), None, "{v:?} hit {base:?}'s entry");
    }
    for (n, v) in variants.iter().enumerate() {
        assert!(cache.insert(v, n as u64, at(T0 + 900), 1, at(T0)));
    }
    assert_eq!(cache.len(), variants.len());
    check_invariants(&cache);
    for (n, v) in variants.iter().enumerate() {
        assert_eq!(cache.get(v, at(T0)), Some(n as u64));
    }
    // Removing entries from the middle of the probe run (backward shift) loses no other.
    for (n, v) in variants.iter().enumerate().step_by(3) {
        assert!(cache.insert(v, n as u64, at(T0), 2, at(T0)));
    }
    assert_eq!(cache.retain_keys(|k| k != 2), variants.len().div_ceil(3));
    check_invariants(&cache);
    for (n, v) in variants.iter().enumerate() {
        let want = (n % 3 != 0).then_some(n as u64);
        assert_eq!(cache.get(v, at(T0)), want, "{v:?}");
    }
}

#[test]
fn hits_until_exp_then_removes_the_entry_on_sight() {
    let cache = numbers(1_000, 1 << 20);
    assert!(cache.insert("t", 1, at(T0 + 10), 1, at(T0)));
    assert_eq!(cache.get("t", at(T0 + 10)), Some(1));
    assert_eq!(cache.len(), 1);
    assert_eq!(cache.get("t", at(T0 + 11)), None);
    assert_eq!(cache.len(), 0);
    check_invariants(&cache);
    // A lookup at an earlier instant no longer finds it either: it is gone.
    assert_eq!(cache.get("t", at(T0)), None);
}

#[test]
fn refuses_expired_and_oversized_tokens() {
    let cache = numbers(1_000, 1 << 20);
    assert!(!cache.insert("t", 1, at(T0 - 1), 1, at(T0)));
    assert!(cache.insert("t", 1, at(T0), 1, at(T0)));
    let largest = "x".repeat(MAX_CACHED_TOKEN_BYTES);
    let too_large = "x".repeat(MAX_CACHED_TOKEN_BYTES + 1);
    assert!(cache.insert(&largest, 2, at(T0 + 9), 1, at(T0)));
    assert!(!cache.insert(&too_large, 3, at(T0 + 9), 1, at(T0)));
    assert_eq!(cache.get(&largest, at(T0)), Some(2));
    assert_eq!(cache.get(&too_large, at(T0)), None);
    assert_eq!(cache.len(), 2);
    check_invariants(&cache);
}

#[test]
fn inserting_again_replaces() {
    let cache = numbers(1_000, 1 << 20);
    assert!(cache.insert("t", 1, at(T0 + 10), 1, at(T0)));
    let bytes = cache.bytes();
    assert!(cache.insert("t", 2, at(T0 + 20), 2, at(T0)));
    assert_eq!(cache.len(), 1);
    assert_eq!(cache.bytes(), bytes);
    assert_eq!(cache.get("t", at(T0 + 15)), Some(2));
    assert_eq!(cache.retain_keys(|k| k != 1), 0);
    assert_eq!(cache.retain_keys(|k| k != 2), 1);
    check_invariants(&cache);
}

#[test]
fn a_flood_of_distinct_tokens_stays_within_the_entry_bound() {
    let cache = numbers(256, 1 << 24);
    for n in 0..20_000 {
        assert!(cache.insert(&token(n), n as u64, at(T0 + 900), 1, at(T0)));
        assert!(cache.len() <= 256);
    }
    // Every shard is full: 64 shards of 4.
    assert_eq!(cache.len(), 256);
    check_invariants(&cache);
    // Eviction keeps working: new tokens still go in and are found.
    for n in 20_000..20_100 {
        assert!(cache.insert(&token(n), n as u64, at(T0 + 900), 1, at(T0)));
        assert_eq!(cache.get(&token(n), at(T0)), Some(n as u64));
    }
    check_invariants(&cache);
}

#[test]
fn a_flood_of_large_values_stays_within_the_byte_bound() {
    const MAX_BYTES: usize = 1 << 20;
    let cache: VerifiedCache<Vec<u8>> = VerifiedCache::new(limits(1_000_000, MAX_BYTES), |v| {
        allocation_cost(v.capacity())
    });
    let big = "y".repeat(3_000);
    for n in 0..5_000 {
        let t = format!("{big}{n}");
        assert!(cache.insert(&t, vec![n as u8; 2_000], at(T0 + 900), 1, at(T0)));
        assert!(cache.bytes() <= MAX_BYTES);
    }
    check_invariants(&cache);
    // About 5 KiB charged per entry: 200 at most in 1 MiB; at least half of that is used.
    let len = cache.len();
    assert!((100..=200).contains(&len), "{len} entries");
    // A value too large for a shard's share (16 KiB) is refused, and evicts nothing.
    assert!(!cache.insert("huge", vec![0; MAX_BYTES / 64], at(T0 + 900), 1, at(T0)));
    assert_eq!(cache.len(), len);
}

#[test]
fn limits_too_small_to_hold_anything_cache_nothing() {
    for limits in [
        limits(0, 1 << 20),
        limits(1_000, 0),
        limits(1_000, 64 * 100),
    ] {
        let cache: VerifiedCache<u64> = VerifiedCache::new(limits, |_| 0);
        assert!(!cache.insert("t", 1, at(T0 + 900), 1, at(T0)), "{limits:?}");
        assert!(cache.is_empty());
        assert_eq!(cache.bytes(), 0);
    }
    // Fewer entries than shards: fewer shards, and the bound still holds.
    let cache = numbers(10, 1 << 20);
    assert_eq!(cache.shards.len(), 8);
    for n in 0..1_000 {
        cache.insert(&token(n), 1, at(T0 + 900), 1, at(T0));
    }
    assert!(cache.len() <= 10);
    check_invariants(&cache);
}

#[test]
fn clock_keeps_an_entry_that_is_hit() {
    let cache = one_shard(16);
    assert!(cache.insert("hot", 0, at(T0 + 900), 1, at(T0)));
    for n in 0..1_000 {
        assert!(cache.insert(&token(n), n as u64, at(T0 + 900), 1, at(T0)));
        assert_eq!(
            cache.get("hot", at(T0)),
            Some(0),
            "evicted after {n} inserts"
        );
    }
    assert_eq!(cache.len(), 16);
    // An entry never hit is gone once 16 newer ones went in.
    assert_eq!(cache.get(&token(0), at(T0)), None);
    check_invariants(&cache);
}

#[test]
fn eviction_takes_an_expired_entry_before_a_referenced_one() {
    let cache = one_shard(4);
    for (n, exp) in [(0, 900), (1, 900), (2, 900), (3, 5)] {
        assert!(cache.insert(&token(n), n as u64, at(T0 + exp), 1, at(T0)));
        assert!(cache.get(&token(n), at(T0)).is_some());
    }
    // All four were hit; the fourth has expired by now.
    assert!(cache.insert(&token(4), 4, at(T0 + 900), 1, at(T0 + 10)));
    for n in [0, 1, 2, 4] {
        assert_eq!(cache.get(&token(n), at(T0 + 10)), Some(n as u64));
    }
    check_invariants(&cache);
}

#[test]
fn retain_keys_drops_what_a_removed_key_verified() {
    let cache = numbers(1_000, 1 << 20);
    for n in 0..100 {
        assert!(cache.insert(&token(n), n as u64, at(T0 + 900), n as u64 % 3, at(T0)));
    }
    let bytes = cache.bytes();
    assert_eq!(cache.retain_keys(|key_id| key_id != 1), 33);
    assert_eq!(cache.len(), 67);
    assert!(cache.bytes() < bytes);
    for n in 0..100 {
        let want = (n % 3 != 1).then_some(n as u64);
        assert_eq!(cache.get(&token(n), at(T0)), want);
    }
    check_invariants(&cache);
}

#[test]
fn purge_expired_removes_only_the_expired() {
    let cache = numbers(1_000, 1 << 20);
    for n in 0..100 {
        assert!(cache.insert(&token(n), n as u64, at(T0 + n as i64), 1, at(T0)));
    }
    assert_eq!(cache.purge_expired(at(T0)), 0);
    assert_eq!(cache.purge_expired(at(T0 + 50)), 50);
    assert_eq!(cache.len(), 50);
    assert_eq!(cache.purge_expired(at(T0 + 50)), 0);
    check_invariants(&cache);
    assert_eq!(cache.get(&token(50), at(T0 + 50)), Some(50));
    assert_eq!(cache.purge_expired(at(T0 + 1_000)), 50);
    assert!(cache.is_empty());
    check_invariants(&cache);
}

#[test]
fn clear_frees_everything_and_the_cache_still_works() {
    let cache = numbers(1_000, 1 << 20);
    for n in 0..500 {
        cache.insert(&token(n), 1, at(T0 + 900), 1, at(T0));
    }
    assert!(cache.bytes() > 0);
    cache.clear();
    assert_eq!((cache.len(), cache.bytes()), (0, 0));
    assert_eq!(cache.get(&token(1), at(T0)), None);
    assert!(cache.insert(&token(1), 2, at(T0 + 900), 1, at(T0)));
    assert_eq!(cache.get(&token(1), at(T0)), Some(2));
    check_invariants(&cache);
}

#[test]
fn caches_claims_and_counts_their_strings() {
    let cache = VerifiedCache::for_claims(CacheLimits::default());
    let c = claims();
    let t = token(1);
    assert!(cache.insert(&t, c.clone(), c.exp, 1, at(T0)));
    assert_eq!(cache.get(&t, at(T0)), Some(c.clone()));
    // "tokengate" twice (32 each) and a 24-byte email (48), plus the token.
    assert_eq!(claims_heap_bytes(&c), 32 + 32 + 48);
    let shard = cache.shard(cache.hasher.hash(t.as_bytes()));
    let arrays = read(shard).arrays_bytes();
    assert_eq!(
        cache.bytes(),
        arrays + allocation_cost(t.len()) + claims_heap_bytes(&c)
    );
}

#[test]
fn fills_its_byte_budget_without_wasting_slots() {
    const MAX_BYTES: usize = 1 << 20;
    let cache: VerifiedCache<Claims> = VerifiedCache::with_parts(
        limits(1 << 17, MAX_BYTES),
        claims_heap_bytes,
        0,
        TokenHasher::Seeded(RandomState::default()),
    );
    let c = claims();
    let long = "z".repeat(440);
    for n in 0..5_000 {
        assert!(cache.insert(&format!("{long}{n}"), c.clone(), c.exp, 1, at(T0)));
    }
    check_invariants(&cache);
    let shard = read(&cache.shards[0]);
    // Slots grow by 1/64 at least once the bytes are tight: few stay empty.
    assert!(shard.slots.len() - shard.len <= shard.slots.len() / 64 + 1);
    assert!(
        shard.bytes >= MAX_BYTES / 100 * 95,
        "{} bytes used",
        shard.bytes
    );
}

/// The figure the module docs give.
#[cfg(target_pointer_width = "64")]
#[test]
fn a_claims_slot_is_208_bytes() {
    assert_eq!(mem::size_of::<Slot<Claims>>(), 208);
}

#[test]
fn concurrent_lookups_and_insertions_see_only_their_own_values() {
    hammer(&numbers(512, 1 << 20));
}

#[test]
fn concurrent_use_of_one_shard_where_every_token_collides() {
    hammer(&colliding(64, 1 << 20));
}

/// Four threads insert and look up tokens of a shared pool for a while; one of them also
/// purges and drops a key now and then. Every hit must carry the token's own value.
fn hammer(cache: &VerifiedCache<u64>) {
    let hits = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for thread in 0..4u64 {
            let hits = &hits;
            s.spawn(move || {
                let mut x = thread.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                for i in 0..20_000u64 {
                    // xorshift: each thread its own sequence of tokens from a shared pool.
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let n = ((x >> 8) % 2_000) as usize;
                    let secs = T0 + (i / 1_000) as i64;
                    let now = at(secs);
                    if x % 4 == 0 {
                        cache.insert(&token(n), n as u64, at(secs + 5), n as u64 % 5, now);
                    } else if let Some(v) = cache.get(&token(n), now) {
                        assert_eq!(v, n as u64, "token {n} yielded another's value");
                        hits.fetch_add(1, Ordering::Relaxed);
                    }
                    if thread == 0 && i % 1_000 == 0 {
                        cache.purge_expired(now);
                        cache.retain_keys(|k| k != 4);
                    }
                }
            });
        }
    });
    assert!(hits.load(Ordering::Relaxed) > 0);
    check_invariants(cache);
}

/// What the property test does to a cache.
#[derive(Clone, Debug)]
enum Op {
    Insert { token: Vec<u8>, ttl: i64, key: u64 },
    Get(Vec<u8>),
    Advance(i64),
    Purge,
    RetainKeys(u64),
    Clear,
}

/// Short tokens over three letters: many share prefixes or differ in one byte.
fn token_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((0u8..3).prop_map(|b| b'a' + b), 0..6)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (token_bytes(), -1i64..10, 0u64..3).prop_map(|(token, ttl, key)| Op::Insert { token, ttl, key }),
        4 => token_bytes().prop_map(Op::Get),
        2 => (0i64..4).prop_map(Op::Advance),
        1 => Just(Op::Purge),
        1 => (0u64..3).prop_map(Op::RetainKeys),
        1 => Just(Op::Clear),
    ]
}

/// A value that names the bytes it was cached for, when and until when.
type Tagged = (Vec<u8>, u64, i64);

fn weak_hash(token: &[u8]) -> u64 {
    // Tokens with the same first byte collide completely.
    token
        .first()
        .map_or(0, |&b| u64::from(b).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn never_over_its_bounds_and_never_a_value_for_other_bytes(
        ops in prop::collection::vec(op(), 1..120),
        max_entries in 0usize..40,
        max_bytes in 0usize..12_000,
        shard_bits in 0u32..3,
        weak in any::<bool>(),
    ) {
        let hasher = if weak {
            TokenHasher::Fixed(weak_hash)
        } else {
            TokenHasher::Seeded(RandomState::default())
        };
        let cache: VerifiedCache<Tagged> = VerifiedCache::with_parts(
            limits(max_entries, max_bytes),
            |v| allocation_cost(v.0.capacity()),
            shard_bits,
            hasher,
        );
        // The latest value each token was cached with (what a hit may return).
        let mut model: HashMap<Vec<u8>, (Tagged, u64)> = HashMap::new();
        let mut now = T0;
        for (n, op) in ops.into_iter().enumerate() {
            match op {
                Op::Insert { token, ttl, key } => {
                    let value = (token.clone(), n as u64, now + ttl);
                    let text = String::from_utf8(token.clone()).unwrap();
                    if cache.insert(&text, value.clone(), at(now + ttl), key, at(now)) {
                        model.insert(token, (value, key));
                    }
                }
                Op::Get(token) => {
                    let text = String::from_utf8(token.clone()).unwrap();
                    if let Some(got) = cache.get(&text, at(now)) {
                        prop_assert_eq!(&got.0, &token, "a value cached for other bytes");
                        let (want, _) = model.get(&token).expect("a hit for bytes never cached");
                        prop_assert_eq!(&got, want, "not the latest value");
                        prop_assert!(now <= got.2, "a hit past exp");
                    }
                }
                Op::Advance(secs) => now += secs,
                Op::Purge => {
                    cache.purge_expired(at(now));
                }
                Op::RetainKeys(gone) => {
                    cache.retain_keys(|key| key != gone);
                    model.retain(|_, (_, key)| *key != gone);
                }
                Op::Clear => {
                    cache.clear();
                    model.clear();
                }
            }
            prop_assert!(cache.len() <= max_entries);
            prop_assert!(cache.bytes() <= max_bytes);
            check_invariants(&cache);
        }
    }
}
