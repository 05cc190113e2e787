//! `GET /metrics`: the Prometheus exposition of what a node does, through the
//! `prometheus-client` crate and a [`Registry`] per node ([`Metrics`], in the state): no
//! process-global counter. Kept cheap on the request path: counters are atomics; the request
//! latency histograms are a `prometheus-client` [`Family`] keyed by method, the route
//! template (axum's [`MatchedPath`], so only the router's own routes) and status. Gauges
//! that read the state (index size, lag) are collected at scrape time.
//!
//! Sources:
//! - [`GateObserver`]: every authentication decision of the [`Gate`](tokengate_axum::Gate)
//!   (it also records sessions' `last_seen_at`);
//! - [`TrackRequestsLayer`]: times each request by matched route and status, and counts
//!   API sign-ins by outcome, throttled (429) answers and answered store errors (the
//!   [`StoreFailure`] mark of a response);
//! - [`count_revocations`]: a task subscribed to the revocation index, so revocations made
//!   here, read from the store, or pushed by other nodes are all counted, each once (the
//!   index tells only of entries it newly applies);
//! - the pages' sign-ins ([`Metrics::signin`]) and the purge task ([`Metrics::index_purged`]);
//! - the gate issuers' logout signals ([`Metrics::signal`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, State};
use axum::http::{header, HeaderValue, Method, Request, Response, StatusCode};
use axum::response::IntoResponse;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokengate_axum::{AuthError, AuthObserver};
use tokengate_core::{Claims, Proof, RevocationKind, Timestamp};
use tokengate_gate::{SignalChannel, SignalEvent};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tower::{Layer, Service};

use crate::error::StoreFailure;
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

/// Outcomes of a sign-in, in [`SigninOutcome`] order.
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

/// The `route` label of a request that matched no route (404s): one fixed value, so a
/// scanner cannot grow the label set.
pub const UNMATCHED: &str = "unmatched";

/// The content type of `GET /metrics`: the OpenMetrics text format `prometheus-client`
/// writes (Prometheus asks for it first).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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

/// How a logout signal from an issuer ended, for `tokengate_gate_signals_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignalOutcome {
    /// Checked and recorded (its revocations applied, or every event ignored).
    Accepted,
    /// Refused as a replay of a signal seen before.
    Replayed,
    /// Refused by a check (400).
    Refused,
    /// Not acted on because the store or the issuer's keys were unavailable (503).
    Unavailable,
}

impl SignalOutcome {
    fn as_str(self) -> &'static str {
        match self {
            SignalOutcome::Accepted => "accepted",
            SignalOutcome::Replayed => "replayed",
            SignalOutcome::Refused => "refused",
            SignalOutcome::Unavailable => "unavailable",
        }
    }
}

/// The labels of `tokengate_gate_signals_total`. `issuer` is a configured issuer's name
/// (a signal for an unknown issuer is answered 404 and not counted), so the set is bounded.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SignalLabels {
    issuer: String,
    kind: &'static str,
    outcome: &'static str,
}

/// The labels of `tokengate_gate_signal_events_total`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SignalEventLabels {
    issuer: String,
    event: &'static str,
}

/// The labels of `tokengate_http_request_duration_seconds`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: RouteLabel,
    status: u16,
}

/// The route template a request matched (shared with the router: cloning it allocates
/// nothing), or [`UNMATCHED`].
#[derive(Clone, Debug)]
enum RouteLabel {
    Matched(MatchedPath),
    Unmatched,
}

impl RouteLabel {
    fn as_str(&self) -> &str {
        match self {
            RouteLabel::Matched(path) => path.as_str(),
            RouteLabel::Unmatched => UNMATCHED,
        }
    }
}

impl PartialEq for RouteLabel {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for RouteLabel {}

impl std::hash::Hash for RouteLabel {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for RouteLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// The `method` label: a standard method by name, anything else (an extension method,
/// or a request that matched no route) `-`, so the label set stays bounded.
fn method_label(method: &Method, matched: bool) -> &'static str {
    if !matched {
        return "-";
    }
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "-",
    }
}

