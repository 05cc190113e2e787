//! In process, with a set clock and a store that can be made to fail: expiry and leeway,
//! refresh token lifetime, bounded index, and no false 204 when the store cannot write.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use tokengate_core::{Clock, Revocation, Timestamp};
use tokengate_store::{
    LiveRevocations, NewSession, NewUser, RefreshOutcome, RefreshRotation, Session, SqliteStore,
    Store, StoreError, StoredKey, User, UserChange,
};
use uuid::Uuid;

/// A SQLite store whose writes fail with [`StoreError::Unavailable`] while `failing` is set
/// (a full disk, a lost database); reads keep working.
struct FailingStore {
    inner: SqliteStore,
    failing: AtomicBool,
}

impl FailingStore {
    fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    fn write(&self) -> tokengate_store::Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("disk I/O error (injected)".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl Store for FailingStore {
    async fn create_user(&self, new: NewUser) -> tokengate_store::Result<User> {
        self.write()?;
        self.inner.create_user(new).await
    }
    async fn user_by_email(&self, email: &str) -> tokengate_store::Result<Option<User>> {
        self.inner.user_by_email(email).await
    }
    async fn user_by_id(&self, id: Uuid) -> tokengate_store::Result<Option<User>> {
        self.inner.user_by_id(id).await
    }
    async fn update_user(
        &self,
        user_id: Uuid,
        change: UserChange<'_>,
        now: Timestamp,
    ) -> tokengate_store::Result<Option<Vec<Revocation>>> {
        self.write()?;
        self.inner.update_user(user_id, change, now).await
    }
    async fn create_session(&self, new: NewSession) -> tokengate_store::Result<bool> {
        self.write()?;
        self.inner.create_session(new).await
    }
    async fn session(&self, id: Uuid) -> tokengate_store::Result<Option<Session>> {
        self.inner.session(id).await
    }
    async fn refresh_token(
        &self,
        hash: [u8; 32],
    ) -> tokengate_store::Result<Option<tokengate_store::RefreshTokenInfo>> {
        self.inner.refresh_token(hash).await
    }
    async fn live_sessions(
        &self,
        user_id: Uuid,
        now: Timestamp,
    ) -> tokengate_store::Result<Vec<Session>> {
        self.inner.live_sessions(user_id, now).await
    }
    async fn touch_sessions(&self, seen: &[(Uuid, Timestamp)]) -> tokengate_store::Result<()> {
        self.write()?;
        self.inner.touch_sessions(seen).await
    }
    async fn end_session(
        &self,
        sid: Uuid,
        now: Timestamp,
    ) -> tokengate_store::Result<Option<Revocation>> {
        self.write()?;
        self.inner.end_session(sid, now).await
    }
    async fn end_user_sessions(
        &self,
        user_id: Uuid,
        keep: Option<Uuid>,
        now: Timestamp,
    ) -> tokengate_store::Result<Vec<Revocation>> {
        self.write()?;
        self.inner.end_user_sessions(user_id, keep, now).await
    }
    async fn end_sessions_created_before(
        &self,
        cutoff: Timestamp,
        now: Timestamp,
    ) -> tokengate_store::Result<u64> {
        self.write()?;
        self.inner.end_sessions_created_before(cutoff, now).await
    }
    async fn rotate_refresh(
        &self,
        rotation: RefreshRotation,
    ) -> tokengate_store::Result<RefreshOutcome> {
        self.write()?;
        self.inner.rotate_refresh(rotation).await
    }
    async fn record_revocations(
        &self,
        revocations: &[Revocation],
        now: Timestamp,
    ) -> tokengate_store::Result<()> {
        self.write()?;
        self.inner.record_revocations(revocations, now).await
    }
    async fn record_revocations_once(
        &self,
        signal: Uuid,
        signal_exp: Timestamp,
        revocations: &[Revocation],
        now: Timestamp,
    ) -> tokengate_store::Result<bool> {
        self.write()?;
        self.inner
            .record_revocations_once(signal, signal_exp, revocations, now)
            .await
    }
    async fn load_live_revocations(
        &self,
        now: Timestamp,
        leeway: Duration,
    ) -> tokengate_store::Result<LiveRevocations> {
        self.inner.load_live_revocations(now, leeway).await
    }
    async fn revocations_after(
        &self,
        cursor: i64,
        limit: u32,
    ) -> tokengate_store::Result<Vec<(i64, Revocation)>> {
        self.inner.revocations_after(cursor, limit).await
    }
    async fn purge_expired(&self, before: Timestamp, limit: u32) -> tokengate_store::Result<u64> {
        self.write()?;
        self.inner.purge_expired(before, limit).await
    }
    async fn signing_keys(&self) -> tokengate_store::Result<Vec<StoredKey>> {
        self.inner.signing_keys().await
    }
    async fn rotate_signing_key(
        &self,
        key: StoredKey,
        old_keys_verify_until: Timestamp,
    ) -> tokengate_store::Result<()> {
        self.write()?;
        self.inner
            .rotate_signing_key(key, old_keys_verify_until)
            .await
    }
    async fn insert_first_signing_key(
        &self,
        key: StoredKey,
    ) -> tokengate_store::Result<Vec<StoredKey>> {
        self.write()?;
        self.inner.insert_first_signing_key(key).await
    }
    async fn ping(&self) -> tokengate_store::Result<()> {
        self.inner.ping().await
    }
}

/// Set the node's clock to `t` and wait until it has confirmed its index at that time.
async fn set_clock(server: &InProcess, t: Timestamp) {
    server.clock.set(t);
    server.wait_ready().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_token_is_accepted_until_exp_plus_leeway_and_refused_after() {
    let server = InProcess::start().await;
    let client = server.client();
    let email = client.new_user("expiry").await;
    let tokens = client.signin_ok(&email).await;
    let exp = jwt_claims(&tokens.access_token)["exp"].as_i64().unwrap();
    let iat = jwt_claims(&tokens.access_token)["iat"].as_i64().unwrap();
    assert_eq!(
        iat,
        server.clock.now().as_secs(),
        "tokens are issued at the node's clock"
    );
    let leeway = i64::try_from(server.node.state.config.leeway.as_secs()).unwrap();
    assert_eq!(leeway, 30, "the default leeway");

    set_clock(&server, Timestamp::from_secs(exp - 1)).await;
    client.me(&tokens.access_token).await.expect(StatusCode::OK);
    set_clock(&server, Timestamp::from_secs(exp + leeway - 1)).await;
    client.me(&tokens.access_token).await.expect(StatusCode::OK);

    set_clock(&server, Timestamp::from_secs(exp + leeway + 1)).await;
    let description = client.me(&tokens.access_token).await.expect_invalid_token();
    assert!(description.contains("expired"), "{description}");

    // The refresh token outlives the access token and mints a fresh one.
    let next = client.refresh_ok(&tokens.refresh_token).await;
    client.me(&next.access_token).await.expect(StatusCode::OK);
    assert_eq!(
        jwt_claims(&next.access_token)["iat"].as_i64().unwrap(),
        exp + leeway + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_token_is_refused_after_refresh_ttl() {
    let server = InProcess::start().await;
    let client = server.client();
    let email = client.new_user("refresh-ttl").await;
    let start = server.clock.now();
    let expiring = client.signin_ok(&email).await;
    let control = client.signin_ok(&email).await;
    let ttl = server.node.state.config.refresh_ttl;
    assert_eq!(
        ttl,
        Duration::from_secs(30 * 86_400),
        "the default refresh_ttl"
    );

    // Just before its end the refresh token still works (on the control session).
    set_clock(&server, start.plus(ttl).minus(Duration::from_secs(60))).await;
    let renewed = client.refresh_ok(&control.refresh_token).await;
    client
        .me(&renewed.access_token)
        .await
        .expect(StatusCode::OK);

    set_clock(&server, start.plus(ttl).plus(Duration::from_secs(1))).await;
    let resp = client.refresh(&expiring.refresh_token).await;
    let (error, description) = resp.expect_error(StatusCode::UNAUTHORIZED);
    assert_eq!(error, "invalid_grant", "{}", resp.text);
    assert!(description.contains("expired"), "{description}");
    resp.expect_challenge();
    // The expired session is no longer listed; the renewed one got a new 30 days.
    let list = client.sessions(&renewed.access_token).await;
    list.expect(StatusCode::OK);
    assert_eq!(list.json().as_array().unwrap().len(), 1, "{}", list.text);
    assert!(list.text.contains(&control.session_id), "{}", list.text);
    assert!(!list.text.contains(&expiring.session_id), "{}", list.text);
    client.refresh_ok(&renewed.refresh_token).await;
}

fn unix_of(value: &serde_json::Value) -> i64 {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"));
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("not RFC 3339 ({e}): {text}"))
        .unix_timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_seen_at_follows_requests_at_once_without_waiting_for_a_flush() {
    let server = InProcess::start().await;
    let client = server.client();
    let email = client.new_user("last-seen").await;
    let signed_in_at = server.clock.now().as_secs();
    let active = client.signin_ok(&email).await;
    let idle = client.signin_ok(&email).await;

    set_clock(&server, Timestamp::from_secs(signed_in_at + 100)).await;
    client.me(&active.access_token).await.expect(StatusCode::OK);
    let list = client.sessions(&active.access_token).await;
    list.expect(StatusCode::OK);
    let list = list.json();
    let find = |sid: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == sid)
            .unwrap_or_else(|| panic!("{sid} not listed: {list}"))
            .clone()
    };
    let active_view = find(&active.session_id);
    let idle_view = find(&idle.session_id);
    assert_eq!(unix_of(&active_view["created_at"]), signed_in_at, "{list}");
    assert_eq!(
        unix_of(&active_view["last_seen_at"]),
        signed_in_at + 100,
        "{list}"
    );
    assert_eq!(unix_of(&idle_view["created_at"]), signed_in_at, "{list}");
    assert_eq!(unix_of(&idle_view["last_seen_at"]), signed_in_at, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_out_sessions_leave_the_index_once_their_tokens_expire() {
    let server = InProcess::start().await;
    let client = server.client();
    let email = client.new_user("purge").await;
    let tokens = client.signin_ok(&email).await;
    let index = server.node.state.index().clone();
    let before = index.len();

    client
        .signout(&tokens.access_token)
        .await
        .expect(StatusCode::NO_CONTENT);
    assert!(index.len() > before, "sign-out added nothing to the index");
    client.me(&tokens.access_token).await.expect_invalid_token();

    let exp = jwt_claims(&tokens.access_token)["exp"].as_i64().unwrap();
    set_clock(&server, Timestamp::from_secs(exp + 3600)).await;
    eventually(
        Duration::from_secs(10),
        "the index to drop the dead entry",
        || {
            let index = index.clone();
            async move { index.len() == before }
        },
    )
    .await;
    // Still refused, now as expired.
    let description = client.me(&tokens.access_token).await.expect_invalid_token();
    assert!(description.contains("expired"), "{description}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signout_answers_503_while_the_store_cannot_write_and_applies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FailingStore {
        inner: InProcess::sqlite(dir.path()).await,
        failing: AtomicBool::new(false),
    });
    let config = InProcess::config(dir.path());
    let server = InProcess::start_on(dir, config, store.clone()).await;
    let client = server.client();
    let email = client.new_user("failing").await;
    let tokens = client.signin_ok(&email).await;
    let other = client.signin_ok(&email).await;
    let index_before = server.node.state.index().len();

    store.set_failing(true);
    client
        .signin(&email, PASSWORD)
        .await
        .expect_error(StatusCode::SERVICE_UNAVAILABLE);
    client
        .password(&tokens.access_token, PASSWORD, NEW_PASSWORD)
        .await
        .expect_error(StatusCode::SERVICE_UNAVAILABLE);
    for resp in [
        client.signout(&tokens.access_token).await,
        client.signout_all(&tokens.access_token).await,
        client
            .delete_session(&tokens.access_token, &other.session_id)
            .await,
        client.refresh(&other.refresh_token).await,
    ] {
        let (error, _) = resp.expect_error(StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error, "temporarily_unavailable", "{}", resp.text);
    }
    // Each store error answered is counted once (where the answer is built).
    let metrics = client.get("/metrics", None).await;
    assert!(
        metrics
            .text
            .lines()
            .any(|l| l == "tokengate_store_errors_total 6"),
        "{}",
        metrics.text
    );
    // Nothing was half-applied: every token and refresh token still works.
    assert_eq!(server.node.state.index().len(), index_before);
    client.me(&tokens.access_token).await.expect(StatusCode::OK);
    client.me(&other.access_token).await.expect(StatusCode::OK);

    store.set_failing(false);
    client
        .signout(&tokens.access_token)
        .await
        .expect(StatusCode::NO_CONTENT);
    client.me(&tokens.access_token).await.expect_invalid_token();
    client.me(&other.access_token).await.expect(StatusCode::OK);
    // The refresh that failed did not consume the token (no false reuse detection).
    let renewed = client.refresh_ok(&other.refresh_token).await;
    client
        .me(&renewed.access_token)
        .await
        .expect(StatusCode::OK);
    // The failed password change changed nothing.
    client.signin_ok(&email).await;
}
