//! The in-memory revocation index: what this node knows has been revoked, checked on
//! every authenticated request without locks, allocation or I/O.
//!
//! Layout, and why:
//! - Three lock-free [`papaya::HashMap`]s keyed by the 16-byte id (`jti`, `sid`, `sub`), so a
//!   reader never waits for a writer. Each value is the instant after which the entry no
//!   longer matters (`exp + leeway`), plus the cutoff for users.
//! - The global `IssuedBefore` cutoff in two atomics: two loads in [`RevocationIndex::check`].
//! - An expiry queue (ids grouped in buckets of [`BUCKET_SECS`] by the instant they die) that
//!   only writers and [`RevocationIndex::purge`] touch. Purge takes a bounded batch from the
//!   oldest due bucket, releases the lock and removes the ids from the maps, so forgetting a
//!   million entries never holds a lock over all of them.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use foldhash::fast::RandomState;
use papaya::{Compute, Guard, HashMapBuilder, Operation, ResizeMode};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::claims::Claims;
use crate::revocation::{Revocation, RevocationKind};
use crate::time::Timestamp;

/// Width of an expiry bucket, in seconds. An entry is purged by the first
/// [`RevocationIndex::purge`] at or after the end of its bucket, so at most this long after it
/// died; [`RevocationIndex::check`] already ignores it from the second it dies.
pub const BUCKET_SECS: i64 = 16;

/// How many applied revocations a slow subscriber may fall behind before it sees `Lagged`.
const EVENT_CAPACITY: usize = 1024;

/// How many queue insertions [`RevocationIndex::load`] gathers before taking the queue lock.
const LOAD_BATCH: usize = 4096;

/// A 16-byte id. Two `u64`s rather than one `u128` keep the alignment at 8, so papaya's boxed
/// entry (key + `i64`) is 24 bytes and fits a 32-byte allocation instead of 48.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Id([u64; 2]);

impl From<Uuid> for Id {
    fn from(uuid: Uuid) -> Self {
        let v = uuid.as_u128();
        Id([v as u64, (v >> 64) as u64])
    }
}

impl Hash for Id {
    // One `write_u128` is a single folded multiply in foldhash; hashing the array would
    // also hash its length.
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128(u128::from(self.0[0]) | (u128::from(self.0[1]) << 64));
    }
}

/// A user revocation: tokens of the user with `iat < issued_before` are refused until `until`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct UserCutoff {
    issued_before: i64,
    until: i64,
}

type Map<V> = papaya::HashMap<Id, V, RandomState>;

/// A map on the index's shared collector (so [`RevocationIndex::check`] pins one guard for all
/// three maps; entering and leaving a guard each cost an atomic swap).
fn new_map<V: Send + 'static>(builder: HashMapBuilder<Id, V>) -> Map<V> {
    builder
        .hasher(RandomState::default())
        // An incremental resize only advances on writes, and lookups that miss (nearly all of
        // them) walk the full probe chain of the old, overfull table until it is done: after a
        // bulk load with no writes following, that is ~3 µs per check instead of ~100 ns.
        // A blocking resize finishes inside the write that triggers it (writers meanwhile help
        // copy: tens of ms at a million entries); readers never wait.
        .resize_mode(ResizeMode::Blocking)
        .build()
}

/// The kinds kept per id, i.e. those that live in a map and in the expiry queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keyed {
    Token,
    Session,
    User,
}

/// The ids whose entries die within one bucket, per kind.
#[derive(Default)]
struct Bucket {
    tokens: Vec<Id>,
    sessions: Vec<Id>,
    users: Vec<Id>,
}

impl Bucket {
    fn ids_mut(&mut self, keyed: Keyed) -> &mut Vec<Id> {
        match keyed {
            Keyed::Token => &mut self.tokens,
            Keyed::Session => &mut self.sessions,
            Keyed::User => &mut self.users,
        }
    }

