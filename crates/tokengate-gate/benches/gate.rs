//! A gate token seen before: `Issuers::verify` (the verified-token cache, then the revocation
//! check against 1 000 000 revoked ids) per algorithm: what `/v1/verify` does for a client
//! presenting the same access token again. The first sight of a token costs the signature
//! check; `cargo bench -p tokengate-core --bench verify` times those (`verify/X`).
//!
//! `cargo bench -p tokengate-gate --bench gate`
//!
//! The keys come from a JWK Set served on loopback by the bench itself, as a provider would.
//! Times are the benchmark thread's on-CPU time (`TOKENGATE_BENCH_CLOCK=wall` for wall time).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tokengate-core/benches/common/mod.rs"]
// The core benches' module: only `timed`, `flat` and `now` are used here.
#[allow(dead_code)]
mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use tokengate_core::{Algorithm, Revocation, RevocationIndex, SigningKey, Timestamp};
use tokengate_gate::{IssuerConfig, Issuers};
use uuid::Uuid;

use common::{flat, now, timed};

const LEEWAY: Duration = Duration::from_secs(30);
const ALGORITHMS: [Algorithm; 5] = [
    Algorithm::EdDSA,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::PS256,
];

/// A provider-shaped token: `iss`, `aud`, `sub`, `sid`, `jti`, `iat`, `exp`, an email.
fn token(key: &SigningKey, iss: &str, now: Timestamp) -> String {
    let header = json!({"alg": key.alg().as_str(), "typ": "at+jwt", "kid": key.kid()});
    let payload = json!({
        "iss": iss, "aud": "bench", "sub": Uuid::new_v4().to_string(), "sid": Uuid::new_v4().to_string(),
        "jti": Uuid::new_v4().to_string(), "email": "ada.lovelace@example.com",
        "iat": now.as_secs(), "exp": now.as_secs() + 900,
    });
    key.sign_compact(
        &serde_json::to_vec(&header).unwrap(),
        &serde_json::to_vec(&payload).unwrap(),
    )
    .unwrap()
}

fn bench_gate(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let keys: Vec<SigningKey> = ALGORITHMS
        .iter()
        .map(|&alg| SigningKey::generate(alg).unwrap())
        .collect();
    let jwks = json!({"keys": keys.iter().map(|k| k.verifying_key().to_jwk().unwrap()).collect::<Vec<_>>()});
    let addr = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let jwks = jwks.clone();
                async move { axum::Json(jwks) }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    });
    let iss = format!("http://{addr}");
    let config: IssuerConfig = serde_json::from_value(json!({
        "name": "bench", "issuer": iss, "jwks_uri": format!("{iss}/jwks"), "audiences": ["bench"],
    }))
    .unwrap();
    let issuers = Issuers::new(&[config], LEEWAY).unwrap();
    let now = now();
    assert_eq!(runtime.block_on(issuers.refresh_due(now)), 0);
    let issuer = issuers.by_name("bench").unwrap();

    let index = RevocationIndex::new(LEEWAY);
    let exp = now.plus(Duration::from_secs(3600));
    index.load(
        (0..1_000_000u128).map(|n| Revocation::Token {
            jti: Uuid::from_u128(n),
            exp,
        }),
        now,
    );

    let mut group = c.benchmark_group("gate_seen_before_1M_revoked");
    flat(&mut group);
    for key in &keys {
        let token = token(key, &iss, now);
        issuers.verify(issuer, &token, &index, now).unwrap();
        group.bench_function(key.alg().as_str(), |b| {
            b.iter_custom(|iters| {
                timed(|| {
                    for _ in 0..iters {
                        black_box(
                            issuers
                                .verify(issuer, black_box(&token), &index, now)
                                .unwrap(),
                        );
                    }
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_gate);
criterion_main!(benches);
