//! [`Gate`]: verify a token, then check it against the in-memory revocation index.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokengate_core::{Claims, Clock, RevocationIndex, Timestamp, Verifier};

use crate::error::AuthError;

/// What a node does while it cannot be sure its revocation index is current.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StalenessPolicy {
    /// Answer 503 on authenticated routes until the index is current again.
    #[default]
    FailClosed,
    /// Keep serving from the last index (logged and counted).
    FailOpen,
}

impl std::str::FromStr for StalenessPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fail_closed" => Ok(StalenessPolicy::FailClosed),
            "fail_open" => Ok(StalenessPolicy::FailOpen),
            other => Err(format!(
                "unknown staleness policy {other:?} (expected fail_closed or fail_open)"
            )),
        }
    }
}

/// Whether this node's index is known to be current.
///
/// Whatever keeps the index in sync (the SQL tail, the Redis subscription) calls
/// [`Freshness::mark_in_sync`] each time it has confirmed it has seen every revocation;
/// [`Freshness::mark_lost`] when it knows it has not (a dropped subscription). The index is
/// stale once it has not been confirmed for longer than `max_staleness`, or right away
/// after `mark_lost` until the next `mark_in_sync`.
#[derive(Debug)]
pub struct Freshness {
    policy: StalenessPolicy,
    max_staleness: Duration,
    /// Unix seconds of the last confirmation; `i64::MIN` = lost (never, or since mark_lost).
    confirmed_at: AtomicI64,
    /// When sync was lost (Unix seconds), `i64::MAX` while in sync.
    lost_at: AtomicI64,
}

impl Freshness {
    /// A node that has not synced yet: stale until the first `mark_in_sync`.
    pub fn new(policy: StalenessPolicy, max_staleness: Duration) -> Self {
        Freshness {
            policy,
            max_staleness,
            confirmed_at: AtomicI64::new(i64::MIN),
            lost_at: AtomicI64::new(i64::MIN),
        }
    }

    /// The index has seen every revocation recorded up to `now`.
    pub fn mark_in_sync(&self, now: Timestamp) {
        self.confirmed_at.fetch_max(now.as_secs(), Ordering::AcqRel);
        self.lost_at.store(i64::MAX, Ordering::Release);
    }

    /// The channel that keeps the index current is broken as of `now`.
    pub fn mark_lost(&self, now: Timestamp) {
        // Keep the earliest loss time if already lost.
        let _ = self
            .lost_at
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                (cur == i64::MAX).then_some(now.as_secs())
            });
    }

    /// Whether the index may be missing revocations at `now`.
    pub fn is_stale(&self, now: Timestamp) -> bool {
        let confirmed = self.confirmed_at.load(Ordering::Acquire);
        if confirmed == i64::MIN {
            return true;
        }
        let limit = i64::try_from(self.max_staleness.as_secs()).unwrap_or(i64::MAX);
        let lost_at = self.lost_at.load(Ordering::Acquire);
        let unconfirmed_for = now.as_secs().saturating_sub(confirmed);
        unconfirmed_for > limit
            || (lost_at != i64::MAX && now.as_secs().saturating_sub(lost_at) > limit)
    }

    /// The configured policy.
    pub fn policy(&self) -> StalenessPolicy {
        self.policy
    }

    /// Seconds since the index was last confirmed current (for metrics), if ever.
    pub fn lag_secs(&self, now: Timestamp) -> Option<i64> {
        let confirmed = self.confirmed_at.load(Ordering::Acquire);
        (confirmed != i64::MIN).then(|| now.as_secs().saturating_sub(confirmed).max(0))
    }
}

/// Told about every authentication decision, for metrics and `last_seen_at` bookkeeping.
/// Must be cheap: it runs on the request path.
pub trait AuthObserver: Send + Sync + 'static {
    /// A token was accepted.
    fn accepted(&self, claims: &Claims, now: Timestamp) {
        let _ = (claims, now);
    }
    /// A request was refused.
    fn refused(&self, error: &AuthError) {
        let _ = error;
    }
    /// A stale index was served from under `fail_open`.
    fn served_stale(&self) {}
}

