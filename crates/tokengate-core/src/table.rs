//! The open-addressing table behind [`RevocationIndex`](crate::RevocationIndex): 16-byte ids
//! and their values stored inline, read without locks, written by one writer at a time.
//!
//! Layout: `groups` groups of [`GROUP`] slots. Each slot is `W` words: the id (two words)
//! then the values. Apart from the slots, one control byte per slot, eight to an
//! [`AtomicU64`] (a group's control word): [`EMPTY`], [`TOMBSTONE`] or
//! `0x80 | 7 bits of the hash`. A lookup hashes the id to a home group, loads that group's
//! control word, compares the ids only in slots whose byte matches, and stops at the first
//! group that has an empty slot. A miss (a valid token, the common case) therefore reads
//! one control word: one memory access, however large the table. With 3 words per slot a
//! slot costs 25 bytes.
//!
//! Why readers need no lock:
//! - A slot is written once. Its id and values are stored before its control byte, and the
//!   control word is stored with `Release` and loaded with `Acquire`, so a reader that sees
//!   the byte sees the id.
//! - A slot's id never changes while the table lives: removal marks the byte
//!   [`TOMBSTONE`] and the slot is never reused (reusing it would let a reader compare
//!   half of an old id with half of a new one). Tombstones are dropped by copying the live
//!   entries into a new table, which the owner publishes through an `ArcSwap`; a reader
//!   still holding the old table reads consistent, if slightly stale, data.
//! - Values change in place (a later `exp`) as single atomic words, or under the slot's own
//!   sequence word where two must change together (see `user_slot`).
//!
//! Writers (insert, value update, tombstone, copy) must be serialised by the owner: the
//! methods that write take `&self` but assume no other writer is active on the table.
//!
//! The items are `pub` only for the loom model checks (`tests/loom.rs`), which drive the
//! table directly; the module is private outside that build.

use crate::sync::{AtomicU64, Ordering};

/// Slots per group: one control word.
pub const GROUP: usize = 8;
/// A slot never used. A table always keeps at least one, so every probe ends.
const EMPTY: u8 = 0x00;
/// A slot whose entry was removed; its id stays (see the module docs).
const TOMBSTONE: u8 = 0x01;
/// `0x01` in every byte.
const LOW_BITS: u64 = 0x0101_0101_0101_0101;
/// `0x80` in every byte.
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// An id with its hash, computed once per operation.
#[derive(Clone, Copy, Debug)]
pub struct Hashed {
    pub lo: u64,
    pub hi: u64,
    pub hash: u64,
}

impl Hashed {
    /// The control byte of a live slot holding this id.
    fn tag(self) -> u8 {
        0x80 | (self.hash as u8 & 0x7f)
    }

    /// Which of `shards` (a power of two) holds this id: bits independent of the tag's
    /// (bits 0..7) and of the home group's (the high bits).
    pub fn shard(self, shards: usize) -> usize {
        (self.hash >> 7) as usize & (shards - 1)
    }

    /// The first group to probe: the hash scaled to `0..groups` (no power-of-two sizes
    /// needed, so a table can grow by half instead of doubling).
    fn home(self, groups: usize) -> usize {
        ((u128::from(self.hash) * groups as u128) >> 64) as usize
    }
}

/// Bits set in the bytes of `word` equal to `byte`. Exact for the lowest match; a byte above
/// a match may be flagged falsely (borrow), so callers re-check the byte itself.
fn matching(word: u64, byte: u8) -> u64 {
    let x = word ^ (LOW_BITS * u64::from(byte));
    x.wrapping_sub(LOW_BITS) & !x & HIGH_BITS
}

fn byte_at(word: u64, i: usize) -> u8 {
    (word >> (8 * i)) as u8
}

/// Where an id is, or where it would go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spot {
    /// The live slot holding the id.
    Found(usize),
    /// The first empty slot on its probe path.
    Vacant(usize),
}

/// A table of `groups * GROUP` slots of `W` words (`W >= 2`: the id comes first).
///
/// The control words are kept apart from the slots, in an array of one byte per slot: at
/// 1 000 000 ids it is about 1 MiB and stays in the CPU caches, so a miss rarely goes to
/// memory at all. (Control words interleaved with their slots measured 3 times slower on
/// misses at that size.)
pub struct Table<const W: usize> {
    control: Box<[AtomicU64]>,
    slots: Box<[[AtomicU64; W]]>,
}

