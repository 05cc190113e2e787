//! The in-memory revocation index: what this node knows has been revoked, checked on
//! every authenticated request without locks, allocation or I/O.
//!
//! Layout, and why:
//! - Three tables keyed by the 16-byte id (`jti`, `sid`, `sub`), each split into
//!   [`SHARDS`] open-addressing tables with the id and its values inline (the `table`
//!   module): a token id costs 25 bytes per slot and the tables are kept 58–88 % full, so
//!   29–43 bytes per revoked id, and a lookup that misses (the common case: a valid token)
//!   reads one control word. Readers take no lock; writers lock one shard.
//! - Every shard's current table in one [`ArcSwap`] snapshot, so [`RevocationIndex::check`]
//!   pays at most one lock-free snapshot load for its three lookups, and usually none: each
//!   thread keeps the snapshot it last used while a generation counter says it is current.
//!   A shard's table is replaced (grown, shrunk, or copied without its removed entries)
//!   under that shard's lock, then published in a new snapshot; readers of the old one
//!   finish on it.
//! - The global `IssuedBefore` cutoff in two atomics: two loads in [`RevocationIndex::check`].
//! - No expiry queue: each shard remembers the earliest expiry it holds, and
//!   [`RevocationIndex::purge`] sweeps a shard once its earliest entry has been dead for
//!   [`PURGE_GRACE_SECS`], in bounded steps that release the lock in between.

use std::cell::RefCell;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use foldhash::fast::RandomState;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::claims::Claims;
use crate::revocation::{Revocation, RevocationKind};
use crate::sync::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use crate::table::{groups_for, Hashed, Spot, Table, GROUP};
use crate::time::Timestamp;
use crate::user_slot;

/// How long a shard's earliest entry may stay dead before [`RevocationIndex::purge`] sweeps
/// the shard: an entry is forgotten at most about this long after it died (and
/// [`RevocationIndex::check`] ignores it from the second it dies). Sweeping less often makes
/// each sweep remove more per slot scanned.
pub const PURGE_GRACE_SECS: i64 = 16;

/// Shards per kind: writers to different shards never wait on each other, and growing or
/// sweeping one copies or scans 1/64 of the entries.
pub const SHARDS: usize = 64;

/// How many applied revocations a slow subscriber may fall behind before it sees `Lagged`.
const EVENT_CAPACITY: usize = 1024;

/// Token and session slots: id (2 words), then `until`.
const PLAIN: usize = 3;
/// User slots: id, then a sequence word, `until` and the cutoff, which change together
/// (see `user_slot`).
const USER: usize = user_slot::WORDS;
/// Where `until` sits in a slot of either layout.
const PLAIN_UNTIL: usize = 2;
const USER_UNTIL: usize = user_slot::UNTIL;

/// Marks "no global cutoff": `until` is then in the past for every `now`, and no `iat` is
/// below the cutoff.
const NONE: i64 = i64::MIN;

/// How full a table is made when it is grown or copied: 7/12, so that it grows by half
/// (to 7/8) before the next copy.
const COPY_LOAD: (usize, usize) = (7, 12);
/// How full [`RevocationIndex::load`] makes a table it presizes: close to the 7/8 limit,
/// since a bulk load knows what is coming.
const RESERVE_LOAD: (usize, usize) = (13, 16);

/// What merging one revocation did to the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Merged {
    /// Past `exp + leeway` at `now`: ignored.
    Dead,
    /// Already covered by what the index holds.
    Unchanged,
    /// A new entry, or a later `exp` or cutoff.
    Changed,
}

/// Gives each index its own id for [`SNAPSHOTS`].
/// std's even in the loom build: a static needs a `const` constructor, and it is not
/// model-checked.
static NEXT_INDEX_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The snapshot a thread last checked against, and of which index and generation.
struct CachedSnapshot {
    index: u64,
    generation: u64,
    snapshot: Option<Arc<Snapshot>>,
}

