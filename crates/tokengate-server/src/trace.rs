//! The request id and request span of every request: one layer, [`RequestTraceLayer`],
//! outermost in `routes::router`.
//!
//! - The request id is the client's `x-request-id` when it sends an acceptable one (see
//!   [`is_acceptable_request_id`]: at most 64 bytes of `[A-Za-z0-9._:-]`, so it can neither
//!   flood nor forge a log line), else a new random UUID (v4, from the thread-local CSPRNG:
//!   no system call per request). It is echoed in the `x-request-id` response header
//!   (unless the handler set one).
//! - The request is served inside a span `request{method, path, request_id, client}` (the
//!   path without its query string, which may carry credentials; no headers; `client` the
//!   address [`crate::client::client_ip`] resolves, the one throttles and sessions see), so
//!   every line logged while serving it names its id and client. The
//!   span is at INFO, except for the quiet routes the layer is built with
//!   ([`RequestTraceLayer::new`]): those hot paths log nothing, so their span is at DEBUG
//!   and, by default, costs nothing.
//! - One line per request that ends in a server error (5xx), at ERROR, with the status and
//!   the latency (and the request id, method, path and client as fields when the span is
//!   off), except a 503 refusing a request while the revocation index is stale
//!   ([`StaleRefusal`]): the outage is logged once when it starts and once when it ends,
//!   not thousands of times a second; nor a 503 answering a store error
//!   ([`StoreFailure`], logged where it is built, at most once per ten seconds);
//!   with `RUST_LOG` at DEBUG for this module, one line for every request. Other requests
//!   log nothing here: handlers log what happens (sign-in, sign-out, ...).
//!
//! Why not `tower-http`'s `SetRequestIdLayer`, `PropagateRequestIdLayer` and `TraceLayer`:
//! each costs allocations on every request of the hot path (`/v1/verify`, 27 mallocs per
//! request, see BENCHMARKS.md): `SetRequestId` stores the id in the request's extensions
//! (a boxed entry) and copies it into the request headers (a generated `HeaderValue`'s
//! bytes are promoted to shared storage when cloned), and `TraceLayer` wraps the response
//! body, which the router's boxed `Body` then boxes again. Measured in process (dhat, a
//! `/v1/verify` request through the router, hyper excluded): 22 allocations per request as
//! served, as before this layer's rewrite; boxed for the comparison, 24, then 29 with
//! `SetRequestId` + `PropagateRequestId` added and 25 with a `TraceLayer` (span off) added.
//! And `TraceLayer`'s failure
//! callback sees only the response, latency and span: with a quiet route's span disabled
//! it could not name the failed request's method, path and id, as the line here does.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use axum::http::{HeaderName, HeaderValue, Request, Response};
use tokengate_axum::{StaleRefusal, TrustedProxies};

use crate::error::StoreFailure;
use tower::{Layer, Service};
use tracing::field::{display, Empty};
use tracing::Span;

use crate::client::client_ip;

/// The request id header, read from requests and set on responses.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client request id accepted, in bytes (a UUID takes 36).
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// Whether a client's `x-request-id` is kept: 1 to [`MAX_REQUEST_ID_LEN`] bytes of ASCII
/// letters, digits, `.`, `_`, `:` and `-` (enough for UUIDs, ULIDs, trace ids and
/// `service:counter` forms). No space, quote, `=`, brace or control character, so the id
/// cannot end a log field and forge another field or record in a text log line.
pub fn is_acceptable_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// `(METHOD, PATH)` pairs served in a DEBUG rather than an INFO span.
pub type QuietRoutes = &'static [(&'static str, &'static str)];

/// Layer: a request id and an INFO span for every request; see the module documentation.
#[derive(Clone, Debug, Default)]
pub struct RequestTraceLayer {
    quiet_routes: QuietRoutes,
    proxies: Arc<TrustedProxies>,
}

impl RequestTraceLayer {
    /// Serve `quiet_routes` (exact paths: the layer runs before routing) in a DEBUG span:
    /// only routes whose handlers log nothing, as their lines would lose the request id.
    /// The client is read through `proxies` (`trusted_proxies`).
    pub fn new(quiet_routes: QuietRoutes, proxies: Arc<TrustedProxies>) -> Self {
        RequestTraceLayer {
            quiet_routes,
            proxies,
        }
    }
}

