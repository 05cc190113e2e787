//! Model checks of the revocation index's lock-free parts with loom, which runs each test
//! under every interleaving of its threads and every value the C++/Rust memory model lets
//! an atomic load return (within `LOOM_MAX_PREEMPTIONS`):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 \
//!     cargo test -p tokengate-core --release --test loom
//! ```
//!
//! Covered, on the real code (`table` and `user_slot` are built on loom's atomics):
//! - a slot's publication: its id and values stored before its control byte, the control
//!   word stored `Release` and loaded `Acquire`. A lookup concurrent with an insert sees
//!   nothing or the whole entry, never a torn one, and never loses the entries already
//!   there.
//! - tombstones: a lookup concurrent with a removal sees the whole entry or nothing, and
//!   still finds the entries placed past the removed one on the probe path.
//! - the user-slot sequence lock: a reader never sees a cutoff with another write's
//!   `until`.
//!
//! Not covered: how `RevocationIndex` hands tables to readers (one `ArcSwap` snapshot plus
//! a per-thread cache keyed by a generation counter). arc-swap is not loom-aware, so a
//! replaced table's publication rests on arc-swap's own guarantees (a reader loads a
//! fully built table, kept alive while it reads); the table it loads is the one these
//! checks cover. The shard locks (`std::sync::Mutex`) that serialise writers, and the
//! global cutoff pair, are not modelled either.
#![cfg(loom)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use loom::sync::atomic::Ordering;
use loom::sync::Arc;
use loom::thread;
use tokengate_core::table::{Hashed, Spot, Table, GROUP};
use tokengate_core::user_slot;

/// Token and session slots: the id, then `until`.
type Plain = Table<3>;

/// An id whose hash puts it in group 0 with one fixed tag: every lookup compares ids.
fn id(n: u64) -> Hashed {
    Hashed {
        lo: n,
        hi: n ^ 0x5555_5555_5555_5555,
        hash: 0x11,
    }
}

/// Insert as the index does (the caller is the only writer); returns the slot index.
fn insert<const W: usize>(table: &Table<W>, id: Hashed, values: &[u64]) -> usize {
    let Some(Spot::Vacant(index)) = table.locate(id) else {
        panic!("no vacant slot for {id:?}");
    };
    table.publish(index, id, values);
    index
}

/// What a reader makes of a plain slot: its `until` if the id is found. A found slot must
/// hold the whole id (`get` compared it) and the value published with it.
fn until_of(table: &Plain, id: Hashed) -> Option<u64> {
    let slot = table.get(id)?;
    assert_eq!(slot[0].load(Ordering::Relaxed), id.lo);
    assert_eq!(slot[1].load(Ordering::Relaxed), id.hi);
    // Relaxed on purpose: the control word alone must make the value visible.
    Some(slot[2].load(Ordering::Relaxed))
}

/// Run `writer` and `reader` at once, each on a thread of its own: in the server, readers
/// never run on the thread that built the table, and loom finds a broken ordering only
/// from a thread that has not seen the table's initial stores itself.
fn race<T: Send + Sync + 'static>(
    shared: &Arc<T>,
    writer: impl FnOnce(&T) + Send + 'static,
    reader: impl FnOnce(&T) + Send + 'static,
) {
    let writer = {
        let shared = Arc::clone(shared);
        thread::spawn(move || writer(&shared))
    };
    let reader = {
        let shared = Arc::clone(shared);
        thread::spawn(move || reader(&shared))
    };
    writer.join().unwrap();
    reader.join().unwrap();
}

#[test]
fn a_lookup_during_an_insert_sees_nothing_or_the_whole_entry() {
    loom::model(|| {
        let table = Arc::new(Plain::with_groups(1));
        insert(&table, id(1), &[100]);
        race(
            &table,
            |table| {
                insert(table, id(2), &[200]);
            },
            |table| {
                // The entry being inserted shares the group, the control word and the tag.
                assert!(matches!(until_of(table, id(2)), None | Some(200)));
                assert_eq!(until_of(table, id(1)), Some(100));
            },
        );
        assert_eq!(until_of(&table, id(2)), Some(200));
    });
}