thread_local! {
    /// Loading a snapshot from the `ArcSwap` costs a full memory barrier (an `xchg` on x86)
    /// per check; a thread-local copy checked against `generation` costs one plain load
    /// (misses at 1 000 000 entries measured 10–30 % faster). A thread keeps the snapshot it
    /// last used until its next check of any index, so a replaced table is freed once every
    /// thread that held it has checked again or exited.
    static SNAPSHOTS: RefCell<CachedSnapshot> = const {
        RefCell::new(CachedSnapshot {
            index: 0,
            generation: 0,
            snapshot: None,
        })
    };
}

/// Every shard's table of every kind: what a reader loads once per check.
#[derive(Clone)]
struct Snapshot {
    tokens: Box<[Arc<Table<PLAIN>>]>,
    sessions: Box<[Arc<Table<PLAIN>>]>,
    users: Box<[Arc<Table<USER>>]>,
}

impl Snapshot {
    fn empty() -> Self {
        fn tables<const W: usize>() -> Box<[Arc<Table<W>>]> {
            (0..SHARDS)
                .map(|_| Arc::new(Table::with_groups(1)))
                .collect()
        }
        Snapshot {
            tokens: tables(),
            sessions: tables(),
            users: tables(),
        }
    }
}

/// Bookkeeping of one shard, under its lock.
#[derive(Debug)]
struct Shard {
    live: usize,
    tombstones: usize,
    /// At most the earliest `until` among the live entries (`i64::MAX` if none).
    earliest: i64,
    sweep: Option<Sweep>,
}

impl Shard {
    const fn new() -> Self {
        Shard {
            live: 0,
            tombstones: 0,
            earliest: i64::MAX,
            sweep: None,
        }
    }

    /// Note an entry that now lives until `until`.
    fn note(&mut self, until: i64) {
        self.earliest = self.earliest.min(until);
        if let Some(sweep) = &mut self.sweep {
            sweep.earliest_new = sweep.earliest_new.min(until);
        }
    }
}

/// A sweep of one shard in progress, resumed by the next [`RevocationIndex::purge`].
#[derive(Debug)]
struct Sweep {
    next_group: usize,
    /// The earliest `until` among entries the sweep kept.
    earliest_kept: i64,
    /// The earliest `until` among entries written since the sweep began.
    earliest_new: i64,
}

/// One kind's shards: which slice of the snapshot they own and their bookkeeping.
struct Kind<const W: usize> {
    tables: fn(&Snapshot) -> &[Arc<Table<W>>],
    tables_mut: fn(&mut Snapshot) -> &mut [Arc<Table<W>>],
    /// The slot word holding `until`.
    until_word: usize,
    shards: Box<[Mutex<Shard>]>,
    len: AtomicUsize,
}

