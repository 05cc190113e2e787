//! The behaviour every [`Store`] implementation must show.
//!
//! Each function takes a **fresh, empty** store and panics when the store misbehaves.
//! Times are explicit [`Timestamp`]s: nothing sleeps or reads the wall clock. A backend's
//! tests run them all with [`store_testsuite!`](crate::store_testsuite):
//!
//! ```ignore
//! // tests/it/sqlite.rs: one #[tokio::test] per behaviour, each on its own fresh store.
//! tokengate_store::store_testsuite!(fresh_store());
//!
//! // A backend that needs a service: yield `None` to skip when it is absent.
//! tokengate_store::store_testsuite!(optional: fresh_postgres_or_none());
//! ```
//!
//! The calling crate needs `tokio` (with `macros` and `rt`) as a dependency, and this
//! crate's `testsuite` feature.

// Test support: a failed expectation is meant to panic with the value that surprised it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::time::Duration;

use tokengate_core::{Revocation, Role, Timestamp};
use uuid::Uuid;

use crate::error::StoreError;
use crate::model::{
    NewSession, NewUser, RefreshOutcome, RefreshRotation, Session, StoredKey, User, UserChange,
};
use crate::store::Store;

/// What a test fixture hands the behaviours: a store, possibly with something that must
/// outlive it (such as the temporary directory holding a database file).
pub trait Fixture {
    /// The store under test.
    fn store(&self) -> &dyn Store;
}

impl<S: Store> Fixture for S {
    fn store(&self) -> &dyn Store {
        self
    }
}

impl<S: Store, G> Fixture for (S, G) {
    fn store(&self) -> &dyn Store {
        &self.0
    }
}

/// Expand to one `#[tokio::test]` per behaviour of [`testsuite`](crate::testsuite), each
/// running it on a store made by awaiting `$make` anew.
///
/// - `store_testsuite!(make)`: `make` is a future yielding a [`Fixture`]: a [`Store`], or
///   `(store, guard)` where `guard` must live as long as the store (e.g. a `TempDir`).
/// - `store_testsuite!(optional: make)`: `make` yields `Option<Fixture>`; `None` skips the
///   test with a note on stderr (for backends whose service may be absent).
#[macro_export]
macro_rules! store_testsuite {
    (optional: $make:expr) => {
        $crate::store_testsuite!(@each tests ($make));
    };
    // The one list of behaviours, handed to `@tests` (one test each) or `@names`.
    (@each $arm:ident $args:tt) => {
        $crate::store_testsuite! { @$arm $args
            first_user_becomes_admin_and_later_users_do_not,
            duplicate_email_is_a_conflict,
            user_lookup_by_email_and_id,
            password_change_and_disable_end_sessions_atomically,
            refresh_token_lookup_reports_its_session_and_state,
            session_round_trip,
            live_sessions_exclude_ended_and_expired,
            end_session_records_a_session_revocation_once,
            end_user_sessions_keeps_the_current_one_and_spares_other_users,
            end_sessions_created_before_ends_every_users_older_sessions_only,
            refresh_rotation_issues_a_new_token_and_refuses_the_old,
            refresh_reuse_ends_the_session_and_records_its_revocation,
            refresh_reuse_within_grace_rotates_again,
            refresh_of_ended_session_expired_token_or_disabled_user_is_refused,
            a_session_for_an_unknown_user_is_not_created,
            unknown_refresh_token_is_unknown,
            record_revocations_is_all_or_nothing,
            a_signal_is_recorded_once_with_its_revocations,
            concurrent_deliveries_of_one_signal_record_it_once,
            seen_signals_are_purged_after_they_expire,
            load_live_revocations_skips_expired_and_returns_cursor,
            revocations_after_tails_new_records_in_order,
            purge_expired_deletes_in_bounded_batches,
            touch_sessions_never_moves_back,
            signing_keys_rotate_and_first_insert_is_once,
            ping_answers,
        }
    };
    (@names () $($name:ident),* $(,)?) => {
        &[$(stringify!($name)),*]
    };
    (@tests ($make:expr) $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let Some(fixture) = $make.await else {
                    if ::std::env::var("TOKENGATE_REQUIRE_SERVICES").as_deref() == Ok("1") {
                        panic!(concat!(stringify!($name), ": the store is not available and TOKENGATE_REQUIRE_SERVICES=1"));
                    }
                    eprintln!(concat!("skipped ", stringify!($name), ": the store is not available"));
                    return;
                };
                $crate::testsuite::$name($crate::testsuite::Fixture::store(&fixture)).await;
            }
        )*
    };
    ($make:expr) => {
        $crate::store_testsuite!(optional: async { ::core::option::Option::Some($make.await) });
    };
}

/// The name of every behaviour [`store_testsuite!`](crate::store_testsuite) runs.
pub const BEHAVIOURS: &[&str] = crate::store_testsuite!(@each names ());

// ---- helpers ----

/// The instant most behaviours start at.
const T0: i64 = 1_700_000_000;

fn at(offset: i64) -> Timestamp {
    Timestamp::from_secs(T0 + offset)
}

fn hash(n: u8) -> [u8; 32] {
    let mut h = [0u8; 32];
    h[0] = n;
    h[31] = 0xa5;
    h
}

/// The password hash of every test user; sessions are created against it.
const TEST_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";

fn new_user(email: &str, role: Role) -> NewUser {
    NewUser {
        id: Uuid::new_v4(),
        email: email.to_owned(),
        password_hash: TEST_HASH.to_owned(),
        role,
        created_at: at(0),
    }
}

async fn user(store: &dyn Store, email: &str) -> User {
    store
        .create_user(new_user(email, Role::User))
        .await
        .unwrap()
}

/// A session created at `created` with access and refresh expiring at the given offsets.
fn new_session(
    user_id: Uuid,
    created: i64,
    access_exp: i64,
    refresh: u8,
    refresh_exp: i64,
) -> NewSession {
    NewSession {
        id: Uuid::new_v4(),
        user_id,
        created_at: at(created),
        user_agent: Some("test-agent/1.0".to_owned()),
        ip: Some("192.0.2.7".to_owned()),
        password_hash: TEST_HASH.to_owned(),
        access_exp: at(access_exp),
        refresh_hash: hash(refresh),
        refresh_exp: at(refresh_exp),
    }
}

