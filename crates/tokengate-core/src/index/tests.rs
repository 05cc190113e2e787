#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize};

use proptest::prelude::*;
use tokio::sync::broadcast::error::TryRecvError;

use super::*;
use crate::claims::Role;

const T0: i64 = 1_700_000_000;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_secs(secs)
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn claims(jti: Uuid, sid: Uuid, sub: Uuid, iat: i64) -> Claims {
    Claims {
        iss: "tokengate".into(),
        sub,
        aud: "app".into(),
        iat: at(iat),
        nbf: at(iat),
        exp: at(iat + 900),
        jti,
        sid,
        email: "a@example.com".into(),
        role: Role::User,
    }
}

fn fresh_claims(iat: i64) -> Claims {
    claims(Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), iat)
}

/// Apply, at `now`, a revocation of every token of `sub` issued before `issued_before`,
/// kept until `exp` (all in seconds).
fn revoke_user(index: &RevocationIndex, sub: Uuid, issued_before: i64, exp: i64, now: i64) {
    index.apply(
        &Revocation::User {
            sub,
            issued_before: at(issued_before),
            exp: at(exp),
        },
        at(now),
    );
}

fn purge_all(index: &RevocationIndex, now: i64) -> usize {
    index.purge(at(now), usize::MAX)
}

#[test]
fn index_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<RevocationIndex>();
}

#[test]
fn revoked_token_is_refused_by_jti() {
    let index = RevocationIndex::new(Duration::from_secs(30));
    let revoked = fresh_claims(T0);
    let other = fresh_claims(T0);
    assert!(index.apply(
        &Revocation::Token {
            jti: revoked.jti,
            exp: revoked.exp
        },
        at(T0)
    ));
    assert_eq!(index.check(&revoked, at(T0)), Err(RevocationKind::Token));
    assert_eq!(index.check(&other, at(T0)), Ok(()));
    assert_eq!(index.len_of(RevocationKind::Token), 1);
}

#[test]
fn session_revocation_refuses_every_token_of_the_session() {
    let index = RevocationIndex::new(Duration::from_secs(30));
    let sid = Uuid::new_v4();
    let sub = Uuid::new_v4();
    let first = claims(Uuid::new_v4(), sid, sub, T0);
    let refreshed = claims(Uuid::new_v4(), sid, sub, T0 + 600);
    let other_session = claims(Uuid::new_v4(), Uuid::new_v4(), sub, T0 + 600);
    index.apply(
        &Revocation::Session {
            sid,
            exp: refreshed.exp,
        },
        at(T0 + 700),
    );
    assert_eq!(
        index.check(&first, at(T0 + 700)),
        Err(RevocationKind::Session)
    );
    assert_eq!(
        index.check(&refreshed, at(T0 + 700)),
        Err(RevocationKind::Session)
    );
    assert_eq!(index.check(&other_session, at(T0 + 700)), Ok(()));
}

#[test]
fn user_revocation_refuses_tokens_issued_before_the_cutoff_but_not_a_new_sign_in() {
    let index = RevocationIndex::new(Duration::from_secs(30));
    let sub = Uuid::new_v4();
    let cutoff = T0 + 100;
    let old = claims(Uuid::new_v4(), Uuid::new_v4(), sub, T0);
    let just_before = claims(Uuid::new_v4(), Uuid::new_v4(), sub, cutoff - 1);
    let same_second = claims(Uuid::new_v4(), Uuid::new_v4(), sub, cutoff);
    let someone_else = claims(Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), T0);
    let rev = Revocation::User {
        sub,
        issued_before: at(cutoff),
        exp: at(cutoff + 900),
    };
    index.apply(&rev, at(cutoff));
    assert_eq!(index.check(&old, at(cutoff)), Err(RevocationKind::User));
    assert_eq!(
        index.check(&just_before, at(cutoff)),
        Err(RevocationKind::User)
    );
    assert_eq!(index.check(&same_second, at(cutoff)), Ok(()));
    assert_eq!(index.check(&someone_else, at(cutoff)), Ok(()));
}

