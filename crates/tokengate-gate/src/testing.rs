//! A stand-in identity provider on loopback, for tests and benchmarks of gate mode (the
//! `testing` feature): it serves a discovery document and a JWK Set that the test can
//! change, as a provider rotating its keys would. Tests against a real provider use
//! `oidc-provider` (tests/oidc-provider/); this is for what no real provider does on
//! demand (a redirect, a hang, a hostile key set).
//!
//! Routes: `/.well-known/openid-configuration` (`issuer` = `http://ADDR`, `jwks_uri` =
//! `/jwks`), `/jwks` (the current set, with the current `Cache-Control`), `/redirect` (302 to
//! `/jwks`) and `/slow` (no answer for 30 s).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tokengate_core::SigningKey;

/// A running stand-in provider; stops when dropped.
pub struct TestProvider {
    addr: SocketAddr,
    jwks: Arc<Mutex<Value>>,
    cache_control: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestProvider {
    /// A provider on a free loopback port publishing `jwks`.
    pub async fn start(jwks: Value) -> TestProvider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let jwks = Arc::new(Mutex::new(jwks));
        let cache_control = Arc::new(Mutex::new(None::<String>));
        let issuer = format!("http://{addr}");
        let (served, served_cc) = (jwks.clone(), cache_control.clone());
        let app = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || {
                    let issuer = issuer.clone();
                    async move {
                        axum::Json(json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")}))
                    }
                }),
            )
            .route(
                "/jwks",
                get(move || {
                    let body = served.lock().unwrap().clone();
                    let mut headers = HeaderMap::new();
                    if let Some(value) = served_cc.lock().unwrap().as_deref() {
                        headers.insert(header::CACHE_CONTROL, value.parse().unwrap());
                    }
                    async move { (headers, axum::Json(body)).into_response() }
                }),
            )
            .route(
                "/redirect",
                get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/jwks")]) }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    axum::Json(json!({"keys": []}))
                }),
            );
        let task = tokio::spawn(axum::serve(listener, app).into_future());
        TestProvider {
            addr,
            jwks,
            cache_control,
            task,
        }
    }

    /// Its `issuer`: `http://ADDR`.
    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The URL of one of its routes (`/jwks`, `/redirect`, ...).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Publish `jwks` from now on.
    pub fn set_jwks(&self, jwks: Value) {
        *self.jwks.lock().unwrap() = jwks;
    }

    /// Send this `Cache-Control` with the JWK Set from now on (`None`: none).
    pub fn set_cache_control(&self, value: Option<&str>) {
        *self.cache_control.lock().unwrap() = value.map(str::to_owned);
    }

    /// Stop answering (connections are refused from now on).
    pub async fn stop(&mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for TestProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The public JWK Set of `keys` as providers often publish it: without `alg`, with a member
/// tokengate does not use (`x5t`).
pub fn provider_jwks(keys: &[&SigningKey]) -> Value {
    let keys: Vec<Value> = keys
        .iter()
        .map(|key| {
            let mut jwk = serde_json::to_value(key.verifying_key().to_jwk().unwrap()).unwrap();
            jwk.as_object_mut().unwrap().remove("alg");
            jwk["x5t"] = "ignored".into();
            jwk
        })
        .collect();
    json!({"keys": keys})
}

/// A compact JWS of exactly this header and payload, signed by `key`.
pub fn sign(key: &SigningKey, header: Value, payload: Value) -> String {
    key.sign_compact(
        &serde_json::to_vec(&header).unwrap(),
        &serde_json::to_vec(&payload).unwrap(),
    )
    .unwrap()
}