    fn first_nonempty(&mut self) -> Option<(Keyed, &mut Vec<Id>)> {
        [Keyed::Token, Keyed::Session, Keyed::User]
            .into_iter()
            .find(|&keyed| !self.ids_mut(keyed).is_empty())
            .map(|keyed| (keyed, self.ids_mut(keyed)))
    }
}

/// Buckets keyed by the first second at which every entry in them is dead.
type ExpiryQueue = BTreeMap<i64, Bucket>;

/// A queue insertion owed after a map update.
struct Pending {
    bucket: i64,
    keyed: Keyed,
    id: Id,
}

/// The bucket of an entry alive up to and including `until`: the first multiple of
/// [`BUCKET_SECS`] at or after `until + 1`, the first second at which it is dead.
fn bucket_of(until: i64) -> i64 {
    let due = until.saturating_add(1);
    let rounded_down = due.div_euclid(BUCKET_SECS).saturating_mul(BUCKET_SECS);
    if rounded_down == due {
        due
    } else {
        rounded_down.saturating_add(BUCKET_SECS)
    }
}

/// Marks "no global cutoff": `until` is then in the past for every `now`, and no `iat` is
/// below the cutoff.
const NONE: i64 = i64::MIN;

/// The record of revoked tokens, sessions and users that every request is checked against.
///
/// Share it as `Arc<RevocationIndex>`. [`check`](Self::check) is the hot path (a few
/// lock-free lookups, ~100 ns); [`apply`](Self::apply) records one revocation and tells
/// [`subscribers`](Self::subscribe); [`load`](Self::load) fills it at start-up;
/// [`purge`](Self::purge), called about once a second, forgets entries that can no longer
/// refuse anything. Each entry lives until its `exp` plus the verifier's leeway, so memory is
/// bounded by live tokens, not by history.
///
/// ```
/// use std::time::Duration;
/// use tokengate_core::{Claims, Revocation, RevocationIndex, RevocationKind, Role, Timestamp};
/// use uuid::Uuid;
///
/// let index = RevocationIndex::new(Duration::from_secs(30));
/// let now = Timestamp::from_secs(1_700_000_000);
/// let claims = Claims {
///     iss: "tokengate".into(), sub: Uuid::new_v4(), aud: "app".into(),
///     iat: now, nbf: now, exp: now.plus(Duration::from_secs(900)),
///     jti: Uuid::new_v4(), sid: Uuid::new_v4(), email: "a@example.com".into(), role: Role::User,
/// };
/// assert_eq!(index.check(&claims, now), Ok(()));
///
/// // Sign-out: revoke the session; every token minted for it is refused from now on.
/// let mut events = index.subscribe();
/// let sign_out = Revocation::Session { sid: claims.sid, exp: claims.exp };
/// assert!(index.apply(&sign_out, now));
/// assert_eq!(index.check(&claims, now), Err(RevocationKind::Session));
/// assert_eq!(events.try_recv().ok(), Some(sign_out));
///
/// // Once the token has expired (plus leeway) the entry no longer matters; purge forgets it.
/// let later = claims.exp.plus(Duration::from_secs(60));
/// assert_eq!(index.check(&claims, later), Ok(()));
/// assert_eq!(index.purge(later, 10_000), 1);
/// assert!(index.is_empty());
/// ```
pub struct RevocationIndex {
    leeway_secs: i64,
    /// `jti` → last second at which the entry matters (`exp + leeway`).
    tokens: Map<i64>,
    /// `sid` → last second at which the entry matters.
    sessions: Map<i64>,
    /// `sub` → cutoff and last second at which the entry matters.
    users: Map<UserCutoff>,
    /// The global cutoff. Writers (under `global_lock`) store the cutoff before `global_until`;
    /// readers load `global_until` before the cutoff, so a reader that sees a new `until` also
    /// sees its cutoff and a dead cutoff is never revived by a newer `until`.
    global_cutoff: AtomicI64,
    global_until: AtomicI64,
    global_lock: Mutex<()>,
    /// Touched by writers and purge only, never by `check`.
    queue: Mutex<ExpiryQueue>,
    events: broadcast::Sender<Revocation>,
}

