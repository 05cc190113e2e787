//! `/v1/auth/sessions`: list and end one's own sessions.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use tokengate_axum::{Principal, Revoker};

use crate::error::ApiResult;
use crate::schema::{ErrorBody, SessionView, SignedInRefusals};
use crate::state::AppState;

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
    Ok(axum::Json(state.own_sessions(&principal).await?))
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
        SignedInRefusals,
        (status = 404, description = "No live session of the caller's with this id (another user's included); nothing was revoked", body = ErrorBody),
        (status = 503, description = "The store is unavailable; nothing was revoked (a stale revocation index does not stop a sign-out)", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    Revoker(principal): Revoker,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state.end_own_session(&principal, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