#[test]
fn a_lookup_during_two_inserts_sees_them_in_order() {
    loom::model(|| {
        let table = Arc::new(Plain::with_groups(1));
        race(
            &table,
            |table| {
                insert(table, id(1), &[100]);
                insert(table, id(2), &[200]);
            },
            |table| {
                let second = until_of(table, id(2));
                assert!(matches!(second, None | Some(200)));
                // Published in that order: having seen the second, a later lookup sees the
                // first.
                if second.is_some() {
                    assert_eq!(until_of(table, id(1)), Some(100));
                }
            },
        );
    });
}

#[test]
fn a_lookup_during_a_removal_sees_the_entry_or_nothing_and_finds_entries_past_it() {
    loom::model(|| {
        // Group 0 full, so the last id is placed in group 1: its probe passes the
        // tombstone and must go on past it.
        let table = Arc::new(Plain::with_groups(2));
        let ids: Vec<Hashed> = (1..=GROUP as u64 + 1).map(id).collect();
        let indexes: Vec<usize> = (ids.iter().enumerate())
            .map(|(n, &id)| insert(&table, id, &[n as u64 + 100]))
            .collect();
        assert!(indexes[GROUP] >= GROUP, "the last id is in group 1");
        let (first, last) = (ids[0], ids[GROUP]);
        let removed = indexes[0];
        race(
            &table,
            move |table| table.remove(removed),
            move |table| {
                assert!(matches!(until_of(table, first), None | Some(100)));
                assert_eq!(until_of(table, last), Some(GROUP as u64 + 100));
            },
        );
        assert_eq!(until_of(&table, first), None);
        assert_eq!(until_of(&table, last), Some(GROUP as u64 + 100));
    });
}

/// Token and session entries raise their `until` in place, one word stored `Release`.
#[test]
fn a_raised_until_is_seen_old_or_new() {
    loom::model(|| {
        let table = Arc::new(Plain::with_groups(1));
        let index = insert(&table, id(1), &[100]);
        race(
            &table,
            move |table| table.slot(index)[2].store(300, Ordering::Release),
            |table| assert!(matches!(until_of(table, id(1)), Some(100 | 300))),
        );
        assert_eq!(until_of(&table, id(1)), Some(300));
    });
}

type Users = Table<{ user_slot::WORDS }>;

/// A user's `until` and cutoff, as a reader sees them.
fn user_of(table: &Users, id: Hashed) -> Option<(i64, i64)> {
    table.get(id).map(user_slot::read)
}

#[test]
fn a_user_entry_published_during_a_lookup_is_read_whole() {
    loom::model(|| {
        let table = Arc::new(Users::with_groups(1));
        race(
            &table,
            |table| {
                insert(table, id(1), &user_slot::new_values(900, 100));
            },
            |table| assert!(matches!(user_of(table, id(1)), None | Some((900, 100)))),
        );
    });
}

#[test]
fn a_user_cutoff_and_its_until_are_read_together() {
    loom::model(|| {
        let table = Arc::new(Users::with_groups(1));
        let index = insert(&table, id(1), &user_slot::new_values(900, 100));
        race(
            &table,
            move |table| {
                let slot = table.slot(index);
                user_slot::write(slot, 1_900, 200);
                user_slot::write(slot, 2_900, 300);
            },
            |table| {
                let seen = user_of(table, id(1)).unwrap();
                assert!(
                    [(900, 100), (1_900, 200), (2_900, 300)].contains(&seen),
                    "torn read: {seen:?}"
                );
            },
        );
        assert_eq!(user_of(&table, id(1)), Some((2_900, 300)));
    });
}
