//! [`VerifiedCache`]: tokens already verified, so that a token presented again is not
//! verified again.
//!
//! Clients present the same access token for minutes, and an RS256 or ES256 signature check
//! costs tens of microseconds. The cache remembers what [`Verifier::verify`] returned for a
//! token's exact bytes until the token expires; a hit costs a hash of the token, a shard's
//! read lock, one comparison of the stored bytes and a clone of the value.
//!
//! ```
//! use std::time::Duration;
//! use tokengate_core::cache::{CacheLimits, VerifiedCache};
//! use tokengate_core::{Algorithm, RevocationIndex, SigningKey, Timestamp, Verifier, VerifierConfig};
//! # use tokengate_core::{Claims, Role};
//! let leeway = Duration::from_secs(30);
//! let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
//! let config = VerifierConfig { issuer: "https://auth.example".into(), audience: "api".into(), leeway };
//! let verifier = Verifier::new(config, vec![key.verifying_key()]);
//! let index = RevocationIndex::new(leeway);
//! let cache = VerifiedCache::for_claims(CacheLimits::default());
//! // The caller's name for the key set the verifier holds (see "Key identity" below).
//! let key_id = 1;
//! # let now = Timestamp::from_secs(1_200);
//! # let token = key.sign(&Claims {
//! #     iss: "https://auth.example".into(), sub: uuid::Uuid::new_v4(), aud: "api".into(),
//! #     iat: Timestamp::from_secs(1_000), nbf: Timestamp::from_secs(1_000),
//! #     exp: Timestamp::from_secs(1_900), jti: uuid::Uuid::new_v4(),
//! #     sid: uuid::Uuid::new_v4(), email: "a@example.com".into(), role: Role::User,
//! # }).unwrap();
//!
//! let claims = match cache.get(&token, now) {
//!     Some(claims) => claims,
//!     None => {
//!         // Only a success is cached: a refused token is verified (and refused) every time.
//!         let claims = verifier.verify(&token, now).unwrap();
//!         // The verifier accepts the token until `exp + leeway`: so may the cache.
//!         cache.insert(&token, claims.clone(), claims.exp.plus(leeway), key_id, now);
//!         claims
//!     }
//! };
//! // Revocation is checked on every request, cached or not.
//! assert_eq!(index.check(&claims, now), Ok(()));
//! assert_eq!(cache.get(&token, now), Some(claims));
//! ```
//!
//! # What the caller must do
//!
//! - Cache only successes. A token that failed verification is never inserted, so an
//!   attacker's forgeries cost a verification each and take no room.
//! - Pass as `exp` the last second at which the verifier would still accept the token (its
//!   `exp` claim plus the verifier's leeway). The cache takes it as given: a hit requires
//!   `now <= exp`. (`nbf` needs no care: a token that verified at some instant stays past its
//!   `nbf` at every later one.)
//! - Keep checking revocation on every request ([`RevocationIndex::check`]): the cache only
//!   stands in for the signature and claim checks.
//! - When the key set changes, drop the entries verified by keys that left it
//!   ([`VerifiedCache::retain_keys`]); when the verifier's issuer, audience or leeway change,
//!   [`VerifiedCache::clear`]. Do it after the verifier has the new keys or settings, and once
//!   more a moment later (the next periodic sweep will do): a verification that began before
//!   the change may insert its result after the first sweep.
//!
//! # Key identity
//!
//! Each entry records a `key_id: u64`, the caller's name for the key that verified the token.
//! It must change whenever the key material a `kid` names changes (a counter bumped on every
//! key-set load, or a hash of the public key, not the `kid` alone). A caller that cannot tell
//! which key verified a token may pass one id per key set (a generation number) and, on
//! rotation, keep only the entries of the new generation: every token is then verified once
//! more after a rotation, and never accepted on the strength of a key that left.
//!
//! # Exact keying
//!
//! Entries are found through a 64-bit hash of the token (foldhash, seeded at random per
//! cache), but a hit compares the full stored token bytes: no bytes other than the ones
//! inserted ever yield a value, whatever the hash does. An attacker cannot pick colliding
//! tokens anyway: only tokens that verified are inserted, and the seed is unknown to them. The
//! byte comparison is not constant-time; it is only reached when the secret-seeded 64-bit
//! hashes are equal, so its timing tells nothing about stored tokens to someone who can only
//! send guesses.
//!
//! # Bounds and memory
//!
//! The cache is split into up to [`SHARDS`] shards by hash, each behind its own
//! [`RwLock`] (hits take the read lock, so concurrent hits on one shard do not wait on each
//! other), and each shard holds at most `max_entries / shards` entries and
//! `max_bytes / shards` bytes of [`CacheLimits`].
//!
//! Bytes are counted conservatively: the shard's slot array and hash index at their
//! allocated capacity, plus per entry the token's allocation and the value's heap bytes as
//! reported by the cache's `heap_bytes` function ([`claims_heap_bytes`] for [`Claims`]).
//! Every allocation is charged [`allocation_cost`] (rounded up to 16 bytes, plus 16 for the
//! allocator's header), so the count is an upper bound of what glibc's malloc hands out.
//! A shard grows its slot array only as far as its remaining bytes could fill with entries
//! of the average size, and never past its byte limit; beyond that it evicts. So `bytes() <=
//! max_bytes` at all times, whatever is inserted: a flood of distinct valid tokens only
//! evicts.
//!
//! Per entry, with a [`Claims`] value (x86-64): a slot of 208 bytes (the value inline, the
//! token pointer, hash, `exp`, `key_id`, charge, free-list link and reference bit), 16–32
//! bytes of hash index (two to four 8-byte buckets per slot, half full at most), the token
//! (its length rounded up to 16, plus 16) and the three claim strings (`iss`, `aud`, `email`:
//! 112 bytes for the server's `tokengate`, `tokengate` and a 24-byte address). Measured by
//! the `cache_memory` bench (a counting allocator; see BENCHMARKS.md), at the default limits:
//!
//! | tokens | entries held | counted per entry | allocated per entry | counted | RSS |
//! |---|---|---|---|---|---|
//! | EdDSA, 533 bytes | 68 608 | 911 | 814 | 59.6 MiB | 57.7 MiB |
//! | RS256, 789 bytes | 53 824 | 1 156 | 1 059 | 59.3 MiB | 57.8 MiB |
//! | 4 KiB, 3 KiB of claims | 8 448 | 7 407 | 7 326 | 59.7 MiB | 59.8 MiB |
//! | 32 bytes (the entry bound binds) | 131 072 | 368 | 287 | 46.0 MiB | 46.4 MiB |
//!
//! The default limits, [`CacheLimits::DEFAULT`], are 131 072 entries and 60 MiB: never more
//! than 60 MiB counted however large the tokens, plus 64 shard headers (a few KiB) and, while
//! a shard grows, its old slot array and index until they are copied (at most one shard's
//! share, under 1 MiB): under 64 MiB in the worst case.
//!
//! Tokens longer than [`MAX_CACHED_TOKEN_BYTES`] are not cached.
//!
//! # Eviction
//!
//! Per shard, CLOCK (second chance): each slot has a reference bit, set by a hit and clear on
//! insertion. To make room, a hand walks the slots: an expired entry or one whose bit is
//! clear is evicted; a set bit is cleared and the entry passed over. So an entry that was hit
//! since the hand last passed survives, and a flood of tokens each presented once (an
//! attacker's, or a crawler's) evicts mostly its own entries; the walk is at most two turns
//! of the shard. Expired entries are also removed when a lookup finds them and by
//! [`VerifiedCache::purge_expired`].
//!
//! [`Verifier::verify`]: crate::Verifier::verify
//! [`RevocationIndex::check`]: crate::RevocationIndex::check

