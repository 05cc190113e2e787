//! `Verifier::verify_uncached` per algorithm on a real tokengate access token, and the whole
//! per-request check (verify, then `RevocationIndex::check` against 1 000 000 revoked ids)
//! for HS256 and EdDSA: what `tokengate_axum::Gate::authenticate` does for a token it has not
//! seen, minus the clock read. `seen_before_1M_revoked` is the same check for a token seen
//! before, which `Verifier::verify` answers from its verified-token cache, per algorithm.
//!
//! `raw_verify` times the signature libraries' own verification of the same signing input
//! and signature as the `verify` group's tokens (aws-lc-rs `ParsedPublicKey::verify_sig`
//! for RSA and ECDSA; ed25519-dalek `verify_strict` and aws-lc-rs for Ed25519), so the
//! ratio `verify/X` / `raw_verify/X` is what tokengate adds, read in one run.
//!
//! `cargo bench -p tokengate-core --bench verify`
//!
//! Times are the benchmark thread's on-CPU time by default (see `timed`), so that other work
//! on a shared machine does not inflate them; `TOKENGATE_BENCH_CLOCK=wall` for wall time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

// Not every shared helper is used here (`rss_bytes`, the
// fixtures issued at `T0`).
#[allow(dead_code)]
mod common;

use std::hint::black_box;
use std::time::Duration;

use aws_lc_rs::signature::{self as lc, ParsedPublicKey, RsaPublicKeyComponents};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion};
use tokengate_core::{
    Algorithm, Revocation, RevocationIndex, SigningKey, Verifier, VerifierConfig,
};

use common::fixtures::claims_at;
use common::{flat, id, now, timed};

const LEEWAY: Duration = Duration::from_secs(30);

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
    for alg in ALGORITHMS {
        let key = key(alg);
        let verifier = verifier(&key);
        let token = key.sign(&claims_at(now)).unwrap();
        assert!(verifier.verify_uncached(&token, now).is_ok());
        group.bench_function(alg.as_str(), |b| {
            b.iter_custom(|iters| {
                timed(|| {
                    for _ in 0..iters {
                        black_box(verifier.verify_uncached(black_box(&token), now).unwrap());
                    }
                })
            })
        });
    }
    group.finish();
}

const ALGORITHMS: [Algorithm; 6] = [
    Algorithm::HS256,
    Algorithm::EdDSA,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::PS256,
];

fn b64(text: Option<&str>) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text.unwrap()).unwrap()
}

/// A raw signature check: (signing input, signature) -> valid.
type Check = Box<dyn Fn(&[u8], &[u8]) -> bool>;

/// The libraries' own verification of a token's signature, with the public key parsed
/// once as tokengate does: the floor under `verify/X`.
fn bench_raw_verify(c: &mut Criterion) {
    let now = now();
    let mut group = c.benchmark_group("raw_verify");
    flat(&mut group);
    let mut cases: Vec<(String, Check, SigningKey)> = Vec::new();
    for alg in [
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::RS256,
        Algorithm::PS256,
    ] {
        let key = key(alg);
        let jwk = key.verifying_key().to_jwk().unwrap();
        let parsed = match alg {
            Algorithm::ES256 | Algorithm::ES384 => {
                let mut point = vec![4u8];
                point.extend(b64(jwk.x.as_deref()));
                point.extend(b64(jwk.y.as_deref()));
                let algorithm = if alg == Algorithm::ES256 {
                    &lc::ECDSA_P256_SHA256_FIXED
                } else {
                    &lc::ECDSA_P384_SHA384_FIXED
                };
                ParsedPublicKey::new(algorithm, point).unwrap()
            }
            _ => {
                let parameters = if alg == Algorithm::RS256 {
                    &lc::RSA_PKCS1_2048_8192_SHA256
                } else {
                    &lc::RSA_PSS_2048_8192_SHA256
                };
                RsaPublicKeyComponents {
                    n: b64(jwk.n.as_deref()),
                    e: b64(jwk.e.as_deref()),
                }
                .to_parsed_public_key(parameters)
                .unwrap()
            }
        };
        let name = match alg {
            Algorithm::ES256 => "ES256 (ECDSA_P256_SHA256_FIXED)",
            Algorithm::ES384 => "ES384 (ECDSA_P384_SHA384_FIXED)",
            Algorithm::RS256 => "RS256 (RSA_PKCS1_2048_8192_SHA256, 2048-bit)",
            _ => "PS256 (RSA_PSS_2048_8192_SHA256, 2048-bit)",
        };
        cases.push((
            name.into(),
            Box::new(move |message, signature| parsed.verify_sig(message, signature).is_ok()),
            key,
        ));
    }
    // Ed25519 both ways: what tokengate uses (dalek, strict) and what aws-lc-rs offers.
    let ed = key(Algorithm::EdDSA);
    let public = b64(ed.verifying_key().to_jwk().unwrap().x.as_deref());
    let dalek =
        ed25519_dalek::VerifyingKey::from_bytes(&<[u8; 32]>::try_from(&public[..]).unwrap())
            .unwrap();
    let aws = ParsedPublicKey::new(&lc::ED25519, &public).unwrap();
    cases.push((
        "EdDSA (ed25519-dalek verify_strict)".into(),
        Box::new(move |message, signature| {
            let signature =
                ed25519_dalek::Signature::from_slice(signature).expect("64-byte signature");
            dalek.verify_strict(message, &signature).is_ok()
        }),
        key_like(&ed),
    ));
    cases.push((
        "EdDSA (aws-lc-rs ED25519)".into(),
        Box::new(move |message, signature| aws.verify_sig(message, signature).is_ok()),
        ed,
    ));
    for (name, check, key) in &cases {
        let token = key.sign(&claims_at(now)).unwrap();
        let (input, signature) = token.rsplit_once('.').unwrap();
        let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
        assert!(check(input.as_bytes(), &signature), "{name}");
        group.bench_function(name.as_str(), |b| {
            b.iter_custom(|iters| {
                timed(|| {
                    for _ in 0..iters {
                        assert!(check(black_box(input.as_bytes()), black_box(&signature)));
                    }
                })
            })
        });
    }
    group.finish();
}

/// The same Ed25519 key again (through PKCS#8), to sign the raw cases' token.
fn key_like(key: &SigningKey) -> SigningKey {
    SigningKey::from_pkcs8_der(key.alg(), key.kid().into(), &key.to_pkcs8_der().unwrap()).unwrap()
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
        let token = key.sign(&claims_at(now)).unwrap();
        group.bench_function(alg.as_str(), |b| {
            b.iter_custom(|iters| {
                timed(|| {
                    for _ in 0..iters {
                        let claims = verifier.verify_uncached(black_box(&token), now).unwrap();
                        index.check(&claims, now).unwrap();
                        black_box(claims);
                    }
                })
            })
        });
    }
    group.finish();

    // A token seen before: `Verifier::verify` answers from its verified-token cache, and
    // the revocation check still runs.
    let mut group = c.benchmark_group("seen_before_1M_revoked");
    flat(&mut group);
    for alg in ALGORITHMS {
        let key = key(alg);
        let verifier = verifier(&key);
        let token = key.sign(&claims_at(now)).unwrap();
        verifier.verify(&token, now).unwrap();
        assert_eq!(verifier.cache().len(), 1);
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

criterion_group!(benches, bench_verify, bench_raw_verify, bench_authenticate);
criterion_main!(benches);
