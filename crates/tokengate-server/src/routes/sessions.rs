//! `/v1/auth/sessions`: list and end one's own sessions.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use tokengate_axum::{Principal, Revoker};
use tokengate_core::Timestamp;
use tokengate_sessions::{EndSessionError, LiveSession};
use uuid::Uuid;

use crate::error::ApiResult;
use crate::openapi::ErrorBody;
use crate::state::AppState;

/// A session as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionView {
    /// Session id.
    pub id: Uuid,
    /// Sign-in time (RFC 3339).
    pub created_at: String,
    /// Last request seen (RFC 3339).
    pub last_seen_at: String,
    /// `User-Agent` at sign-in.
    pub user_agent: Option<String>,
    /// Client IP at sign-in.
    pub ip: Option<String>,
    /// Whether this is the session of the calling token.
    pub current: bool,
}

/// Format Unix seconds as RFC 3339 (UTC).
pub fn rfc3339(t: Timestamp) -> String {
    time::OffsetDateTime::from_unix_timestamp(t.as_secs())
        .ok()
        .and_then(|dt| {
            dt.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

impl From<LiveSession> for SessionView {
    fn from(live: LiveSession) -> Self {
        SessionView {
            id: live.session.id,
            created_at: rfc3339(live.session.created_at),
            last_seen_at: rfc3339(live.last_seen_at),
            user_agent: live.session.user_agent,
            ip: live.session.ip,
            current: live.current,
        }
    }
}

/// The caller's live sessions, as the API and the sessions page show them.
pub async fn live_sessions(state: &AppState, principal: &Principal) -> ApiResult<Vec<SessionView>> {
    let sessions = state
        .sessions
        .live_sessions(principal.user_id(), principal.session_id())
        .await?;
    Ok(sessions.into_iter().map(SessionView::from).collect())
}

/// `GET /v1/auth/sessions`
#[utoipa::path(
    get,
    path = "/v1/auth/sessions",
    tag = "sessions",
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "The caller's live sessions", body = Vec<SessionView>),
        (status = 401, description = "No credential, or an invalid, expired or revoked one", body = ErrorBody),
        (status = 503, description = "The store is unavailable or the revocation index is stale", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<axum::Json<Vec<SessionView>>> {
    Ok(axum::Json(live_sessions(&state, &principal).await?))
}

/// End one of the caller's own sessions by its id as given in the path; a malformed id is
/// as unknown as another user's.
pub async fn end_own_session(
    state: &AppState,
    principal: &Principal,
    raw_id: &str,
) -> Result<(), EndSessionError> {
    let sid: Uuid = raw_id.parse().map_err(|_| EndSessionError::NotFound)?;
    state
        .sessions
        .end_own_session(principal.user_id(), sid)
        .await
}

/// `DELETE /v1/auth/sessions/{id}`
#[utoipa::path(
    delete,
    path = "/v1/auth/sessions/{id}",
    tag = "sessions",
    security(("bearer" = []), ("session_cookie" = [])),
    params(("id" = String, Path, description = "A session id (UUID) of the caller's")),
    responses(
        (status = 204, description = "The session is revoked"),
        (status = 401, description = "No credential, or an invalid, expired or revoked one", body = ErrorBody),
        (status = 403, description = "A cookie-authenticated request from another origin (`csrf_check_failed`)", body = ErrorBody),
        (status = 404, description = "No live session of the caller's with this id (another user's included); nothing was revoked", body = ErrorBody),
        (status = 503, description = "The store is unavailable; nothing was revoked (a stale revocation index does not stop a sign-out)", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    Revoker(principal): Revoker,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    end_own_session(&state, &principal, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