#[test]
fn issued_before_refuses_every_older_token_and_accepts_newer_ones() {
    let index = RevocationIndex::new(Duration::from_secs(30));
    let cutoff = T0 + 100;
    let rev = Revocation::IssuedBefore {
        issued_before: at(cutoff),
        exp: at(cutoff + 900),
    };
    assert!(index.apply(&rev, at(cutoff)));
    assert_eq!(
        index.check(&fresh_claims(T0), at(cutoff)),
        Err(RevocationKind::IssuedBefore)
    );
    assert_eq!(
        index.check(&fresh_claims(cutoff - 1), at(cutoff)),
        Err(RevocationKind::IssuedBefore)
    );
    assert_eq!(index.check(&fresh_claims(cutoff), at(cutoff)), Ok(()));
    assert_eq!(index.len_of(RevocationKind::IssuedBefore), 1);
    // Dead after exp + leeway, even before purge; then purge forgets it.
    assert_eq!(
        index.check(&fresh_claims(T0), at(cutoff + 930)),
        Err(RevocationKind::IssuedBefore)
    );
    assert_eq!(index.check(&fresh_claims(T0), at(cutoff + 931)), Ok(()));
    assert_eq!(purge_all(&index, cutoff + 930), 0);
    assert_eq!(purge_all(&index, cutoff + 931), 1);
    assert!(index.is_empty());
}

#[test]
fn most_specific_kind_is_reported_when_several_apply() {
    let index = RevocationIndex::new(Duration::ZERO);
    let c = fresh_claims(T0);
    index.apply(
        &Revocation::IssuedBefore {
            issued_before: at(T0 + 1),
            exp: c.exp,
        },
        at(T0),
    );
    assert_eq!(index.check(&c, at(T0)), Err(RevocationKind::IssuedBefore));
    index.apply(
        &Revocation::User {
            sub: c.sub,
            issued_before: at(T0 + 1),
            exp: c.exp,
        },
        at(T0),
    );
    assert_eq!(index.check(&c, at(T0)), Err(RevocationKind::User));
    index.apply(
        &Revocation::Session {
            sid: c.sid,
            exp: c.exp,
        },
        at(T0),
    );
    assert_eq!(index.check(&c, at(T0)), Err(RevocationKind::Session));
    index.apply(
        &Revocation::Token {
            jti: c.jti,
            exp: c.exp,
        },
        at(T0),
    );
    assert_eq!(index.check(&c, at(T0)), Err(RevocationKind::Token));
    assert_eq!(index.len(), 4);
}

#[test]
fn apply_is_idempotent_and_merging_keeps_the_later_exp() {
    let index = RevocationIndex::new(Duration::ZERO);
    let c = fresh_claims(T0);
    let late = Revocation::Token {
        jti: c.jti,
        exp: at(T0 + 900),
    };
    let early = Revocation::Token {
        jti: c.jti,
        exp: at(T0 + 100),
    };
    assert!(index.apply(&late, at(T0)));
    assert!(!index.apply(&late, at(T0)));
    assert!(!index.apply(&early, at(T0)));
    assert_eq!(index.len(), 1);
    // Still refused after the earlier exp: the later one won.
    assert_eq!(index.check(&c, at(T0 + 500)), Err(RevocationKind::Token));
    assert_eq!(purge_all(&index, T0 + 500), 0);
    assert_eq!(index.check(&c, at(T0 + 901)), Ok(()));
    assert_eq!(purge_all(&index, T0 + 901 + PURGE_GRACE_SECS), 1);
    assert!(index.is_empty());
}

#[test]
fn user_merge_keeps_the_later_cutoff_and_the_later_exp() {
    let index = RevocationIndex::new(Duration::ZERO);
    let sub = Uuid::new_v4();
    let between = claims(Uuid::new_v4(), Uuid::new_v4(), sub, T0 + 50);
    revoke_user(&index, sub, T0 + 100, T0 + 1000, T0);
    revoke_user(&index, sub, T0 + 10, T0 + 2000, T0);
    assert_eq!(index.len_of(RevocationKind::User), 1);
    assert_eq!(
        index.check(&between, at(T0 + 1500)),
        Err(RevocationKind::User)
    );
    assert_eq!(index.check(&between, at(T0 + 2001)), Ok(()));
}

