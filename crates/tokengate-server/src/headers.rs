//! Security headers on every response: one layer, [`SecurityHeaders`], around the whole
//! router in `routes::router`.
//!
//! - always: `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`, and
//!   `Referrer-Policy: no-referrer`, except on HTML pages, which get
//!   `strict-origin-when-cross-origin`: under `no-referrer` a browser sends `Origin: null`
//!   on the page's own form posts, and where it sends no `Sec-Fetch-Site` either (older
//!   browsers, some privacy proxies) the same-origin check could not tell them from a
//!   cross-site post. Cross-origin requests still learn only the origin, never the path;
//! - `/v1/auth/*` and `/oauth2/*`: `Cache-Control: no-store` (tokens and session data must
//!   not sit in a shared or browser cache);
//! - HTML (`text/html`) responses: a strict `Content-Security-Policy`;
//! - `Strict-Transport-Security` only when the server does not listen on loopback (a
//!   loopback listener is a development setup or sits behind a local TLS proxy).
//!
//! A header a handler already set is left alone.
//!
//! The headers that depend only on the response are `tower-http`'s
//! [`SetResponseHeaderLayer::if_not_present`]; `Cache-Control: no-store` depends on the
//! request's path, which that layer does not see, so [`NoStore`] is written here.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::http::{header, HeaderMap, HeaderValue, Request, Response};
use tower::{Layer, Service};
use tower_http::set_header::{MakeHeaderValue, SetResponseHeader, SetResponseHeaderLayer};

/// The policy of server-rendered pages: nothing but our own styles, images and forms.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// HSTS for a year, subdomains included.
pub const STRICT_TRANSPORT_SECURITY: &str = "max-age=31536000; includeSubDomains";

/// The layer, and what it adds beyond the fixed headers.
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

/// The service of [`SecurityHeaders`]: `tower-http` layers around [`NoStore`]. Each holds
/// a static header value (cloning one allocates nothing), so nothing is allocated per
/// request.
pub type SetSecurityHeaders<S> = SetResponseHeader<
    SetResponseHeader<
        SetResponseHeader<
            SetResponseHeader<SetResponseHeader<NoStore<S>, Option<HeaderValue>>, HtmlOnly>,
            HeaderValue,
        >,
        ReferrerPolicy,
    >,
    HeaderValue,
>;

impl<S> Layer<S> for SecurityHeaders {
    type Service = SetSecurityHeaders<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let hsts = self
            .hsts
            .then_some(HeaderValue::from_static(STRICT_TRANSPORT_SECURITY));
        let inner = NoStore { inner };
        let inner = SetResponseHeaderLayer::if_not_present(header::STRICT_TRANSPORT_SECURITY, hsts)
            .layer(inner);
        let inner = SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HtmlOnly(HeaderValue::from_static(CONTENT_SECURITY_POLICY)),
        )
        .layer(inner);
        let inner = SetResponseHeaderLayer::if_not_present(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        )
        .layer(inner);
        let inner = SetResponseHeaderLayer::if_not_present(header::REFERRER_POLICY, ReferrerPolicy)
            .layer(inner);
        SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        )
        .layer(inner)
    }
}

/// `Referrer-Policy`: `strict-origin-when-cross-origin` for HTML pages (their forms must
/// carry a real `Origin`), `no-referrer` for everything else.
#[derive(Clone, Copy, Debug)]
pub struct ReferrerPolicy;

impl<B> MakeHeaderValue<Response<B>> for ReferrerPolicy {
    fn make_header_value(&mut self, response: &Response<B>) -> Option<HeaderValue> {
        Some(HeaderValue::from_static(if is_html(response.headers()) {
            PAGE_REFERRER_POLICY
        } else {
            "no-referrer"
        }))
    }
}

/// The `Referrer-Policy` of HTML pages (also in their `<meta name="referrer">`).
pub const PAGE_REFERRER_POLICY: &str = "strict-origin-when-cross-origin";