/// Everything the per-request check needs; shared as `Arc<Gate>` in the app state.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use tokengate_axum::{Freshness, Gate, StalenessPolicy};
/// use tokengate_core::*;
///
/// let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
/// let config = VerifierConfig { issuer: "tokengate".into(), audience: "app".into(), leeway: Duration::from_secs(30) };
/// let verifier = Arc::new(Verifier::new(config, vec![key.verifying_key()]));
/// let index = Arc::new(RevocationIndex::new(Duration::from_secs(30)));
/// let clock = Arc::new(ManualClock::new(Timestamp::from_secs(1_700_000_000)));
/// let freshness = Arc::new(Freshness::new(StalenessPolicy::FailClosed, Duration::from_secs(5)));
/// freshness.mark_in_sync(clock.now());
/// let gate = Gate::new(verifier, index.clone(), clock.clone(), freshness);
///
/// let now = clock.now();
/// let claims = Claims {
///     iss: "tokengate".into(), sub: uuid::Uuid::new_v4(), aud: "app".into(),
///     iat: now, nbf: now, exp: now.plus(Duration::from_secs(900)),
///     jti: uuid::Uuid::new_v4(), sid: uuid::Uuid::new_v4(), email: "a@example.com".into(), role: Role::User,
/// };
/// let token = key.sign(&claims).unwrap();
/// assert!(gate.authenticate(&token).is_ok());
/// index.apply(&Revocation::Session { sid: claims.sid, exp: claims.exp }, now);
/// assert!(gate.authenticate(&token).is_err());
/// ```
pub struct Gate {
    verifier: Arc<Verifier>,
    index: Arc<RevocationIndex>,
    clock: Arc<dyn Clock>,
    freshness: Arc<Freshness>,
    observer: Option<Arc<dyn AuthObserver>>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("revocations", &self.index.len())
            .field("freshness", &self.freshness)
            .finish_non_exhaustive()
    }
}

impl Gate {
    /// A gate over this verifier, index, clock and freshness state.
    pub fn new(
        verifier: Arc<Verifier>,
        index: Arc<RevocationIndex>,
        clock: Arc<dyn Clock>,
        freshness: Arc<Freshness>,
    ) -> Self {
        Gate {
            verifier,
            index,
            clock,
            freshness,
            observer: None,
        }
    }

    /// Tell `observer` about every decision.
    pub fn with_observer(mut self, observer: Arc<dyn AuthObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Verify `token` and check it against the revocation index, at the clock's `now`.
    pub fn authenticate(&self, token: &str) -> Result<Claims, AuthError> {
        let now = self.clock.now();
        let result = self.authenticate_at(token, now);
        if let Some(observer) = &self.observer {
            match &result {
                Ok(claims) => observer.accepted(claims, now),
                Err(error) => observer.refused(error),
            }
        }
        result
    }

    fn authenticate_at(&self, token: &str, now: Timestamp) -> Result<Claims, AuthError> {
        let claims = self
            .verifier
            .verify(token, now)
            .map_err(AuthError::Invalid)?;
        if self.freshness.is_stale(now) {
            match self.freshness.policy() {
                StalenessPolicy::FailClosed => return Err(AuthError::Stale),
                StalenessPolicy::FailOpen => {
                    if let Some(observer) = &self.observer {
                        observer.served_stale();
                    }
                }
            }
        }
        self.index.check(&claims, now).map_err(AuthError::Revoked)?;
        Ok(claims)
    }

    /// Report a refusal decided outside [`Gate::authenticate`] (a missing credential,
    /// a CSRF failure) to the observer.
    pub fn report(&self, error: &AuthError) {
        if let Some(observer) = &self.observer {
            observer.refused(error);
        }
    }

    /// The verifier (keys, issuer, audience).
    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }

    /// The revocation index.
    pub fn index(&self) -> &Arc<RevocationIndex> {
        &self.index
    }

    /// The clock every decision reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The freshness state of the index.
    pub fn freshness(&self) -> &Arc<Freshness> {
        &self.freshness
    }
}