#[test]
fn dead_user_cutoff_is_replaced_not_merged() {
    let index = RevocationIndex::new(Duration::ZERO);
    let sub = Uuid::new_v4();
    revoke_user(&index, sub, T0 + 500, T0 + 100, T0);
    // The first entry died at T0 + 101 but was not purged; its cutoff must not return.
    revoke_user(&index, sub, T0 + 200, T0 + 900, T0 + 200);
    let signed_in_later = claims(Uuid::new_v4(), Uuid::new_v4(), sub, T0 + 300);
    assert_eq!(index.check(&signed_in_later, at(T0 + 300)), Ok(()));
    let older = claims(Uuid::new_v4(), Uuid::new_v4(), sub, T0 + 199);
    assert_eq!(index.check(&older, at(T0 + 300)), Err(RevocationKind::User));
}

#[test]
fn entry_is_accepted_after_exp_plus_leeway_before_purge_and_gone_after_purge() {
    let index = RevocationIndex::new(Duration::from_secs(30));
    let c = fresh_claims(T0);
    let exp = c.exp.as_secs();
    index.apply(
        &Revocation::Token {
            jti: c.jti,
            exp: c.exp,
        },
        at(T0),
    );
    assert_eq!(index.check(&c, at(exp + 30)), Err(RevocationKind::Token));
    assert_eq!(index.check(&c, at(exp + 31)), Ok(()));
    assert_eq!(index.len(), 1);
    // Dead from exp + 31, forgotten a grace period later.
    let due = exp + 30 + PURGE_GRACE_SECS;
    assert_eq!(purge_all(&index, due - 1), 0);
    assert_eq!(index.len(), 1);
    assert_eq!(purge_all(&index, due), 1);
    assert_eq!(index.len(), 0);
}

#[test]
fn purge_forgets_each_entry_a_grace_period_after_it_dies() {
    let index = RevocationIndex::new(Duration::ZERO);
    index.apply(
        &Revocation::Token {
            jti: id(1),
            exp: at(T0 + 500),
        },
        at(T0),
    );
    revoke_user(&index, id(2), T0, T0 + 100, T0);
    // The user entry dies first (after T0 + 100) and is purged a grace period later.
    let due = T0 + 100 + PURGE_GRACE_SECS;
    assert_eq!(purge_all(&index, due - 1), 0);
    assert_eq!(purge_all(&index, due), 1);
    assert_eq!(index.len_of(RevocationKind::User), 0);
    assert_eq!(index.len_of(RevocationKind::Token), 1);
    let due = T0 + 500 + PURGE_GRACE_SECS;
    assert_eq!(purge_all(&index, due - 1), 0);
    assert_eq!(purge_all(&index, due), 1);
    assert!(index.is_empty());
}

#[test]
fn sub_second_leeway_rounds_up() {
    let index = RevocationIndex::new(Duration::from_millis(1));
    let c = fresh_claims(T0);
    index.apply(
        &Revocation::Token {
            jti: c.jti,
            exp: c.exp,
        },
        at(T0),
    );
    assert_eq!(
        index.check(&c, c.exp.plus(Duration::from_secs(1))),
        Err(RevocationKind::Token)
    );
}

