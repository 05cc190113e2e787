//! The application state shared by every handler, and the operations that several
//! handlers (and the admin endpoints) share: minting tokens and applying revocations.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokengate_axum::{AuthObserver, Gate};
use tokengate_core::{Claims, Revocation, RevocationIndex, Timestamp};
use tokengate_store::{RevocationPublisher, Store, User};
use uuid::Uuid;

use crate::config::Config;
use crate::error::{ApiError, ApiResult};
use crate::keyring::KeyRing;
use crate::password::Passwords;

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The configuration in force.
    pub config: Arc<Config>,
    /// Users, sessions, keys and the durable revocation record.
    pub store: Arc<dyn Store>,
    /// Verifier + revocation index + clock: the per-request check.
    pub gate: Arc<Gate>,
    /// Signing and verifying keys.
    pub keys: Arc<KeyRing>,
    /// argon2id hashing off the runtime.
    pub passwords: Passwords,
    /// When each session was last seen, kept in memory and flushed in batches.
    pub activity: Arc<SessionActivity>,
    /// Pushes this node's revocations to the other nodes of a cluster (no-op otherwise).
    pub publisher: RevocationPublisher,
    /// Failed sign-in counters (per account and client IP, and per IP): 429 past the limit.
    pub throttle: Arc<crate::throttle::SigninThrottle>,
    /// The node's counters for `GET /metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl FromRef<AppState> for Arc<Gate> {
    fn from_ref(state: &AppState) -> Self {
        state.gate.clone()
    }
}

/// A freshly minted access token.
#[derive(Debug)]
pub struct AccessToken {
    /// The compact JWS.
    pub token: String,
    /// Its `exp`.
    pub exp: Timestamp,
}

impl AppState {
    /// The current time from the one clock.
    pub fn now(&self) -> Timestamp {
        self.gate.clock().now()
    }

    /// The revocation index of this node.
    pub fn index(&self) -> &Arc<RevocationIndex> {
        self.gate.index()
    }

    /// When an access token issued at `now` expires.
    pub fn access_exp(&self, now: Timestamp) -> Timestamp {
        now.plus(self.config.access_ttl)
    }

    /// Sign an access token for `user` in session `sid`, expiring at `exp`.
    pub async fn mint(
        &self,
        user: &User,
        sid: Uuid,
        now: Timestamp,
        exp: Timestamp,
    ) -> ApiResult<AccessToken> {
        let claims = Claims {
            iss: self.config.issuer.clone(),
            sub: user.id,
            aud: self.config.audience.clone(),
            iat: now,
            nbf: now,
            exp,
            jti: Uuid::new_v4(),
            sid,
            email: user.email.clone(),
            role: user.role,
        };
        let signer = self.keys.signer_reloading(self.store.as_ref(), now).await;
        let token = signer.sign(&claims).map_err(|error| {
            tracing::error!(%error, "signing failed");
            ApiError::Unavailable("token signing is unavailable; retry shortly".into())
        })?;
        Ok(AccessToken { token, exp })
    }

    /// Apply revocations that the store has just made durable to this node's index, so
    /// the very next request sees them, and queue them for the other nodes of a cluster
    /// (which also read them from the store, so a failed push loses nothing).
    pub fn apply(&self, revocations: &[Revocation]) {
        let now = self.now();
        for revocation in revocations {
            self.index().apply(revocation, now);
        }
        self.publisher.publish(revocations);
    }
}

/// A new refresh token: the text for the client and the hash for the store.
pub struct RefreshToken {
    /// `tgr_` + 256 random bits, base64url. The prefix lets secret scanners find leaks.
    pub text: String,
    /// SHA-256 of `text`; the only form stored.
    pub hash: [u8; 32],
}

impl RefreshToken {
    /// A fresh random refresh token.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let text = format!("tgr_{}", URL_SAFE_NO_PAD.encode(bytes));
        let hash = hash_refresh_token(&text);
        RefreshToken { text, hash }
    }
}

/// The stored form of a refresh token. A 256-bit random secret needs no salt or
/// stretching: a plain SHA-256 cannot be reversed or guessed.
pub fn hash_refresh_token(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// `last_seen_at` of sessions without a database write per request: the gate records each
/// accepted token's session here (a read-only check when already recorded this second), and
/// a background task flushes the map to the store in one batch.
#[derive(Default)]
pub struct SessionActivity {
    seen: papaya::HashMap<Uuid, Timestamp, foldhash::fast::RandomState>,
}

impl SessionActivity {
    /// Sessions seen since they were last flushed, with the time.
    pub fn snapshot(&self) -> Vec<(Uuid, Timestamp)> {
        self.seen.pin().iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Forget sessions not seen since `before` (already flushed).
    pub fn forget_older_than(&self, before: Timestamp) {
        self.seen.pin().retain(|_, seen| *seen >= before);
    }

    /// The last time `sid` was seen by this node, if recently.
    pub fn last_seen(&self, sid: Uuid) -> Option<Timestamp> {
        self.seen.pin().get(&sid).copied()
    }
}

impl AuthObserver for SessionActivity {
    fn accepted(&self, claims: &Claims, now: Timestamp) {
        let seen = self.seen.pin();
        if seen.get(&claims.sid) != Some(&now) {
            seen.insert(claims.sid, now);
        }
    }
}

/// How often the activity map is written to the store.
pub const ACTIVITY_FLUSH_EVERY: Duration = Duration::from_secs(15);
