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

/// `GET /readyz`: 200 only when the store answers, the revocation index is current and
/// every gate issuer's keys were fetched at least once.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "The store answers, the revocation index is current and every gate issuer has keys", body = crate::schema::Readiness),
        (status = 503, description = "The store is unreachable, the index is stale, or a gate issuer's keys were never fetched (named in `issuers_not_ready`)", body = crate::schema::Readiness),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let store_ok = state.sessions.store().ping().await.is_ok();
    let now = state.sessions.clock().now_ms();
    let freshness = state.gate.freshness();
    let index_current = !freshness.is_stale(now);
    let lag_ms = freshness
        .lag(now)
        .map(|lag| u64::try_from(lag.as_millis()).unwrap_or(u64::MAX));
    let not_ready = state.issuers.issuers().not_ready();
    let ready = store_ok && index_current && not_ready.is_empty();
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "store": if store_ok { "ok" } else { "unreachable" },
        "revocation_index": if index_current { "current" } else { "stale" },
        "revocation_index_lag_ms": lag_ms,
        "revocations": state.index().len(),
        "issuers_not_ready": not_ready,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}
