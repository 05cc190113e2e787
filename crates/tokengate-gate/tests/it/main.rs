//! Gate issuers end to end inside one process: an HS256 app's tokens, and a provider's
//! tokens whose keys come from a JWK Set served over loopback HTTP by a stand-in provider
//! (`tokengate_gate::testing`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod signals;

use std::time::Duration;

use serde_json::{json, Value};
use tokengate_core::{
    Algorithm, RevocationIndex, RevocationKind, SigningKey, Timestamp, VerifyError,
};
use tokengate_gate::testing::{provider_jwks, sign, TestProvider};
use tokengate_gate::{ClaimsError, GateError, IssuerConfig, Issuers};

const NOW: i64 = 1_800_000_000;
const LEEWAY: Duration = Duration::from_secs(30);
const SECRET: &str = "the app's own HS256 secret, 32+ bytes";

fn now() -> Timestamp {
    Timestamp::from_secs(NOW)
}

fn config(value: Value) -> IssuerConfig {
    serde_json::from_value(value).unwrap()
}

fn webui() -> IssuerConfig {
    config(json!({
        "name": "webui", "hs256_secret": SECRET, "audience_optional": true,
        "claims": {"subject": "id"}, "cookie": "token",
    }))
}

/// Open WebUI's shape: `{"id","exp","jti","iat"}`, HS256, no `kid`, no `iss`.
fn webui_token(id: &str, jti: Option<&str>) -> String {
    let mut payload = json!({"id": id, "exp": NOW + 3600, "iat": NOW - 5});
    if let Some(jti) = jti {
        payload["jti"] = jti.into();
    }
    sign(
        &SigningKey::hs256(SECRET.as_bytes()).unwrap(),
        json!({"alg": "HS256", "typ": "JWT"}),
        payload,
    )
}

#[test]
fn an_apps_own_hs256_tokens_verify_and_are_revoked_by_token_user_or_issuer() {
    let issuers = Issuers::new(&[webui()], LEEWAY).unwrap();
    let index = RevocationIndex::new(LEEWAY);
    let webui = issuers.by_name("webui").unwrap();
    assert!(
        issuers.not_ready().is_empty(),
        "a shared secret is ready at once"
    );

    let alice = webui_token("alice", Some("t-1"));
    let issuer = issuers
        .route(&alice, "https://tokengate.example")
        .unwrap()
        .unwrap();
    assert_eq!(issuer.name(), "webui");
    let verified = issuers.verify(issuer, &alice, &index, now()).unwrap();
    assert_eq!(verified.subject, "alice");
    assert_eq!(verified.token_id.as_deref(), Some("t-1"));

    // One token: by its jti.
    index.apply(
        &webui.revoke_token_id("t-1", Some(verified.expires), now()),
        now(),
    );
    assert_eq!(
        issuers.verify(webui, &alice, &index, now()),
        Err(GateError::Revoked(RevocationKind::Token))
    );
    let alice2 = webui_token("alice", Some("t-2"));
    issuers.verify(webui, &alice2, &index, now()).unwrap();

    // The user: every token issued before now.
    let later = now().plus(Duration::from_secs(10));
    index.apply(&webui.revoke_subject("alice", later), later);
    assert_eq!(
        issuers.verify(webui, &alice2, &index, later),
        Err(GateError::Revoked(RevocationKind::User))
    );
    let bob = webui_token("bob", None);
    issuers.verify(webui, &bob, &index, later).unwrap();

    // The issuer: everything issued before an instant.
    index.apply(&webui.revoke_issued_before(later), later);
    assert_eq!(
        issuers.verify(webui, &bob, &index, later),
        Err(GateError::Revoked(RevocationKind::IssuedBefore))
    );
}

#[test]
fn forged_and_foreign_tokens_are_refused() {
    let issuers = Issuers::new(&[webui()], LEEWAY).unwrap();
    let index = RevocationIndex::new(LEEWAY);
    let webui = issuers.by_name("webui").unwrap();
    let verify = |token: &str| issuers.verify(webui, token, &index, now());

    let other_secret = SigningKey::hs256(b"another secret that is 32+ bytes long").unwrap();
    let forged = sign(
        &other_secret,
        json!({"alg": "HS256"}),
        json!({"id": "alice", "exp": NOW + 60}),
    );
    assert_eq!(
        verify(&forged),
        Err(GateError::Jose(VerifyError::BadSignature))
    );

    // RS256 header against a shared-secret issuer: no key for that algorithm.
    let rsa = SigningKey::generate(Algorithm::RS256).unwrap();
    let rs = sign(
        &rsa,
        json!({"alg": "RS256"}),
        json!({"id": "alice", "exp": NOW + 60}),
    );
    assert_eq!(
        verify(&rs),
        Err(GateError::Jose(VerifyError::AlgorithmMismatch))
    );

    let none = format!(
        "{}.{}.",
        base64_json(&json!({"alg": "none"})),
        base64_json(&json!({"id": "alice"}))
    );
    assert!(matches!(verify(&none), Err(GateError::Jose(_))));
    let mut truncated = webui_token("alice", None);
    truncated.truncate(truncated.len() - 3);
    assert!(verify(&truncated).is_err());

    let expired = sign(
        &SigningKey::hs256(SECRET.as_bytes()).unwrap(),
        json!({"alg": "HS256"}),
        json!({"id": "alice", "exp": NOW - 31}),
    );
    assert_eq!(
        verify(&expired),
        Err(GateError::Claims(ClaimsError::Expired))
    );

    // An `iss` no issuer has is refused before any key is tried.
    let foreign = sign(
        &SigningKey::hs256(SECRET.as_bytes()).unwrap(),
        json!({"alg": "HS256"}),
        json!({"iss": "https://elsewhere.example", "id": "alice", "exp": NOW + 60}),
    );
    assert_eq!(
        issuers.route(&foreign, "https://tokengate.example").err(),
        Some(GateError::UnknownIssuer)
    );
}