use std::fmt;
use std::hash::BuildHasher;
use std::mem;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use foldhash::fast::RandomState;

use crate::claims::Claims;
use crate::time::Timestamp;

/// Tokens longer than this are not cached (tokengate's own are under 1 KiB; a 4096-bit RS256
/// token with a few claims is under 2 KiB).
pub const MAX_CACHED_TOKEN_BYTES: usize = 4096;

/// The most shards a cache has: fewer only when `max_entries` is below this.
pub const SHARDS: usize = 64;

/// The most slots one shard may have: slot numbers are stored as `u32`, plus one.
const MAX_SHARD_ENTRIES: usize = 1 << 30;

/// The smallest slot array a shard allocates.
const MIN_SLOTS: usize = 4;

/// End of a shard's free list.
const NIL: u32 = u32::MAX;

/// How many entries and bytes a [`VerifiedCache`] may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheLimits {
    /// The most entries. Split evenly between the shards (rounded down).
    pub max_entries: usize,
    /// The most bytes, counted as the module docs say: arrays, tokens and values, with an
    /// allocator's overhead. Split evenly between the shards (rounded down).
    pub max_bytes: usize,
}

impl CacheLimits {
    /// 131 072 entries and 60 MiB; under 64 MiB in the worst case (see the module docs).
    pub const DEFAULT: CacheLimits = CacheLimits {
        max_entries: 1 << 17,
        max_bytes: 60 << 20,
    };
}

impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits::DEFAULT
    }
}

/// What an allocation of `bytes` bytes is counted as: rounded up to 16 bytes plus 16 for the
/// allocator's header (glibc's malloc: an 8-byte header, 16-byte granularity, 32 bytes at
/// least), and nothing for no allocation. For `heap_bytes` functions of other value types.
///
/// ```
/// use tokengate_core::cache::allocation_cost;
/// assert_eq!(allocation_cost(0), 0);
/// assert_eq!(allocation_cost(1), 32);
/// assert_eq!(allocation_cost(450), 480);
/// ```
pub const fn allocation_cost(bytes: usize) -> usize {
    if bytes == 0 {
        0
    } else {
        bytes.saturating_add(15) / 16 * 16 + 16
    }
}

/// The heap bytes of [`Claims`]: its three strings, at their capacity.
pub fn claims_heap_bytes(claims: &Claims) -> usize {
    allocation_cost(claims.iss.capacity())
        + allocation_cost(claims.aud.capacity())
        + allocation_cost(claims.email.capacity())
}

/// How tokens are hashed. Tests also use fixed functions, to force collisions.
#[derive(Clone)]
enum TokenHasher {
    Seeded(RandomState),
    #[cfg(test)]
    Fixed(fn(&[u8]) -> u64),
}

impl TokenHasher {
    fn hash(&self, token: &[u8]) -> u64 {
        match self {
            TokenHasher::Seeded(state) => state.hash_one(token),
            #[cfg(test)]
            TokenHasher::Fixed(f) => f(token),
        }
    }
}

/// One cached token.
struct Entry<V> {
    hash: u64,
    token: Box<[u8]>,
    /// The last second at which a lookup hits.
    exp: Timestamp,
    key_id: u64,
    /// What this entry adds to its shard's bytes: the token's allocation and the value's heap.
    charge: usize,
    value: V,
}

struct Slot<V> {
    entry: Option<Entry<V>>,
    /// The next free slot while this one is free ([`NIL`] at the end).
    next_free: u32,
    /// CLOCK's reference bit: set by a hit (under the read lock, hence atomic), cleared by the
    /// hand and by insertion.
    referenced: AtomicBool,
}

/// One shard: an arena of slots, and an open-addressing index of them.
///
/// The index has a power-of-two number of buckets, at least twice the slots, so it is at
/// most half full and every probe ends at an empty bucket. A bucket is `0` (empty) or the low
/// 32 bits of the token's hash (which also pick the home bucket) above the slot number plus
/// one. Linear probing; removal shifts the following entries back, so there are no
/// tombstones.
struct Shard<V> {
    slots: Vec<Slot<V>>,
    index: Box<[u64]>,
    free: u32,
    hand: usize,
    len: usize,
    /// The arrays at their capacity plus every entry's charge; at most `max_bytes`.
    bytes: usize,
    /// At most the earliest `exp` held (`Timestamp::MAX` when empty).
    earliest: Timestamp,
    max_entries: usize,
    max_bytes: usize,
}