impl<const W: usize> Table<W> {
    /// An empty table of `groups` groups (at least one).
    pub fn with_groups(groups: usize) -> Self {
        let groups = groups.max(1);
        Table {
            control: (0..groups).map(|_| AtomicU64::new(0)).collect(),
            slots: (0..groups * GROUP)
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
        }
    }

    pub fn groups(&self) -> usize {
        self.control.len()
    }

    pub fn capacity(&self) -> usize {
        self.control.len() * GROUP
    }

    /// Bytes allocated for the table.
    pub fn bytes(&self) -> usize {
        self.capacity() * (W * 8 + 1)
    }

    /// Whether `used` slots (live + tombstones) keep the table at most 7/8 full, so that
    /// probes stay short and at least one slot in eight stays empty.
    pub fn fits(&self, used: usize) -> bool {
        used.saturating_mul(8) <= self.capacity() * 7
    }

    /// The live slot holding `id`. Lock-free; see the module docs for why this is sound
    /// against a concurrent writer.
    pub fn get(&self, id: Hashed) -> Option<&[AtomicU64; W]> {
        let groups = self.groups();
        let tag = id.tag();
        let mut group = id.home(groups);
        for _ in 0..groups {
            let word = self.control[group].load(Ordering::Acquire);
            let mut candidates = matching(word, tag);
            while candidates != 0 {
                let i = candidates.trailing_zeros() as usize / 8;
                candidates &= candidates - 1;
                if byte_at(word, i) != tag {
                    continue;
                }
                let slot = &self.slots[group * GROUP + i];
                if slot[0].load(Ordering::Relaxed) == id.lo
                    && slot[1].load(Ordering::Relaxed) == id.hi
                {
                    return Some(slot);
                }
            }
            if matching(word, EMPTY) != 0 {
                return None;
            }
            group += 1;
            if group == groups {
                group = 0;
            }
        }
        None
    }

    /// Where `id` is or would go. `None` only if the table has no empty slot, which
    /// [`fits`](Self::fits) prevents. Writer only.
    pub fn locate(&self, id: Hashed) -> Option<Spot> {
        let groups = self.groups();
        let tag = id.tag();
        let mut group = id.home(groups);
        for _ in 0..groups {
            let word = self.control[group].load(Ordering::Relaxed);
            for i in 0..GROUP {
                let byte = byte_at(word, i);
                let index = group * GROUP + i;
                if byte == EMPTY {
                    return Some(Spot::Vacant(index));
                }
                if byte == tag {
                    let slot = &self.slots[index];
                    if slot[0].load(Ordering::Relaxed) == id.lo
                        && slot[1].load(Ordering::Relaxed) == id.hi
                    {
                        return Some(Spot::Found(index));
                    }
                }
            }
            group += 1;
            if group == groups {
                group = 0;
            }
        }
        None
    }

    /// The slot at `index`.
    pub fn slot(&self, index: usize) -> &[AtomicU64; W] {
        &self.slots[index]
    }

    /// Fill the vacant slot `index` with `id` and `values` (words `2..W`), then make it
    /// visible. Writer only.
    pub fn publish(&self, index: usize, id: Hashed, values: &[u64]) {
        let slot = self.slot(index);
        slot[0].store(id.lo, Ordering::Relaxed);
        slot[1].store(id.hi, Ordering::Relaxed);
        for (word, &value) in slot[2..].iter().zip(values) {
            word.store(value, Ordering::Relaxed);
        }
        self.set_control(index, id.tag());
    }

    /// Remove the live entry at `index`: readers skip it from now on. Writer only.
    pub fn remove(&self, index: usize) {
        self.set_control(index, TOMBSTONE);
    }

    fn set_control(&self, index: usize, byte: u8) {
        let (group, i) = (index / GROUP, index % GROUP);
        let control = &self.control[group];
        let word = control.load(Ordering::Relaxed);
        let shift = 8 * i;
        let word = (word & !(0xff << shift)) | (u64::from(byte) << shift);
        // Release: the slot's words, stored before, are visible to whoever sees the byte.
        control.store(word, Ordering::Release);
    }