/// Counters sharing one name, each with its value of one label: a counter family whose
/// label values are known up front, so the request path finds its counter by index
/// (an atomic add) rather than by hashing a label set.
#[derive(Debug)]
struct LabelledCounters {
    name: &'static str,
    help: &'static str,
    label: &'static str,
    series: Vec<(&'static str, Counter)>,
}

impl Collector for LabelledCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some((_, first)) = self.series.first() else {
            return Ok(());
        };
        let mut family =
            encoder.encode_descriptor(self.name, self.help, None, first.metric_type())?;
        for (value, counter) in &self.series {
            counter.encode(family.encode_family(&[(self.label, *value)])?)?;
        }
        Ok(())
    }
}

/// Every counter of a node, and the registry that exposes them.
pub struct Metrics {
    registry: Registry,
    auth: [Counter; AUTH_OUTCOMES.len()],
    served_stale: Counter,
    signins: [Counter; SIGNIN_OUTCOMES.len()],
    throttled: Counter,
    revocations: [Counter; KINDS.len()],
    revocation_events_missed: Counter,
    index_purged: Counter,
    store_errors: Counter,
    signals: Family<SignalLabels, Counter>,
    signal_events: Family<SignalEventLabels, Counter>,
    requests: Family<RequestLabels, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Zeroed counters, registered in a new registry.
    pub fn new() -> Self {
        let auth: [Counter; AUTH_OUTCOMES.len()] = Default::default();
        let signins: [Counter; SIGNIN_OUTCOMES.len()] = Default::default();
        let revocations: [Counter; KINDS.len()] = Default::default();
        let requests: Family<RequestLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS));
        let metrics = Metrics {
            registry: Registry::default(),
            auth,
            served_stale: Counter::default(),
            signins,
            throttled: Counter::default(),
            revocations,
            revocation_events_missed: Counter::default(),
            index_purged: Counter::default(),
            store_errors: Counter::default(),
            signals: Family::default(),
            signal_events: Family::default(),
            requests,
        };
        metrics.registered()
    }

    /// Register every family (clones share their values) in `self.registry`. Counter names
    /// are given without `_total`: the encoder appends it to the samples, as OpenMetrics
    /// names a counter family.
    fn registered(mut self) -> Self {
        let registry = &mut self.registry;
        registry.register_collector(Box::new(LabelledCounters {
            name: "tokengate_auth_requests",
            help: "Authentication decisions on authenticated routes, by outcome.",
            label: "outcome",
            series: AUTH_OUTCOMES.into_iter().zip(self.auth.clone()).collect(),
        }));
        registry.register(
            "tokengate_auth_served_stale",
            "Requests served from a stale revocation index under fail_open",
            self.served_stale.clone(),
        );
        registry.register_collector(Box::new(LabelledCounters {
            name: "tokengate_signins",
            help: "Password sign-ins (API and sign-in page), by outcome.",
            label: "outcome",
            series: SIGNIN_OUTCOMES
                .into_iter()
                .zip(self.signins.clone())
                .collect(),
        }));
        registry.register(
            "tokengate_throttled_requests",
            "Requests answered 429 (throttled)",
            self.throttled.clone(),
        );
        registry.register_collector(Box::new(LabelledCounters {
            name: "tokengate_revocations",
            help: "Revocations newly applied to this node's index (made here, read from the store or pushed by another node), by kind.",
            label: "kind",
            series: KINDS
                .into_iter()
                .map(RevocationKind::as_str)
                .zip(self.revocations.clone())
                .collect(),
        }));
        registry.register(
            "tokengate_revocation_events_missed",
            "Revocations applied but not counted by kind because the counter fell behind",
            self.revocation_events_missed.clone(),
        );
        registry.register(
            "tokengate_revocation_index_purged",
            "Expired index entries dropped by the purge task",
            self.index_purged.clone(),
        );
        registry.register(
            "tokengate_store_errors",
            "Store (database) errors answered as 503",
            self.store_errors.clone(),
        );
        registry.register(
            "tokengate_gate_signals",
            "Logout signals from gate issuers (back-channel logout tokens, Shared Signals SETs), by issuer, kind (backchannel_logout, ssf) and outcome (accepted, replayed, refused, unavailable)",
            self.signals.clone(),
        );
        registry.register(
            "tokengate_gate_signal_events",
            "Events of accepted issuer signals, by issuer and event (backchannel_logout, session_revoked, credential_change, account_disabled, sessions_revoked, ignored)",
            self.signal_events.clone(),
        );
        registry.register(
            "tokengate_http_request_duration_seconds",
            "HTTP request latency by matched route, method and status",
            self.requests.clone(),
        );
        self
    }

    /// Count an authentication decision by its outcome label.
    pub fn auth(&self, outcome: &str) {
        if let Some(i) = AUTH_OUTCOMES.iter().position(|o| *o == outcome) {
            self.auth[i].inc();
        }
    }

    /// Count a request served from a stale index under `fail_open`.
    pub fn served_stale(&self) {
        self.served_stale.inc();
    }

    /// Count a sign-in.
    pub fn signin(&self, outcome: SigninOutcome) {
        let i = match outcome {
            SigninOutcome::Ok => 0,
            SigninOutcome::Invalid => 1,
            SigninOutcome::Disabled => 2,
            SigninOutcome::Throttled => 3,
        };
        self.signins[i].inc();
    }

    /// Count a revocation newly applied to the index.
    pub fn revocation(&self, kind: RevocationKind) {
        if let Some(i) = KINDS.iter().position(|k| *k == kind) {
            self.revocations[i].inc();
        }
    }

    /// Count revocations applied to the index but missed by [`Metrics::revocation`].
    pub fn revocation_events_missed(&self, n: u64) {
        self.revocation_events_missed.inc_by(n);
    }

    /// Count index entries dropped by the purge.
    pub fn index_purged(&self, n: usize) {
        self.index_purged.inc_by(n as u64);
    }

    /// Count one store error answered (as a 503).
    pub fn store_error(&self) {
        self.store_errors.inc();
    }

    /// Count one logout signal of a configured issuer, and the events of an accepted one.
    pub fn signal(
        &self,
        issuer: &str,
        channel: SignalChannel,
        outcome: SignalOutcome,
        events: &[SignalEvent],
    ) {
        self.signals
            .get_or_create(&SignalLabels {
                issuer: issuer.to_owned(),
                kind: channel.as_str(),
                outcome: outcome.as_str(),
            })
            .inc();
        for event in events {
            self.signal_events
                .get_or_create(&SignalEventLabels {
                    issuer: issuer.to_owned(),
                    event: event.as_str(),
                })
                .inc();
        }
    }

    /// Count one answered request; `signin` tells whether it was an API sign-in.
    fn track<B>(
        &self,
        method: &'static str,
        route: RouteLabel,
        signin: bool,
        response: &Response<B>,
        seconds: f64,
    ) {
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            self.throttled.inc();
        }
        if response.extensions().get::<StoreFailure>().is_some() {
            self.store_error();
        }
        if signin {
            match status {
                StatusCode::OK => self.signin(SigninOutcome::Ok),
                StatusCode::UNAUTHORIZED => self.signin(SigninOutcome::Invalid),
                StatusCode::FORBIDDEN => self.signin(SigninOutcome::Disabled),
                StatusCode::TOO_MANY_REQUESTS => self.signin(SigninOutcome::Throttled),
                _ => {}
            }
        }
        let labels = RequestLabels {
            method,
            route,
            status: status.as_u16(),
        };
        self.requests.get_or_create(&labels).observe(seconds);
    }

    /// The exposition (OpenMetrics text, [`CONTENT_TYPE`]) of this node: the registry's
    /// counters and histograms, then the gauges read from `state` now.
    pub fn render(&self, state: &AppState) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let mut gauges = Registry::default();
        gauges.register_collector(Box::new(StateGauges::read(state)));
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry);
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &gauges);
        let _ = prometheus_client::encoding::text::encode_eof(&mut out);
        out
    }
}

