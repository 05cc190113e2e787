//! [`GateService`]: what the server's gate endpoints, the CLI and embedders call. It joins
//! the [`Issuers`] to the session service's index, clock, freshness and durable record,
//! so a gate revocation is recorded, applied and pushed to a cluster exactly like an own
//! one.

use std::sync::Arc;
use std::time::Duration;

use tokengate_core::{Revocation, StalenessPolicy, Timestamp, VerifyError};
use tokengate_sessions::{SessionService, Unavailable};

use crate::gate::{GateError, Issuer, Issuers};
use crate::signals::{Signal, SignalChannel, SignalError};
use crate::token::GateToken;

/// How often the key-refresh task looks for due fetches.
pub const KEY_REFRESH_TICK: Duration = Duration::from_secs(1);

/// What a caller of `POST /v1/gate/{issuer}/revocations` (or the CLI) revokes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateRevocation {
    /// Every token of this user issued before now.
    Subject(String),
    /// Every token of this session.
    Session(String),
    /// One token by its token id; `exp` bounds how long the entry is kept.
    TokenId {
        /// The token id.
        id: String,
        /// The token's `exp`, when known.
        exp: Option<Timestamp>,
    },
    /// Every token of the issuer issued before this instant.
    IssuedBefore(Timestamp),
}

/// Why a gate revocation request was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum GateRevokeError {
    /// No issuer of that name.
    #[error("no issuer is named {0:?}")]
    UnknownIssuer(String),
    /// An `issued_before` in the future would refuse tokens not issued yet.
    #[error("issued_before is in the future")]
    CutoffInFuture,
    /// Nothing was recorded.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// Gate mode over a session service.
pub struct GateService {
    issuers: Issuers,
    sessions: Arc<SessionService>,
}

impl GateService {
    /// Gate mode for `issuers`, recording through `sessions`.
    pub fn new(issuers: Issuers, sessions: Arc<SessionService>) -> Self {
        GateService { issuers, sessions }
    }

    /// The issuers.
    pub fn issuers(&self) -> &Issuers {
        &self.issuers
    }

    /// The issuer a token is addressed to; `Ok(None)` for tokengate's own tokens.
    pub fn route(&self, token: &str) -> Result<Option<&Issuer>, GateError> {
        self.issuers.route(token, &self.sessions.config().issuer)
    }

    /// Verify a gate token of `issuer` and check it against the index, refusing under
    /// `fail_closed` while the index is stale (as for own tokens); a token naming an
    /// unknown `kid` first triggers one fetch of the issuer's keys.
    pub async fn authenticate(
        &self,
        issuer: &Issuer,
        token: &str,
    ) -> Result<GateToken, AuthenticateError> {
        let now = self.sessions.now();
        let index = self.sessions.index();
        let verified = self
            .once_more_on_unknown_kid(
                issuer,
                now,
                || self.issuers.verify(issuer, token, index, now),
                |error| matches!(error, GateError::Jose(VerifyError::UnknownKey)),
            )
            .await?;
        let freshness = self.sessions.freshness();
        if freshness.is_stale(self.sessions.clock().now_ms()) {
            freshness.count_stale_answer();
            if freshness.policy() == StalenessPolicy::FailClosed {
                return Err(AuthenticateError::Stale);
            }
        }
        Ok(verified)
    }

    /// The sign-out hook of an app that cannot be changed: revoke the presented gate token,
    /// and its session where the issuer maps one. A token that does not verify (forged,
    /// expired, already revoked, unknown issuer) revokes nothing and is not an error: the
    /// hook answers every well-formed request alike. Works while the index is stale.
    pub async fn sign_out(&self, token: &str) -> Result<bool, Unavailable> {
        let Ok(Some(issuer)) = self.route(token) else {
            return Ok(false);
        };
        let now = self.sessions.now();
        let Ok(verified) = self
            .issuers
            .verify(issuer, token, self.sessions.index(), now)
        else {
            return Ok(false);
        };
        let mut revocations = vec![Revocation::Token {
            jti: verified.ids.jti,
            exp: verified.expires,
        }];
        if let Some(session) = &verified.session {
            revocations.push(issuer.revoke_session(session, now));
        }
        self.sessions.record(&revocations).await?;
        tracing::info!(issuer = %issuer.name(), subject = %verified.subject, "gate sign-out");
        Ok(true)
    }

    /// RFC 7009 for a gate token presented by `client` (already authenticated against the
    /// issuer the token names): revoke it if its signature verifies. Expired, revoked or
    /// invalid tokens revoke nothing, and the answer does not say so.
    pub async fn revoke_token(&self, issuer: &Issuer, token: &str) -> Result<(), Unavailable> {
        let now = self.sessions.now();
        match self
            .issuers
            .verify(issuer, token, self.sessions.index(), now)
        {
            Ok(verified) => {
                let revocation = Revocation::Token {
                    jti: verified.ids.jti,
                    exp: verified.expires,
                };
                self.sessions.record(&[revocation]).await
            }
            Err(_) => Ok(()),
        }
    }

    /// Revoke what `request` names at the issuer named `issuer`, durably before returning.
    pub async fn revoke(
        &self,
        issuer: &str,
        request: &GateRevocation,
    ) -> Result<Revocation, GateRevokeError> {
        let issuer = self
            .issuers
            .by_name(issuer)
            .ok_or_else(|| GateRevokeError::UnknownIssuer(issuer.to_owned()))?;
        let revocation = revocation_for(issuer, request, self.sessions.now())?;
        self.sessions.record(&[revocation]).await?;
        tracing::info!(issuer = %issuer.name(), kind = %revocation.kind().as_str(), "gate revocation recorded");
        Ok(revocation)
    }