async fn session(
    store: &dyn Store,
    user_id: Uuid,
    created: i64,
    access_exp: i64,
    refresh: u8,
    refresh_exp: i64,
) -> Uuid {
    let new = new_session(user_id, created, access_exp, refresh, refresh_exp);
    let id = new.id;
    assert!(store.create_session(new).await.unwrap());
    id
}

/// alice@example.com with one session created at 0: access until 900, refresh token 1
/// until 86 400.
async fn alice_signed_in(store: &dyn Store) -> (User, Uuid) {
    let alice = user(store, "alice@example.com").await;
    let sid = session(store, alice.id, 0, 900, 1, 86_400).await;
    (alice, sid)
}

/// The ids of `user_id`'s live sessions at `now`, in the store's order.
async fn live_ids(store: &dyn Store, user_id: Uuid, now: i64) -> Vec<Uuid> {
    store
        .live_sessions(user_id, at(now))
        .await
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect()
}

async fn assert_no_live_sessions(store: &dyn Store, user_id: Uuid, now: i64) {
    assert!(store
        .live_sessions(user_id, at(now))
        .await
        .unwrap()
        .is_empty());
}

fn rotation(presented: u8, new: u8, now: i64) -> RefreshRotation {
    RefreshRotation {
        presented_hash: hash(presented),
        new_hash: hash(new),
        new_refresh_exp: at(now + 86_400),
        new_access_exp: at(now + 900),
        now: at(now),
        grace: Duration::ZERO,
    }
}

fn key(kid: &str, created: i64) -> StoredKey {
    StoredKey {
        kid: kid.to_owned(),
        alg: "EdDSA".to_owned(),
        private_der: kid
            .as_bytes()
            .iter()
            .copied()
            .chain([0, 1, 2, 255])
            .collect(),
        created_at: at(created),
        verify_until: None,
    }
}

async fn live(store: &dyn Store, now: Timestamp) -> Vec<Revocation> {
    store
        .load_live_revocations(now, Duration::ZERO)
        .await
        .unwrap()
        .revocations
}

async fn all_records(store: &dyn Store) -> Vec<(i64, Revocation)> {
    store.revocations_after(0, u32::MAX).await.unwrap()
}

/// One revocation of each kind, with distinct ids and expiries from `exp`.
fn one_of_each(exp: i64) -> Vec<Revocation> {
    vec![
        Revocation::Token {
            jti: Uuid::new_v4(),
            exp: at(exp),
        },
        Revocation::Session {
            sid: Uuid::new_v4(),
            exp: at(exp + 1),
        },
        Revocation::User {
            sub: Uuid::new_v4(),
            issued_before: at(exp - 900),
            exp: at(exp + 2),
        },
        Revocation::IssuedBefore {
            issued_before: at(exp - 900),
            exp: at(exp + 3),
        },
    ]
}

// ---- users ----

/// The first user of a store is made admin whatever was asked; later users keep the
/// role they are given.
pub async fn first_user_becomes_admin_and_later_users_do_not(store: &dyn Store) {
    let first = store
        .create_user(new_user("first@example.com", Role::User))
        .await
        .unwrap();
    assert_eq!(first.role, Role::Admin);
    let second = store
        .create_user(new_user("second@example.com", Role::User))
        .await
        .unwrap();
    assert_eq!(second.role, Role::User);
    let third = store
        .create_user(new_user("third@example.com", Role::Admin))
        .await
        .unwrap();
    assert_eq!(
        third.role,
        Role::Admin,
        "an explicitly requested admin stays admin"
    );

    let stored = store.user_by_id(first.id).await.unwrap().unwrap();
    assert_eq!(
        stored.role,
        Role::Admin,
        "the promotion is stored, not only returned"
    );
    let stored = store.user_by_id(second.id).await.unwrap().unwrap();
    assert_eq!(stored.role, Role::User);
}

/// A taken email gives `Conflict` and changes nothing; so does a taken id.
pub async fn duplicate_email_is_a_conflict(store: &dyn Store) {
    let first = user(store, "taken@example.com").await;
    let err = store
        .create_user(new_user("taken@example.com", Role::User))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "got {err:?}");

    let same_id = NewUser {
        id: first.id,
        ..new_user("other@example.com", Role::User)
    };
    let err = store.create_user(same_id).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "got {err:?}");

    assert_eq!(
        store.user_by_email("taken@example.com").await.unwrap(),
        Some(first)
    );
    assert_eq!(
        store.user_by_email("other@example.com").await.unwrap(),
        None
    );
}

/// A user is found by email and by id with every field as created; unknown ones are `None`.
pub async fn user_lookup_by_email_and_id(store: &dyn Store) {
    let new = new_user("alice@example.com", Role::User);
    let created = store.create_user(new.clone()).await.unwrap();
    let expected = User {
        id: new.id,
        email: new.email.clone(),
        password_hash: new.password_hash.clone(),
        role: Role::Admin,
        disabled: false,
        created_at: new.created_at,
    };
    assert_eq!(created, expected);
    assert_eq!(
        store.user_by_email("alice@example.com").await.unwrap(),
        Some(expected.clone())
    );
    assert_eq!(store.user_by_id(new.id).await.unwrap(), Some(expected));
    assert_eq!(store.user_by_email("bob@example.com").await.unwrap(), None);
    assert_eq!(store.user_by_id(Uuid::new_v4()).await.unwrap(), None);
}

