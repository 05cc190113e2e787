//! The HTTP surface (see `API.md`): one module per area, one router.

pub mod admin;
pub mod auth;
pub mod health;
pub mod interop;
pub mod sessions;

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::state::AppState;

/// Request bodies above this get 413 (API.md).
pub const BODY_LIMIT: usize = 64 * 1024;
/// The bulk revocation import takes up to 16 MiB.
pub const IMPORT_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/.well-known/jwks.json", get(interop::jwks))
        .route("/v1/verify", get(interop::verify))
        .route("/v1/events/revocations", get(interop::revocation_events))
        .route("/oauth2/revoke", post(interop::revoke))
        .route("/oauth2/introspect", post(interop::introspect))
        .route("/v1/auth/signup", post(auth::signup))
        .route("/v1/auth/signin", post(auth::signin))
        .route("/v1/auth/me", get(auth::me))
        .route("/v1/auth/signout", post(auth::signout))
        .route("/v1/auth/signout-all", post(auth::signout_all))
        .route("/v1/auth/refresh", post(auth::refresh))
        .route("/v1/auth/password", post(auth::change_password))
        .route("/v1/auth/sessions", get(sessions::list))
        .route("/v1/auth/sessions/{id}", delete(sessions::delete))
        .route("/v1/admin/users/{id}/revoke", post(admin::revoke_user))
        .route("/v1/admin/users/{id}/disable", post(admin::disable_user))
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    let import = Router::new()
        .route("/v1/admin/revocations", post(admin::import))
        .layer(DefaultBodyLimit::max(IMPORT_BODY_LIMIT));
    api.merge(import)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Unavailable("internal error; it has been logged".into()).into_response()
        }))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

async fn method_not_allowed() -> Response {
    tokengate_axum::error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
        "method not allowed on this endpoint",
    )
}

/// Who is calling, for the sessions list: the peer address and `User-Agent`.
#[derive(Clone, Debug, Default)]
pub struct ClientInfo {
    /// The TCP peer (the proxy's address when behind one).
    pub ip: Option<IpAddr>,
    /// The `User-Agent`, truncated to 256 characters.
    pub user_agent: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for ClientInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(256).collect());
        Ok(ClientInfo { ip, user_agent })
    }
}