impl<const W: usize> Kind<W> {
    fn new(
        tables: fn(&Snapshot) -> &[Arc<Table<W>>],
        tables_mut: fn(&mut Snapshot) -> &mut [Arc<Table<W>>],
        until_word: usize,
    ) -> Self {
        Kind {
            tables,
            tables_mut,
            until_word,
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect(),
            len: AtomicUsize::new(0),
        }
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        // No code panics while holding it, and the bookkeeping is valid after any step.
        self.shards[shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The ids a token is revoked by, for [`RevocationIndex::check_ids`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenIds {
    /// Refused by a [`Revocation::Token`](crate::Revocation::Token) of this id.
    pub jti: Uuid,
    /// Refused by a [`Revocation::Session`](crate::Revocation::Session) of this id.
    pub sid: Uuid,
    /// Refused by a [`Revocation::User`](crate::Revocation::User) of this id whose cutoff
    /// is after `iat`.
    pub sub: Uuid,
    /// The issued-at instant the cutoffs are compared with.
    pub iat: Timestamp,
    /// `None` for tokengate's own tokens, which the global
    /// [`Revocation::IssuedBefore`](crate::Revocation::IssuedBefore) cutoff applies to.
    /// `Some(id)` for another issuer's tokens: the global cutoff does not apply, and a
    /// [`Revocation::User`](crate::Revocation::User) of `id` acts as that issuer's own
    /// "everything issued before" (reported as [`RevocationKind::IssuedBefore`]).
    pub scope: Option<Uuid>,
}

impl TokenIds {
    /// The ids of one of tokengate's own tokens.
    pub fn of(claims: &Claims) -> Self {
        TokenIds {
            jti: claims.jti,
            sid: claims.sid,
            sub: claims.sub,
            iat: claims.iat,
            scope: None,
        }
    }
}

/// The record of revoked tokens, sessions and users that every request is checked against.
///
/// Share it as `Arc<RevocationIndex>`. [`check`](Self::check) is the hot path (three
/// lock-free lookups, ~100 ns); [`apply`](Self::apply) records one revocation and, if it
/// changed the index, tells [`subscribers`](Self::subscribe); [`load`](Self::load) fills it at start-up;
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
    hasher: RandomState,
    snapshot: ArcSwap<Snapshot>,
    /// Bumped after each new snapshot is stored: a reader whose thread already holds the
    /// snapshot of this generation uses it without touching `snapshot` (see `check`).
    generation: AtomicU64,
    /// Tells this index's snapshots apart from another's in a thread's cache.
    id: u64,
    /// Serialises publishing snapshots (each publisher also holds its shard's lock).
    publish: Mutex<()>,
    /// `jti` → last second at which the entry matters (`exp + leeway`).
    tokens: Kind<PLAIN>,
    /// `sid` → last second at which the entry matters.
    sessions: Kind<PLAIN>,
    /// `sub` → cutoff and last second at which the entry matters.
    users: Kind<USER>,
    /// The global cutoff. Writers (under `global_lock`) store the cutoff before `global_until`;
    /// readers load `global_until` before the cutoff, so a reader that sees a new `until` also
    /// sees its cutoff and a dead cutoff is never revived by a newer `until`.
    global_cutoff: AtomicI64,
    global_until: AtomicI64,
    global_lock: Mutex<()>,
    events: broadcast::Sender<Revocation>,
}

impl fmt::Debug for RevocationIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevocationIndex")
            .field("leeway_secs", &self.leeway_secs)
            .field("tokens", &self.len_of(RevocationKind::Token))
            .field("sessions", &self.len_of(RevocationKind::Session))
            .field("users", &self.len_of(RevocationKind::User))
            .field("issued_before", &self.len_of(RevocationKind::IssuedBefore))
            .finish_non_exhaustive()
    }
}

impl Drop for RevocationIndex {
    fn drop(&mut self) {
        // Let go of this thread's copy of the snapshot now rather than at its next check;
        // other threads let go of theirs at their next check.
        self.release_cached_snapshot();
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
        RevocationIndex {
            leeway_secs: i64::try_from(whole).unwrap_or(i64::MAX),
            hasher: RandomState::default(),
            snapshot: ArcSwap::from_pointee(Snapshot::empty()),
            generation: AtomicU64::new(0),
            id: NEXT_INDEX_ID.fetch_add(1, Ordering::Relaxed),
            publish: Mutex::new(()),
            tokens: Kind::new(|s| &s.tokens, |s| &mut s.tokens, PLAIN_UNTIL),
            sessions: Kind::new(|s| &s.sessions, |s| &mut s.sessions, PLAIN_UNTIL),
            users: Kind::new(|s| &s.users, |s| &mut s.users, USER_UNTIL),
            global_cutoff: AtomicI64::new(NONE),
            global_until: AtomicI64::new(NONE),
            global_lock: Mutex::new(()),
            events,
        }
    }