    /// The live slots of groups `groups` (a range of group numbers), as `(index, slot)`.
    pub fn live_in(
        &self,
        groups: std::ops::Range<usize>,
    ) -> impl Iterator<Item = (usize, &[AtomicU64; W])> + '_ {
        groups.flat_map(move |group| {
            let word = self.control[group].load(Ordering::Acquire);
            (0..GROUP)
                .filter(move |&i| byte_at(word, i) & 0x80 != 0)
                .map(move |i| (group * GROUP + i, &self.slots[group * GROUP + i]))
        })
    }

    /// A copy holding only the live entries, in a table of `groups` groups (at least enough
    /// for them). `rehash` gives an id's hash. Writer only (the copy is consistent because
    /// no other writer runs).
    ///
    /// Every live entry is copied: none may be lost, since a lost entry is a lost
    /// revocation. Each goes to the first empty slot on its probe path in the new table,
    /// which has more slots than there are live entries, and a probe visits every group
    /// before it gives up, so there always is one. Should that ever fail, the copy starts
    /// over in a table twice the size rather than drop the entry.
    pub fn copied(&self, groups: usize, rehash: impl Fn(u64, u64) -> Hashed) -> Self {
        let live = self.live_in(0..self.groups()).count();
        let mut groups = groups.max(groups_for(live, 7, 8));
        loop {
            let table = Table::with_groups(groups);
            if self.copy_into(&table, &rehash) {
                return table;
            }
            groups = groups.saturating_mul(2);
        }
    }

    /// Publish every live entry of `self` in the fresh `table`; `false` if one found no
    /// empty slot.
    fn copy_into(&self, table: &Self, rehash: &impl Fn(u64, u64) -> Hashed) -> bool {
        let mut values = [0u64; W];
        for (_, slot) in self.live_in(0..self.groups()) {
            for (value, word) in values.iter_mut().zip(slot.iter()) {
                *value = word.load(Ordering::Relaxed);
            }
            let id = rehash(values[0], values[1]);
            let Some(index) = table.empty_on_path(id) else {
                return false;
            };
            table.publish(index, id, &values[2..]);
        }
        true
    }

    /// The first empty slot on `id`'s probe path, whatever the slots before it hold.
    fn empty_on_path(&self, id: Hashed) -> Option<usize> {
        let groups = self.groups();
        let mut group = id.home(groups);
        for _ in 0..groups {
            let word = self.control[group].load(Ordering::Relaxed);
            let empty = matching(word, EMPTY);
            if empty != 0 {
                // The lowest flagged byte is exact (see `matching`).
                return Some(group * GROUP + empty.trailing_zeros() as usize / 8);
            }
            group += 1;
            if group == groups {
                group = 0;
            }
        }
        None
    }
}