/// The gauges of a node's state, read once per scrape.
#[derive(Debug)]
struct StateGauges {
    entries: [(RevocationKind, i64); KINDS.len()],
    bytes: i64,
    /// Seconds (to the millisecond) since the newest proof, -1 if none; then by source.
    lag: f64,
    proof_ages: [(Proof, f64); 2],
    stale: bool,
    stale_answers: u64,
}

impl StateGauges {
    fn read(state: &AppState) -> Self {
        let now = state.sessions.clock().now_ms();
        let index = state.index();
        let freshness = state.gate.freshness();
        let size = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let secs = |age: Option<std::time::Duration>| age.map_or(-1.0, |d| d.as_secs_f64());
        StateGauges {
            entries: KINDS.map(|kind| (kind, size(index.len_of(kind)))),
            bytes: size(index.table_bytes()),
            lag: secs(freshness.lag(now)),
            proof_ages: [Proof::Store, Proof::Bus]
                .map(|proof| (proof, secs(freshness.lag_of(proof, now)))),
            stale: freshness.is_stale(now),
            stale_answers: freshness.stale_answers(),
        }
    }
}

impl Collector for StateGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut gauge = |name: &str, help: &str, value: i64| {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
        };
        gauge(
            "tokengate_revocation_index_bytes",
            "Bytes held by this node's revocation index tables (slots and control bytes).",
            self.bytes,
        )?;
        gauge(
            "tokengate_revocation_index_stale",
            "1 while the index counts as stale (older than max_staleness), else 0.",
            i64::from(self.stale),
        )?;
        let lag = ConstGauge::new(self.lag);
        lag.encode(encoder.encode_descriptor(
            "tokengate_revocation_index_lag_seconds",
            "Age, to the millisecond, of the newest proof that this node's revocation index has seen every acknowledged revocation (the per-node propagation lag bound); -1 if never.",
            None,
            lag.metric_type(),
        )?)?;
        let mut family = encoder.encode_descriptor(
            "tokengate_revocation_index_proof_age_seconds",
            "Age of the newest proof of currency by source: store (a read of the durable record, dated by its start) or bus (this node's heartbeat back through Redis, dated by its sending); -1 if never.",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (proof, age) in &self.proof_ages {
            ConstGauge::new(*age).encode(family.encode_family(&[("source", proof.as_str())])?)?;
        }
        let answers = ConstCounter::new(self.stale_answers);
        answers.encode(encoder.encode_descriptor(
            "tokengate_stale_answers",
            "Authenticated requests answered while the revocation index was stale: refused with 503 under fail_closed, served under fail_open.",
            None,
            answers.metric_type(),
        )?)?;
        let mut family = encoder.encode_descriptor(
            "tokengate_revocation_index_entries",
            "Entries in this node's revocation index, by kind.",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (kind, n) in &self.entries {
            ConstGauge::new(*n).encode(family.encode_family(&[("kind", kind.as_str())])?)?;
        }
        Ok(())
    }
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
        self.metrics.served_stale();
    }
}

