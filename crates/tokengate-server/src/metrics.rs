//! `GET /metrics`: Prometheus text exposition of what a node does, kept cheap on the request
//! path: every counter is an atomic, histograms are arrays of atomics, and the per-route
//! latency map is lock-free (papaya). Gauges (index size, lag) are read at scrape time.
//!
//! Sources:
//! - [`GateObserver`]: every authentication decision of the [`Gate`](tokengate_axum::Gate)
//!   (it also records sessions' `last_seen_at`);
//! - [`TrackRequestsLayer`]: times each request by matched route and status, and counts
//!   sign-ins by outcome and throttled (429) answers;
//! - [`count_revocations`]: a task subscribed to the revocation index, so revocations made
//!   here, read from the store, or pushed by other nodes are all counted;
//! - the purge task and the store error conversion.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, State};
use axum::http::{header, HeaderValue, Method, Request, Response, StatusCode};
use axum::response::IntoResponse;
use tokengate_axum::{AuthError, AuthObserver};
use tokengate_core::{Claims, RevocationKind, Timestamp};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tower::{Layer, Service};

use crate::state::{AppState, SessionActivity};

/// Outcomes of an authentication decision ([`AuthError::outcome`] plus `ok`).
const AUTH_OUTCOMES: [&str; 8] = [
    "ok",
    "expired",
    "revoked",
    "invalid",
    "stale",
    "missing",
    "csrf",
    "forbidden",
];

/// Outcomes of a sign-in.
const SIGNIN_OUTCOMES: [&str; 4] = ["ok", "invalid", "disabled", "throttled"];

/// Revocation kinds, in [`RevocationKind`] order.
const KINDS: [RevocationKind; 4] = [
    RevocationKind::Token,
    RevocationKind::Session,
    RevocationKind::User,
    RevocationKind::IssuedBefore,
];

/// Upper bounds (seconds) of the request latency buckets.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Store errors seen anywhere in the process (the `ApiError` conversion has no state).
static STORE_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Count one store error (called where a [`tokengate_store::StoreError`] becomes a 503).
pub fn store_error() {
    STORE_ERRORS.fetch_add(1, Ordering::Relaxed);
}

/// How a sign-in ended, for `tokengate_signins_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigninOutcome {
    /// A session was started.
    Ok,
    /// Wrong email or password.
    Invalid,
    /// The account is disabled.
    Disabled,
    /// Refused by the throttle (429).
    Throttled,
}

/// One latency histogram: cumulative-on-render bucket counts, a count and a sum.
#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, seconds: f64) {
        if let Some(i) = LATENCY_BUCKETS.iter().position(|le| seconds <= *le) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = (seconds * 1e6) as u64;
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