/// A password change ends every other session of the user in the same transaction, and
/// a sign-in checked against the old hash creates nothing; disabling ends every session
/// and refuses new ones until re-enabled. Other users are untouched; unknown users `None`.
pub async fn password_change_and_disable_end_sessions_atomically(store: &dyn Store) {
    let alice = user(store, "alice@example.com").await;
    let bob = user(store, "bob@example.com").await;
    let a1 = session(store, alice.id, 0, 900, 1, 86_400).await;
    let a2 = session(store, alice.id, 1, 901, 2, 86_401).await;
    let b1 = session(store, bob.id, 0, 900, 3, 86_400).await;
    const NEW_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$bmV3";

    let revs = store
        .update_user(
            alice.id,
            UserChange::Password {
                hash: NEW_HASH,
                keep: Some(a1),
            },
            at(10),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        revs,
        vec![Revocation::Session {
            sid: a2,
            exp: at(901)
        }]
    );
    let stored = store.user_by_id(alice.id).await.unwrap().unwrap();
    assert_eq!(stored.password_hash, NEW_HASH);
    assert_eq!(store.session(a1).await.unwrap().unwrap().ended_at, None);
    assert_eq!(
        store.session(a2).await.unwrap().unwrap().ended_at,
        Some(at(10))
    );

    let stale = new_session(alice.id, 11, 911, 4, 86_411);
    assert!(
        !store.create_session(stale.clone()).await.unwrap(),
        "a sign-in checked against the old password must not create a session"
    );
    assert_eq!(store.session(stale.id).await.unwrap(), None);
    let fresh = NewSession {
        password_hash: NEW_HASH.to_owned(),
        ..new_session(alice.id, 12, 912, 5, 86_412)
    };
    assert!(store.create_session(fresh.clone()).await.unwrap());

    let revs = store
        .update_user(alice.id, UserChange::Disabled(true), at(20))
        .await
        .unwrap()
        .unwrap();
    let mut ended: Vec<Uuid> = revs.iter().map(Revocation::subject_id).collect();
    ended.sort();
    let mut expected = vec![a1, fresh.id];
    expected.sort();
    assert_eq!(ended, expected);
    assert!(store.user_by_id(alice.id).await.unwrap().unwrap().disabled);
    let while_disabled = NewSession {
        password_hash: NEW_HASH.to_owned(),
        ..new_session(alice.id, 21, 921, 6, 86_421)
    };
    assert!(!store.create_session(while_disabled).await.unwrap());

    assert_eq!(
        store
            .update_user(alice.id, UserChange::Disabled(false), at(30))
            .await
            .unwrap(),
        Some(vec![])
    );
    let after = NewSession {
        password_hash: NEW_HASH.to_owned(),
        ..new_session(alice.id, 31, 931, 7, 86_431)
    };
    assert!(store.create_session(after).await.unwrap());

    assert_eq!(
        store.user_by_id(bob.id).await.unwrap(),
        Some(bob),
        "other users are untouched"
    );
    assert_eq!(store.session(b1).await.unwrap().unwrap().ended_at, None);
    assert_eq!(
        store
            .update_user(
                Uuid::new_v4(),
                UserChange::Password {
                    hash: NEW_HASH,
                    keep: None,
                },
                at(40),
            )
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .update_user(Uuid::new_v4(), UserChange::Disabled(true), at(40))
            .await
            .unwrap(),
        None
    );
}

/// A refresh token is found by its hash with its session; used and ended show.
pub async fn refresh_token_lookup_reports_its_session_and_state(store: &dyn Store) {
    let (_, sid) = alice_signed_in(store).await;
    let info = store.refresh_token(hash(1)).await.unwrap().unwrap();
    assert_eq!(info.session.id, sid);
    assert_eq!(info.exp, at(86_400));
    assert_eq!(info.used_at, None);
    assert!(info.is_active(at(100)));
    assert!(!info.is_active(at(86_401)));

    assert!(matches!(
        store.rotate_refresh(rotation(1, 2, 100)).await.unwrap(),
        RefreshOutcome::Rotated { .. }
    ));
    let used = store.refresh_token(hash(1)).await.unwrap().unwrap();
    assert_eq!(used.used_at, Some(at(100)));
    assert!(!used.is_active(at(100)));
    assert!(store
        .refresh_token(hash(2))
        .await
        .unwrap()
        .unwrap()
        .is_active(at(100)));

    store.end_session(sid, at(200)).await.unwrap();
    assert!(!store
        .refresh_token(hash(2))
        .await
        .unwrap()
        .unwrap()
        .is_active(at(200)));
    assert_eq!(store.refresh_token(hash(99)).await.unwrap(), None);
}

// ---- sessions ----

/// A session comes back exactly as created, with `last_seen_at = created_at`.
pub async fn session_round_trip(store: &dyn Store) {
    let alice = user(store, "alice@example.com").await;
    let new = new_session(alice.id, 10, 910, 1, 86_410);
    assert!(store.create_session(new.clone()).await.unwrap());
    let expected = Session {
        id: new.id,
        user_id: alice.id,
        created_at: at(10),
        last_seen_at: at(10),
        user_agent: Some("test-agent/1.0".to_owned()),
        ip: Some("192.0.2.7".to_owned()),
        access_exp: at(910),
        refresh_exp: at(86_410),
        ended_at: None,
    };
    assert_eq!(store.session(new.id).await.unwrap(), Some(expected));

    let bare = NewSession {
        user_agent: None,
        ip: None,
        ..new_session(alice.id, 20, 920, 2, 86_420)
    };
    assert!(store.create_session(bare.clone()).await.unwrap());
    let stored = store.session(bare.id).await.unwrap().unwrap();
    assert_eq!((stored.user_agent, stored.ip), (None, None));

    assert_eq!(store.session(Uuid::new_v4()).await.unwrap(), None);
}

/// Live sessions: not ended and a token unexpired (an expiry equal to `now` still
/// counts), oldest first, only the user's own.
pub async fn live_sessions_exclude_ended_and_expired(store: &dyn Store) {
    let alice = user(store, "alice@example.com").await;
    let bob = user(store, "bob@example.com").await;
    let now = 1_000;

    let newest = session(store, alice.id, 30, now + 900, 1, now + 9_000).await;
    let oldest = session(store, alice.id, 10, now - 100, 2, now + 9_000).await;
    let access_only = session(store, alice.id, 20, now, 3, now - 1).await;
    let _expired = session(store, alice.id, 5, now - 1, 4, now - 1).await;
    let ended = session(store, alice.id, 25, now + 900, 5, now + 9_000).await;
    store
        .end_session(ended, at(now - 10))
        .await
        .unwrap()
        .unwrap();
    let _bobs = session(store, bob.id, 1, now + 900, 6, now + 9_000).await;

    let ids = live_ids(store, alice.id, now).await;
    assert_eq!(ids, vec![oldest, access_only, newest]);
    assert_no_live_sessions(store, Uuid::new_v4(), now).await;
}