impl fmt::Debug for RevocationIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevocationIndex")
            .field("leeway_secs", &self.leeway_secs)
            .field("tokens", &self.tokens.len())
            .field("sessions", &self.sessions.len())
            .field("users", &self.users.len())
            .field("issued_before", &self.len_of(RevocationKind::IssuedBefore))
            .finish_non_exhaustive()
    }
}

impl RevocationIndex {
    /// An empty index. `leeway` is the verifier's clock leeway: an entry is kept until
    /// `exp + leeway` has passed, because the verifier still accepts the token until then.
    /// Sub-second leeway is rounded up to the next second, erring towards refusing.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokengate_core::RevocationIndex;
    /// let index = RevocationIndex::new(Duration::from_secs(30));
    /// assert!(index.is_empty());
    /// ```
    pub fn new(leeway: Duration) -> Self {
        let whole = leeway
            .as_secs()
            .saturating_add(u64::from(leeway.subsec_nanos() > 0));
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        // papaya does not re-export seize's `Collector`; its type is inferred from the
        // `shared_collector` parameter.
        let collector = Arc::new(Default::default());
        let tokens = new_map(papaya::HashMap::builder().shared_collector(Arc::clone(&collector)));
        let sessions = new_map(papaya::HashMap::builder().shared_collector(Arc::clone(&collector)));
        let users = new_map(papaya::HashMap::builder().shared_collector(collector));
        RevocationIndex {
            leeway_secs: i64::try_from(whole).unwrap_or(i64::MAX),
            tokens,
            sessions,
            users,
            global_cutoff: AtomicI64::new(NONE),
            global_until: AtomicI64::new(NONE),
            global_lock: Mutex::new(()),
            queue: Mutex::new(ExpiryQueue::new()),
            events,
        }
    }

    /// Apply one revocation, made on this node or pushed from another, and tell subscribers.
    ///
    /// Idempotent: applying the same revocation again changes nothing; a revocation of an id
    /// already present keeps the later `exp` (and, for users, the later cutoff). Returns
    /// `false`, and does nothing, if it was already past `exp + leeway` at `now`: it could
    /// not refuse any token the verifier still accepts. Every live revocation is sent to
    /// subscribers, duplicates included, so a handler never misses one.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokengate_core::{Revocation, RevocationIndex, Timestamp};
    /// let index = RevocationIndex::new(Duration::from_secs(0));
    /// let now = Timestamp::from_secs(1_000);
    /// let jti = uuid::Uuid::new_v4();
    /// assert!(index.apply(&Revocation::Token { jti, exp: Timestamp::from_secs(1_900) }, now));
    /// assert!(!index.apply(&Revocation::Token { jti, exp: Timestamp::from_secs(999) }, now));
    /// ```
    pub fn apply(&self, rev: &Revocation, now: Timestamp) -> bool {
        let Some(pending) = self.merge(rev, now.as_secs()) else {
            return false;
        };
        if let Some(pending) = pending {
            self.enqueue(std::iter::once(pending));
        }
        // An error only means nobody is subscribed right now.
        let _ = self.events.send(*rev);
        true
    }

    /// Apply many revocations at once (the start-up reload of the live set, a bulk import),
    /// without telling subscribers: nothing new happened, this node is catching up. Returns
    /// how many were live at `now` and applied.
    ///
    /// The revocations are gathered first (free for a `Vec`) so that each map is grown once
    /// to its final size before the entries go in.
    pub fn load<I: IntoIterator<Item = Revocation>>(&self, revs: I, now: Timestamp) -> usize {
        // Collecting reuses the buffer of a `Vec` (what the server passes): no copy.
        let revs: Vec<Revocation> = revs.into_iter().collect();
        self.reserve_for(&revs);
        let now = now.as_secs();
        let mut applied = 0;
        // The queue lock is taken once per batch, not once per entry.
        let mut pending = Vec::with_capacity(LOAD_BATCH);
        for rev in revs {
            let Some(owed) = self.merge(&rev, now) else {
                continue;
            };
            applied += 1;
            if let Some(owed) = owed {
                pending.push(owed);
                if pending.len() == LOAD_BATCH {
                    self.enqueue(pending.drain(..));
                }
            }
        }
        self.enqueue(pending.drain(..));
        // Growing a map (in `reserve_for`, or past it) retires its old table. Retired memory is
        // freed in batches of 32 per thread, so without a flush a retired table (~19 bytes per
        // entry at a million) would stay allocated until later writes fill the batch.
        self.tokens.guard().flush();
        applied
    }

