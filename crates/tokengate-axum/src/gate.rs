//! [`Gate`]: verify a token, then check it against the in-memory revocation index.

use std::sync::Arc;

use tokengate_core::{
    Claims, Clock, Freshness, RevocationIndex, StalenessPolicy, Timestamp, Verifier,
};

use crate::error::AuthError;

/// Whether a stale index refuses a request (see [`Gate::authenticate_with`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Staleness {
    /// Apply the [`StalenessPolicy`].
    Enforce,
    /// Serve from the index as it is: for endpoints that only revoke.
    Permit,
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
/// freshness.mark_in_sync(Proof::Store, clock.now_ms());
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
        self.authenticate_with(token, Staleness::Enforce)
    }

    /// Like [`Gate::authenticate`], but with `Staleness::Permit` a stale index does not
    /// refuse the request: for endpoints that only revoke (sign-out), which must keep
    /// working during an outage — a stale index can only be missing revocations, and
    /// revoking again is harmless.
    pub fn authenticate_with(
        &self,
        token: &str,
        staleness: Staleness,
    ) -> Result<Claims, AuthError> {
        let now = self.clock.now();
        let result = self.authenticate_at(token, now, staleness);
        if let Some(observer) = &self.observer {
            match &result {
                Ok(claims) => observer.accepted(claims, now),
                Err(error) => observer.refused(error),
            }
        }
        result
    }

    fn authenticate_at(
        &self,
        token: &str,
        now: Timestamp,
        staleness: Staleness,
    ) -> Result<Claims, AuthError> {
        let claims = self
            .verifier
            .verify(token, now)
            .map_err(AuthError::Invalid)?;
        if staleness == Staleness::Enforce && self.freshness.is_stale(self.clock.now_ms()) {
            self.freshness.count_stale_answer();
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