/// Ending a session records one `Session` revocation with its `access_exp`; ending it
/// again returns the same revocation and records nothing.
pub async fn end_session_records_a_session_revocation_once(store: &dyn Store) {
    let (_, sid) = alice_signed_in(store).await;
    let expected = Revocation::Session { sid, exp: at(900) };

    assert_eq!(
        store.end_session(sid, at(100)).await.unwrap(),
        Some(expected)
    );
    let stored = store.session(sid).await.unwrap().unwrap();
    assert_eq!(stored.ended_at, Some(at(100)));

    assert_eq!(
        store.end_session(sid, at(200)).await.unwrap(),
        Some(expected)
    );
    let stored = store.session(sid).await.unwrap().unwrap();
    assert_eq!(
        stored.ended_at,
        Some(at(100)),
        "ending again does not move ended_at"
    );

    let records = all_records(store).await;
    assert_eq!(records.len(), 1, "one revocation, not two: {records:?}");
    assert_eq!(records[0].1, expected);
    assert_eq!(live(store, at(200)).await, vec![expected]);

    assert_eq!(
        store.end_session(Uuid::new_v4(), at(200)).await.unwrap(),
        None
    );
    assert_eq!(all_records(store).await.len(), 1);
}

/// The restore procedure's cutoff ends the sessions of every user created before it, and
/// no other; their refresh tokens are refused as of an ended session. It records nothing.
pub async fn end_sessions_created_before_ends_every_users_older_sessions_only(store: &dyn Store) {
    let alice = user(store, "alice@example.com").await;
    let bob = user(store, "bob@example.com").await;
    let old_a = session(store, alice.id, 10, 900, 1, 9_000).await;
    let old_b = session(store, bob.id, 20, 900, 2, 9_000).await;
    let at_cutoff = session(store, bob.id, 30, 900, 3, 9_000).await;
    let ended = session(store, alice.id, 5, 900, 4, 9_000).await;
    store.end_session(ended, at(6)).await.unwrap();
    let before = all_records(store).await.len();

    let count = store
        .end_sessions_created_before(at(30), at(40))
        .await
        .unwrap();
    assert_eq!(count, 2);
    for sid in [old_a, old_b] {
        assert_eq!(
            store.session(sid).await.unwrap().unwrap().ended_at,
            Some(at(40))
        );
    }
    assert_eq!(
        store.session(at_cutoff).await.unwrap().unwrap().ended_at,
        None
    );
    assert_eq!(
        store.session(ended).await.unwrap().unwrap().ended_at,
        Some(at(6))
    );
    assert_eq!(all_records(store).await.len(), before);
    let outcome = store.rotate_refresh(rotation(1, 101, 50)).await.unwrap();
    assert!(
        matches!(outcome, RefreshOutcome::SessionEnded),
        "{outcome:?}"
    );
    assert_eq!(
        store
            .end_sessions_created_before(at(30), at(60))
            .await
            .unwrap(),
        0,
        "ending again ends nothing"
    );
}

/// Sign-out everywhere ends every live session of the user except `keep`, records one
/// revocation each, and leaves other users' and already dead sessions alone.
pub async fn end_user_sessions_keeps_the_current_one_and_spares_other_users(store: &dyn Store) {
    let alice = user(store, "alice@example.com").await;
    let bob = user(store, "bob@example.com").await;
    let now = 1_000;

    let current = session(store, alice.id, 1, now + 900, 1, now + 9_000).await;
    let other_a = session(store, alice.id, 2, now + 800, 2, now + 9_000).await;
    let other_b = session(store, alice.id, 3, now - 50, 3, now + 9_000).await;
    let expired = session(store, alice.id, 4, now - 10, 4, now - 10).await;
    let ended = session(store, alice.id, 5, now + 900, 5, now + 9_000).await;
    store.end_session(ended, at(now - 5)).await.unwrap();
    let bobs = session(store, bob.id, 6, now + 900, 6, now + 9_000).await;
    let before = all_records(store).await.len();

    let revs = store
        .end_user_sessions(alice.id, Some(current), at(now))
        .await
        .unwrap();
    let got: BTreeSet<_> = revs.iter().map(|r| format!("{r:?}")).collect();
    let want: BTreeSet<_> = [
        Revocation::Session {
            sid: other_a,
            exp: at(now + 800),
        },
        Revocation::Session {
            sid: other_b,
            exp: at(now - 50),
        },
    ]
    .iter()
    .map(|r| format!("{r:?}"))
    .collect();
    assert_eq!(got, want);
    assert_eq!(
        all_records(store).await.len(),
        before + 2,
        "one record per ended session"
    );

    for sid in [other_a, other_b] {
        assert_eq!(
            store.session(sid).await.unwrap().unwrap().ended_at,
            Some(at(now))
        );
    }
    assert_eq!(
        store.session(expired).await.unwrap().unwrap().ended_at,
        None,
        "dead sessions are left alone"
    );
    assert_eq!(
        store.session(ended).await.unwrap().unwrap().ended_at,
        Some(at(now - 5))
    );
    let ids = live_ids(store, alice.id, now).await;
    assert_eq!(ids, vec![current]);
    let ids = live_ids(store, bob.id, now).await;
    assert_eq!(ids, vec![bobs]);

    // Without `keep` the current session goes too.
    let revs = store
        .end_user_sessions(alice.id, None, at(now + 1))
        .await
        .unwrap();
    assert_eq!(
        revs,
        vec![Revocation::Session {
            sid: current,
            exp: at(now + 900)
        }]
    );
    assert_no_live_sessions(store, alice.id, now + 1).await;
    assert!(store
        .end_user_sessions(alice.id, None, at(now + 2))
        .await
        .unwrap()
        .is_empty());
}