/// Layer: time every request by matched route and status; count every 429, every
/// answered store error and API sign-ins by outcome (from the status). Added with
/// `Router::layer`, so it runs after routing and sees the [`MatchedPath`]; it holds only an
/// `Arc<Metrics>` and the sign-in route it was given.
#[derive(Clone)]
pub struct TrackRequestsLayer {
    metrics: Arc<Metrics>,
    signin_route: Option<&'static str>,
}

impl TrackRequestsLayer {
    /// Count into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        TrackRequestsLayer {
            metrics,
            signin_route: None,
        }
    }

    /// Also count the answers to `POST route` as sign-ins (200 ok, 401 invalid, 403
    /// disabled, 429 throttled).
    pub fn counting_signins_at(self, route: &'static str) -> Self {
        TrackRequestsLayer {
            signin_route: Some(route),
            ..self
        }
    }
}

impl<S> Layer<S> for TrackRequestsLayer {
    type Service = TrackRequests<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TrackRequests {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`TrackRequestsLayer`].
#[derive(Clone)]
pub struct TrackRequests<S> {
    inner: S,
    layer: TrackRequestsLayer,
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
        let route = match request.extensions().get::<MatchedPath>() {
            Some(path) => RouteLabel::Matched(path.clone()),
            None => RouteLabel::Unmatched,
        };
        let matched = matches!(route, RouteLabel::Matched(_));
        let method = method_label(request.method(), matched);
        let signin = method == "POST"
            && self
                .layer
                .signin_route
                .is_some_and(|signin| signin == route.as_str());
        TrackRequestsFuture {
            started: Instant::now(),
            future: self.inner.call(request),
            metrics: self.layer.metrics.clone(),
            method,
            route: Some(route),
            signin,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`TrackRequests`].
    pub struct TrackRequestsFuture<F> {
        #[pin]
        future: F,
        metrics: Arc<Metrics>,
        method: &'static str,
        route: Option<RouteLabel>,
        signin: bool,
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
        if let Some(route) = this.route.take() {
            this.metrics
                .track(this.method, route, *this.signin, &response, seconds);
        }
        Poll::Ready(Ok(response))
    }
}

/// `GET /metrics`: Prometheus (OpenMetrics) text format; unauthenticated (put it behind the network's
/// own access control), and holds no user data.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses(
        (status = 200, description = "OpenMetrics text exposition of this node's counters, gauges and histograms; see the README's Metrics section", content_type = "application/openmetrics-text", body = String),
    )
)]
pub async fn metrics(State(state): State<AppState>) -> axum::response::Response {
    let body = state.metrics.render(&state);
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
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
                        state.metrics.revocation_events_missed(n);
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
    use axum::body::Body;
    use axum::routing::{get, post};
    use axum::Router;
    use tower::ServiceExt;

    fn registry_text(metrics: &Metrics) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode_registry(&mut out, &metrics.registry).unwrap();
        out
    }

    #[test]
    fn counters_keep_their_names_and_labels() {
        let metrics = Metrics::new();
        metrics.auth("revoked");
        metrics.auth("no such outcome");
        metrics.signin(SigninOutcome::Throttled);
        metrics.revocation(RevocationKind::IssuedBefore);
        metrics.index_purged(3);
        let text = registry_text(&metrics);
        for line in [
            "# TYPE tokengate_auth_requests counter",
            "tokengate_auth_requests_total{outcome=\"revoked\"} 1",
            "tokengate_auth_requests_total{outcome=\"ok\"} 0",
            "tokengate_signins_total{outcome=\"throttled\"} 1",
            "tokengate_revocations_total{kind=\"issued_before\"} 1",
            "tokengate_revocation_index_purged_total 3",
            "tokengate_store_errors_total 0",
            "# HELP tokengate_store_errors Store (database) errors answered as 503.",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    /// Two registries do not share counts: nothing is process-global.
    #[test]
    fn each_node_counts_for_itself() {
        let one = Metrics::new();
        let other = Metrics::new();
        one.store_error();
        assert!(registry_text(&one).contains("tokengate_store_errors_total 1"));
        assert!(registry_text(&other).contains("tokengate_store_errors_total 0"));
    }

    #[tokio::test]
    async fn requests_are_labelled_by_route_template_and_unmatched_ones_by_one_label() {
        let metrics = Arc::new(Metrics::new());
        let app = Router::new()
            .route("/items/{id}", get(|| async { "item" }))
            .route("/signin", post(|| async { StatusCode::TOO_MANY_REQUESTS }))
            .route(
                "/broken",
                get(|| async {
                    let mut response = StatusCode::SERVICE_UNAVAILABLE.into_response();
                    response.extensions_mut().insert(StoreFailure);
                    response
                }),
            )
            .layer(TrackRequestsLayer::new(metrics.clone()).counting_signins_at("/signin"));
        for (method, path) in [
            (Method::GET, "/items/1"),
            (Method::GET, "/items/2"),
            (Method::POST, "/signin"),
            (Method::GET, "/broken"),
            (Method::GET, "/no/such/path/1"),
            (Method::from_bytes(b"SCAN").unwrap(), "/no/such/path/2"),
        ] {
            let request = Request::builder()
                .method(method)
                .uri(path)
                .body(Body::empty())
                .unwrap();
            app.clone().oneshot(request).await.unwrap();
        }
        let text = registry_text(&metrics);
        let count = |labels: &str| {
            let series = format!("tokengate_http_request_duration_seconds_count{{{labels}}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(series.as_str()))
                .unwrap_or_else(|| panic!("no {series} in\n{text}"))
                .to_owned()
        };
        assert_eq!(
            count("method=\"GET\",route=\"/items/{id}\",status=\"200\""),
            "2"
        );
        assert_eq!(
            count("method=\"-\",route=\"unmatched\",status=\"404\""),
            "2"
        );
        assert_eq!(
            count("method=\"POST\",route=\"/signin\",status=\"429\""),
            "1"
        );
        assert!(
            text.contains("tokengate_signins_total{outcome=\"throttled\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tokengate_throttled_requests_total 1"),
            "{text}"
        );
        assert!(text.contains("tokengate_store_errors_total 1"), "{text}");
        assert!(
            text.contains("tokengate_http_request_duration_seconds_bucket{le=\"+Inf\",method=\"GET\",route=\"/items/{id}\",status=\"200\"} 2"),
            "{text}"
        );
    }
}