    /// Apply one revocation, made on this node or pushed from another, and tell subscribers
    /// if it changed the index.
    ///
    /// Idempotent: a revocation of an id already present keeps the later `exp` (and, for
    /// users, the later cutoff). Returns whether the index changed: `true` for a new entry
    /// or a later `exp` or cutoff; `false` for a revocation the index already holds (the
    /// same one applied again, as when a node applies its own revocation and then reads it
    /// back from the store) or one already past `exp + leeway` at `now`, which could not
    /// refuse any token the verifier still accepts. Only a change is sent to subscribers,
    /// so each revocation is announced once however often it is applied.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokengate_core::{Revocation, RevocationIndex, Timestamp};
    /// let index = RevocationIndex::new(Duration::from_secs(0));
    /// let now = Timestamp::from_secs(1_000);
    /// let jti = uuid::Uuid::new_v4();
    /// let rev = Revocation::Token { jti, exp: Timestamp::from_secs(1_900) };
    /// assert!(index.apply(&rev, now));
    /// // Already known: nothing changes, nobody is told again.
    /// assert!(!index.apply(&rev, now));
    /// // Dead on arrival.
    /// assert!(!index.apply(&Revocation::Token { jti, exp: Timestamp::from_secs(999) }, now));
    /// ```
    pub fn apply(&self, rev: &Revocation, now: Timestamp) -> bool {
        if self.merge(rev, now.as_secs()) != Merged::Changed {
            return false;
        }
        // An error only means nobody is subscribed right now.
        let _ = self.events.send(*rev);
        true
    }

    /// Apply many revocations at once (the start-up reload of the live set, a bulk import),
    /// without telling subscribers: nothing new happened, this node is catching up. Returns
    /// how many were live at `now` and applied.
    ///
    /// The revocations are gathered first (free for a `Vec`) so that each shard is sized
    /// once for what is coming instead of growing step by step.
    pub fn load<I: IntoIterator<Item = Revocation>>(&self, revs: I, now: Timestamp) -> usize {
        // Collecting reuses the buffer of a `Vec` (what the server passes): no copy.
        let revs: Vec<Revocation> = revs.into_iter().collect();
        self.reserve_for(&revs);
        let now = now.as_secs();
        revs.iter()
            .filter(|rev| self.merge(rev, now) != Merged::Dead)
            .count()
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
        self.check_ids(&TokenIds::of(claims), now)
    }

    /// [`check`](Self::check) for any token, by the ids it is revoked by: what gate mode
    /// uses for tokens of other issuers, whose ids are digests (see [`TokenIds`]).
    pub fn check_ids(&self, ids: &TokenIds, now: Timestamp) -> Result<(), RevocationKind> {
        let generation = self.generation.load(Ordering::Acquire);
        let cached = SNAPSHOTS.try_with(|cell| {
            let mut cached = cell.try_borrow_mut().ok()?;
            if cached.index != self.id || cached.generation != generation {
                // Stored before `generation` was bumped to this value: the snapshot of
                // `generation` or a newer one.
                cached.snapshot = Some(self.snapshot.load_full());
                cached.index = self.id;
                cached.generation = generation;
            }
            let snapshot = cached.snapshot.as_deref()?;
            Some(self.check_in(snapshot, ids, now))
        });
        match cached {
            Ok(Some(answer)) => answer,
            // The thread is exiting: no cache, same answer.
            _ => self.check_in(&self.snapshot.load(), ids, now),
        }
    }

