//! [`BoundedStore`]: every call to a [`Store`] bounded in time, so that a database that
//! does not answer (down, partitioned, a link that drops packets without a reset) costs a
//! request at most `limit` and a clear [`StoreError::Unavailable`] (503), instead of the
//! pool's connect retries or a statement that never returns.
//!
//! A write given up on may still commit afterwards; the caller then answered 503 for a
//! change that took effect, never 2xx for one that did not, and the change reaches every
//! node's index through the tail like any other record.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokengate_core::{Revocation, Timestamp};
use uuid::Uuid;

use crate::error::{Result, StoreError};
use crate::model::{
    LiveRevocations, NewSession, NewUser, RefreshOutcome, RefreshRotation, RefreshTokenInfo,
    Session, StoredKey, User, UserChange,
};
use crate::store::Store;

/// Revocations per `limit` a recording is allowed: a bulk import of 100 000 gets ten
/// times the bound of a sign-out.
const REVOCATIONS_PER_LIMIT: usize = 10_000;

/// A [`Store`] whose every call gives up after `limit` (see the module documentation).
/// Loading the live revocations at start is not bounded: it reads the whole live set, and
/// nothing is served until it is done.
#[derive(Debug)]
pub struct BoundedStore<S: ?Sized> {
    inner: Arc<S>,
    limit: Duration,
}

impl<S: Store + ?Sized> BoundedStore<S> {
    /// `inner`, each call bounded by `limit`.
    pub fn new(inner: Arc<S>, limit: Duration) -> Self {
        BoundedStore { inner, limit }
    }

    async fn within<T>(
        &self,
        limit: Duration,
        what: &str,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(limit, call).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(
                format!("the database did not answer {what} within {limit:?}").into(),
            )),
        }
    }

    async fn bounded<T>(&self, what: &str, call: impl Future<Output = Result<T>>) -> Result<T> {
        self.within(self.limit, what, call).await
    }
}

#[async_trait]
impl<S: Store + ?Sized> Store for BoundedStore<S> {
    async fn create_user(&self, new: NewUser) -> Result<User> {
        self.bounded("creating a user", self.inner.create_user(new))
            .await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        self.bounded("reading a user", self.inner.user_by_email(email))
            .await
    }

    async fn user_by_id(&self, id: Uuid) -> Result<Option<User>> {
        self.bounded("reading a user", self.inner.user_by_id(id))
            .await
    }

    async fn update_user(
        &self,
        user_id: Uuid,
        change: UserChange<'_>,
        now: Timestamp,
    ) -> Result<Option<Vec<Revocation>>> {
        self.bounded(
            "updating a user",
            self.inner.update_user(user_id, change, now),
        )
        .await
    }

    async fn create_session(&self, new: NewSession) -> Result<bool> {
        self.bounded("creating a session", self.inner.create_session(new))
            .await
    }

    async fn session(&self, id: Uuid) -> Result<Option<Session>> {
        self.bounded("reading a session", self.inner.session(id))
            .await
    }

    async fn refresh_token(&self, hash: [u8; 32]) -> Result<Option<RefreshTokenInfo>> {
        self.bounded("reading a refresh token", self.inner.refresh_token(hash))
            .await
    }

    async fn live_sessions(&self, user_id: Uuid, now: Timestamp) -> Result<Vec<Session>> {
        self.bounded("listing sessions", self.inner.live_sessions(user_id, now))
            .await
    }

    async fn touch_sessions(&self, seen: &[(Uuid, Timestamp)]) -> Result<()> {
        self.bounded("storing last_seen_at", self.inner.touch_sessions(seen))
            .await
    }

    async fn end_session(&self, sid: Uuid, now: Timestamp) -> Result<Option<Revocation>> {
        self.bounded("ending a session", self.inner.end_session(sid, now))
            .await
    }

    async fn end_user_sessions(
        &self,
        user_id: Uuid,
        keep: Option<Uuid>,
        now: Timestamp,
    ) -> Result<Vec<Revocation>> {
        self.bounded(
            "ending a user's sessions",
            self.inner.end_user_sessions(user_id, keep, now),
        )
        .await
    }

    async fn end_sessions_created_before(&self, cutoff: Timestamp, now: Timestamp) -> Result<u64> {
        self.bounded(
            "ending the sessions created before a cutoff",
            self.inner.end_sessions_created_before(cutoff, now),
        )
        .await
    }

    async fn rotate_refresh(&self, rotation: RefreshRotation) -> Result<RefreshOutcome> {
        self.bounded(
            "rotating a refresh token",
            self.inner.rotate_refresh(rotation),
        )
        .await
    }

    async fn record_revocations(&self, revocations: &[Revocation], now: Timestamp) -> Result<()> {
        let limits = revocations.len().div_ceil(REVOCATIONS_PER_LIMIT).max(1);
        let limit = self
            .limit
            .saturating_mul(u32::try_from(limits).unwrap_or(u32::MAX));
        self.within(
            limit,
            "recording revocations",
            self.inner.record_revocations(revocations, now),
        )
        .await
    }

    async fn record_revocations_once(
        &self,
        signal: Uuid,
        signal_exp: Timestamp,
        revocations: &[Revocation],
        now: Timestamp,
    ) -> Result<bool> {
        // A signal given up on may still commit: its revocations then take effect, and a
        // redelivery of it is refused as a replay.
        self.bounded(
            "recording a signal's revocations",
            self.inner
                .record_revocations_once(signal, signal_exp, revocations, now),
        )
        .await
    }

    async fn load_live_revocations(
        &self,
        now: Timestamp,
        leeway: Duration,
    ) -> Result<LiveRevocations> {
        self.inner.load_live_revocations(now, leeway).await
    }

    async fn revocations_after(&self, cursor: i64, limit: u32) -> Result<Vec<(i64, Revocation)>> {
        self.bounded(
            "reading new revocations",
            self.inner.revocations_after(cursor, limit),
        )
        .await
    }

    async fn purge_expired(&self, before: Timestamp, limit: u32) -> Result<u64> {
        self.bounded(
            "purging expired rows",
            self.inner.purge_expired(before, limit),
        )
        .await
    }

    async fn signing_keys(&self) -> Result<Vec<StoredKey>> {
        self.bounded("reading signing keys", self.inner.signing_keys())
            .await
    }

    async fn rotate_signing_key(
        &self,
        key: StoredKey,
        old_keys_verify_until: Timestamp,
    ) -> Result<()> {
        self.bounded(
            "rotating the signing key",
            self.inner.rotate_signing_key(key, old_keys_verify_until),
        )
        .await
    }

    async fn insert_first_signing_key(&self, key: StoredKey) -> Result<Vec<StoredKey>> {
        self.bounded(
            "storing the first signing key",
            self.inner.insert_first_signing_key(key),
        )
        .await
    }

    async fn ping(&self) -> Result<()> {
        self.bounded("a ping", self.inner.ping()).await
    }
}