#[test]
fn expired_revocations_are_ignored_on_apply_and_load() {
    let index = RevocationIndex::new(Duration::from_secs(30));
    let mut events = index.subscribe();
    let now = T0 + 1000;
    let dead = Revocation::Token {
        jti: Uuid::new_v4(),
        exp: at(now - 31),
    };
    let barely_live = Revocation::Token {
        jti: Uuid::new_v4(),
        exp: at(now - 30),
    };
    assert!(!index.apply(&dead, at(now)));
    assert_eq!(events.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(index.len(), 0);
    let dead_user = Revocation::User {
        sub: Uuid::new_v4(),
        issued_before: at(T0),
        exp: at(T0),
    };
    let dead_global = Revocation::IssuedBefore {
        issued_before: at(T0),
        exp: at(T0),
    };
    assert_eq!(
        index.load([dead, dead_user, dead_global, barely_live], at(now)),
        1
    );
    assert_eq!(index.len(), 1);
    assert_eq!(index.len_of(RevocationKind::IssuedBefore), 0);
}

#[test]
fn purge_respects_budget_and_finishes_over_several_calls() {
    let index = RevocationIndex::new(Duration::ZERO);
    // 1000 entries dying at one time and 500 later.
    let revs = (0..1500u128).map(|n| Revocation::Token {
        jti: id(n),
        exp: at(if n < 1000 { T0 + 100 } else { T0 + 200 }),
    });
    assert_eq!(index.load(revs, at(T0)), 1500);
    let now = T0 + 1000;
    let mut calls = Vec::new();
    loop {
        let removed = index.purge(at(now), 300);
        assert!(removed <= 300);
        if removed == 0 {
            break;
        }
        calls.push(removed);
    }
    assert_eq!(calls, vec![300, 300, 300, 300, 300]);
    assert!(index.is_empty());
    assert_eq!(index.purge(at(now), 0), 0);
}

#[test]
fn partly_swept_shard_keeps_its_remainder_for_the_next_call() {
    let index = RevocationIndex::new(Duration::ZERO);
    let revs = (0..100u128).map(|n| Revocation::Session {
        sid: id(n),
        exp: at(T0 + 10),
    });
    index.load(revs, at(T0));
    assert_eq!(index.purge(at(T0 + 100), 30), 30);
    assert_eq!(index.len_of(RevocationKind::Session), 70);
    assert_eq!(index.purge(at(T0 + 100), 1000), 70);
    assert!(index.is_empty());
}

#[test]
fn purge_keeps_an_entry_extended_by_a_later_apply() {
    let index = RevocationIndex::new(Duration::ZERO);
    let c = fresh_claims(T0);
    index.apply(
        &Revocation::Session {
            sid: c.sid,
            exp: at(T0 + 10),
        },
        at(T0),
    );
    index.apply(
        &Revocation::Session {
            sid: c.sid,
            exp: at(T0 + 1000),
        },
        at(T0),
    );
    // The shard is due (its earliest expiry passed); sweeping it must keep the extended entry.
    assert_eq!(purge_all(&index, T0 + 100), 0);
    assert_eq!(index.check(&c, at(T0 + 100)), Err(RevocationKind::Session));
    assert_eq!(purge_all(&index, T0 + 2000), 1);
    assert!(index.is_empty());
}

#[test]
fn a_thread_that_grows_a_table_lets_go_of_the_tables_it_replaced() {
    // This thread checks (and so caches the snapshot), then grows every token table, as
    // the request that carries a bulk import does. Nothing checks afterwards: an idle node.
    let index = RevocationIndex::new(Duration::from_secs(0));
    assert_eq!(index.check(&fresh_claims(T0), at(T0)), Ok(()));
    let replaced: Vec<std::sync::Weak<Table<PLAIN>>> = index
        .snapshot
        .load()
        .tokens
        .iter()
        .map(Arc::downgrade)
        .collect();
    for _ in 0..SHARDS * 64 {
        let rev = Revocation::Token {
            jti: Uuid::new_v4(),
            exp: at(T0 + 900),
        };
        index.apply(&rev, at(T0));
    }
    let alive = replaced.iter().filter(|t| t.upgrade().is_some()).count();
    assert_eq!(alive, 0, "{alive} replaced tables are still held");
    // The next check loads the current snapshot and still sees what was applied.
    let revoked = claims(id(7), id(8), id(9), T0);
    index.apply(
        &Revocation::Token {
            jti: id(7),
            exp: at(T0 + 900),
        },
        at(T0),
    );
    assert_eq!(index.check(&revoked, at(T0)), Err(RevocationKind::Token));
}

#[test]
fn subscribers_receive_applied_revocations() {
    let index = RevocationIndex::new(Duration::from_secs(30));
    let mut events = index.subscribe();
    let session = Revocation::Session {
        sid: Uuid::new_v4(),
        exp: at(T0 + 900),
    };
    let user = Revocation::User {
        sub: Uuid::new_v4(),
        issued_before: at(T0),
        exp: at(T0 + 900),
    };
    index.apply(&session, at(T0));
    index.apply(&user, at(T0));
    assert_eq!(events.try_recv(), Ok(session));
    assert_eq!(events.try_recv(), Ok(user));
    assert_eq!(events.try_recv(), Err(TryRecvError::Empty));
}

#[test]
fn a_revocation_applied_twice_is_announced_once() {
    let index = RevocationIndex::new(Duration::from_secs(30));
    let mut events = index.subscribe();
    let sub = Uuid::new_v4();
    let session = Revocation::Session {
        sid: Uuid::new_v4(),
        exp: at(T0 + 900),
    };
    let user = Revocation::User {
        sub,
        issued_before: at(T0),
        exp: at(T0 + 900),
    };
    let global = Revocation::IssuedBefore {
        issued_before: at(T0),
        exp: at(T0 + 900),
    };
    for rev in [session, user, global] {
        // Applied by the handler, then again when read back from the store.
        assert!(index.apply(&rev, at(T0)));
        assert!(!index.apply(&rev, at(T0 + 1)));
        assert_eq!(events.try_recv(), Ok(rev));
        assert_eq!(events.try_recv(), Err(TryRecvError::Empty));
    }
    // A later cutoff for the same user changes the entry: announced again.
    let later = Revocation::User {
        sub,
        issued_before: at(T0 + 60),
        exp: at(T0 + 960),
    };
    assert!(index.apply(&later, at(T0 + 60)));
    assert_eq!(events.try_recv(), Ok(later));
    // An earlier one is covered by what the index holds: not announced.
    assert!(!index.apply(&user, at(T0 + 60)));
    assert_eq!(events.try_recv(), Err(TryRecvError::Empty));
    // A later exp alone is a change too.
    let longer = Revocation::Session {
        sid: session.subject_id(),
        exp: at(T0 + 1800),
    };
    assert!(index.apply(&longer, at(T0 + 60)));
    assert_eq!(events.try_recv(), Ok(longer));
}

#[test]
fn load_does_not_notify_subscribers() {
    let index = RevocationIndex::new(Duration::from_secs(30));
    let mut events = index.subscribe();
    let revs = (0..10u128).map(|n| Revocation::Token {
        jti: id(n),
        exp: at(T0 + 900),
    });
    assert_eq!(index.load(revs, at(T0)), 10);
    assert_eq!(events.try_recv(), Err(TryRecvError::Empty));
}

#[test]
fn purge_under_concurrent_reads_never_accepts_an_unexpired_revoked_token() {
    let index = RevocationIndex::new(Duration::from_secs(5));
    let far = at(T0 + 100_000);
    // Revoked for good during the test, loaded up front.
    let kept: Vec<Claims> = (0..256).map(|_| fresh_claims(T0)).collect();
    // Sessions revoked while readers run.
    let added: Vec<Claims> = (0..2_000).map(|_| fresh_claims(T0)).collect();
    // Tokens expiring within 100 s, purged while readers run; the first 1000 are revoked
    // again with a far `exp` while their shards are due, so a sweep must read the
    // current `exp` before it removes.
    let expiring: Vec<Claims> = (0..20_000).map(|_| fresh_claims(T0)).collect();
    let (extended, _) = expiring.split_at(1_000);
    index.load(
        kept.iter().map(|c| Revocation::Token {
            jti: c.jti,
            exp: far,
        }),
        at(T0),
    );
    let soon = |i: usize| at(T0 + (i % 100) as i64);
    let revs = expiring.iter().enumerate();
    index.load(
        revs.map(|(i, c)| Revocation::Token {
            jti: c.jti,
            exp: soon(i),
        }),
        at(T0),
    );
    let now = AtomicI64::new(T0);
    let applied = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let checks = AtomicUsize::new(0);

    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                let mut rounds = 0;
                // At least a few rounds even if the writer finishes first.
                while !done.load(Ordering::Acquire) || rounds < 3 {
                    let t = at(now.load(Ordering::Acquire));
                    for c in &kept {
                        assert_eq!(index.check(c, t), Err(RevocationKind::Token));
                    }
                    let n = applied.load(Ordering::Acquire);
                    for c in &added[..n] {
                        assert_eq!(index.check(c, t), Err(RevocationKind::Session));
                    }
                    for c in &extended[..n.min(extended.len())] {
                        assert_eq!(index.check(c, t), Err(RevocationKind::Token));
                    }
                    checks.fetch_add(kept.len() + 2 * n, Ordering::Relaxed);
                    rounds += 1;
                }
            });
        }
        scope.spawn(|| {
            for (i, c) in added.iter().enumerate() {
                // The clock passes every original expiry after 1000 iterations.
                let t = at(now.fetch_add(i64::from(i % 10 == 0), Ordering::AcqRel));
                assert!(index.apply(
                    &Revocation::Session {
                        sid: c.sid,
                        exp: far
                    },
                    t
                ));
                if let Some(e) = extended.get(i) {
                    assert!(index.apply(
                        &Revocation::Token {
                            jti: e.jti,
                            exp: far
                        },
                        t
                    ));
                }
                applied.store(i + 1, Ordering::Release);
                if i % 50 == 0 {
                    index.purge(t, 97);
                }
            }
            let t = at(now.load(Ordering::Acquire));
            while index.purge(t, 500) > 0 {}
            done.store(true, Ordering::Release);
        });
    });

    let t = at(now.load(Ordering::Acquire));
    assert!(
        t.as_secs() > T0 + 99 + 5 + PURGE_GRACE_SECS,
        "the clock must pass every expiry"
    );
    assert_eq!(
        index.len_of(RevocationKind::Token),
        kept.len() + extended.len()
    );
    assert_eq!(index.len_of(RevocationKind::Session), added.len());
    for c in &expiring[extended.len()..] {
        assert_eq!(index.check(c, t), Ok(()));
    }
    assert!(checks.load(Ordering::Relaxed) > 0);
}