fn slot_number(word: u64) -> usize {
    (word as u32 as usize).wrapping_sub(1)
}

fn bucket(hash: u64, slot: usize) -> u64 {
    (hash << 32) | (slot as u64 + 1)
}

fn home(hash: u64, mask: usize) -> usize {
    (hash as u32 as usize) & mask
}

/// What a shard's arrays cost for `slots` slots and `buckets` index buckets.
fn arrays_cost<V>(slots: usize, buckets: usize) -> usize {
    allocation_cost(slots.saturating_mul(mem::size_of::<Slot<V>>()))
        + allocation_cost(buckets.saturating_mul(mem::size_of::<u64>()))
}

fn buckets_for(slots: usize) -> usize {
    if slots == 0 {
        0
    } else {
        slots.saturating_mul(2).next_power_of_two().max(8)
    }
}

impl<V> Shard<V> {
    fn new(max_entries: usize, max_bytes: usize) -> Self {
        Shard {
            slots: Vec::new(),
            index: Box::default(),
            free: NIL,
            hand: 0,
            len: 0,
            bytes: 0,
            earliest: Timestamp::MAX,
            max_entries,
            max_bytes,
        }
    }

    fn arrays_bytes(&self) -> usize {
        arrays_cost::<V>(self.slots.capacity(), self.index.len())
    }

    /// The slot holding exactly `token`.
    fn find(&self, hash: u64, token: &[u8]) -> Option<usize> {
        if self.index.is_empty() {
            return None;
        }
        let mask = self.index.len() - 1;
        let tag = hash as u32;
        let mut at = home(hash, mask);
        loop {
            let word = self.index[at];
            if word == 0 {
                return None;
            }
            if (word >> 32) as u32 == tag {
                let slot = slot_number(word);
                if let Some(entry) = self.slots.get(slot).and_then(|s| s.entry.as_ref()) {
                    if entry.hash == hash && *entry.token == *token {
                        return Some(slot);
                    }
                }
            }
            at = (at + 1) & mask;
        }
    }

    fn index_insert(&mut self, hash: u64, slot: usize) {
        let mask = self.index.len() - 1;
        let mut at = home(hash, mask);
        while self.index[at] != 0 {
            at = (at + 1) & mask;
        }
        self.index[at] = bucket(hash, slot);
    }

    fn index_remove(&mut self, hash: u64, slot: usize) {
        let mask = self.index.len() - 1;
        let wanted = bucket(hash, slot);
        let mut hole = home(hash, mask);
        loop {
            match self.index[hole] {
                0 => return,
                word if word == wanted => break,
                _ => hole = (hole + 1) & mask,
            }
        }
        // Backward shift: move each following entry into the hole when the hole lies
        // between its home and where it sits, so that probes from its home still find it.
        let mut next = hole;
        loop {
            next = (next + 1) & mask;
            let word = self.index[next];
            if word == 0 {
                break;
            }
            let its_home = home(word >> 32, mask);
            if (next.wrapping_sub(its_home) & mask) >= (next.wrapping_sub(hole) & mask) {
                self.index[hole] = word;
                hole = next;
            }
        }
        self.index[hole] = 0;
    }

    /// Remove the entry in `slot` (which must hold one) and free the slot.
    fn remove(&mut self, slot: usize) {
        let Some(entry) = self.slots.get_mut(slot).and_then(|s| s.entry.take()) else {
            return;
        };
        self.index_remove(entry.hash, slot);
        self.len -= 1;
        self.bytes -= entry.charge;
        self.slots[slot].next_free = self.free;
        self.free = slot as u32;
        if self.len == 0 {
            self.earliest = Timestamp::MAX;
        }
    }