// ---- refresh tokens ----

/// A refresh marks the token used, stores the new one, moves `refresh_exp` and raises
/// (never lowers) `access_exp`; the new token refreshes again; the old one is refused.
pub async fn refresh_rotation_issues_a_new_token_and_refuses_the_old(store: &dyn Store) {
    let (alice, sid) = alice_signed_in(store).await;

    let RefreshOutcome::Rotated {
        session: s,
        user: u,
    } = store.rotate_refresh(rotation(1, 2, 100)).await.unwrap()
    else {
        panic!("first use of a valid token must rotate");
    };
    assert_eq!(u, store.user_by_id(alice.id).await.unwrap().unwrap());
    assert_eq!((s.id, s.user_id), (sid, alice.id));
    assert_eq!(s.access_exp, at(1_000));
    assert_eq!(s.refresh_exp, at(100 + 86_400));
    assert_eq!(s.ended_at, None);
    assert_eq!(
        store.session(sid).await.unwrap(),
        Some(s.clone()),
        "the returned session is what is stored"
    );

    // A new access token expiring earlier than an earlier one must not shrink access_exp.
    let mut shorter = rotation(2, 3, 200);
    shorter.new_access_exp = at(500);
    let RefreshOutcome::Rotated { session: s, .. } = store.rotate_refresh(shorter).await.unwrap()
    else {
        panic!("the rotated token must rotate again");
    };
    assert_eq!(s.access_exp, at(1_000));
    assert_eq!(s.refresh_exp, at(200 + 86_400));

    assert!(matches!(
        store.rotate_refresh(rotation(1, 4, 300)).await.unwrap(),
        RefreshOutcome::Reused { .. }
    ));
    assert!(
        matches!(
            store.rotate_refresh(rotation(3, 5, 300)).await.unwrap(),
            RefreshOutcome::SessionEnded
        ),
        "after reuse even the newest token of the session is refused"
    );
}

/// Presenting a used token again ends the session and records its revocation durably.
pub async fn refresh_reuse_ends_the_session_and_records_its_revocation(store: &dyn Store) {
    let (alice, sid) = alice_signed_in(store).await;
    let bystander = session(store, alice.id, 0, 900, 9, 86_400).await;
    assert!(matches!(
        store.rotate_refresh(rotation(1, 2, 100)).await.unwrap(),
        RefreshOutcome::Rotated { .. }
    ));

    let outcome = store.rotate_refresh(rotation(1, 3, 200)).await.unwrap();
    let expected = Revocation::Session {
        sid,
        exp: at(1_000),
    };
    assert_eq!(
        outcome,
        RefreshOutcome::Reused {
            revocation: expected
        }
    );
    assert_eq!(
        store.session(sid).await.unwrap().unwrap().ended_at,
        Some(at(200))
    );
    assert_eq!(live(store, at(200)).await, vec![expected]);
    assert_eq!(
        store.session(bystander).await.unwrap().unwrap().ended_at,
        None,
        "only that session ends"
    );

    assert_eq!(
        store.rotate_refresh(rotation(2, 4, 300)).await.unwrap(),
        RefreshOutcome::SessionEnded
    );
    assert_eq!(
        store.rotate_refresh(rotation(1, 5, 300)).await.unwrap(),
        RefreshOutcome::SessionEnded
    );
    assert_eq!(
        all_records(store).await.len(),
        1,
        "an ended session is not revoked twice"
    );
}

/// A used token presented again within `grace` of its first use rotates again (a client
/// that lost the response); after the window it is reuse. Retries do not extend the window.
pub async fn refresh_reuse_within_grace_rotates_again(store: &dyn Store) {
    let (alice, sid) = alice_signed_in(store).await;
    let grace = |mut r: RefreshRotation| {
        r.grace = Duration::from_secs(10);
        r
    };

    assert!(matches!(
        store
            .rotate_refresh(grace(rotation(1, 2, 100)))
            .await
            .unwrap(),
        RefreshOutcome::Rotated { .. }
    ));
    let RefreshOutcome::Rotated { session: s, .. } = store
        .rotate_refresh(grace(rotation(1, 3, 105)))
        .await
        .unwrap()
    else {
        panic!("a retry within the grace period must rotate again");
    };
    assert_eq!(s.id, sid);
    assert_eq!(s.refresh_exp, at(105 + 86_400));
    assert!(
        matches!(
            store
                .rotate_refresh(grace(rotation(1, 4, 110)))
                .await
                .unwrap(),
            RefreshOutcome::Rotated { .. }
        ),
        "the window's last second still counts"
    );
    assert!(all_records(store).await.is_empty());

    // 11 s after the first use: the window has closed, even though the last retry was 1 s ago.
    let outcome = store
        .rotate_refresh(grace(rotation(1, 5, 111)))
        .await
        .unwrap();
    assert!(
        matches!(outcome, RefreshOutcome::Reused { .. }),
        "got {outcome:?}"
    );
    assert_eq!(
        store.session(sid).await.unwrap().unwrap().ended_at,
        Some(at(111))
    );

    // Zero grace: an immediate second use is reuse.
    let other = session(store, alice.id, 0, 900, 11, 86_400).await;
    assert!(matches!(
        store.rotate_refresh(rotation(11, 12, 100)).await.unwrap(),
        RefreshOutcome::Rotated { .. }
    ));
    let outcome = store.rotate_refresh(rotation(11, 13, 100)).await.unwrap();
    assert_eq!(
        outcome,
        RefreshOutcome::Reused {
            revocation: Revocation::Session {
                sid: other,
                exp: at(1_000)
            }
        }
    );
}