/// The reference the index must agree with: every live revocation ever applied, checked
/// one by one.
#[derive(Default)]
struct Model {
    revs: Vec<(Revocation, i64)>,
}

impl Model {
    /// Records `rev`; `None` if it is dead at `now`, else whether it changes what the
    /// index must hold: with cutoffs `TTL` before `exp` (see `TTL`), whether its `until`
    /// is later than every earlier one of its kind and id.
    fn apply(&mut self, rev: Revocation, leeway: i64, now: i64) -> Option<bool> {
        let until = rev.exp().as_secs() + leeway;
        if until < now {
            return None;
        }
        let key = (rev.kind(), rev.subject_id());
        let changed = self.entries().get(&key).is_none_or(|&last| last < until);
        self.revs.push((rev, until));
        Some(changed)
    }

    fn check(&self, c: &Claims, now: i64) -> Result<(), RevocationKind> {
        let refuses = |kind: RevocationKind| {
            self.revs.iter().any(|&(rev, until)| {
                now <= until
                    && rev.kind() == kind
                    && match rev {
                        Revocation::Token { jti, .. } => jti == c.jti,
                        Revocation::Session { sid, .. } => sid == c.sid,
                        Revocation::User {
                            sub, issued_before, ..
                        } => sub == c.sub && c.iat < issued_before,
                        Revocation::IssuedBefore { issued_before, .. } => c.iat < issued_before,
                    }
            })
        };
        [
            RevocationKind::Token,
            RevocationKind::Session,
            RevocationKind::User,
            RevocationKind::IssuedBefore,
        ]
        .into_iter()
        .find(|&kind| refuses(kind))
        .map_or(Ok(()), Err)
    }