    /// Whether the token with these (already verified) claims has been revoked: by its `jti`,
    /// its `sid`, its `sub` (when `iat` is before the user's cutoff) or a global cutoff.
    ///
    /// Takes no lock and allocates nothing. An entry past its `exp + leeway` at `now` counts as
    /// absent, so the answer does not depend on when [`purge`](Self::purge) last ran. When
    /// several revocations apply, the most specific kind is reported. A token issued in the
    /// same second as a user or global cutoff is accepted: the cutoff refuses `iat` strictly
    /// before it, so signing in right after "revoke user" works.
    pub fn check(&self, claims: &Claims, now: Timestamp) -> Result<(), RevocationKind> {
        let now = now.as_secs();
        let iat = claims.iat.as_secs();
        // One guard for the three maps: they share a collector.
        let guard = self.tokens.guard();
        if let Some(&until) = self.tokens.get(&Id::from(claims.jti), &guard) {
            if now <= until {
                return Err(RevocationKind::Token);
            }
        }
        if let Some(&until) = self.sessions.get(&Id::from(claims.sid), &guard) {
            if now <= until {
                return Err(RevocationKind::Session);
            }
        }
        if let Some(user) = self.users.get(&Id::from(claims.sub), &guard) {
            if now <= user.until && iat < user.issued_before {
                return Err(RevocationKind::User);
            }
        }
        if now <= self.global_until.load(Ordering::Acquire)
            && iat < self.global_cutoff.load(Ordering::Acquire)
        {
            return Err(RevocationKind::IssuedBefore);
        }
        Ok(())
    }

    /// Forget entries whose `exp + leeway` is before `now`, doing at most `budget` removals;
    /// returns how many went. Call it repeatedly (the server does every second, yielding
    /// between calls): each call takes a batch from the oldest due bucket under a short lock
    /// and removes it without the lock, and a partly processed bucket keeps the rest for the
    /// next call. An entry goes at most [`BUCKET_SECS`] after it died.
    pub fn purge(&self, now: Timestamp, budget: usize) -> usize {
        let now = now.as_secs();
        let mut removed = 0;
        if budget > 0 && self.purge_global(now) {
            removed += 1;
        }
        while removed < budget {
            let Some((keyed, ids)) = self.take_due(now, budget - removed) else {
                break;
            };
            removed += match keyed {
                Keyed::Token => remove_dead(&self.tokens, &ids, |&until| until < now),
                Keyed::Session => remove_dead(&self.sessions, &ids, |&until| until < now),
                Keyed::User => remove_dead(&self.users, &ids, |user| user.until < now),
            };
        }
        removed
    }

