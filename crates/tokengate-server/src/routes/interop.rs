//! What other systems plug into: the JWKS, forward auth for reverse proxies, and the
//! OAuth revocation (RFC 7009) and introspection (RFC 7662) endpoints.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokengate_axum::Principal;

use crate::state::AppState;

/// `GET /.well-known/jwks.json`: the public keys that verify tokens, current and
/// previous. HS256 secrets are never published.
pub async fn jwks(State(state): State<AppState>) -> Response {
    let jwks = state.keys.verifier().jwks();
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=60"))],
        axum::Json(jwks),
    )
        .into_response()
}

/// `GET /v1/verify`: forward auth for nginx `auth_request`, Traefik ForwardAuth and Caddy
/// `forward_auth`. The check is the verifier and the in-memory index only: no database.
/// The Bearer header wins over the session cookie when both are present.
pub async fn verify(principal: Principal) -> Response {
    let c = &principal.claims;
    let mut headers = HeaderMap::with_capacity(4);
    let mut put = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    put("x-auth-user-id", c.sub.to_string());
    put("x-auth-email", c.email.clone());
    put("x-auth-role", c.role.as_str().to_owned());
    put("x-auth-session-id", c.sid.to_string());
    (StatusCode::OK, headers).into_response()
}