fn base64_json(value: &Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

fn provider_token(key: &SigningKey, issuer: &str, aud: &str, sub: &str) -> String {
    sign(
        key,
        json!({"alg": key.alg().as_str(), "typ": "at+jwt", "kid": key.kid()}),
        json!({"iss": issuer, "aud": aud, "sub": sub, "sid": "s-1", "jti": sub, "iat": NOW, "exp": NOW + 300}),
    )
}

#[tokio::test]
async fn provider_keys_are_fetched_rotated_and_kept_when_the_provider_is_down() {
    let rs = SigningKey::generate(Algorithm::RS256).unwrap();
    let mut provider = TestProvider::start(provider_jwks(&[&rs])).await;
    provider.set_cache_control(Some("max-age=600"));
    let iss = provider.issuer();
    let issuers = Issuers::new(
        &[config(json!({
            "name": "sso", "issuer": iss,
            "discovery": format!("{iss}/.well-known/openid-configuration"),
            "audiences": ["my-app"], "algorithms": ["RS256", "ES256"],
        }))],
        LEEWAY,
    )
    .unwrap();
    let index = RevocationIndex::new(LEEWAY);
    let sso = issuers.by_name("sso").unwrap();
    let first = provider_token(&rs, &iss, "my-app", "alice");

    // Before the first fetch: not ready (503), and /readyz names it.
    assert_eq!(
        issuers.verify(sso, &first, &index, now()),
        Err(GateError::NotReady("sso".into()))
    );
    assert_eq!(issuers.not_ready(), vec!["sso"]);
    assert_eq!(issuers.refresh_due(now()).await, 0);
    assert!(issuers.not_ready().is_empty());
    assert_eq!(
        issuers.verify(sso, &first, &index, now()).unwrap().subject,
        "alice"
    );
    let status = sso.key_status();
    // One RSA key without `alg`, allowed RS256 and ES256: an RS256 key only.
    assert_eq!(
        (status.keys, status.fetched_at),
        (1, Some(now())),
        "{status:?}"
    );

    // Another audience, and an algorithm outside the allowlist, are refused.
    let other_aud = provider_token(&rs, &iss, "other-app", "alice");
    assert_eq!(
        issuers.verify(sso, &other_aud, &index, now()),
        Err(GateError::Claims(ClaimsError::WrongAudience))
    );

    // Rotation: a token naming a new kid triggers one fetch.
    let es = SigningKey::generate(Algorithm::ES256).unwrap();
    provider.set_jwks(provider_jwks(&[&es, &rs]));
    let rotated = provider_token(&es, &iss, "my-app", "bob");
    assert_eq!(
        issuers.verify(sso, &rotated, &index, now()),
        Err(GateError::Jose(VerifyError::UnknownKey))
    );
    assert!(issuers.fetch_for_unknown_kid(sso, now()).await);
    let verified = issuers.verify(sso, &rotated, &index, now()).unwrap();
    assert_eq!(verified.subject, "bob");
    // A second unknown kid within 30 s does not fetch again.
    let unknown = SigningKey::generate(Algorithm::ES256).unwrap();
    provider.set_jwks(provider_jwks(&[&unknown]));
    let later = now().plus(Duration::from_secs(5));
    assert!(!issuers.fetch_for_unknown_kid(sso, later).await);
    let carol = provider_token(&unknown, &iss, "my-app", "carol");
    assert_eq!(
        issuers.verify(sso, &carol, &index, later),
        Err(GateError::Jose(VerifyError::UnknownKey))
    );

    // The provider goes down: the keys held keep verifying, the error is reported.
    provider.stop().await;
    let much_later = now().plus(Duration::from_secs(700));
    assert_eq!(issuers.refresh_due(much_later).await, 1);
    assert!(sso.key_status().last_error.is_some());
    let fresh = sign(
        &es,
        json!({"alg": "ES256", "kid": es.kid()}),
        json!({"iss": iss, "aud": "my-app", "sub": "dave", "iat": NOW + 690, "exp": NOW + 990}),
    );
    assert_eq!(
        issuers
            .verify(sso, &fresh, &index, much_later)
            .unwrap()
            .subject,
        "dave"
    );
}

#[tokio::test]
async fn hostile_key_sets_are_refused_and_the_last_good_set_kept() {
    let rs = SigningKey::generate(Algorithm::RS256).unwrap();
    let provider = TestProvider::start(provider_jwks(&[&rs])).await;
    let iss = provider.issuer();
    let entry = |name: &str, path: &str| {
        config(json!({
            "name": name, "issuer": format!("{iss}/{name}"), "jwks_uri": provider.url(path),
            "audiences": ["my-app"],
        }))
    };
    let slow = Issuers::new(&[entry("slow", "/slow")], LEEWAY).unwrap();
    let started = std::time::Instant::now();
    assert_eq!(
        slow.refresh_due(now()).await,
        1,
        "a slow answer is given up"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the fetch timeout did not hold"
    );
    let slow = slow.by_name("slow").unwrap();
    assert!(!slow.is_ready());
    let error = slow.key_status().last_error.unwrap();
    assert!(error.contains("timed out"), "{error}");

    let issuers = Issuers::new(
        &[entry("good", "/jwks"), entry("moved", "/redirect")],
        LEEWAY,
    )
    .unwrap();
    assert_eq!(
        issuers.refresh_due(now()).await,
        1,
        "a redirect is not followed"
    );
    let moved = issuers.by_name("moved").unwrap();
    assert!(!moved.is_ready());
    assert!(moved
        .key_status()
        .last_error
        .unwrap()
        .contains("answered 302"));

    let good = issuers.by_name("good").unwrap();
    assert_eq!(
        good.key_status().keys,
        2,
        "RS256 and PS256 from one RSA key without `alg`"
    );
    let next = now().plus(Duration::from_secs(301));
    let hostile = [
        json!({"keys": (0..1000).map(|i| json!({"kty": "oct", "kid": i.to_string(), "k": "AA"})).collect::<Vec<_>>()}),
        json!({"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}]}),
        json!({"keys": [{"kty": "RSA", "kid": "small", "n": "AQAB", "e": "AQAB"}]}),
        json!({"keys": [{"kty": "RSA", "use": "enc", "kid": "enc", "n": "AQAB", "e": "AQAB"}]}),
        json!({"keys": "no"}),
        json!("x".repeat(300 * 1024)),
    ];
    for (i, body) in hostile.into_iter().enumerate() {
        provider.set_jwks(body);
        let at = next.plus(Duration::from_secs(40 * i as u64));
        issuers.refresh_due(at).await;
        let status = good.key_status();
        assert!(status.last_error.is_some(), "hostile set {i} was taken");
        assert_eq!(status.keys, 2, "hostile set {i} replaced the good one");
        assert_eq!(status.fetched_at, Some(now()));
    }
    let token = provider_token(&rs, &format!("{iss}/good"), "my-app", "alice");
    let index = RevocationIndex::new(LEEWAY);
    issuers.verify(good, &token, &index, next).unwrap();
}

#[tokio::test]
async fn a_cached_token_is_dropped_when_its_key_leaves_the_set() {
    let old = SigningKey::generate(Algorithm::ES256).unwrap();
    let provider = TestProvider::start(provider_jwks(&[&old])).await;
    let iss = provider.issuer();
    let issuers = Issuers::new(
        &[config(json!({
            "name": "sso", "issuer": iss, "jwks_uri": format!("{iss}/jwks"),
            "audiences": ["my-app"],
        }))],
        LEEWAY,
    )
    .unwrap();
    let index = RevocationIndex::new(LEEWAY);
    issuers.refresh_due(now()).await;
    let sso = issuers.by_name("sso").unwrap();
    let token = provider_token(&old, &iss, "my-app", "alice");
    issuers.verify(sso, &token, &index, now()).unwrap();
    issuers.verify(sso, &token, &index, now()).unwrap();
    assert_eq!(
        issuers.cached_tokens(),
        1,
        "verified once, then served from the cache"
    );

    // Revocation is still checked on a hit.
    let verified = issuers.verify(sso, &token, &index, now()).unwrap();
    index.apply(
        &tokengate_core::Revocation::Token {
            jti: verified.ids.jti,
            exp: verified.expires,
        },
        now(),
    );
    assert_eq!(
        issuers.verify(sso, &token, &index, now()),
        Err(GateError::Revoked(RevocationKind::Token))
    );

    // The key leaves the provider's set: the cached token goes with it.
    let other = provider_token(&old, &iss, "my-app", "bob");
    issuers.verify(sso, &other, &index, now()).unwrap();
    let new = SigningKey::generate(Algorithm::ES256).unwrap();
    provider.set_jwks(provider_jwks(&[&new]));
    let later = now().plus(Duration::from_secs(301));
    issuers.refresh_due(later).await;
    assert_eq!(issuers.cached_tokens(), 0);
    assert_eq!(
        issuers.verify(sso, &other, &index, later),
        Err(GateError::Jose(VerifyError::UnknownKey))
    );
}