/// An ended session, an expired token and a disabled user are refused without recording
/// anything or ending the session.
pub async fn refresh_of_ended_session_expired_token_or_disabled_user_is_refused(store: &dyn Store) {
    let alice = user(store, "alice@example.com").await;
    let bob = user(store, "bob@example.com").await;

    let ended = session(store, alice.id, 0, 900, 1, 86_400).await;
    store.end_session(ended, at(50)).await.unwrap();
    assert_eq!(
        store.rotate_refresh(rotation(1, 2, 100)).await.unwrap(),
        RefreshOutcome::SessionEnded
    );

    let short = session(store, alice.id, 0, 900, 3, 1_000).await;
    assert_eq!(
        store.rotate_refresh(rotation(3, 4, 1_001)).await.unwrap(),
        RefreshOutcome::Expired
    );
    assert_eq!(
        store.session(short).await.unwrap().unwrap().ended_at,
        None,
        "expiry does not end the session"
    );
    assert!(
        matches!(
            store.rotate_refresh(rotation(3, 4, 1_000)).await.unwrap(),
            RefreshOutcome::Rotated { .. }
        ),
        "a token is still valid in its expiry second, and an expired answer did not consume it"
    );
    assert_eq!(
        store
            .rotate_refresh(rotation(4, 5, 1_001 + 86_400))
            .await
            .unwrap(),
        RefreshOutcome::Expired
    );

    let bobs = session(store, bob.id, 0, 900, 6, 86_400).await;
    let ended = store
        .update_user(bob.id, UserChange::Disabled(true), at(50))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ended,
        vec![Revocation::Session {
            sid: bobs,
            exp: at(900)
        }]
    );
    assert!(matches!(
        store.rotate_refresh(rotation(6, 7, 100)).await.unwrap(),
        RefreshOutcome::UserDisabled | RefreshOutcome::SessionEnded
    ));
    assert_eq!(
        store
            .update_user(bob.id, UserChange::Disabled(false), at(60))
            .await
            .unwrap(),
        Some(vec![])
    );
    assert!(
        !matches!(
            store.rotate_refresh(rotation(6, 7, 100)).await.unwrap(),
            RefreshOutcome::Rotated { .. }
        ),
        "re-enabling does not revive the sessions that disabling ended"
    );

    let records = all_records(store).await;
    assert_eq!(
        records.len(),
        2,
        "only the explicit sign-out and the disable were recorded, refusals record nothing: {records:?}"
    );
    assert_eq!(
        records[1].1,
        Revocation::Session {
            sid: bobs,
            exp: at(900)
        }
    );
}

/// A session for a user the store does not know is not created (and is no error).
pub async fn a_session_for_an_unknown_user_is_not_created(store: &dyn Store) {
    let created = store
        .create_session(new_session(Uuid::new_v4(), 0, 900, 7, 86_400))
        .await
        .unwrap();
    assert!(!created);
    assert!(store.refresh_token(hash(7)).await.unwrap().is_none());
}

/// A token the store never saw is `Unknown`, on an empty store and on a busy one.
pub async fn unknown_refresh_token_is_unknown(store: &dyn Store) {
    assert_eq!(
        store.rotate_refresh(rotation(1, 2, 100)).await.unwrap(),
        RefreshOutcome::Unknown
    );
    let alice = user(store, "alice@example.com").await;
    session(store, alice.id, 0, 900, 3, 86_400).await;
    assert_eq!(
        store.rotate_refresh(rotation(1, 2, 100)).await.unwrap(),
        RefreshOutcome::Unknown
    );
    assert!(all_records(store).await.is_empty());
}

// ---- revocations ----

/// A batch spanning many insert statements is recorded whole: every kind round-trips,
/// sequence numbers are consecutive in batch order, and a reader running concurrently
/// sees none of the batch or all of it, never a part.
///
/// Forcing a failure half-way needs backend access (SQLite's tests do it with a trigger);
/// through the trait every `Revocation` is valid, so this checks the visible half of the
/// guarantee.
pub async fn record_revocations_is_all_or_nothing(store: &dyn Store) {
    store.record_revocations(&[], at(0)).await.unwrap();
    assert_eq!(
        store
            .load_live_revocations(at(0), Duration::ZERO)
            .await
            .unwrap()
            .cursor,
        0
    );

    let batch: Vec<Revocation> = (0..2_500).flat_map(|i| one_of_each(10_000 + i)).collect();
    let n = batch.len();
    let write = store.record_revocations(&batch, at(1));
    let watch = async {
        let mut seen = Vec::new();
        for _ in 0..20 {
            seen.push(
                store
                    .load_live_revocations(at(0), Duration::ZERO)
                    .await
                    .unwrap()
                    .revocations
                    .len(),
            );
            tokio::task::yield_now().await;
        }
        seen
    };
    let (written, seen) = tokio::join!(write, watch);
    written.unwrap();
    assert!(
        seen.iter().all(|&c| c == 0 || c == n),
        "a reader saw part of a batch: {seen:?}"
    );

    let records = all_records(store).await;
    assert_eq!(records.len(), n);
    let got: Vec<Revocation> = records.iter().map(|(_, r)| *r).collect();
    assert_eq!(got, batch, "every kind round-trips, in batch order");
    assert!(
        records.windows(2).all(|w| w[1].0 == w[0].0 + 1),
        "one batch gets consecutive sequence numbers"
    );
}

/// A signal's id is recorded with its revocations in one step; the same id again records
/// nothing and answers `false`, whatever revocations it carries; a signal with no
/// revocation (only events tokengate ignores) is still remembered.
pub async fn a_signal_is_recorded_once_with_its_revocations(store: &dyn Store) {
    let signal = Uuid::new_v4();
    let revocations = one_of_each(10_000);
    assert!(store
        .record_revocations_once(signal, at(500), &revocations, at(1))
        .await
        .unwrap());
    let recorded: Vec<Revocation> = all_records(store)
        .await
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    assert_eq!(recorded, revocations);

    let replay = one_of_each(20_000);
    assert!(!store
        .record_revocations_once(signal, at(500), &replay, at(2))
        .await
        .unwrap());
    assert_eq!(
        all_records(store).await.len(),
        revocations.len(),
        "a replayed signal records nothing"
    );

    let ignored = Uuid::new_v4();
    assert!(store
        .record_revocations_once(ignored, at(500), &[], at(3))
        .await
        .unwrap());
    assert!(!store
        .record_revocations_once(ignored, at(500), &[], at(4))
        .await
        .unwrap());
    assert_eq!(all_records(store).await.len(), revocations.len());
}

