//! `/v1/auth/sessions`: list and end one's own sessions.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use tokengate_axum::{Principal, Revoker};
use tokengate_core::Timestamp;
use tokengate_store::Session;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
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

/// The caller's live sessions with `last_seen_at` merged from this node's in-memory
/// activity (which is flushed to the store in batches).
pub async fn live_sessions(state: &AppState, principal: &Principal) -> ApiResult<Vec<SessionView>> {
    let now = state.now();
    let sessions = state.store.live_sessions(principal.user_id(), now).await?;
    Ok(sessions
        .into_iter()
        .map(|s: Session| {
            let last_seen = state
                .activity
                .last_seen(s.id)
                .map_or(s.last_seen_at, |t| t.max(s.last_seen_at));
            SessionView {
                id: s.id,
                created_at: rfc3339(s.created_at),
                last_seen_at: rfc3339(last_seen),
                user_agent: s.user_agent,
                ip: s.ip,
                current: s.id == principal.session_id(),
            }
        })
        .collect())
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

/// End one of the caller's own sessions; another user's (or an unknown) id is 404 and
/// nothing is revoked.
pub async fn end_own_session(
    state: &AppState,
    principal: &Principal,
    raw_id: &str,
) -> ApiResult<()> {
    let not_found = || ApiError::NotFound("no such session".into());
    let sid: Uuid = raw_id.parse().map_err(|_| not_found())?;
    let now = state.now();
    let session = state.store.session(sid).await?.ok_or_else(not_found)?;
    if session.user_id != principal.user_id() || !session.is_live(now) {
        return Err(not_found());
    }
    if let Some(revocation) = state.store.end_session(sid, now).await? {
        state.apply(&[revocation]);
    }
    tracing::info!(user_id = %principal.user_id(), session_id = %sid, "session ended by its owner");
    Ok(())
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
