//! The application state shared by every handler: the session service, and what only the
//! HTTP side needs (the configuration, the request gate, the metrics).

use std::sync::Arc;

use axum::extract::FromRef;
use tokengate_axum::{Gate, Principal};
use tokengate_core::{RevocationIndex, Timestamp};
use tokengate_gate::GateService;
use tokengate_sessions::{
    EndSessionError, SessionConfig, SessionService, SignupLimits, ThrottleLimits, Unavailable,
};
use uuid::Uuid;

use crate::config::Config;
use crate::schema::SessionView;

pub use tokengate_sessions::{SessionActivity, ACTIVITY_FLUSH_EVERY};

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The configuration in force.
    pub config: Arc<Config>,
    /// The session logic: every handler, page and admin command goes through it.
    pub sessions: Arc<SessionService>,
    /// Verifier + revocation index + clock + freshness: the per-request check, built from
    /// the service's parts.
    pub gate: Arc<Gate>,
    /// The node's counters for `GET /metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Gate mode: the tokens of other issuers (none configured: every token is own).
    pub issuers: Arc<GateService>,
}

impl FromRef<AppState> for Arc<Gate> {
    fn from_ref(state: &AppState) -> Self {
        state.gate.clone()
    }
}

impl AppState {
    /// The current time from the one clock.
    pub fn now(&self) -> Timestamp {
        self.sessions.now()
    }

    /// The revocation index of this node.
    pub fn index(&self) -> &Arc<RevocationIndex> {
        self.sessions.index()
    }

    /// The caller's live sessions, as the API and the sessions page show them.
    pub async fn own_sessions(
        &self,
        principal: &Principal,
    ) -> Result<Vec<SessionView>, Unavailable> {
        let sessions = self
            .sessions
            .live_sessions(principal.user_id(), principal.session_id())
            .await?;
        Ok(sessions.into_iter().map(SessionView::from).collect())
    }

    /// End one of the caller's own sessions by its id as given in a path; a malformed id is
    /// as unknown as another user's.
    pub async fn end_own_session(
        &self,
        principal: &Principal,
        raw_id: &str,
    ) -> Result<(), EndSessionError> {
        let sid: Uuid = raw_id.parse().map_err(|_| EndSessionError::NotFound)?;
        self.sessions
            .end_own_session(principal.user_id(), sid)
            .await
    }
}

/// The session service's settings from the server's configuration.
pub fn session_config(config: &Config) -> SessionConfig {
    SessionConfig {
        issuer: config.issuer.clone(),
        audience: config.audience.clone(),
        access_ttl: config.access_ttl,
        refresh_ttl: config.refresh_ttl,
        refresh_grace: config.refresh_grace,
        leeway: config.leeway,
        signing_alg: config.signing_alg,
        hs256_secret: config.hs256_secret.clone(),
        allow_signup: config.allow_signup,
        throttle: ThrottleLimits {
            max_failures: config.signin_max_failures,
            max_failures_per_ip: config.signin_max_failures_per_ip,
            window: config.signin_failure_window,
            ipv6_prefix: config.throttle_ipv6_prefix,
        },
        signup: SignupLimits {
            max_per_network: config.signup_max_per_ip,
            window: config.signup_window,
        },
        max_staleness: config.max_staleness,
        staleness_policy: config.staleness_policy,
    }
}