/// Several deliveries of one signal at once (two nodes, or a provider retrying while
/// the first attempt is in flight): exactly one records it.
pub async fn concurrent_deliveries_of_one_signal_record_it_once(store: &dyn Store) {
    let signal = Uuid::new_v4();
    let deliver = |i: i64| {
        let revocations = vec![Revocation::Session {
            sid: Uuid::new_v4(),
            exp: at(1_000 + i),
        }];
        async move {
            store
                .record_revocations_once(signal, at(600), &revocations, at(1))
                .await
                .unwrap()
        }
    };
    let answers = tokio::join!(deliver(0), deliver(1), deliver(2), deliver(3));
    let answers = [answers.0, answers.1, answers.2, answers.3];
    assert_eq!(
        answers.iter().filter(|&&first| first).count(),
        1,
        "{answers:?}"
    );
    assert_eq!(all_records(store).await.len(), 1);
}

/// A seen signal's record goes with the purge once its `exp` has passed, within the
/// purge's row budget; until then it still refuses a replay.
pub async fn seen_signals_are_purged_after_they_expire(store: &dyn Store) {
    let (old, young) = (Uuid::new_v4(), Uuid::new_v4());
    for (signal, exp) in [(old, 100), (young, 10_000)] {
        assert!(store
            .record_revocations_once(signal, at(exp), &[], at(0))
            .await
            .unwrap());
    }
    assert_eq!(store.purge_expired(at(1_000), 0).await.unwrap(), 0);
    assert_eq!(store.purge_expired(at(1_000), 10).await.unwrap(), 1);
    assert_eq!(store.purge_expired(at(1_000), 10).await.unwrap(), 0);
    assert!(
        store
            .record_revocations_once(old, at(2_000), &[], at(1_000))
            .await
            .unwrap(),
        "the purged id is free again (its signal is refused as expired before this)"
    );
    assert!(!store
        .record_revocations_once(young, at(10_000), &[], at(1_000))
        .await
        .unwrap());
}

/// `exp + leeway >= now` is live; the cursor is the newest record's sequence number
/// even when that record has expired.
pub async fn load_live_revocations_skips_expired_and_returns_cursor(store: &dyn Store) {
    let empty = store
        .load_live_revocations(at(0), Duration::from_secs(30))
        .await
        .unwrap();
    assert!(empty.revocations.is_empty());
    assert_eq!(empty.cursor, 0);

    let now = 1_000;
    let long_gone = Revocation::Token {
        jti: Uuid::new_v4(),
        exp: at(now - 31),
    };
    let in_leeway = Revocation::Token {
        jti: Uuid::new_v4(),
        exp: at(now - 30),
    };
    let due_now = Revocation::Session {
        sid: Uuid::new_v4(),
        exp: at(now),
    };
    let mut future = one_of_each(now + 100);
    let mut batch = vec![long_gone, in_leeway, due_now];
    batch.append(&mut future);
    store.record_revocations(&batch, at(now)).await.unwrap();
    let expired_last = Revocation::Token {
        jti: Uuid::new_v4(),
        exp: at(now - 500),
    };
    store
        .record_revocations(&[expired_last], at(now))
        .await
        .unwrap();

    let newest = all_records(store).await.last().unwrap().0;
    let loaded = store
        .load_live_revocations(at(now), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        loaded.cursor, newest,
        "the cursor covers expired records too"
    );
    let got: BTreeSet<String> = loaded
        .revocations
        .iter()
        .map(|r| format!("{r:?}"))
        .collect();
    let want: BTreeSet<String> = batch[1..].iter().map(|r| format!("{r:?}")).collect();
    assert_eq!(got, want);
    assert_eq!(loaded.revocations.len(), batch.len() - 1);

    let strict = store
        .load_live_revocations(at(now), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        strict.revocations.len(),
        batch.len() - 2,
        "without leeway only exp >= now is live"
    );
    assert!(live(store, at(now + 104)).await.is_empty());
}

/// Records after a cursor come oldest first with their sequence numbers, bounded by
/// `limit`, including those made by session operations.
pub async fn revocations_after_tails_new_records_in_order(store: &dyn Store) {
    assert!(store.revocations_after(0, 10).await.unwrap().is_empty());
    let first = one_of_each(5_000);
    store.record_revocations(&first[..2], at(1)).await.unwrap();
    let cursor = store
        .load_live_revocations(at(1), Duration::ZERO)
        .await
        .unwrap()
        .cursor;
    store.record_revocations(&first[2..], at(2)).await.unwrap();
    let (_, sid) = alice_signed_in(store).await;
    let ended = store.end_session(sid, at(3)).await.unwrap().unwrap();

    let all = store.revocations_after(0, 100).await.unwrap();
    let got: Vec<Revocation> = all.iter().map(|(_, r)| *r).collect();
    assert_eq!(got, vec![first[0], first[1], first[2], first[3], ended]);
    assert!(
        all.windows(2).all(|w| w[0].0 < w[1].0),
        "sequence numbers increase"
    );
    assert!(
        all[0].0 > 0,
        "sequence numbers start above the empty cursor 0"
    );
    assert_eq!(all[1].0, cursor);

    let tail = store.revocations_after(cursor, 2).await.unwrap();
    assert_eq!(
        tail,
        all[2..4].to_vec(),
        "after the cursor, at most `limit`"
    );
    let tail = store.revocations_after(tail[1].0, 100).await.unwrap();
    assert_eq!(tail, all[4..].to_vec());
    assert!(store
        .revocations_after(all[4].0, 100)
        .await
        .unwrap()
        .is_empty());
    assert!(store.revocations_after(0, 0).await.unwrap().is_empty());
}