/// Every counter of a node.
#[derive(Default)]
pub struct Metrics {
    auth: [AtomicU64; AUTH_OUTCOMES.len()],
    served_stale: AtomicU64,
    signins: [AtomicU64; SIGNIN_OUTCOMES.len()],
    throttled: AtomicU64,
    revocations: [AtomicU64; KINDS.len()],
    revocation_events_missed: AtomicU64,
    index_purged: AtomicU64,
    latency: papaya::HashMap<(&'static str, u16), Arc<Histogram>, foldhash::fast::RandomState>,
}

impl Metrics {
    /// Count an authentication decision by its outcome label.
    pub fn auth(&self, outcome: &str) {
        if let Some(i) = AUTH_OUTCOMES.iter().position(|o| *o == outcome) {
            self.auth[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Count a sign-in.
    pub fn signin(&self, outcome: SigninOutcome) {
        let i = match outcome {
            SigninOutcome::Ok => 0,
            SigninOutcome::Invalid => 1,
            SigninOutcome::Disabled => 2,
            SigninOutcome::Throttled => 3,
        };
        self.signins[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Count a revocation newly applied to the index.
    pub fn revocation(&self, kind: RevocationKind) {
        if let Some(i) = KINDS.iter().position(|k| *k == kind) {
            self.revocations[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Count index entries dropped by the purge.
    pub fn index_purged(&self, n: usize) {
        self.index_purged.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Count one answered request of the route `key` (see [`route_key`]).
    fn track(&self, key: &'static str, status: StatusCode, seconds: f64) {
        if status == StatusCode::TOO_MANY_REQUESTS {
            self.throttled.fetch_add(1, Ordering::Relaxed);
        }
        if key == "POST /v1/auth/signin" {
            match status {
                StatusCode::OK => self.signin(SigninOutcome::Ok),
                StatusCode::UNAUTHORIZED => self.signin(SigninOutcome::Invalid),
                StatusCode::FORBIDDEN => self.signin(SigninOutcome::Disabled),
                StatusCode::TOO_MANY_REQUESTS => self.signin(SigninOutcome::Throttled),
                _ => {}
            }
        }
        self.request(key, status.as_u16(), seconds);
    }

    fn request(&self, route: &'static str, status: u16, seconds: f64) {
        let map = self.latency.pin();
        match map.get(&(route, status)) {
            Some(histogram) => histogram.observe(seconds),
            None => map
                .get_or_insert_with((route, status), || Arc::new(Histogram::default()))
                .observe(seconds),
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of this node.
    pub fn render(&self, state: &AppState) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let now = state.now();

        family(
            &mut out,
            "tokengate_auth_requests_total",
            "counter",
            "Authentication decisions on authenticated routes, by outcome.",
        );
        for (label, n) in AUTH_OUTCOMES.iter().zip(&self.auth) {
            sample(
                &mut out,
                "tokengate_auth_requests_total",
                &[("outcome", label)],
                load(n),
            );
        }
        family(
            &mut out,
            "tokengate_auth_served_stale_total",
            "counter",
            "Requests served from a stale revocation index under fail_open.",
        );
        sample(
            &mut out,
            "tokengate_auth_served_stale_total",
            &[],
            load(&self.served_stale),
        );

        family(
            &mut out,
            "tokengate_signins_total",
            "counter",
            "Password sign-ins (API and sign-in page), by outcome.",
        );
        for (label, n) in SIGNIN_OUTCOMES.iter().zip(&self.signins) {
            sample(
                &mut out,
                "tokengate_signins_total",
                &[("outcome", label)],
                load(n),
            );
        }
        family(
            &mut out,
            "tokengate_throttled_requests_total",
            "counter",
            "Requests answered 429 (throttled).",
        );
        sample(
            &mut out,
            "tokengate_throttled_requests_total",
            &[],
            load(&self.throttled),
        );

        family(&mut out, "tokengate_revocations_total", "counter",
            "Revocations newly applied to this node's index (made here, read from the store or pushed by another node), by kind.");
        for (kind, n) in KINDS.iter().zip(&self.revocations) {
            sample(
                &mut out,
                "tokengate_revocations_total",
                &[("kind", kind.as_str())],
                load(n),
            );
        }
        family(
            &mut out,
            "tokengate_revocation_events_missed_total",
            "counter",
            "Revocations applied but not counted by kind because the counter fell behind.",
        );
        sample(
            &mut out,
            "tokengate_revocation_events_missed_total",
            &[],
            load(&self.revocation_events_missed),
        );

        let index = state.index();
        family(
            &mut out,
            "tokengate_revocation_index_entries",
            "gauge",
            "Entries in this node's revocation index, by kind.",
        );
        for kind in KINDS {
            sample(
                &mut out,
                "tokengate_revocation_index_entries",
                &[("kind", kind.as_str())],
                index.len_of(kind) as u64,
            );
        }
        family(
            &mut out,
            "tokengate_revocation_index_bytes",
            "gauge",
            "Bytes held by this node's revocation index tables (slots and control bytes).",
        );
        sample(
            &mut out,
            "tokengate_revocation_index_bytes",
            &[],
            index.table_bytes() as u64,
        );
        family(
            &mut out,
            "tokengate_revocation_index_purged_total",
            "counter",
            "Expired index entries dropped by the purge task.",
        );
        sample(
            &mut out,
            "tokengate_revocation_index_purged_total",
            &[],
            load(&self.index_purged),
        );

        let freshness = state.gate.freshness();
        family(&mut out, "tokengate_revocation_index_lag_seconds", "gauge",
            "Seconds since this node's revocation index was last confirmed current (the per-node propagation lag bound); -1 if never.");
        let lag = freshness.lag_secs(now).unwrap_or(-1);
        let _ = writeln!(out, "tokengate_revocation_index_lag_seconds {lag}");
        family(
            &mut out,
            "tokengate_revocation_index_stale",
            "gauge",
            "1 while the index counts as stale (older than max_staleness), else 0.",
        );
        sample(
            &mut out,
            "tokengate_revocation_index_stale",
            &[],
            u64::from(freshness.is_stale(now)),
        );

        family(
            &mut out,
            "tokengate_store_errors_total",
            "counter",
            "Store (database) errors answered as 503.",
        );
        sample(
            &mut out,
            "tokengate_store_errors_total",
            &[],
            STORE_ERRORS.load(Ordering::Relaxed),
        );

        self.render_latency(&mut out);
        out
    }

    fn render_latency(&self, out: &mut String) {
        const NAME: &str = "tokengate_http_request_duration_seconds";
        family(
            out,
            NAME,
            "histogram",
            "HTTP request latency by matched route, method and status.",
        );
        let map = self.latency.pin();
        let mut entries: Vec<_> = map.iter().map(|(k, v)| (*k, v.clone())).collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for ((route, status), h) in entries {
            let (method, path) = route.split_once(' ').unwrap_or(("", route));
            let status = status.to_string();
            let labels = [
                ("method", method),
                ("route", path),
                ("status", status.as_str()),
            ];
            let mut cumulative = 0;
            for (le, n) in LATENCY_BUCKETS.iter().zip(&h.buckets) {
                cumulative += load(n);
                let le = le.to_string();
                let mut with_le = labels.to_vec();
                with_le.push(("le", &le));
                sample(out, &format!("{NAME}_bucket"), &with_le, cumulative);
            }
            let count = load(&h.count);
            let mut with_le = labels.to_vec();
            with_le.push(("le", "+Inf"));
            sample(out, &format!("{NAME}_bucket"), &with_le, count);
            let sum = load(&h.sum_micros) as f64 / 1e6;
            let _ = writeln!(out, "{NAME}_sum{} {sum}", label_text(&labels));
            sample(out, &format!("{NAME}_count"), &labels, count);
        }
    }
}

fn load(n: &AtomicU64) -> u64 {
    n.load(Ordering::Relaxed)
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn label_text(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: u64) {
    let _ = writeln!(out, "{name}{} {value}", label_text(labels));
}

/// The gate's observer: records `last_seen_at` ([`SessionActivity`]) and counts decisions.
pub struct GateObserver {
    /// Session activity, flushed to the store in batches.
    pub activity: Arc<SessionActivity>,
    /// The node's counters.
    pub metrics: Arc<Metrics>,
}

impl AuthObserver for GateObserver {
    fn accepted(&self, claims: &Claims, now: Timestamp) {
        self.activity.accepted(claims, now);
        self.metrics.auth("ok");
    }

    fn refused(&self, error: &AuthError) {
        self.metrics.auth(error.outcome());
    }

    fn served_stale(&self) {
        self.metrics.served_stale.fetch_add(1, Ordering::Relaxed);
    }
}

/// Layer: time every request by matched route and status; count API sign-ins by outcome
/// (from the status) and every 429. Added with `Router::layer`, so it runs after routing
/// and sees the [`MatchedPath`]; it holds only an `Arc<Metrics>`.
#[derive(Clone)]
pub struct TrackRequestsLayer {
    metrics: Arc<Metrics>,
}

impl TrackRequestsLayer {
    /// Count into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        TrackRequestsLayer { metrics }
    }
}

impl<S> Layer<S> for TrackRequestsLayer {
    type Service = TrackRequests<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TrackRequests {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service of [`TrackRequestsLayer`].
#[derive(Clone)]
pub struct TrackRequests<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for TrackRequests<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = TrackRequestsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str);
        let key = route_key(request.method(), route);
        TrackRequestsFuture {
            started: Instant::now(),
            future: self.inner.call(request),
            metrics: self.metrics.clone(),
            key,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`TrackRequests`].
    pub struct TrackRequestsFuture<F> {
        #[pin]
        future: F,
        metrics: Arc<Metrics>,
        key: &'static str,
        started: Instant,
    }
}

impl<F, B, E> Future for TrackRequestsFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.future.poll(cx))?;
        let seconds = this.started.elapsed().as_secs_f64();
        this.metrics.track(this.key, response.status(), seconds);
        Poll::Ready(Ok(response))
    }
}

/// `METHOD ROUTE` as a `'static` label: only the routes of [`crate::routes::ROUTES`] (and
/// `unmatched`), so a scanner cannot grow the label set.
fn route_key(method: &Method, route: Option<&str>) -> &'static str {
    let Some(route) = route else {
        return "- unmatched";
    };
    type Keys = HashMap<(&'static str, &'static str), &'static str, foldhash::fast::FixedState>;
    static KEYS: std::sync::OnceLock<Keys> = std::sync::OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        crate::routes::ROUTES
            .iter()
            .map(|&(m, p)| ((m, p), &*Box::leak(format!("{m} {p}").into_boxed_str())))
            .collect()
    });
    keys.get(&(method.as_str(), route))
        .copied()
        .unwrap_or("- other")
}

/// `GET /metrics`: Prometheus text format; unauthenticated (put it behind the network's
/// own access control), and holds no user data.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses(
        (status = 200, description = "Prometheus text exposition (format 0.0.4) of this node's counters, gauges and histograms; see the README's Metrics section", content_type = "text/plain", body = String),
    )
)]
pub async fn metrics(State(state): State<AppState>) -> axum::response::Response {
    let body = state.metrics.render(&state);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// Count every revocation the index applies, by kind, until shutdown. Subscribes at
/// once (not when the task is first polled), so nothing applied after start-up is missed.
pub fn count_revocations(
    state: AppState,
    mut stop: watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> {
    let mut events = state.index().subscribe();
    async move {
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(revocation) => state.metrics.revocation(revocation.kind()),
                    Err(RecvError::Lagged(n)) => {
                        state.metrics.revocation_events_missed.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(RecvError::Closed) => return,
                },
                _ = stop.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_when_rendered() {
        let h = Histogram::default();
        h.observe(0.0001);
        h.observe(0.2);
        h.observe(99.0);
        assert_eq!(load(&h.count), 3);
        assert_eq!(load(&h.buckets[0]), 1);
        assert_eq!(h.buckets.iter().map(load).sum::<u64>(), 2);
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label_text(&[("a", "x\"y")]), "{a=\"x\\\"y\"}");
        assert_eq!(label_text(&[]), "");
    }
}
