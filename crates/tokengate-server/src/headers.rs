//! Security headers on every response: one middleware, added once in
//! [`crate::routes::router`].
//!
//! - always: `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`,
//!   `X-Frame-Options: DENY`;
//! - `/v1/auth/*` and `/oauth2/*`: `Cache-Control: no-store` (tokens and session data must
//!   not sit in a shared or browser cache);
//! - HTML (`text/html`) responses: a strict `Content-Security-Policy`;
//! - `Strict-Transport-Security` only when the server does not listen on loopback (a
//!   loopback listener is a development setup or sits behind a local TLS proxy).
//!
//! A header a handler already set is left alone.

use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// The policy of server-rendered pages: nothing but our own styles, images and forms.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// HSTS for a year, subdomains included.
pub const STRICT_TRANSPORT_SECURITY: &str = "max-age=31536000; includeSubDomains";

/// What the middleware adds beyond the fixed headers.
#[derive(Clone, Copy, Debug)]
pub struct SecurityHeaders {
    /// Whether to send `Strict-Transport-Security`.
    pub hsts: bool,
}

impl SecurityHeaders {
    /// HSTS unless the server listens on loopback.
    pub fn for_listen(listen: std::net::SocketAddr) -> Self {
        SecurityHeaders {
            hsts: !listen.ip().is_loopback(),
        }
    }
}

/// The middleware; use with `axum::middleware::from_fn_with_state(SecurityHeaders, ...)`.
pub async fn security_headers(
    State(config): State<SecurityHeaders>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let no_store = path.starts_with("/v1/auth/") || path.starts_with("/oauth2/");
    let mut response = next.run(request).await;
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/html")
        });
    let headers = response.headers_mut();
    let mut set = |name: HeaderName, value: &'static str| {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    };
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::REFERRER_POLICY, "no-referrer");
    set(header::X_FRAME_OPTIONS, "DENY");
    if no_store {
        set(header::CACHE_CONTROL, "no-store");
    }
    if is_html {
        set(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY);
    }
    if config.hsts {
        set(header::STRICT_TRANSPORT_SECURITY, STRICT_TRANSPORT_SECURITY);
    }
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use axum::body::Body;
    use axum::response::Html;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    fn app(hsts: bool) -> Router {
        Router::new()
            .route("/page", get(|| async { Html("<p>hi</p>") }))
            .route("/v1/auth/me", get(|| async { "{}" }))
            .route("/oauth2/revoke", get(|| async { "" }))
            .route("/healthz", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(
                SecurityHeaders { hsts },
                security_headers,
            ))
    }

    async fn get_headers(app: Router, path: &str) -> axum::http::HeaderMap {
        let response = app
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        response.headers().clone()
    }

    #[tokio::test]
    async fn every_response_gets_the_fixed_headers_and_no_hsts_on_loopback() {
        let h = get_headers(app(false), "/healthz").await;
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["x-frame-options"], "DENY");
        assert!(h.get("strict-transport-security").is_none());
        assert!(h.get("cache-control").is_none());
        assert!(h.get("content-security-policy").is_none());
    }

    #[tokio::test]
    async fn auth_and_oauth2_answers_are_not_stored() {
        assert_eq!(
            get_headers(app(false), "/v1/auth/me").await["cache-control"],
            "no-store"
        );
        assert_eq!(
            get_headers(app(false), "/oauth2/revoke").await["cache-control"],
            "no-store"
        );
    }

    #[tokio::test]
    async fn html_gets_the_content_security_policy_and_hsts_when_not_on_loopback() {
        let h = get_headers(app(true), "/page").await;
        assert_eq!(h["content-security-policy"], CONTENT_SECURITY_POLICY);
        assert_eq!(h["strict-transport-security"], STRICT_TRANSPORT_SECURITY);
    }

    #[test]
    fn hsts_follows_the_listen_address() {
        assert!(!SecurityHeaders::for_listen("127.0.0.1:8080".parse().unwrap()).hsts);
        assert!(!SecurityHeaders::for_listen("[::1]:8080".parse().unwrap()).hsts);
        assert!(SecurityHeaders::for_listen("0.0.0.0:8080".parse().unwrap()).hsts);
    }
}