    /// Add free slots (the shard has none: every slot is full): at most as many as there
    /// are, at least 1/64 as many, and no more than the bytes left could fill with
    /// entries of the average charge, counting the one of `charge` about to go in. So the
    /// arrays do not take bytes that entries will need, and few slots stay empty. `false`
    /// if no growth fits. Rebuilds the index when it needs more buckets.
    fn grow(&mut self, charge: usize) -> bool {
        let old = self.slots.len();
        if old >= self.max_entries {
            return false;
        }
        let entries_bytes = self.bytes - self.arrays_bytes();
        let average = entries_bytes.saturating_add(charge) / (self.len + 1);
        let now_and_later = |slots: usize| {
            let arrays = arrays_cost::<V>(slots, buckets_for(slots));
            arrays.saturating_add(entries_bytes).saturating_add(charge) <= self.max_bytes
                && arrays.saturating_add(average.saturating_mul(slots)) <= self.max_bytes
        };
        let min_step = (old / 64).max(1);
        let mut new = old.saturating_mul(2).max(MIN_SLOTS).min(self.max_entries);
        while !now_and_later(new) {
            if new - old <= min_step {
                return false;
            }
            new = old + ((new - old) / 2).max(min_step);
        }
        self.slots.reserve_exact(new - old);
        self.slots.resize_with(new, || Slot {
            entry: None,
            next_free: NIL,
            referenced: AtomicBool::new(false),
        });
        // Chain the new slots, lowest first, in front of the free list (empty: a shard only
        // grows when it has no free slot).
        for slot in (old..new).rev() {
            self.slots[slot].next_free = self.free;
            self.free = slot as u32;
        }
        let buckets = buckets_for(new);
        if buckets != self.index.len() {
            self.index = vec![0u64; buckets].into_boxed_slice();
            for slot in 0..old {
                if let Some(hash) = self.slots[slot].entry.as_ref().map(|e| e.hash) {
                    self.index_insert(hash, slot);
                }
            }
        }
        self.bytes = entries_bytes + self.arrays_bytes();
        true
    }

    /// Evict one entry by CLOCK (expired or unreferenced first); `false` if there is none.
    fn evict_one(&mut self, now: Timestamp) -> bool {
        let n = self.slots.len();
        // After one turn every reference bit is clear: two turns find a victim if any.
        for _ in 0..2 * n {
            let at = self.hand;
            self.hand = if at + 1 >= n { 0 } else { at + 1 };
            let slot = &mut self.slots[at];
            let Some(entry) = &slot.entry else { continue };
            let referenced = slot.referenced.get_mut();
            if now > entry.exp || !*referenced {
                self.remove(at);
                return true;
            }
            *referenced = false;
        }
        false
    }

    fn insert(&mut self, hash: u64, entry: Entry<V>, now: Timestamp) -> bool {
        if let Some(old) = self.find(hash, &entry.token) {
            self.remove(old);
        }
        loop {
            let fits = self.len < self.max_entries
                && self.bytes.saturating_add(entry.charge) <= self.max_bytes;
            if fits && self.free != NIL {
                break;
            }
            if fits && self.grow(entry.charge) {
                continue;
            }
            // Nothing left to evict, and still no room: too large for this shard.
            if !self.evict_one(now) {
                return false;
            }
        }
        let slot = self.free as usize;
        let Some(target) = self.slots.get_mut(slot) else {
            return false;
        };
        self.free = target.next_free;
        target.next_free = NIL;
        *target.referenced.get_mut() = false;
        self.bytes += entry.charge;
        self.len += 1;
        self.earliest = self.earliest.min(entry.exp);
        target.entry = Some(entry);
        self.index_insert(hash, slot);
        true
    }

    /// Remove the entries for which `remove` says so; how many.
    fn remove_where(&mut self, mut remove: impl FnMut(&Entry<V>) -> bool) -> usize {
        let mut removed = 0;
        let mut earliest = Timestamp::MAX;
        for slot in 0..self.slots.len() {
            let Some(entry) = &self.slots[slot].entry else {
                continue;
            };
            if remove(entry) {
                self.remove(slot);
                removed += 1;
            } else {
                earliest = earliest.min(entry.exp);
            }
        }
        self.earliest = earliest;
        removed
    }

    fn clear(&mut self) {
        *self = Shard::new(self.max_entries, self.max_bytes);
    }
}