/// Groups for `entries` entries at a load of `num / den`, at least one.
pub fn groups_for(entries: usize, num: usize, den: usize) -> usize {
    entries
        .saturating_mul(den)
        .div_ceil(num.max(1))
        .div_ceil(GROUP)
        .max(1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn hashed(n: u64, hash: u64) -> Hashed {
        Hashed {
            lo: n,
            hi: !n,
            hash,
        }
    }

    #[test]
    fn matching_finds_the_lowest_equal_byte() {
        let word = u64::from_le_bytes([0x81, 0x00, 0x93, 0x81, 0x01, 0x00, 0x00, 0x00]);
        assert_eq!(matching(word, 0x81).trailing_zeros() / 8, 0);
        assert_eq!(matching(word, 0x00).trailing_zeros() / 8, 1);
        assert_eq!(matching(word, 0x93).trailing_zeros() / 8, 2);
        assert_eq!(matching(word, TOMBSTONE).trailing_zeros() / 8, 4);
        assert_eq!(matching(word, 0x94), 0);
        assert_eq!(matching(u64::MAX, EMPTY), 0);
    }

    #[test]
    fn insert_find_remove_and_copy() {
        let table: Table<3> = Table::with_groups(4);
        // Every id collides on the same home group and tag: the probe must walk on.
        let ids: Vec<Hashed> = (0..28).map(|n| hashed(n, 5)).collect();
        for (n, &id) in ids.iter().enumerate() {
            assert!(table.fits(n + 1));
            let Some(Spot::Vacant(index)) = table.locate(id) else {
                panic!("no room for {n}");
            };
            table.publish(index, id, &[n as u64 * 10]);
        }
        assert!(!table.fits(29));
        for (n, &id) in ids.iter().enumerate() {
            let slot = table.get(id).unwrap();
            assert_eq!(slot[2].load(Ordering::Relaxed), n as u64 * 10);
            assert!(matches!(table.locate(id), Some(Spot::Found(_))));
        }
        assert!(table.get(hashed(99, 5)).is_none());
        assert!(table.get(hashed(99, 6)).is_none());

        let Some(Spot::Found(index)) = table.locate(ids[3]) else {
            panic!()
        };
        table.remove(index);
        assert!(table.get(ids[3]).is_none());
        // Entries placed after the tombstone are still found through it.
        assert!(table.get(ids[27]).is_some());
        // A removed id goes to a fresh slot, never back into its tombstone.
        assert_ne!(table.locate(ids[3]), Some(Spot::Vacant(index)));

        let copy = table.copied(1, |lo, hi| Hashed { lo, hi, hash: 5 });
        assert_eq!(copy.live_in(0..copy.groups()).count(), 27);
        assert!(copy.get(ids[3]).is_none());
        for (n, &id) in ids.iter().enumerate().filter(|&(n, _)| n != 3) {
            assert_eq!(
                copy.get(id).unwrap()[2].load(Ordering::Relaxed),
                n as u64 * 10
            );
        }
    }

    #[test]
    fn copy_keeps_every_live_entry_of_a_full_table() {
        // Filled to the 7/8 limit, every id on one home group and tag, a few removed.
        let table: Table<3> = Table::with_groups(8);
        let ids: Vec<Hashed> = (0..56).map(|n| hashed(n, 3)).collect();
        for (n, &id) in ids.iter().enumerate() {
            assert!(table.fits(n + 1));
            let Some(Spot::Vacant(index)) = table.locate(id) else {
                panic!("no room for {n}");
            };
            table.publish(index, id, &[n as u64]);
        }
        for &id in ids.iter().step_by(5) {
            let Some(Spot::Found(index)) = table.locate(id) else {
                panic!()
            };
            table.remove(index);
        }
        let live: Vec<(usize, Hashed)> = (ids.iter().copied().enumerate())
            .filter(|&(n, _)| n % 5 != 0)
            .collect();
        // Asked for one group: the copy takes as many as the live entries need.
        let copy = table.copied(1, |lo, hi| Hashed { lo, hi, hash: 3 });
        assert_eq!(copy.live_in(0..copy.groups()).count(), live.len());
        assert!(copy.fits(live.len()));
        for (n, id) in live {
            assert_eq!(copy.get(id).unwrap()[2].load(Ordering::Relaxed), n as u64);
        }
    }

    #[test]
    fn copy_never_skips_a_live_slot() {
        // Two live slots with one id: the writer never makes them, but a copy that met them
        // would keep both rather than silently drop one.
        let table: Table<3> = Table::with_groups(1);
        let id = hashed(1, 9);
        for value in [10, 20] {
            let index = table.empty_on_path(id).unwrap();
            table.publish(index, id, &[value]);
        }
        let copy = table.copied(1, |lo, hi| Hashed { lo, hi, hash: 9 });
        let values: Vec<u64> = (copy.live_in(0..copy.groups()))
            .map(|(_, slot)| slot[2].load(Ordering::Relaxed))
            .collect();
        assert_eq!(values, [10, 20]);
    }

    #[test]
    fn a_nil_id_is_not_confused_with_an_empty_slot() {
        let table: Table<3> = Table::with_groups(1);
        let nil = Hashed {
            lo: 0,
            hi: 0,
            hash: 0,
        };
        assert!(table.get(nil).is_none());
        let Some(Spot::Vacant(index)) = table.locate(nil) else {
            panic!()
        };
        table.publish(index, nil, &[7]);
        assert_eq!(table.get(nil).unwrap()[2].load(Ordering::Relaxed), 7);
    }

    #[test]
    fn groups_for_rounds_up() {
        assert_eq!(groups_for(0, 7, 8), 1);
        assert_eq!(groups_for(7, 7, 8), 1);
        assert_eq!(groups_for(8, 7, 8), 2);
        assert_eq!(groups_for(1_000_000, 7, 12), 214_286);
    }
}
