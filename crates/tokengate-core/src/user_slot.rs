//! A user entry's slot in the index's user tables, and the sequence lock that lets its
//! `until` and cutoff change together while readers take no lock.
//!
//! Layout: the id (two words, as in every slot), a sequence word, `until`, the cutoff. The
//! sequence word is odd while a write is in progress; a reader retries if it was odd or
//! moved while it read the two values. The shard's lock serialises writers.
//!
//! The items are `pub` only for the loom model checks (`tests/loom.rs`), which drive them
//! directly; the module is private outside that build.

use crate::sync::{fence, spin_loop, AtomicU64, Ordering};

/// Words in a user slot.
pub const WORDS: usize = 5;
const SEQ: usize = 2;
/// Where `until` sits.
pub const UNTIL: usize = 3;
const CUTOFF: usize = 4;

/// The values of a new slot (the words after the id), as `Table::publish` takes them: a
/// slot is published whole, so its sequence starts at 0.
pub fn new_values(until: i64, cutoff: i64) -> [u64; WORDS - 2] {
    [0, until as u64, cutoff as u64]
}

/// The slot's `until` and cutoff, read consistently.
pub fn read(slot: &[AtomicU64; WORDS]) -> (i64, i64) {
    loop {
        let before = slot[SEQ].load(Ordering::Acquire);
        let until = slot[UNTIL].load(Ordering::Relaxed) as i64;
        let cutoff = slot[CUTOFF].load(Ordering::Relaxed) as i64;
        // Orders the two loads above before the second load of the sequence: if either saw
        // a write's value, the sequence is seen odd or moved.
        fence(Ordering::Acquire);
        let after = slot[SEQ].load(Ordering::Relaxed);
        if before == after && before.is_multiple_of(2) {
            return (until, cutoff);
        }
        spin_loop();
    }
}

/// Change a published slot's `until` and cutoff together. Writer only (shard lock held).
pub fn write(slot: &[AtomicU64; WORDS], until: i64, cutoff: i64) {
    let seq = slot[SEQ].load(Ordering::Relaxed);
    slot[SEQ].store(seq.wrapping_add(1), Ordering::Relaxed);
    // Orders the odd sequence before the stores of the values (see `read`).
    fence(Ordering::Release);
    slot[UNTIL].store(until as u64, Ordering::Relaxed);
    slot[CUTOFF].store(cutoff as u64, Ordering::Relaxed);
    slot[SEQ].store(seq.wrapping_add(2), Ordering::Release);
}