/// A header value for HTML (`text/html`, any case, any parameters) responses only.
#[derive(Clone, Debug)]
pub struct HtmlOnly(HeaderValue);

impl<B> MakeHeaderValue<Response<B>> for HtmlOnly {
    fn make_header_value(&mut self, response: &Response<B>) -> Option<HeaderValue> {
        is_html(response.headers()).then(|| self.0.clone())
    }
}

fn is_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.trim_start().get(.."text/html".len()))
        .is_some_and(|ct| ct.eq_ignore_ascii_case("text/html"))
}

/// `Cache-Control: no-store` (unless set) on the answers to `/v1/auth/*` and `/oauth2/*`,
/// matched or not: tokens and session data must not sit in a shared or browser cache.
#[derive(Clone, Copy, Debug)]
pub struct NoStore<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for NoStore<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = NoStoreFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let path = request.uri().path();
        let no_store = path.starts_with("/v1/auth/") || path.starts_with("/oauth2/");
        NoStoreFuture {
            future: self.inner.call(request),
            no_store,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`NoStore`].
    pub struct NoStoreFuture<F> {
        #[pin]
        future: F,
        no_store: bool,
    }
}

impl<F, B, E> Future for NoStoreFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.future.poll(cx))?;
        if *this.no_store {
            response
                .headers_mut()
                .entry(header::CACHE_CONTROL)
                .or_insert(HeaderValue::from_static("no-store"));
        }
        Poll::Ready(Ok(response))
    }
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

    /// Around the whole router, as `routes::router` adds it.
    fn app(hsts: bool) -> SetSecurityHeaders<Router> {
        let router = Router::new()
            .route("/page", get(|| async { Html("<p>hi</p>") }))
            .route(
                "/framed",
                get(|| async {
                    (
                        [
                            (header::CONTENT_TYPE, "Text/HTML; charset=utf-8"),
                            (header::X_FRAME_OPTIONS, "SAMEORIGIN"),
                        ],
                        "<p>hi</p>",
                    )
                }),
            )
            .route("/v1/auth/me", get(|| async { "{}" }))
            .route("/oauth2/revoke", get(|| async { "" }))
            .route("/healthz", get(|| async { "ok" }));
        SecurityHeaders { hsts }.layer(router)
    }

    async fn get_headers(app: SetSecurityHeaders<Router>, path: &str) -> axum::http::HeaderMap {
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

    #[tokio::test]
    async fn pages_send_their_origin_on_their_own_forms_and_nothing_else_does() {
        // Under `no-referrer` a page's same-origin form post carries `Origin: null`.
        let page = get_headers(app(false), "/page").await;
        assert_eq!(page["referrer-policy"], "strict-origin-when-cross-origin");
        let api = get_headers(app(false), "/v1/auth/me").await;
        assert_eq!(api["referrer-policy"], "no-referrer");
    }

    #[tokio::test]
    async fn any_html_content_type_gets_the_policy_and_a_header_already_set_is_kept() {
        let h = get_headers(app(false), "/framed").await;
        assert_eq!(h["content-security-policy"], CONTENT_SECURITY_POLICY);
        assert_eq!(h["x-frame-options"], "SAMEORIGIN");
        assert_eq!(h["x-content-type-options"], "nosniff");
    }

    #[tokio::test]
    async fn unmatched_paths_get_the_headers_too() {
        let h = get_headers(app(false), "/no/such/path").await;
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
    }

    #[test]
    fn hsts_follows_the_listen_address() {
        assert!(!SecurityHeaders::for_listen("127.0.0.1:8080".parse().unwrap()).hsts);
        assert!(!SecurityHeaders::for_listen("[::1]:8080".parse().unwrap()).hsts);
        assert!(SecurityHeaders::for_listen("0.0.0.0:8080".parse().unwrap()).hsts);
    }
}