/// Purging removes expired revocations, refresh tokens and dead sessions, never more than
/// `limit` rows a call, and leaves everything still live; sequence numbers never restart.
pub async fn purge_expired_deletes_in_bounded_batches(store: &dyn Store) {
    let now = 100_000;
    let expired: Vec<Revocation> = (0..10)
        .map(|i| Revocation::Token {
            jti: Uuid::new_v4(),
            exp: at(now - 100 - i),
        })
        .collect();
    let kept = one_of_each(now + 10);
    store.record_revocations(&expired, at(0)).await.unwrap();
    store.record_revocations(&kept, at(0)).await.unwrap();

    let alice = user(store, "alice@example.com").await;
    // Dead: both expiries past; its first token was rotated, so it has two tokens.
    let dead = session(store, alice.id, 0, 900, 1, 50_000).await;
    assert!(matches!(
        store.rotate_refresh(rotation(1, 2, 100)).await.unwrap(),
        RefreshOutcome::Rotated { .. }
    ));
    // Live, but its first token (expiring at 1 000) was rotated and has expired.
    let alive = session(store, alice.id, 0, 900, 3, 1_000).await;
    let mut long = rotation(3, 4, 500);
    long.new_refresh_exp = at(now + 86_400);
    assert!(matches!(
        store.rotate_refresh(long).await.unwrap(),
        RefreshOutcome::Rotated { .. }
    ));

    // 10 revocations + 3 refresh tokens (dead's two, alive's first) + 1 session.
    let expected = 14;
    assert_eq!(store.purge_expired(at(now), 0).await.unwrap(), 0);
    let mut total = 0;
    let mut calls = 0;
    loop {
        let n = store.purge_expired(at(now), 4).await.unwrap();
        assert!(n <= 4, "a call deleted {n} rows, more than its limit");
        if n == 0 {
            break;
        }
        total += n;
        calls += 1;
        assert!(calls <= expected, "purging does not converge");
    }
    assert_eq!(total, expected);
    assert!(calls >= 4, "14 rows at 4 a call take at least 4 calls");

    let left: Vec<Revocation> = all_records(store)
        .await
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    assert_eq!(left, kept);
    assert_eq!(store.session(dead).await.unwrap(), None);
    assert!(store.session(alive).await.unwrap().is_some());
    assert_eq!(
        store.rotate_refresh(rotation(3, 5, 600)).await.unwrap(),
        RefreshOutcome::Unknown,
        "purged token"
    );
    assert!(
        matches!(
            store.rotate_refresh(rotation(4, 6, 600)).await.unwrap(),
            RefreshOutcome::Rotated { .. }
        ),
        "a live token survives the purge"
    );

    let before = all_records(store).await.last().unwrap().0;
    let fresh = Revocation::Token {
        jti: Uuid::new_v4(),
        exp: at(now + 50),
    };
    store.record_revocations(&[fresh], at(now)).await.unwrap();
    let after = all_records(store).await.last().unwrap().0;
    assert!(after > before);
}

/// `last_seen_at` only moves forward; unknown ids and empty batches are ignored.
pub async fn touch_sessions_never_moves_back(store: &dyn Store) {
    let alice = user(store, "alice@example.com").await;
    let a = session(store, alice.id, 10, 900, 1, 86_400).await;
    let b = session(store, alice.id, 10, 900, 2, 86_400).await;

    store.touch_sessions(&[]).await.unwrap();
    store
        .touch_sessions(&[(a, at(100)), (b, at(50)), (Uuid::new_v4(), at(70))])
        .await
        .unwrap();
    assert_eq!(
        store.session(a).await.unwrap().unwrap().last_seen_at,
        at(100)
    );
    assert_eq!(
        store.session(b).await.unwrap().unwrap().last_seen_at,
        at(50)
    );

    store
        .touch_sessions(&[(a, at(60)), (b, at(80))])
        .await
        .unwrap();
    assert_eq!(
        store.session(a).await.unwrap().unwrap().last_seen_at,
        at(100),
        "never moves back"
    );
    assert_eq!(
        store.session(b).await.unwrap().unwrap().last_seen_at,
        at(80)
    );

    store.touch_sessions(&[(a, at(5))]).await.unwrap();
    assert_eq!(
        store.session(a).await.unwrap().unwrap().last_seen_at,
        at(100),
        "not even before created_at"
    );
}

// ---- signing keys ----

/// The first key is inserted once even when nodes race; rotation stamps `verify_until`
/// on every current key and appends the new one; keys come oldest first.
pub async fn signing_keys_rotate_and_first_insert_is_once(store: &dyn Store) {
    assert!(store.signing_keys().await.unwrap().is_empty());

    let (a, b) = tokio::join!(
        store.insert_first_signing_key(key("k1", 0)),
        store.insert_first_signing_key(key("k2", 0))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.len(), 1, "exactly one first key: {a:?}");
    assert_eq!(a, b, "both racers see the same single key");
    let first = a[0].clone();
    assert_eq!(
        store.insert_first_signing_key(key("k9", 1)).await.unwrap(),
        vec![first.clone()]
    );
    assert_eq!(store.signing_keys().await.unwrap(), vec![first.clone()]);

    let keys = rotate(store, key("k3", 100), at(1_000)).await;
    assert_eq!(keys, vec![retired(first.clone(), 1_000), key("k3", 100)]);

    // Same created_at as k3: insertion order decides.
    let keys = rotate(store, key("k4", 100), at(2_000)).await;
    assert_eq!(
        keys,
        vec![
            retired(first.clone(), 1_000),
            retired(key("k3", 100), 2_000),
            key("k4", 100),
        ],
        "only keys without verify_until get the new one"
    );

    let err = store
        .rotate_signing_key(key("k4", 200), at(3_000))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(_)),
        "a taken kid: {err:?}"
    );
    assert_eq!(
        store.signing_keys().await.unwrap(),
        keys,
        "a failed rotation changes nothing"
    );
}

/// `key` retired: still verifying until `until`.
fn retired(key: StoredKey, until: i64) -> StoredKey {
    StoredKey {
        verify_until: Some(at(until)),
        ..key
    }
}

/// Rotate to `next` at `now`; the keys the store then holds.
async fn rotate(store: &dyn Store, next: StoredKey, now: Timestamp) -> Vec<StoredKey> {
    store.rotate_signing_key(next, now).await.unwrap();
    store.signing_keys().await.unwrap()
}

/// A reachable store answers `ping`.
pub async fn ping_answers(store: &dyn Store) {
    store.ping().await.unwrap();
}
