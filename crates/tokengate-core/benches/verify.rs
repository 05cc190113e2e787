//! `Verifier::verify` per algorithm on a real tokengate access token, and the whole
//! per-request check (verify, then `RevocationIndex::check` against 1 000 000 revoked ids)
//! for HS256 and EdDSA: what `tokengate_axum::Gate::authenticate` does, minus the clock read.
//!
//! `cargo bench -p tokengate-core --bench verify`
//!
//! Times are the benchmark thread's on-CPU time by default (see `timed`), so that other work
//! on a shared machine does not inflate them; `TOKENGATE_BENCH_CLOCK=wall` for wall time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode};
use tokengate_core::{
    Algorithm, Claims, Revocation, RevocationIndex, Role, SigningKey, Timestamp, Verifier,
    VerifierConfig,
};
use uuid::Uuid;

use common::timed;

const LEEWAY: Duration = Duration::from_secs(30);

fn now() -> Timestamp {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    Timestamp::from_secs(i64::try_from(secs).unwrap())
}

/// Claims shaped like the server's: iss/aud `tokengate`, 15 min lifetime.
fn claims(now: Timestamp) -> Claims {
    Claims {
        iss: "tokengate".into(),
        sub: Uuid::new_v4(),
        aud: "tokengate".into(),
        iat: now,
        nbf: now,
        exp: now.plus(Duration::from_secs(900)),
        jti: Uuid::new_v4(),
        sid: Uuid::new_v4(),
        email: "ada.lovelace@example.com".into(),
        role: Role::User,
    }
}

fn key(alg: Algorithm) -> SigningKey {
    match alg {
        Algorithm::HS256 => SigningKey::hs256(b"an HS256 secret of at least 32 bytes!!").unwrap(),
        other => SigningKey::generate(other).unwrap(),
    }
}

fn verifier(key: &SigningKey) -> Verifier {
    let config = VerifierConfig {
        issuer: "tokengate".into(),
        audience: "tokengate".into(),
        leeway: LEEWAY,
    };
    Verifier::new(config, vec![key.verifying_key()])
}

fn bench_verify(c: &mut Criterion) {
    let now = now();
    let mut group = c.benchmark_group("verify");
    flat(&mut group);
    for alg in [
        Algorithm::HS256,
        Algorithm::EdDSA,
        Algorithm::ES256,
        Algorithm::RS256,
    ] {
        let key = key(alg);
        let verifier = verifier(&key);
        let token = key.sign(&claims(now)).unwrap();
        assert!(verifier.verify(&token, now).is_ok());
        group.bench_function(alg.as_str(), |b| {
            b.iter_custom(|iters| {
                timed(|| {
                    for _ in 0..iters {
                        black_box(verifier.verify(black_box(&token), now).unwrap());
                    }
                })
            })
        });
    }
    group.finish();
}

/// Deterministic distinct ids (splitmix64 of a counter), so the index holds random-looking
/// keys without keeping a list of them.
fn id(n: u64) -> Uuid {
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    Uuid::from_u64_pair(mix(2 * n), mix(2 * n + 1))
}

fn bench_authenticate(c: &mut Criterion) {
    const REVOKED: u64 = 1_000_000;
    let now = now();
    let index = RevocationIndex::new(LEEWAY);
    let exp = now.plus(Duration::from_secs(3600));
    let loaded = index.load(
        (0..REVOKED).map(|n| Revocation::Token { jti: id(n), exp }),
        now,
    );
    assert_eq!(loaded as u64, REVOKED);

    let mut group = c.benchmark_group("authenticate_1M_revoked");
    flat(&mut group);
    for alg in [Algorithm::HS256, Algorithm::EdDSA] {
        let key = key(alg);
        let verifier = verifier(&key);
        let token = key.sign(&claims(now)).unwrap();
        group.bench_function(alg.as_str(), |b| {
            b.iter_custom(|iters| {
                timed(|| {
                    for _ in 0..iters {
                        let claims = verifier.verify(black_box(&token), now).unwrap();
                        index.check(&claims, now).unwrap();
                        black_box(claims);
                    }
                })
            })
        });
    }
    group.finish();
}

/// 20 samples of about 200 ms each (see `timed`).
fn flat(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .sample_size(20)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
}

criterion_group!(benches, bench_verify, bench_authenticate);
criterion_main!(benches);