    /// [`check_ids`](Self::check_ids) against one snapshot.
    fn check_in(
        &self,
        snapshot: &Snapshot,
        ids: &TokenIds,
        now: Timestamp,
    ) -> Result<(), RevocationKind> {
        let now = now.as_secs();
        let iat = ids.iat.as_secs();
        let jti = self.hashed(ids.jti);
        if let Some(slot) = snapshot.tokens[jti.shard(SHARDS)].get(jti) {
            if now <= slot[PLAIN_UNTIL].load(Ordering::Acquire) as i64 {
                return Err(RevocationKind::Token);
            }
        }
        let sid = self.hashed(ids.sid);
        if let Some(slot) = snapshot.sessions[sid.shard(SHARDS)].get(sid) {
            if now <= slot[PLAIN_UNTIL].load(Ordering::Acquire) as i64 {
                return Err(RevocationKind::Session);
            }
        }
        let user_cut = |id: Uuid| {
            let id = self.hashed(id);
            snapshot.users[id.shard(SHARDS)]
                .get(id)
                .is_some_and(|slot| {
                    let (until, cutoff) = user_slot::read(slot);
                    now <= until && iat < cutoff
                })
        };
        if user_cut(ids.sub) {
            return Err(RevocationKind::User);
        }
        match ids.scope {
            Some(scope) if user_cut(scope) => return Err(RevocationKind::IssuedBefore),
            Some(_) => {}
            None if now <= self.global_until.load(Ordering::Acquire)
                && iat < self.global_cutoff.load(Ordering::Acquire) =>
            {
                return Err(RevocationKind::IssuedBefore);
            }
            None => {}
        }
        Ok(())
    }

    /// Forget entries whose `exp + leeway` is before `now`, doing at most `budget` removals;
    /// returns how many went. Call it repeatedly (the server does every second, yielding
    /// between calls) while it returns `budget`. A shard is swept once its earliest entry has
    /// been dead for [`PURGE_GRACE_SECS`]; a sweep that runs out of budget holds no lock until
    /// the next call resumes it. So an entry goes at most about [`PURGE_GRACE_SECS`] after it
    /// died, and no call holds a shard's lock for longer than one scan of that shard.
    pub fn purge(&self, now: Timestamp, budget: usize) -> usize {
        let now = now.as_secs();
        let mut removed = 0;
        if budget > 0 && self.purge_global(now) {
            removed += 1;
        }
        for shard in 0..SHARDS {
            removed += self.sweep(&self.tokens, shard, now, budget - removed);
            removed += self.sweep(&self.sessions, shard, now, budget - removed);
            removed += self.sweep(&self.users, shard, now, budget - removed);
            if removed >= budget {
                break;
            }
        }
        removed
    }

    /// Number of entries held, of all kinds, until purge removes them (an expired entry that
    /// has not been purged yet still counts).
    pub fn len(&self) -> usize {
        [
            RevocationKind::Token,
            RevocationKind::Session,
            RevocationKind::User,
            RevocationKind::IssuedBefore,
        ]
        .into_iter()
        .map(|kind| self.len_of(kind))
        .sum()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of entries held of one kind, for metrics. `IssuedBefore` is merged into a single
    /// global cutoff, so it counts 0 or 1.
    pub fn len_of(&self, kind: RevocationKind) -> usize {
        match kind {
            RevocationKind::Token => self.tokens.len.load(Ordering::Relaxed),
            RevocationKind::Session => self.sessions.len.load(Ordering::Relaxed),
            RevocationKind::User => self.users.len.load(Ordering::Relaxed),
            RevocationKind::IssuedBefore => {
                usize::from(self.global_until.load(Ordering::Acquire) != NONE)
            }
        }
    }

    /// Bytes held by the tables (not counting the allocator's own overhead), for metrics and
    /// the memory benchmark.
    pub fn table_bytes(&self) -> usize {
        let snapshot = self.snapshot.load();
        let plain: usize = (snapshot.tokens.iter())
            .chain(snapshot.sessions.iter())
            .map(|t| t.bytes())
            .sum();
        plain + snapshot.users.iter().map(|t| t.bytes()).sum::<usize>()
    }

    /// A receiver of every revocation [`apply`](Self::apply) adds from now on: each once,
    /// when it changes the index (not when it is applied again, and not those
    /// [`load`](Self::load)ed), so that, say, a websocket handler can close a connection whose
    /// session was just revoked, or a counter count it once. It buffers about 1024; a receiver further behind gets `Lagged` and should
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

    fn hashed(&self, id: Uuid) -> Hashed {
        let (hi, lo) = id.as_u64_pair();
        self.rehash(lo, hi)
    }

    fn rehash(&self, lo: u64, hi: u64) -> Hashed {
        let hash = self
            .hasher
            .hash_one(u128::from(lo) | (u128::from(hi) << 64));
        Hashed { lo, hi, hash }
    }

    /// Size each shard once for what a load may add. Without it a bulk load copies each
    /// shard through every growth step on its way up.
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
        self.reserve(&self.tokens, tokens);
        self.reserve(&self.sessions, sessions);
        self.reserve(&self.users, users);
    }

