//! `/healthz` and `/readyz`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::state::AppState;

/// `GET /healthz`: the process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "The process is up", body = crate::schema::Health))
)]
pub async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 only when the store answers and the revocation index is current.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "The store answers and the revocation index is current", body = crate::schema::Readiness),
        (status = 503, description = "The store is unreachable or the index is stale", body = crate::schema::Readiness),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let now = state.now();
    let store_ok = state.sessions.store().ping().await.is_ok();
    let index_current = !state.gate.freshness().is_stale(now);
    let body = json!({
        "status": if store_ok && index_current { "ready" } else { "not_ready" },
        "store": if store_ok { "ok" } else { "unreachable" },
        "revocation_index": if index_current { "current" } else { "stale" },
        "revocations": state.index().len(),
    });
    let status = if store_ok && index_current {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}