    /// The latest `until` per entry the index keeps (kind and id).
    fn entries(&self) -> HashMap<(RevocationKind, Uuid), i64> {
        let mut entries = HashMap::new();
        for &(rev, until) in &self.revs {
            let e = entries
                .entry((rev.kind(), rev.subject_id()))
                .or_insert(until);
            *e = (*e).max(until);
        }
        entries
    }
}

#[derive(Clone, Debug)]
enum Op {
    Apply(Revocation),
    Load(Vec<Revocation>),
    Check {
        jti: u128,
        sid: u128,
        sub: u128,
        age: i64,
    },
    Purge(usize),
    Advance(i64),
}

/// User and global cutoffs carry `exp = issued_before + TTL`, as the server makes them
/// (the cutoff is "now", `exp` the longest a token issued before it can live). Under that
/// rule keeping the max of cutoff and of exp is exactly the union of the revocations.
const TTL: i64 = 40;

/// A revocation with times relative to 0, shifted to the current time when run.
fn revocation() -> impl Strategy<Value = Revocation> {
    let ids = 0u128..4;
    prop_oneof![
        (ids.clone(), -20i64..60).prop_map(|(n, d)| Revocation::Token {
            jti: id(n),
            exp: at(d)
        }),
        (ids.clone(), -20i64..60).prop_map(|(n, d)| Revocation::Session {
            sid: id(n),
            exp: at(d)
        }),
        (ids, -60i64..5).prop_map(|(n, d)| Revocation::User {
            sub: id(n),
            issued_before: at(d),
            exp: at(d + TTL),
        }),
        (-60i64..5).prop_map(|d| Revocation::IssuedBefore {
            issued_before: at(d),
            exp: at(d + TTL)
        }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => revocation().prop_map(Op::Apply),
        1 => prop::collection::vec(revocation(), 0..6).prop_map(Op::Load),
        // Id 4 is never revoked.
        4 => (0u128..5, 0u128..5, 0u128..5, 0i64..70)
            .prop_map(|(jti, sid, sub, age)| Op::Check { jti, sid, sub, age }),
        2 => (0usize..4).prop_map(Op::Purge),
        2 => (0i64..25).prop_map(Op::Advance),
    ]
}

fn shifted(rev: Revocation, by: i64) -> Revocation {
    let s = |t: Timestamp| at(t.as_secs() + by);
    match rev {
        Revocation::Token { jti, exp } => Revocation::Token { jti, exp: s(exp) },
        Revocation::Session { sid, exp } => Revocation::Session { sid, exp: s(exp) },
        Revocation::User {
            sub,
            issued_before,
            exp,
        } => Revocation::User {
            sub,
            issued_before: s(issued_before),
            exp: s(exp),
        },
        Revocation::IssuedBefore { issued_before, exp } => Revocation::IssuedBefore {
            issued_before: s(issued_before),
            exp: s(exp),
        },
    }
}

proptest! {
    #[test]
    fn index_agrees_with_a_list_of_revocations(
        leeway in 0i64..8,
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let index = RevocationIndex::new(Duration::from_secs(leeway as u64));
        let mut events = index.subscribe();
        let mut model = Model::default();
        let mut now = T0;
        for op in ops {
            match op {
                Op::Apply(rev) => {
                    let rev = shifted(rev, now);
                    let changed = model.apply(rev, leeway, now).unwrap_or(false);
                    prop_assert_eq!(index.apply(&rev, at(now)), changed);
                    // Announced exactly when it changed the index.
                    prop_assert_eq!(events.try_recv().ok(), changed.then_some(rev));
                }
                Op::Load(revs) => {
                    let revs: Vec<_> = revs.into_iter().map(|r| shifted(r, now)).collect();
                    let live = revs.iter().filter(|&&r| model.apply(r, leeway, now).is_some()).count();
                    prop_assert_eq!(index.load(revs, at(now)), live);
                }
                Op::Check { jti, sid, sub, age } => {
                    let c = claims(id(jti), id(sid), id(sub), now - age);
                    prop_assert_eq!(index.check(&c, at(now)), model.check(&c, now));
                }
                Op::Purge(budget) => {
                    prop_assert!(index.purge(at(now), budget) <= budget);
                }
                Op::Advance(secs) => now += secs,
            }
        }
        // After a full purge nothing live is gone, and nothing dead for a grace period is left.
        purge_all(&index, now);
        let entries = model.entries();
        let live = entries.values().filter(|&&until| until >= now).count();
        let recent = entries.values().filter(|&&until| until > now - PURGE_GRACE_SECS).count();
        prop_assert!(live <= index.len() && index.len() <= recent,
            "live {} <= len {} <= recent {}", live, index.len(), recent);
    }
}

fn rss_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Rough memory cost per revoked token id, from the change in RSS.
/// `cargo test --release -p tokengate-core index::tests::memory -- --ignored --nocapture`
#[test]
#[ignore = "measurement; prints RSS per entry"]
fn memory_per_revoked_token_at_one_million() {
    const N: usize = 1_000_000;
    let index = RevocationIndex::new(Duration::from_secs(30));
    // Built before the baseline so only the index is measured. Expiries spread over an hour.
    let revs: Vec<Revocation> = (0..N)
        .map(|i| Revocation::Token {
            jti: Uuid::new_v4(),
            exp: at(T0 + (i % 3600) as i64),
        })
        .collect();
    let before = rss_bytes().unwrap();
    assert_eq!(index.load(revs.iter().copied(), at(T0)), N);
    let after = rss_bytes().unwrap();
    let per_entry = after.saturating_sub(before) as f64 / N as f64;
    println!(
        "RSS delta for {N} token ids: {} MiB, {per_entry:.1} bytes per entry",
        (after - before) >> 20
    );
    drop(revs);
}

/// Rough cost of `check` with a million entries, on one thread.
/// `cargo test --release -p tokengate-core index::tests::check_latency -- --ignored
/// --nocapture`
#[test]
#[ignore = "measurement; prints ns per check"]
fn check_latency_with_one_million_entries() {
    const N: usize = 1_000_000;
    let index = RevocationIndex::new(Duration::from_secs(30));
    let revs = (0..N).map(|i| Revocation::Token {
        jti: Uuid::new_v4(),
        exp: at(T0 + (i % 3600) as i64),
    });
    index.load(revs, at(T0));
    revoke_user(&index, Uuid::new_v4(), T0, T0 + 900, T0);
    index.apply(
        &Revocation::Session {
            sid: Uuid::new_v4(),
            exp: at(T0 + 900),
        },
        at(T0),
    );
    let tokens: Vec<Claims> = (0..4096).map(|_| fresh_claims(T0)).collect();
    let rounds = 500;
    let start = std::time::Instant::now();
    let mut accepted = 0usize;
    for _ in 0..rounds {
        for c in &tokens {
            accepted += usize::from(std::hint::black_box(index.check(c, at(T0))).is_ok());
        }
    }
    let elapsed = start.elapsed();
    assert_eq!(accepted, rounds * tokens.len());
    println!(
        "check: {:.1} ns",
        elapsed.as_nanos() as f64 / accepted as f64
    );
}

#[test]
fn a_scoped_token_obeys_its_scope_cutoff_and_not_the_global_one() {
    let index = RevocationIndex::new(Duration::ZERO);
    let now = at(T0 + 10);
    let scope = id(7);
    let scoped = |iat: i64| TokenIds {
        scope: Some(scope),
        ..TokenIds::of(&fresh_claims(iat))
    };
    let global = Revocation::IssuedBefore {
        issued_before: at(T0 + 5),
        exp: at(T0 + 1_000),
    };
    index.apply(&global, now);
    assert_eq!(index.check_ids(&scoped(T0), now), Ok(()));
    assert_eq!(
        index.check(&fresh_claims(T0), now),
        Err(RevocationKind::IssuedBefore)
    );

    let issuer_wide = Revocation::User {
        sub: scope,
        issued_before: at(T0 + 8),
        exp: at(T0 + 1_000),
    };
    index.apply(&issuer_wide, now);
    assert_eq!(
        index.check_ids(&scoped(T0 + 7), now),
        Err(RevocationKind::IssuedBefore)
    );
    assert_eq!(index.check_ids(&scoped(T0 + 8), now), Ok(()));
    // Another issuer's tokens, and own tokens issued after the global cutoff, are untouched.
    let other = TokenIds {
        scope: Some(id(8)),
        ..TokenIds::of(&fresh_claims(T0 + 7))
    };
    assert_eq!(index.check_ids(&other, now), Ok(()));
    assert_eq!(index.check(&fresh_claims(T0 + 7), now), Ok(()));
}
