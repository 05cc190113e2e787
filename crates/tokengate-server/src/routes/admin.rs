//! `/v1/admin/*`: cut a user off, and bulk-import another system's denylist.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use tokengate_axum::Admin;
use tokengate_core::{Revocation, Timestamp};
use uuid::Uuid;

use tokengate_sessions::AdminError;

use crate::error::{ApiError, ApiResult, Json};
use crate::schema::ErrorBody;
use crate::state::AppState;

/// Most entries one bulk import takes.
pub const MAX_IMPORT: usize = 100_000;

/// A user id from the path; a malformed one is as unknown as a missing user.
fn user_id(raw_id: &str) -> Result<Uuid, AdminError> {
    raw_id.parse().map_err(|_| AdminError::NotFound)
}

/// `POST /v1/admin/users/{id}/revoke`: end every session of the user.
#[utoipa::path(
    post,
    path = "/v1/admin/users/{id}/revoke",
    tag = "admin",
    security(("bearer" = []), ("session_cookie" = [])),
    params(("id" = String, Path, description = "The user id (UUID)")),
    responses(
        (status = 204, description = "Every session of the user is revoked"),
        (status = 401, description = "No credential, or an invalid, expired or revoked one", body = ErrorBody),
        (status = 403, description = "The caller is not an admin (`insufficient_scope`), or a cookie-authenticated request from another origin (`csrf_check_failed`)", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 503, description = "The store is unavailable (nothing was revoked) or the revocation index is stale", body = ErrorBody),
    )
)]
pub async fn revoke_user(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .sessions
        .revoke_user(admin.user_id(), user_id(&id)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/admin/users/{id}/disable`: block sign-in and refresh, then end every session.
#[utoipa::path(
    post,
    path = "/v1/admin/users/{id}/disable",
    tag = "admin",
    security(("bearer" = []), ("session_cookie" = [])),
    params(("id" = String, Path, description = "The user id (UUID)")),
    responses(
        (status = 204, description = "The user is disabled (sign-in then answers 403) and every session revoked"),
        (status = 401, description = "No credential, or an invalid, expired or revoked one", body = ErrorBody),
        (status = 403, description = "The caller is not an admin (`insufficient_scope`), or a cookie-authenticated request from another origin (`csrf_check_failed`)", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "An admin cannot disable their own account", body = ErrorBody),
        (status = 503, description = "The store is unavailable (nothing was changed) or the revocation index is stale", body = ErrorBody),
    )
)]
pub async fn disable_user(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .sessions
        .disable_user(admin.user_id(), user_id(&id)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Parse one bulk-import entry `{"jti": UUID, "exp": UNIX_SECONDS}`.
fn import_entry(position: usize, value: &serde_json::Value) -> Result<Revocation, ApiError> {
    let bad =
        |why: &str| ApiError::BadRequest(format!("entry {position}: {why}; nothing was imported"));
    let object = value
        .as_object()
        .ok_or_else(|| bad("expected an object {\"jti\", \"exp\"}"))?;
    let jti = object
        .get("jti")
        .and_then(|v| v.as_str())
        .ok_or_else(|| bad("missing string field `jti`"))?;
    let jti: Uuid = jti.parse().map_err(|_| bad("`jti` is not a UUID"))?;
    let exp = object
        .get("exp")
        .and_then(serde_json::Value::as_i64)
        .filter(|exp| *exp > 0)
        .ok_or_else(|| bad("`exp` must be a positive integer (Unix seconds)"))?;
    Ok(Revocation::Token {
        jti,
        exp: Timestamp::from_secs(exp),
    })
}

/// Validate a whole import before anything is recorded.
pub fn parse_import(entries: &[serde_json::Value]) -> ApiResult<Vec<Revocation>> {
    if entries.len() > MAX_IMPORT {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_IMPORT} entries per import; got {}",
            entries.len()
        )));
    }
    entries
        .iter()
        .enumerate()
        .map(|(i, v)| import_entry(i, v))
        .collect()
}

/// `POST /v1/admin/revocations`: `[{"jti","exp"}]`, all or nothing.
#[utoipa::path(
    post,
    path = "/v1/admin/revocations",
    tag = "admin",
    security(("bearer" = []), ("session_cookie" = [])),
    request_body(content = Vec<crate::schema::RevocationEntry>, description = "Up to 100 000 revoked token ids with their expiry; the body may be up to 16 MiB"),
    responses(
        (status = 204, description = "Every entry is recorded and applied"),
        (status = 400, description = "Malformed JSON, too many entries, or a bad entry (named by its position); nothing was imported", body = ErrorBody),
        (status = 401, description = "No credential, or an invalid, expired or revoked one", body = ErrorBody),
        (status = 403, description = "The caller is not an admin (`insufficient_scope`), or a cookie-authenticated request from another origin (`csrf_check_failed`)", body = ErrorBody),
        (status = 413, description = "The body is over 16 MiB", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 422, description = "The body is not a JSON array", body = ErrorBody),
        (status = 503, description = "The store is unavailable (nothing was imported) or the revocation index is stale", body = ErrorBody),
    )
)]
pub async fn import(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Json(entries): Json<Vec<serde_json::Value>>,
) -> ApiResult<StatusCode> {
    let revocations = parse_import(&entries)?;
    state.sessions.import(admin.user_id(), &revocations).await?;
    Ok(StatusCode::NO_CONTENT)
}