/// Tokens already verified, with what their verification yielded (`V`: [`Claims`] for
/// tokengate's own tokens), the last second they may be used and the key that verified them.
///
/// Share it as `Arc<VerifiedCache<V>>`; every method takes `&self`. See the
/// [module docs](self) for how to use it, what it costs and how it evicts.
pub struct VerifiedCache<V> {
    hasher: TokenHasher,
    /// `log2` of the number of shards.
    shard_bits: u32,
    shards: Box<[RwLock<Shard<V>>]>,
    heap_bytes: fn(&V) -> usize,
    limits: CacheLimits,
    /// Each shard's share of the limits.
    shard_entries: usize,
    shard_bytes: usize,
}

impl<V> fmt::Debug for VerifiedCache<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedCache")
            .field("limits", &self.limits)
            .field("shards", &self.shards.len())
            .field("len", &self.len())
            .field("bytes", &self.bytes())
            .finish_non_exhaustive()
    }
}

impl VerifiedCache<Claims> {
    /// A cache of [`Claims`], whose heap bytes [`claims_heap_bytes`] counts.
    pub fn for_claims(limits: CacheLimits) -> Self {
        VerifiedCache::new(limits, claims_heap_bytes)
    }
}

impl<V: Clone> VerifiedCache<V> {
    /// An empty cache within `limits`. `heap_bytes` tells how many heap bytes a value holds
    /// beyond its own size (which the cache counts itself), counting each allocation as
    /// [`allocation_cost`] does; `|_| 0` for a value with no heap data. It is called once per
    /// insertion, without any lock held.
    ///
    /// Only the shard headers (a few KiB) are allocated until the first insertions.
    pub fn new(limits: CacheLimits, heap_bytes: fn(&V) -> usize) -> Self {
        let shards = limits.max_entries.clamp(1, SHARDS);
        // The largest power of two not above `shards`.
        let shard_bits = usize::BITS - 1 - shards.leading_zeros();
        Self::with_parts(
            limits,
            heap_bytes,
            shard_bits,
            TokenHasher::Seeded(RandomState::default()),
        )
    }

    fn with_parts(
        limits: CacheLimits,
        heap_bytes: fn(&V) -> usize,
        shard_bits: u32,
        hasher: TokenHasher,
    ) -> Self {
        let shards = 1usize << shard_bits;
        let max_entries = (limits.max_entries / shards).min(MAX_SHARD_ENTRIES);
        let max_bytes = limits.max_bytes / shards;
        VerifiedCache {
            hasher,
            shard_bits,
            shards: (0..shards)
                .map(|_| RwLock::new(Shard::new(max_entries, max_bytes)))
                .collect(),
            heap_bytes,
            limits,
            shard_entries: max_entries,
            shard_bytes: max_bytes,
        }
    }

    /// The value cached for exactly these token bytes, if `now` is at most its `exp`.
    ///
    /// An entry found expired is removed. A hit marks the entry as recently used.
    pub fn get(&self, token: &str, now: Timestamp) -> Option<V> {
        let token = token.as_bytes();
        let hash = self.hasher.hash(token);
        let shard = self.shard(hash);
        {
            let guard = read(shard);
            let slot = guard.find(hash, token)?;
            let found = &guard.slots[slot];
            let entry = found.entry.as_ref()?;
            if now <= entry.exp {
                // Load first: a hot entry's line is then only read, not written, by every hit.
                if !found.referenced.load(Ordering::Relaxed) {
                    found.referenced.store(true, Ordering::Relaxed);
                }
                return Some(entry.value.clone());
            }
        }
        // Expired: remove it, unless it was replaced meanwhile by a live one.
        let mut guard = write(shard);
        if let Some(slot) = guard.find(hash, token) {
            if guard.slots[slot]
                .entry
                .as_ref()
                .is_some_and(|e| now > e.exp)
            {
                guard.remove(slot);
            }
        }
        None
    }