    fn reserve<const W: usize>(&self, kind: &Kind<W>, incoming: usize) {
        if incoming == 0 {
            return;
        }
        // Ids spread evenly over the shards by hash: the mean plus four standard deviations
        // (a binomial's) leaves a shard short only about once in 30 000.
        let mean = incoming as f64 / SHARDS as f64;
        let per_shard = (mean + 4.0 * mean.sqrt()).ceil() as usize + 1;
        for shard in 0..SHARDS {
            let mut state = kind.lock(shard);
            let table = Arc::clone(&(kind.tables)(&self.snapshot.load())[shard]);
            let wanted = state.live + state.tombstones + per_shard;
            if !table.fits(wanted) {
                let (num, den) = RESERVE_LOAD;
                let groups = groups_for(state.live + per_shard, num, den);
                self.replace(kind, shard, &mut state, &table, groups);
            }
        }
    }

    /// Merge `rev` into the tables.
    fn merge(&self, rev: &Revocation, now: i64) -> Merged {
        let until = rev.exp().as_secs().saturating_add(self.leeway_secs);
        if until < now {
            return Merged::Dead;
        }
        let changed = match *rev {
            Revocation::Token { jti, .. } => self.merge_until(&self.tokens, jti, until),
            Revocation::Session { sid, .. } => self.merge_until(&self.sessions, sid, until),
            Revocation::User {
                sub, issued_before, ..
            } => self.merge_user(sub, issued_before.as_secs(), until, now),
            Revocation::IssuedBefore { issued_before, .. } => {
                self.merge_global(issued_before.as_secs(), until, now)
            }
        };
        if changed {
            Merged::Changed
        } else {
            Merged::Unchanged
        }
    }

    /// Raise the entry of `id` to `until` (which is live, so this also replaces a dead one);
    /// whether anything changed.
    fn merge_until(&self, kind: &Kind<PLAIN>, id: Uuid, until: i64) -> bool {
        let id = self.hashed(id);
        let shard = id.shard(SHARDS);
        let mut state = kind.lock(shard);
        let (table, spot) = self.spot(kind, shard, &mut state, id);
        let changed = match spot {
            Spot::Found(index) => {
                let word = &table.slot(index)[PLAIN_UNTIL];
                let later = (word.load(Ordering::Relaxed) as i64) < until;
                if later {
                    word.store(until as u64, Ordering::Release);
                }
                later
            }
            Spot::Vacant(index) => {
                table.publish(index, id, &[until as u64]);
                state.live += 1;
                kind.len.fetch_add(1, Ordering::Relaxed);
                true
            }
        };
        state.note(until);
        changed
    }

