//! The one trait every durable backend implements.

use async_trait::async_trait;
use tokengate_core::{Revocation, Timestamp};
use uuid::Uuid;

use crate::error::Result;
use crate::model::{
    LiveRevocations, NewSession, NewUser, RefreshOutcome, RefreshRotation, RefreshTokenInfo,
    Session, StoredKey, User, UserChange,
};

/// Durable state of tokengate: users, sessions, refresh tokens, signing keys and the
/// revocation record from which every node's in-memory index is (re)built.
///
/// Every method that returns `Ok` has made its change durable (committed, and on SQLite
/// fsync'd) before returning: the server acknowledges a sign-out only after that.
/// Compound operations (ending sessions, rotating a refresh token) are one transaction
/// each, so a crash leaves either all of the change or none of it.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // ---- users ----

    /// Create a user. The first user a store ever gets is made `Admin` whatever
    /// `new.role` says. An email that is taken gives [`StoreError::Conflict`](crate::StoreError::Conflict).
    async fn create_user(&self, new: NewUser) -> Result<User>;

    /// The user with this (normalised) email, if any.
    async fn user_by_email(&self, email: &str) -> Result<Option<User>>;

    /// The user with this id, if any.
    async fn user_by_id(&self, id: Uuid) -> Result<Option<User>>;

    /// Change a user's password hash or disabled flag and end the sessions the change
    /// ends (see [`UserChange`]), in one transaction: a failure changes nothing. Returns
    /// the revocations recorded, or `None` when there is no such user.
    async fn update_user(
        &self,
        user_id: Uuid,
        change: UserChange<'_>,
        now: Timestamp,
    ) -> Result<Option<Vec<Revocation>>>;

    // ---- sessions and refresh tokens ----

    /// Record a new session and its first refresh token — only if the user is still
    /// enabled and `new.password_hash` is still the user's password hash, checked in the
    /// same transaction. Returns `false` (nothing created) otherwise: a sign-in whose
    /// password check raced a password change or a disable must not leave a session.
    async fn create_session(&self, new: NewSession) -> Result<bool>;

    /// The session with this id, live or ended.
    async fn session(&self, id: Uuid) -> Result<Option<Session>>;

    /// The refresh token with this SHA-256 hash and its session (for RFC 7009 revocation
    /// and RFC 7662 introspection); `None` when unknown.
    async fn refresh_token(&self, hash: [u8; 32]) -> Result<Option<RefreshTokenInfo>>;

    /// The user's sessions that are live at `now`, oldest first.
    async fn live_sessions(&self, user_id: Uuid, now: Timestamp) -> Result<Vec<Session>>;

    /// Store the `last_seen_at` of many sessions at once (the server batches them, so a
    /// request never waits on this write). Unknown ids are ignored; a time never moves back.
    async fn touch_sessions(&self, seen: &[(Uuid, Timestamp)]) -> Result<()>;

    /// End one session (sign-out): mark it ended and record a `Session` revocation with
    /// `exp = access_exp`, in one transaction. Returns the revocation to apply, or `None`
    /// when there is no such session. Ending an ended session records nothing new and
    /// returns its revocation again.
    async fn end_session(&self, sid: Uuid, now: Timestamp) -> Result<Option<Revocation>>;

    /// End every live session of a user except `keep` (sign out everywhere, password
    /// change, admin revoke), in one transaction; returns the revocations recorded.
    async fn end_user_sessions(
        &self,
        user_id: Uuid,
        keep: Option<Uuid>,
        now: Timestamp,
    ) -> Result<Vec<Revocation>>;

    /// End every live session, of every user, created before `cutoff` (`created_at <
    /// cutoff`): their refresh tokens stop working. Records no revocation: the caller revokes
    /// their access tokens with one `IssuedBefore` cutoff (after a restore from a backup, or
    /// a compromise). Returns how many sessions it ended.
    async fn end_sessions_created_before(&self, cutoff: Timestamp, now: Timestamp) -> Result<u64>;

    /// Use a refresh token once (see [`RefreshOutcome`]). On success the presented token
    /// is marked used, the new one stored, and the session's `access_exp`/`refresh_exp`
    /// updated; on reuse the session is ended and its revocation recorded; one transaction.
    async fn rotate_refresh(&self, rotation: RefreshRotation) -> Result<RefreshOutcome>;

    // ---- revocations ----

    /// Record revocations durably, all or none.
    async fn record_revocations(&self, revocations: &[Revocation], now: Timestamp) -> Result<()>;

    /// Record revocations durably together with the id of the signal that caused them (a
    /// logout token or Security Event Token, by a digest of its issuer and `jti`), unless
    /// that id was recorded before: then nothing is recorded and the answer is `false`.
    /// One transaction; `signal_exp` is when the id stops mattering (the signal itself is
    /// refused from then on), after which [`purge_expired`](Self::purge_expired) deletes it.
    async fn record_revocations_once(
        &self,
        signal: Uuid,
        signal_exp: Timestamp,
        revocations: &[Revocation],
        now: Timestamp,
    ) -> Result<bool>;

    /// Every revocation that still matters at `now` (`exp >= now - leeway`), and the
    /// cursor of the newest record.
    async fn load_live_revocations(
        &self,
        now: Timestamp,
        leeway: std::time::Duration,
    ) -> Result<LiveRevocations>;

    /// Revocations recorded after `cursor` (by any process sharing the store, such as
    /// the admin CLI), oldest first, at most `limit`, each with its sequence number.
    async fn revocations_after(&self, cursor: i64, limit: u32) -> Result<Vec<(i64, Revocation)>>;

    /// Delete up to `limit` revocation records, refresh tokens, sessions and seen-signal
    /// records that expired before `before`; returns how many rows went. Called repeatedly in small batches.
    async fn purge_expired(&self, before: Timestamp, limit: u32) -> Result<u64>;

    // ---- signing keys ----

    /// Every signing key, oldest first.
    async fn signing_keys(&self) -> Result<Vec<StoredKey>>;

    /// Make `key` the signing key: every key that had no `verify_until` gets
    /// `verify_until = old_keys_verify_until`, then `key` is added; one transaction.
    async fn rotate_signing_key(
        &self,
        key: StoredKey,
        old_keys_verify_until: Timestamp,
    ) -> Result<()>;

    /// Add `key` only if the store has no signing key yet (first start; safe when several
    /// nodes start at once). Returns every key afterwards.
    async fn insert_first_signing_key(&self, key: StoredKey) -> Result<Vec<StoredKey>>;

    /// Whether the database answers (for `/readyz`).
    async fn ping(&self) -> Result<()>;
}