    /// Cache `value`, what verifying `token` yielded, until `exp` (the last second at which a
    /// lookup hits), recording `key_id` as the key that verified it. Replaces an entry for the
    /// same bytes. Evicts (see the module docs) to stay within the limits.
    ///
    /// Returns whether the token was cached: not if it is longer than
    /// [`MAX_CACHED_TOKEN_BYTES`], already expired at `now`, or too large for a shard's share
    /// of `max_bytes` (an older entry for the same bytes may then be gone).
    ///
    /// Only insert what verified: failures are never to be cached.
    pub fn insert(
        &self,
        token: &str,
        value: V,
        exp: Timestamp,
        key_id: u64,
        now: Timestamp,
    ) -> bool {
        let token = token.as_bytes();
        if token.len() > MAX_CACHED_TOKEN_BYTES || now > exp {
            return false;
        }
        let hash = self.hasher.hash(token);
        let charge = allocation_cost(token.len()).saturating_add((self.heap_bytes)(&value));
        // A shard with no room at all: refused before allocating.
        if self.shard_entries == 0 || charge > self.shard_bytes {
            return false;
        }
        let shard = self.shard(hash);
        let entry = Entry {
            hash,
            token: token.into(),
            exp,
            key_id,
            charge,
            value,
        };
        write(shard).insert(hash, entry, now)
    }

    /// Remove every entry expired at `now` (`now > exp`); how many. For a periodic sweep:
    /// lookups already ignore and remove the expired entries they meet. Shards holding
    /// nothing expired are skipped without a scan.
    pub fn purge_expired(&self, now: Timestamp) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                // Most shards have nothing expired: tell under the read lock.
                if now <= read(shard).earliest {
                    return 0;
                }
                write(shard).remove_where(|entry| now > entry.exp)
            })
            .sum()
    }

    /// Keep only the entries whose `key_id` satisfies `keep`; how many were removed. For key
    /// rotation: drop what a key that left the key set verified.
    ///
    /// `keep` is called once per entry, under the entry's shard lock: it must not use this
    /// cache.
    ///
    /// ```
    /// use tokengate_core::cache::{CacheLimits, VerifiedCache};
    /// use tokengate_core::Timestamp;
    /// let cache: VerifiedCache<u32> = VerifiedCache::new(CacheLimits::default(), |_| 0);
    /// let (now, exp) = (Timestamp::from_secs(1_000), Timestamp::from_secs(1_900));
    /// cache.insert("a.b.c", 1, exp, 7, now);
    /// cache.insert("d.e.f", 2, exp, 8, now);
    /// assert_eq!(cache.retain_keys(|key_id| key_id != 7), 1);
    /// assert_eq!(cache.get("a.b.c", now), None);
    /// assert_eq!(cache.get("d.e.f", now), Some(2));
    /// ```
    pub fn retain_keys(&self, mut keep: impl FnMut(u64) -> bool) -> usize {
        self.shards
            .iter()
            .map(|shard| write(shard).remove_where(|entry| !keep(entry.key_id)))
            .sum()
    }

    /// Remove every entry and free the shards' arrays.
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            write(shard).clear();
        }
    }
}

impl<V> VerifiedCache<V> {
    /// How many entries are cached (live or expired but not yet removed).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| read(shard).len).sum()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes counted against [`CacheLimits::max_bytes`]: the shards' arrays as allocated,
    /// and every entry's token and value heap (see the module docs).
    pub fn bytes(&self) -> usize {
        self.shards.iter().map(|shard| read(shard).bytes).sum()
    }

    /// The limits this cache was made with.
    pub fn limits(&self) -> CacheLimits {
        self.limits
    }

    fn shard(&self, hash: u64) -> &RwLock<Shard<V>> {
        // The top bits: independent of the index's tag and home bucket (the low 32).
        let at = hash.checked_shr(u64::BITS - self.shard_bits).unwrap_or(0) as usize;
        &self.shards[at]
    }
}

// No code panics while holding a shard lock except a value's `clone` or `drop` (under which
// the shard is consistent) or `retain_keys`' `keep` (called between removals).
fn read<V>(shard: &RwLock<Shard<V>>) -> RwLockReadGuard<'_, Shard<V>> {
    shard.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<V>(shard: &RwLock<Shard<V>>) -> RwLockWriteGuard<'_, Shard<V>> {
    shard.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