    /// `attempt`, and once more if it failed on a `kid` the issuer's key set lacks and a
    /// refetch (at most one per 30 s per issuer) changed the set.
    async fn once_more_on_unknown_kid<T, E>(
        &self,
        issuer: &Issuer,
        now: Timestamp,
        attempt: impl Fn() -> Result<T, E>,
        unknown_kid: impl Fn(&E) -> bool,
    ) -> Result<T, E> {
        match attempt() {
            Err(error)
                if unknown_kid(&error) && self.issuers.fetch_for_unknown_kid(issuer, now).await =>
            {
                attempt()
            }
            other => other,
        }
    }

    /// The issuer named `issuer`, if it takes signals of `channel` (its
    /// `backchannel_logout` or `ssf` table is configured).
    pub fn signal_receiver(
        &self,
        issuer: &str,
        channel: SignalChannel,
    ) -> Result<&Issuer, SignalRefusal> {
        let found = self
            .issuers
            .by_name(issuer)
            .ok_or_else(|| SignalRefusal::UnknownIssuer(issuer.to_owned()))?;
        let configured = match channel {
            SignalChannel::BackchannelLogout => found.config().backchannel_logout.is_some(),
            SignalChannel::SharedSignals => found.config().ssf.is_some(),
        };
        if !configured {
            return Err(SignalRefusal::NotConfigured(found.name().to_owned()));
        }
        Ok(found)
    }

    /// Act on a logout signal delivered to `issuer` (a [`signal_receiver`](Self::signal_receiver)
    /// of `channel`): check it ([`Issuer::read_logout_token`], [`Issuer::read_security_event`]),
    /// then record its revocations and its id in one step, unless the id was seen before (by
    /// any node), apply them here and publish them to the cluster. Durable before it returns
    /// `Ok`.
    pub async fn signal(
        &self,
        issuer: &Issuer,
        channel: SignalChannel,
        token: &str,
    ) -> Result<Signal, SignalRefusal> {
        let now = self.sessions.now();
        let leeway = self.sessions.config().leeway;
        let signal = self
            .once_more_on_unknown_kid(
                issuer,
                now,
                || match channel {
                    SignalChannel::BackchannelLogout => {
                        issuer.read_logout_token(token, leeway, now)
                    }
                    SignalChannel::SharedSignals => issuer.read_security_event(token, leeway, now),
                },
                SignalError::is_unknown_kid,
            )
            .await
            .map_err(|error| match error {
                SignalError::Token(GateError::NotReady(name)) => SignalRefusal::NotReady(name),
                other => SignalRefusal::Invalid(other),
            })?;
        let first = self
            .sessions
            .record_once(signal.id, signal.remember_until, &signal.revocations)
            .await?;
        if !first {
            return Err(SignalRefusal::Invalid(SignalError::Replayed));
        }
        tracing::info!(
            issuer = %issuer.name(),
            channel = channel.as_str(),
            events = ?signal.events.iter().map(|e| e.as_str()).collect::<Vec<_>>(),
            revocations = signal.revocations.len(),
            "issuer signal recorded"
        );
        Ok(signal)
    }

    /// Fetch the keys of every issuer whose fetch is due now; returns how many fetches
    /// failed. Call it every [`KEY_REFRESH_TICK`] (the server does, from start-up on).
    pub async fn refresh_keys(&self) -> usize {
        self.issuers.refresh_due(self.sessions.now()).await
    }
}

/// The revocation `request` makes at `issuer` at `now`.
pub fn revocation_for(
    issuer: &Issuer,
    request: &GateRevocation,
    now: Timestamp,
) -> Result<Revocation, GateRevokeError> {
    Ok(match request {
        GateRevocation::Subject(subject) => issuer.revoke_subject(subject, now),
        GateRevocation::Session(session) => issuer.revoke_session(session, now),
        GateRevocation::TokenId { id, exp } => issuer.revoke_token_id(id, *exp, now),
        GateRevocation::IssuedBefore(cutoff) if *cutoff > now => {
            return Err(GateRevokeError::CutoffInFuture)
        }
        GateRevocation::IssuedBefore(cutoff) => issuer.revoke_issued_before(*cutoff),
    })
}

/// Why [`GateService::signal`] acted on nothing.
#[derive(Debug, thiserror::Error)]
pub enum SignalRefusal {
    /// No issuer of that name.
    #[error("no issuer is named {0:?}")]
    UnknownIssuer(String),
    /// The issuer does not take signals of this channel.
    #[error("issuer {0:?} does not accept this kind of signal")]
    NotConfigured(String),
    /// The issuer's keys were never fetched: the signal cannot be checked yet.
    #[error("the keys of issuer {0} are not available yet")]
    NotReady(String),
    /// The signal failed a check, or is a replay.
    #[error(transparent)]
    Invalid(SignalError),
    /// Nothing was recorded.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// Why [`GateService::authenticate`] refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthenticateError {
    /// The token itself.
    #[error(transparent)]
    Gate(#[from] GateError),
    /// The index is stale under `fail_closed`.
    #[error("revocation state is not current on this node; retry shortly")]
    Stale,
}