impl<S> Layer<S> for RequestTraceLayer {
    type Service = RequestTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestTrace {
            inner,
            quiet_routes: self.quiet_routes,
            proxies: self.proxies.clone(),
        }
    }
}

/// The service of [`RequestTraceLayer`].
#[derive(Clone, Debug)]
pub struct RequestTrace<S> {
    inner: S,
    quiet_routes: QuietRoutes,
    proxies: Arc<TrustedProxies>,
}

impl<S> RequestTrace<S> {
    /// The entry of the quiet routes that `method` and `path` name, if any.
    fn quiet_route(
        &self,
        method: &axum::http::Method,
        path: &str,
    ) -> Option<&'static (&'static str, &'static str)> {
        self.quiet_routes
            .iter()
            .find(|(m, p)| *p == path && *m == method.as_str())
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequestTrace<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = RequestTraceFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let started = Instant::now();
        let request_id = match request.headers().get(X_REQUEST_ID) {
            Some(id) if is_acceptable_request_id(id.as_bytes()) => id.clone(),
            _ => new_request_id(),
        };
        let method = request.method();
        let path = request.uri().path();
        let id = request_id.to_str().unwrap_or("-");
        let quiet_route = self.quiet_route(method, path);
        let client = client_ip(&self.proxies, request.extensions(), request.headers());
        let span = if quiet_route.is_some() {
            tracing::debug_span!("request", %method, %path, request_id = %id, client = Empty)
        } else {
            tracing::info_span!("request", %method, %path, request_id = %id, client = Empty)
        };
        if let Some(client) = client {
            // Recorded only into a live span: a quiet route's disabled span costs nothing.
            span.record("client", display(client));
        }
        let future = span.in_scope(|| self.inner.call(request));
        RequestTraceFuture {
            future,
            span,
            quiet_route,
            request_id: Some(request_id),
            client,
            started,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`RequestTrace`].
    pub struct RequestTraceFuture<F> {
        #[pin]
        future: F,
        span: Span,
        // The method and path of a quiet route, for the failure line when its span is off.
        quiet_route: Option<&'static (&'static str, &'static str)>,
        request_id: Option<HeaderValue>,
        client: Option<IpAddr>,
        started: Instant,
    }
}

impl<F, B, E> Future for RequestTraceFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let mut response = ready!(this.future.poll(cx))?;
        let status = response.status();
        let latency_ms = || this.started.elapsed().as_millis() as u64;
        // A refusal for a stale index is expected while an outage lasts; the outage is
        // logged once when it starts and once when it ends (tokengate_store::sync).
        // So is a store error, logged (at most once per period) where its answer is built
        // (crate::error::StoreFailure).
        let expected = response.extensions().get::<StaleRefusal>().is_some()
            || response.extensions().get::<StoreFailure>().is_some();
        if status.is_server_error() && !expected {
            match this.quiet_route {
                // No span to name the request: the line names it itself.
                Some((method, path)) if this.span.is_disabled() => tracing::error!(
                    %method,
                    %path,
                    request_id = %this.request_id.as_ref().and_then(|id| id.to_str().ok()).unwrap_or("-"),
                    client = this.client.map(display),
                    status = status.as_u16(),
                    latency_ms = latency_ms(),
                    "request failed"
                ),
                _ => tracing::error!(
                    status = status.as_u16(),
                    latency_ms = latency_ms(),
                    "request failed"
                ),
            }
        } else {
            tracing::debug!(
                status = status.as_u16(),
                latency_us = this.started.elapsed().as_micros() as u64,
                "request served"
            );
        }
        if let Some(request_id) = this.request_id.take() {
            response
                .headers_mut()
                .entry(X_REQUEST_ID)
                .or_insert(request_id);
        }
        Poll::Ready(Ok(response))
    }
}