    /// Merge a user's cutoff and `until` into its entry; whether anything changed.
    fn merge_user(&self, sub: Uuid, cutoff: i64, until: i64, now: i64) -> bool {
        let kind = &self.users;
        let id = self.hashed(sub);
        let shard = id.shard(SHARDS);
        let mut state = kind.lock(shard);
        let (table, spot) = self.spot(kind, shard, &mut state, id);
        match spot {
            Spot::Found(index) => {
                let slot = table.slot(index);
                let (old_until, old_cutoff) = user_slot::read(slot);
                // A dead entry is replaced, not merged: its cutoff must not come back to life.
                let (new_until, new_cutoff) = if old_until >= now {
                    (old_until.max(until), old_cutoff.max(cutoff))
                } else {
                    (until, cutoff)
                };
                let changed = (new_until, new_cutoff) != (old_until, old_cutoff);
                if changed {
                    user_slot::write(slot, new_until, new_cutoff);
                }
                state.note(new_until);
                changed
            }
            Spot::Vacant(index) => {
                table.publish(index, id, &user_slot::new_values(until, cutoff));
                state.live += 1;
                kind.len.fetch_add(1, Ordering::Relaxed);
                state.note(until);
                true
            }
        }
    }

    /// The shard's current table and where `id` is or goes in it, growing the table first
    /// if a new entry would overfill it. Caller holds the shard's lock (`state`).
    fn spot<const W: usize>(
        &self,
        kind: &Kind<W>,
        shard: usize,
        state: &mut Shard,
        id: Hashed,
    ) -> (Arc<Table<W>>, Spot) {
        let table = Arc::clone(&(kind.tables)(&self.snapshot.load())[shard]);
        match table.locate(id) {
            Some(Spot::Found(index)) => return (table, Spot::Found(index)),
            Some(Spot::Vacant(index)) if table.fits(state.live + state.tombstones + 1) => {
                return (table, Spot::Vacant(index));
            }
            _ => {}
        }
        let (num, den) = COPY_LOAD;
        let mut groups = groups_for(state.live + 1, num, den);
        let mut table = table;
        loop {
            // The copy holds the live entries at most 7/12 full: room for one more, so
            // this runs once; the loop only guards the invariant.
            table = self.replace(kind, shard, state, &table, groups);
            if let Some(spot) = table.locate(id) {
                if table.fits(state.live + 1) {
                    return (table, spot);
                }
            }
            groups = groups.saturating_mul(2);
        }
    }

    /// Copy the shard's live entries into a table of `groups` groups (or more if they need
    /// it) and publish it. Caller holds the shard's lock. A sweep in progress restarts: slot
    /// positions changed.
    fn replace<const W: usize>(
        &self,
        kind: &Kind<W>,
        shard: usize,
        state: &mut Shard,
        old: &Table<W>,
        groups: usize,
    ) -> Arc<Table<W>> {
        let table = Arc::new(old.copied(groups, |lo, hi| self.rehash(lo, hi)));
        state.tombstones = 0;
        state.sweep = None;
        state.earliest = table
            .live_in(0..table.groups())
            .map(|(_, slot)| slot[kind.until_word].load(Ordering::Relaxed) as i64)
            .min()
            .unwrap_or(i64::MAX);
        let _publish = self.lock_publish();
        let mut snapshot = Snapshot::clone(&self.snapshot.load());
        (kind.tables_mut)(&mut snapshot)[shard] = Arc::clone(&table);
        self.snapshot.store(Arc::new(snapshot));
        self.generation.fetch_add(1, Ordering::Release);
        // The thread that grows a table is the one most likely to hold the snapshot before
        // it (its own check of the request that writes): holding it would keep the old
        // table alive until this thread's next check, which on an idle node after a bulk
        // import means a second copy of the index (measured: 163 MiB after importing
        // 1 000 000 ids against 68 MiB after a restart; see BENCHMARKS.md, "Memory").
        self.release_cached_snapshot();
        table
    }

    /// Drop this thread's cached snapshot of this index, if it holds one; its next check
    /// loads the current one.
    fn release_cached_snapshot(&self) {
        let _ = SNAPSHOTS.try_with(|cell| {
            if let Ok(mut cached) = cell.try_borrow_mut() {
                if cached.index == self.id {
                    cached.snapshot = None;
                    cached.index = 0;
                }
            }
        });
    }