    /// Number of entries held, of all kinds, until purge removes them (an expired entry that
    /// has not been purged yet still counts).
    pub fn len(&self) -> usize {
        self.tokens.len()
            + self.sessions.len()
            + self.users.len()
            + self.len_of(RevocationKind::IssuedBefore)
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of entries held of one kind, for metrics. `IssuedBefore` is merged into a single
    /// global cutoff, so it counts 0 or 1.
    pub fn len_of(&self, kind: RevocationKind) -> usize {
        match kind {
            RevocationKind::Token => self.tokens.len(),
            RevocationKind::Session => self.sessions.len(),
            RevocationKind::User => self.users.len(),
            RevocationKind::IssuedBefore => {
                usize::from(self.global_until.load(Ordering::Acquire) != NONE)
            }
        }
    }

    /// The earliest `now` at which [`purge`](Self::purge) would have work, if any.
    pub fn next_expiry(&self) -> Option<Timestamp> {
        let bucket = self.lock_queue().keys().next().copied();
        let until = self.global_until.load(Ordering::Acquire);
        let global = (until != NONE).then(|| until.saturating_add(1));
        match (bucket, global) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .map(Timestamp::from_secs)
    }

    /// A receiver of every revocation applied from now on (not those [`load`](Self::load)ed),
    /// so that, say, a websocket handler can close a connection whose session was just
    /// revoked. It buffers about 1024; a receiver further behind gets `Lagged` and should
    /// re-check what it holds against [`check`](Self::check).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokengate_core::{Revocation, RevocationIndex, Timestamp};
    /// let index = RevocationIndex::new(Duration::from_secs(30));
    /// let mut events = index.subscribe();
    /// let sid = uuid::Uuid::new_v4();
    /// let rev = Revocation::Session { sid, exp: Timestamp::from_secs(2_000) };
    /// index.apply(&rev, Timestamp::from_secs(1_000));
    /// assert_eq!(events.try_recv().ok(), Some(rev));
    /// ```
    pub fn subscribe(&self) -> broadcast::Receiver<Revocation> {
        self.events.subscribe()
    }

    /// Drop every entry, before a full reload after a reconnect.
    pub fn clear(&self) {
        // Holding the queue lock across the map clears means an `apply` that lands in a map
        // after its clear enqueues its id after the queue is cleared, so it is never left in a
        // map without a bucket (where purge could not find it).
        let mut queue = self.lock_queue();
        self.tokens.pin().clear();
        self.sessions.pin().clear();
        self.users.pin().clear();
        queue.clear();
        drop(queue);
        let _global = self.lock_global();
        self.global_cutoff.store(NONE, Ordering::Release);
        self.global_until.store(NONE, Ordering::Release);
    }

    /// Grow each map once to hold what a load may add. Without it a bulk load copies each
    /// table through every doubling on its way up: at a million entries those copies were a
    /// fifth of start-up (profiled), and each retired table lingers until the next flush.
    /// The table sizes reached are the same as by growing (papaya rounds to a power of two).
    fn reserve_for(&self, revs: &[Revocation]) {
        let (mut tokens, mut sessions, mut users) = (0, 0, 0);
        for rev in revs {
            match rev {
                Revocation::Token { .. } => tokens += 1,
                Revocation::Session { .. } => sessions += 1,
                Revocation::User { .. } => users += 1,
                Revocation::IssuedBefore { .. } => {}
            }
        }
        // One guard for the three maps: they share a collector.
        let guard = self.tokens.guard();
        if tokens > 0 {
            self.tokens.reserve(tokens, &guard);
        }
        if sessions > 0 {
            self.sessions.reserve(sessions, &guard);
        }
        if users > 0 {
            self.users.reserve(users, &guard);
        }
    }

    /// Merge `rev` into the maps. `None` if it is dead at `now`; otherwise the queue insertion
    /// owed, if the entry moved to a new bucket.
    fn merge(&self, rev: &Revocation, now: i64) -> Option<Option<Pending>> {
        let until = rev.exp().as_secs().saturating_add(self.leeway_secs);
        if until < now {
            return None;
        }
        Some(match *rev {
            Revocation::Token { jti, .. } => {
                merge_until(&self.tokens, Keyed::Token, jti.into(), until)
            }
            Revocation::Session { sid, .. } => {
                merge_until(&self.sessions, Keyed::Session, sid.into(), until)
            }
            Revocation::User {
                sub, issued_before, ..
            } => self.merge_user(sub.into(), issued_before.as_secs(), until, now),
            Revocation::IssuedBefore { issued_before, .. } => {
                self.merge_global(issued_before.as_secs(), until, now);
                None
            }
        })
    }

    fn merge_user(&self, sub: Id, issued_before: i64, until: i64, now: i64) -> Option<Pending> {
        let incoming = UserCutoff {
            issued_before,
            until,
        };
        let users = self.users.pin();
        let result = users.compute(sub, |current| match current {
            // A dead entry is replaced, not merged: its cutoff must not come back to life.
            Some((_, old)) if old.until >= now => {
                let merged = UserCutoff {
                    issued_before: old.issued_before.max(issued_before),
                    until: old.until.max(until),
                };
                if merged == *old {
                    Operation::Abort(())
                } else {
                    Operation::Insert(merged)
                }
            }
            _ => Operation::Insert(incoming),
        });
        owed(result, |user| user.until, Keyed::User, sub)
    }

    fn merge_global(&self, issued_before: i64, until: i64, now: i64) {
        let _global = self.lock_global();
        let old_until = self.global_until.load(Ordering::Acquire);
        let (cutoff, until) = if old_until >= now {
            let old_cutoff = self.global_cutoff.load(Ordering::Acquire);
            (old_cutoff.max(issued_before), old_until.max(until))
        } else {
            (issued_before, until)
        };
        // Cutoff first: see the field comment.
        self.global_cutoff.store(cutoff, Ordering::Release);
        self.global_until.store(until, Ordering::Release);
    }

    /// Forget the global cutoff if it is dead at `now`.
    fn purge_global(&self, now: i64) -> bool {
        let until = self.global_until.load(Ordering::Acquire);
        if until == NONE || until >= now {
            return false;
        }
        let _global = self.lock_global();
        let until = self.global_until.load(Ordering::Acquire);
        if until == NONE || until >= now {
            return false;
        }
        self.global_cutoff.store(NONE, Ordering::Release);
        self.global_until.store(NONE, Ordering::Release);
        true
    }

    fn enqueue(&self, owed: impl IntoIterator<Item = Pending>) {
        let mut queue = self.lock_queue();
        for Pending { bucket, keyed, id } in owed {
            queue.entry(bucket).or_default().ids_mut(keyed).push(id);
        }
    }

    /// Take up to `max` ids of one kind from the oldest bucket due at `now`.
    fn take_due(&self, now: i64, max: usize) -> Option<(Keyed, Vec<Id>)> {
        let mut queue = self.lock_queue();
        loop {
            let mut first = queue.first_entry()?;
            if *first.key() > now {
                return None;
            }
            if let Some((keyed, ids)) = first.get_mut().first_nonempty() {
                let taken = if ids.len() <= max {
                    std::mem::take(ids)
                } else {
                    ids.split_off(ids.len() - max)
                };
                if first.get_mut().first_nonempty().is_none() {
                    first.remove();
                }
                return Some((keyed, taken));
            }
            first.remove();
        }
    }

    fn lock_queue(&self) -> MutexGuard<'_, ExpiryQueue> {
        // No code panics while holding it, and the queue is valid after any partial update.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_global(&self) -> MutexGuard<'_, ()> {
        self.global_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Raise the entry of `id` to `until`; the queue insertion owed if it moved to a new bucket.
fn merge_until(map: &Map<i64>, keyed: Keyed, id: Id, until: i64) -> Option<Pending> {
    let map = map.pin();
    // `until` is live, so taking the max also replaces a dead entry.
    let result = map.compute(id, |current| match current {
        Some((_, &old)) if old >= until => Operation::Abort(()),
        _ => Operation::Insert(until),
    });
    owed(result, |&until| until, keyed, id)
}

/// Every value an entry takes has its id in that value's bucket: a new entry, or one moved to
/// a later bucket, owes an insertion; one that stays in its bucket is already there.
fn owed<V>(
    result: Compute<'_, Id, V, ()>,
    until: impl Fn(&V) -> i64,
    keyed: Keyed,
    id: Id,
) -> Option<Pending> {
    let bucket = match result {
        Compute::Inserted(_, new) => bucket_of(until(new)),
        Compute::Updated {
            old: (_, old),
            new: (_, new),
        } => {
            let bucket = bucket_of(until(new));
            if bucket == bucket_of(until(old)) {
                return None;
            }
            bucket
        }
        Compute::Removed(..) | Compute::Aborted(()) => return None,
    };
    Some(Pending { bucket, keyed, id })
}

/// Remove those of `ids` whose entry is dead. The entry is re-checked atomically: a later
/// `apply` may have extended it (it is then queued in a later bucket too) or a purge racing
/// this one may have removed it.
fn remove_dead<V>(map: &Map<V>, ids: &[Id], is_dead: impl Fn(&V) -> bool) -> usize {
    let map = map.pin();
    ids.iter()
        .filter(|id| matches!(map.remove_if(*id, |_, value| is_dead(value)), Ok(Some(_))))
        .count()
}

#[cfg(test)]
mod tests {
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
        assert_eq!(index.next_expiry(), Some(at(cutoff + 931)));
        assert_eq!(purge_all(&index, cutoff + 930), 0);
        assert_eq!(purge_all(&index, cutoff + 931), 1);
        assert!(index.is_empty());
        assert_eq!(index.next_expiry(), None);
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
        assert!(index.apply(&late, at(T0)));
        assert!(index.apply(&early, at(T0)));
        assert_eq!(index.len(), 1);
        // Still refused after the earlier exp: the later one won.
        assert_eq!(index.check(&c, at(T0 + 500)), Err(RevocationKind::Token));
        assert_eq!(purge_all(&index, T0 + 500), 0);
        assert_eq!(index.check(&c, at(T0 + 901)), Ok(()));
        // Re-applying or shortening the entry did not queue its id again.
        let queued: usize = index.lock_queue().values().map(|b| b.tokens.len()).sum();
        assert_eq!(queued, 1);
    }

    #[test]
    fn user_merge_keeps_the_later_cutoff_and_the_later_exp() {
        let index = RevocationIndex::new(Duration::ZERO);
        let sub = Uuid::new_v4();
        let between = claims(Uuid::new_v4(), Uuid::new_v4(), sub, T0 + 50);
        index.apply(
            &Revocation::User {
                sub,
                issued_before: at(T0 + 100),
                exp: at(T0 + 1000),
            },
            at(T0),
        );
        index.apply(
            &Revocation::User {
                sub,
                issued_before: at(T0 + 10),
                exp: at(T0 + 2000),
            },
            at(T0),
        );
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
        index.apply(
            &Revocation::User {
                sub,
                issued_before: at(T0 + 500),
                exp: at(T0 + 100),
            },
            at(T0),
        );
        // The first entry died at T0 + 101 but was not purged; its cutoff must not return.
        index.apply(
            &Revocation::User {
                sub,
                issued_before: at(T0 + 200),
                exp: at(T0 + 900),
            },
            at(T0 + 200),
        );
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
        let due = index.next_expiry().unwrap().as_secs();
        assert!(
            (exp + 31..exp + 31 + BUCKET_SECS).contains(&due),
            "due at {due}"
        );
        assert_eq!(purge_all(&index, due - 1), 0);
        assert_eq!(index.len(), 1);
        assert_eq!(purge_all(&index, due), 1);
        assert_eq!(index.len(), 0);
        assert_eq!(index.next_expiry(), None);
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
        // 1000 entries in one bucket and 500 in a later one.
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
        assert_eq!(index.next_expiry(), None);
        assert_eq!(index.purge(at(now), 0), 0);
    }

    #[test]
    fn partly_purged_bucket_keeps_its_remainder() {
        let index = RevocationIndex::new(Duration::ZERO);
        let revs = (0..100u128).map(|n| Revocation::Session {
            sid: id(n),
            exp: at(T0 + 10),
        });
        index.load(revs, at(T0));
        assert_eq!(index.purge(at(T0 + 100), 30), 30);
        assert_eq!(index.len_of(RevocationKind::Session), 70);
        assert!(index.next_expiry().is_some_and(|t| t.as_secs() <= T0 + 100));
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
        // The first bucket still lists the id; purging it must not drop the extended entry.
        assert_eq!(purge_all(&index, T0 + 100), 0);
        assert_eq!(index.check(&c, at(T0 + 100)), Err(RevocationKind::Session));
        assert_eq!(purge_all(&index, T0 + 2000), 1);
        assert!(index.is_empty());
    }

    #[test]
    fn next_expiry_reports_the_first_due_bucket() {
        let index = RevocationIndex::new(Duration::ZERO);
        assert_eq!(index.next_expiry(), None);
        index.apply(
            &Revocation::Token {
                jti: id(1),
                exp: at(T0 + 500),
            },
            at(T0),
        );
        index.apply(
            &Revocation::User {
                sub: id(2),
                issued_before: at(T0),
                exp: at(T0 + 100),
            },
            at(T0),
        );
        let due = index.next_expiry().unwrap().as_secs();
        assert_eq!(due, bucket_of(T0 + 100));
        assert_eq!(due % BUCKET_SECS, 0);
        assert!(due > T0 + 100 && due <= T0 + 100 + BUCKET_SECS);
    }

    #[test]
    fn clear_drops_everything() {
        let index = RevocationIndex::new(Duration::ZERO);
        let c = fresh_claims(T0);
        index.load(
            [
                Revocation::Token {
                    jti: c.jti,
                    exp: c.exp,
                },
                Revocation::Session {
                    sid: c.sid,
                    exp: c.exp,
                },
                Revocation::User {
                    sub: c.sub,
                    issued_before: at(T0 + 1),
                    exp: c.exp,
                },
                Revocation::IssuedBefore {
                    issued_before: at(T0 + 1),
                    exp: c.exp,
                },
            ],
            at(T0),
        );
        assert_eq!(index.len(), 4);
        index.clear();
        assert!(index.is_empty());
        assert_eq!(index.next_expiry(), None);
        assert_eq!(index.check(&c, at(T0)), Ok(()));
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
        // Tokens expiring within 100 s, spread over several buckets, purged while readers
        // run; the first 1000 are revoked again with a far `exp` while their old entries sit
        // in due buckets, so purge must re-check before it removes.
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
            t.as_secs() > T0 + 99 + 5 + BUCKET_SECS,
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
        fn apply(&mut self, rev: Revocation, leeway: i64, now: i64) -> bool {
            let until = rev.exp().as_secs() + leeway;
            if until < now {
                return false;
            }
            self.revs.push((rev, until));
            true
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
            let mut model = Model::default();
            let mut now = T0;
            for op in ops {
                match op {
                    Op::Apply(rev) => {
                        let rev = shifted(rev, now);
                        prop_assert_eq!(index.apply(&rev, at(now)), model.apply(rev, leeway, now));
                    }
                    Op::Load(revs) => {
                        let revs: Vec<_> = revs.into_iter().map(|r| shifted(r, now)).collect();
                        let live = revs.iter().filter(|&&r| model.apply(r, leeway, now)).count();
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
            // After a full purge nothing live is gone, and nothing dead for a bucket is left.
            purge_all(&index, now);
            let entries = model.entries();
            let live = entries.values().filter(|&&until| until >= now).count();
            let recent = entries.values().filter(|&&until| until > now - BUCKET_SECS).count();
            prop_assert!(live <= index.len() && index.len() <= recent,
                "live {} <= len {} <= recent {}", live, index.len(), recent);
            prop_assert!(index.next_expiry().is_none_or(|t| t.as_secs() > now));
        }
    }

    fn rss_bytes() -> Option<usize> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// Rough memory cost per revoked token id (map + expiry queue), from the change in RSS.
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
        index.apply(
            &Revocation::User {
                sub: Uuid::new_v4(),
                issued_before: at(T0),
                exp: at(T0 + 900),
            },
            at(T0),
        );
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
}