/// A new request id: a random UUID v4 in its hyphenated text form.
fn new_request_id() -> HeaderValue {
    let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    let mut text = uuid::Uuid::encode_buffer();
    let text = id.hyphenated().encode_lower(&mut text);
    // Hex digits and hyphens: always a valid header value.
    HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    fn app() -> RequestTrace<Router> {
        let router = Router::new()
            .route("/", get(|| async { "ok" }))
            .route(
                "/own-id",
                get(|| async { ([(X_REQUEST_ID, "set-by-the-handler")], "ok") }),
            )
            .route(
                "/v1/auth/signin",
                get(|| async {
                    tracing::info!("signed in");
                    StatusCode::SERVICE_UNAVAILABLE
                }),
            )
            .route("/v1/verify", get(|| async { StatusCode::OK }))
            .route(
                "/v1/auth/sessions",
                get(|| async { tokengate_axum::AuthError::Stale }),
            )
            .route(
                "/v1/auth/me",
                get(|| async { StatusCode::SERVICE_UNAVAILABLE }),
            );
        RequestTraceLayer::new(
            &[("GET", "/v1/verify"), ("GET", "/v1/auth/me")],
            Arc::new("10.0.0.0/8".parse().unwrap()),
        )
        .layer(router)
    }

    async fn send(path: &str, sent_id: Option<&str>) -> axum::http::Response<Body> {
        let mut request = Request::get(path);
        if let Some(id) = sent_id {
            request = request.header(X_REQUEST_ID, id);
        }
        app()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    /// `GET path` with request id `id`, from the TCP peer `peer`, with `X-Forwarded-For:
    /// forwarded`.
    fn forwarded(path: &str, id: &str, peer: &str, forwarded: &str) -> Request<Body> {
        let mut request = Request::get(path)
            .header(X_REQUEST_ID, id)
            .header("x-forwarded-for", forwarded)
            .body(Body::empty())
            .unwrap();
        let peer: std::net::SocketAddr = (peer.parse::<IpAddr>().unwrap(), 40_000).into();
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        request
    }

    async fn request_id(path: &str, sent_id: Option<&str>) -> String {
        // Spans are created here too: not while another test of this module captures logs.
        let _capture = crate::test_log::CAPTURE.lock().await;
        let response = send(path, sent_id).await;
        response.headers()[X_REQUEST_ID]
            .to_str()
            .unwrap()
            .to_owned()
    }

    /// The text log lines written at `filter` while `GET PATH` requests with request ids
    /// `(PATH, ID)` are served.
    async fn log_of(filter: &str, requests: &[(&str, &str)]) -> Vec<String> {
        let requests = requests.iter().map(|(path, id)| {
            Request::get(*path)
                .header(X_REQUEST_ID, *id)
                .body(Body::empty())
                .unwrap()
        });
        log_of_requests(filter, requests).await
    }

    /// The text log lines written at `filter` while `requests` are served.
    async fn log_of_requests(
        filter: &str,
        requests: impl IntoIterator<Item = Request<Body>>,
    ) -> Vec<String> {
        let buffer = crate::test_log::LogBuffer::default();
        let subscriber = buffer
            .subscriber()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .finish();
        let _capture = crate::test_log::CAPTURE.lock().await;
        let _default = tracing::subscriber::set_default(subscriber);
        tracing::callsite::rebuild_interest_cache();
        for request in requests {
            app().oneshot(request).await.unwrap();
        }
        buffer.text().lines().map(str::to_owned).collect()
    }

    #[tokio::test]
    async fn the_clients_request_id_is_echoed() {
        assert_eq!(request_id("/", Some("client-id-1")).await, "client-id-1");
        assert_eq!(
            request_id("/missing", Some("client-id-2")).await,
            "client-id-2"
        );
    }

    #[tokio::test]
    async fn a_new_random_uuid_is_generated_when_absent() {
        let first = request_id("/", None).await;
        let second = request_id("/", None).await;
        let uuid = uuid::Uuid::parse_str(&first).unwrap();
        assert_eq!(uuid.get_version_num(), 4);
        assert_eq!(first, uuid.hyphenated().to_string());
        assert_ne!(first, second);
    }

    #[tokio::test]
    async fn only_a_short_request_id_of_safe_characters_is_kept() {
        let longest = "a".repeat(MAX_REQUEST_ID_LEN);
        assert_eq!(request_id("/", Some(&longest)).await, longest);
        let kept = "Trace-01.abc_DEF:42";
        assert_eq!(request_id("/", Some(kept)).await, kept);
        let too_long = "a".repeat(MAX_REQUEST_ID_LEN + 1);
        for refused in [
            too_long.as_str(),
            "",
            "id with spaces",
            "x\" status=200",
            "a} signed in user_id=1",
            "id=1",
        ] {
            let id = request_id("/", Some(refused)).await;
            assert_ne!(id, refused);
            let uuid = uuid::Uuid::parse_str(&id).unwrap();
            assert_eq!(uuid.get_version_num(), 4, "{refused:?} got {id}");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_refused_request_id_never_reaches_the_log() {
        let forged = "x} signed in user_id=admin request{method=GET";
        let log = log_of("info", &[("/v1/auth/signin", forged)]).await;
        assert_eq!(log.len(), 2, "{log:?}");
        for line in &log {
            assert!(!line.contains("user_id=admin"), "{line}");
            assert!(line.contains("request_id="), "{line}");
        }
    }

    #[tokio::test]
    async fn a_request_id_set_by_the_handler_is_kept() {
        assert_eq!(request_id("/own-id", None).await, "set-by-the-handler");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn lines_inside_a_request_and_its_failure_line_carry_the_request_id() {
        let log = log_of("info", &[("/v1/auth/signin", "id-of-signin")]).await;
        assert_eq!(log.len(), 2, "{log:?}");
        for line in &log {
            assert!(
                line.contains("request{method=GET path=/v1/auth/signin request_id=id-of-signin}"),
                "{line}"
            );
        }
        assert!(log[0].contains("signed in"), "{log:?}");
        assert!(
            log[1].contains("ERROR") && log[1].contains("request failed status=503"),
            "{log:?}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn lines_name_the_client_a_trusted_proxy_forwarded_and_only_that() {
        let log = log_of_requests(
            "info",
            [
                forwarded("/v1/auth/signin", "via-proxy", "10.0.0.2", "198.51.100.7"),
                forwarded("/v1/auth/signin", "spoofed", "203.0.113.9", "198.51.100.8"),
                forwarded("/v1/auth/me", "quiet", "10.0.0.2", "198.51.100.9, 10.0.0.3"),
            ],
        )
        .await;
        assert_eq!(log.len(), 5, "{log:?}");
        for line in &log[..2] {
            assert!(
                line.contains("request_id=via-proxy client=198.51.100.7}"),
                "{line}"
            );
        }
        for line in &log[2..4] {
            assert!(
                line.contains("request_id=spoofed client=203.0.113.9}"),
                "{line}"
            );
            assert!(!line.contains("198.51.100.8"), "{line}");
        }
        assert!(
            log[4].contains("request_id=quiet client=198.51.100.9 status=503"),
            "{}",
            log[4]
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn quiet_routes_log_only_failures_and_name_the_request_themselves() {
        let log = log_of(
            "info",
            &[("/v1/verify", "id-of-verify"), ("/v1/auth/me", "id-of-me")],
        )
        .await;
        assert_eq!(log.len(), 1, "only the failure is logged: {log:?}");
        assert!(!log[0].contains("request{"), "no span at INFO: {}", log[0]);
        assert!(
            log[0].contains(
                "request failed method=GET path=/v1/auth/me request_id=id-of-me status=503"
            ),
            "{}",
            log[0]
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn refusals_for_a_stale_index_are_not_logged_one_per_request() {
        assert_eq!(
            send("/v1/auth/sessions", None).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let requests = [("/v1/auth/sessions", "id-of-stale"); 50];
        let log = log_of("info", &requests).await;
        assert!(log.is_empty(), "{log:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn at_debug_every_request_is_logged_in_its_span() {
        let log = log_of(
            "info,tokengate_server::trace=debug",
            &[("/", "id-of-root"), ("/v1/verify", "id-of-verify")],
        )
        .await;
        assert_eq!(log.len(), 2, "{log:?}");
        assert!(
            log[0].contains("request{method=GET path=/ request_id=id-of-root}")
                && log[0].contains("request served status=200"),
            "{}",
            log[0]
        );
        assert!(
            log[1].contains("request{method=GET path=/v1/verify request_id=id-of-verify}"),
            "{}",
            log[1]
        );
    }
}