    /// Sweep one shard if it is due, removing at most `budget` dead entries; returns how many
    /// went. Resumes a sweep a previous call left unfinished.
    fn sweep<const W: usize>(
        &self,
        kind: &Kind<W>,
        shard: usize,
        now: i64,
        budget: usize,
    ) -> usize {
        let mut state = kind.lock(shard);
        let mut removed = 0;
        // A resumed sweep kept entries that were alive at an earlier `now`; if one of them
        // has since become due, one more pass (at this `now`) removes it.
        while removed < budget {
            let sweep = match state.sweep.take() {
                Some(sweep) => sweep,
                None if state.earliest <= now.saturating_sub(PURGE_GRACE_SECS) => Sweep {
                    next_group: 0,
                    earliest_kept: i64::MAX,
                    earliest_new: i64::MAX,
                },
                None => break,
            };
            let (gone, finished) =
                self.sweep_step(kind, shard, &mut state, sweep, now, budget - removed);
            removed += gone;
            if !finished {
                break;
            }
        }
        removed
    }

    /// Continue `sweep` at `now` until it finishes or has removed `budget` entries; returns
    /// how many it removed and whether it finished. Caller holds the shard's lock.
    fn sweep_step<const W: usize>(
        &self,
        kind: &Kind<W>,
        shard: usize,
        state: &mut Shard,
        mut sweep: Sweep,
        now: i64,
        budget: usize,
    ) -> (usize, bool) {
        let table = Arc::clone(&(kind.tables)(&self.snapshot.load())[shard]);
        let mut removed = 0;
        let mut finished = true;
        'groups: while sweep.next_group < table.groups() {
            let group = sweep.next_group;
            for (index, slot) in table.live_in(group..group + 1) {
                let until = slot[kind.until_word].load(Ordering::Relaxed) as i64;
                if until >= now {
                    sweep.earliest_kept = sweep.earliest_kept.min(until);
                } else if removed < budget {
                    table.remove(index);
                    removed += 1;
                } else {
                    // Out of budget mid-group: this group is scanned again next time.
                    finished = false;
                    break 'groups;
                }
            }
            sweep.next_group += 1;
        }
        state.live -= removed;
        state.tombstones += removed;
        kind.len.fetch_sub(removed, Ordering::Relaxed);
        if !finished {
            state.sweep = Some(sweep);
            return (removed, false);
        }
        state.earliest = sweep.earliest_kept.min(sweep.earliest_new);
        // Shrink a table left mostly empty, and drop tombstones once they take a quarter of
        // the slots (they lengthen every probe that passes them).
        let capacity = table.capacity();
        if (state.live * 4 < capacity && capacity > GROUP) || state.tombstones * 4 > capacity {
            let (num, den) = COPY_LOAD;
            let groups = groups_for(state.live, num, den);
            self.replace(kind, shard, state, &table, groups);
        }
        (removed, true)
    }

    /// Merge a global cutoff and its `until`; whether anything changed.
    fn merge_global(&self, issued_before: i64, until: i64, now: i64) -> bool {
        let _global = self.lock_global();
        let old_until = self.global_until.load(Ordering::Acquire);
        let old_cutoff = self.global_cutoff.load(Ordering::Acquire);
        // A dead cutoff is replaced, not merged (as for users).
        let (cutoff, until) = if old_until >= now {
            (old_cutoff.max(issued_before), old_until.max(until))
        } else {
            (issued_before, until)
        };
        if (cutoff, until) == (old_cutoff, old_until) {
            return false;
        }
        // Cutoff first: see the field comment.
        self.global_cutoff.store(cutoff, Ordering::Release);
        self.global_until.store(until, Ordering::Release);
        true
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

    fn lock_global(&self) -> MutexGuard<'_, ()> {
        self.global_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_publish(&self) -> MutexGuard<'_, ()> {
        self.publish.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;
