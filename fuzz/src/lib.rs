//! The logic of tokengate's fuzz targets, kept in a library so that it builds (and can be
//! called) on stable; the `fuzz_targets/*.rs` binaries only hand libFuzzer's bytes to it.
//!
//! - [`verify_bytes`]: `Verifier::verify` on arbitrary input (lossless UTF-8 only): never
//!   panics, never accepts anything, and every refusal's text is safe for a quoted header.
//! - [`verify_mutated`]: structure-aware: mutates the parts of real tokens (EdDSA, ES256,
//!   RS256, HS256) and forges headers re-signed with attacker keys; only the untouched
//!   original may verify.
//! - [`extract`]: `tokengate_axum::credential` and `same_origin` on arbitrary header values.

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use axum::response::IntoResponse;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use tokengate_axum::{AuthError, CredentialSource};
use tokengate_core::{
    Algorithm, Claims, Role, SigningKey, Timestamp, Verifier, VerifierConfig, VerifyError,
};

/// The instant every verification happens at: inside the real tokens' validity.
pub const NOW: Timestamp = Timestamp::from_secs(1_700_000_100);

/// A verifier trusting one key of each algorithm, and a valid token signed by each.
pub struct Fixture {
    /// Trusts the four keys below.
    pub verifier: Verifier,
    /// One key per algorithm: EdDSA, ES256, RS256, HS256.
    pub keys: Vec<SigningKey>,
    /// `keys[i].sign(claims)`.
    pub tokens: Vec<String>,
    /// The claims of every token.
    pub claims: Claims,
}

/// Built once per process (RSA key generation is slow).
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let keys: Vec<SigningKey> = [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256]
            .into_iter()
            .map(|alg| SigningKey::generate(alg).unwrap_or_else(|e| panic!("{alg:?} key: {e}")))
            .chain(std::iter::once(
                SigningKey::hs256(b"fuzzing secret fuzzing secret 0123456789")
                    .unwrap_or_else(|e| panic!("HS256 key: {e}")),
            ))
            .collect();
        let claims = Claims {
            iss: "tokengate".into(),
            sub: uuid::Uuid::from_u128(1),
            aud: "tokengate".into(),
            iat: Timestamp::from_secs(1_700_000_000),
            nbf: Timestamp::from_secs(1_700_000_000),
            exp: Timestamp::from_secs(1_700_000_900),
            jti: uuid::Uuid::from_u128(2),
            sid: uuid::Uuid::from_u128(3),
            email: "fuzz@example.com".into(),
            role: Role::User,
        };
        let tokens = keys
            .iter()
            .map(|k| k.sign(&claims).unwrap_or_else(|e| panic!("sign: {e}")))
            .collect();
        let verifier = Verifier::new(
            VerifierConfig {
                issuer: "tokengate".into(),
                audience: "tokengate".into(),
                leeway: Duration::from_secs(30),
            },
            keys.iter().map(SigningKey::verifying_key).collect(),
        );
        Fixture {
            verifier,
            keys,
            tokens,
            claims,
        }
    })
}

/// What every refusal must satisfy: its text goes into a quoted `WWW-Authenticate`
/// parameter, and the 401 built from it must not panic.
fn check_refusal(error: VerifyError) {
    let text = error.to_string();
    assert!(
        !text.contains('"') && !text.contains('\\') && !text.chars().any(char::is_control),
        "refusal text not header-safe: {text:?}"
    );
    let response = AuthError::Invalid(error).into_response();
    assert_eq!(response.status(), 401);
}

/// Target `verify`: arbitrary bytes, used only when they are valid UTF-8 as they are.
pub fn verify_bytes(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let f = fixture();
    match f.verifier.verify(token, NOW) {
        Ok(claims) => assert!(
            f.tokens.iter().any(|t| t == token),
            "accepted a token nobody signed: {token:?} -> {claims:?}"
        ),
        Err(error) => check_refusal(error),
    }
}

/// Reads the fuzzer's bytes as a stream of small decisions.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn below(&mut self, n: usize) -> usize {
        let v = usize::from(self.byte()) << 8 | usize::from(self.byte());
        if n == 0 {
            0
        } else {
            v % n
        }
    }
    fn chunk(&mut self) -> &[u8] {
        let n = self.below(64).min(self.0.len());
        let (c, rest) = self.0.split_at(n);
        self.0 = rest;
        c
    }
}

/// Header values an attacker would try.
const HOSTILE_HEADERS: &[&str] = &[
    r#"{"alg":"none","typ":"at+jwt","kid":"K"}"#,
    r#"{"alg":"NONE","typ":"at+jwt","kid":"K"}"#,
    r#"{"alg":"HS256","typ":"at+jwt","kid":"K"}"#,
    r#"{"alg":"RS256","typ":"at+jwt","kid":"K"}"#,
    r#"{"alg":"EdDSA","typ":"at+jwt","kid":"K","jku":"https://evil.test/jwks"}"#,
    r#"{"alg":"EdDSA","typ":"at+jwt","kid":"K","crit":["exp"]}"#,
    r#"{"alg":"EdDSA","typ":"at+jwt","kid":"../../etc/passwd"}"#,
    r#"{"alg":"EdDSA","typ":"JWT","kid":"K"}"#,
    r#"{"alg":"EdDSA","alg":"none","typ":"at+jwt","kid":"K"}"#,
];

/// Target `verify_mutated`: start from a real token and change it.
pub fn verify_mutated(data: &[u8]) {
    let f = fixture();
    let mut input = Bytes(data);
    let which = input.below(f.tokens.len());
    let original = &f.tokens[which];
    let mut parts: Vec<Vec<u8>> = original.split('.').map(|p| p.as_bytes().to_vec()).collect();
    let mut resigned = false;
    for _ in 0..=input.below(4) {
        let p = input.below(3);
        match input.below(10) {
            // Flip, replace, insert or delete one base64 character.
            0 => {
                let part = &mut parts[p];
                if !part.is_empty() {
                    let i = input.below(part.len());
                    part[i] ^= 1 << input.below(7);
                }
            }
            1 => {
                let part = &mut parts[p];
                let i = input.below(part.len() + 1);
                let c = input.byte();
                part.insert(i, c);
            }
            2 => {
                let part = &mut parts[p];
                if !part.is_empty() {
                    let i = input.below(part.len());
                    part.remove(i);
                }
            }
            // Truncate a part.
            3 => {
                let n = input.below(parts[p].len() + 1);
                parts[p].truncate(n);
            }
            // Swap in the same part of another algorithm's token.
            4 => {
                let other = &f.tokens[input.below(f.tokens.len())];
                if let Some(q) = other.split('.').nth(p) {
                    parts[p] = q.as_bytes().to_vec();
                }
            }
            // Decode, change the JSON, re-encode (header or payload).
            5 | 6 => {
                let p = p.min(1);
                if let Ok(mut json) = URL_SAFE_NO_PAD.decode(&parts[p]) {
                    let i = input.below(json.len() + 1);
                    let chunk = input.chunk().to_vec();
                    let end = (i + input.below(8)).min(json.len());
                    json.splice(i..end, chunk);
                    parts[p] = URL_SAFE_NO_PAD.encode(&json).into_bytes();
                }
            }
            // A hostile header, with the real token's kid.
            7 => {
                let kid = f.keys[which].kid();
                let h = HOSTILE_HEADERS[input.below(HOSTILE_HEADERS.len())]
                    .replace("\"K\"", &format!("{kid:?}"));
                parts[0] = URL_SAFE_NO_PAD.encode(h).into_bytes();
            }
            // Key confusion: HS256 keyed with the public key text of a real key, naming it.
            8 => {
                let vk = f.keys[input.below(f.keys.len())].verifying_key();
                let secret = serde_json::to_vec(&vk.to_jwk()).unwrap_or_default();
                if let Ok(attacker) = SigningKey::hs256(&[secret.as_slice(), &[0u8; 32]].concat()) {
                    let header =
                        format!(r#"{{"alg":"HS256","typ":"at+jwt","kid":{:?}}}"#, vk.kid());
                    let payload = URL_SAFE_NO_PAD.decode(&parts[1]).unwrap_or_default();
                    if let Ok(t) = attacker.sign_compact(header.as_bytes(), &payload) {
                        parts = t.split('.').map(|p| p.as_bytes().to_vec()).collect();
                        resigned = true;
                    }
                }
            }
            // Extra or missing dots.
            _ => {
                let part = &mut parts[p];
                let i = input.below(part.len() + 1);
                part.insert(i, b'.');
            }
        }
    }
    let Ok(token) = String::from_utf8(parts.join(&b"."[..])) else {
        return;
    };
    match f.verifier.verify(&token, NOW) {
        Ok(claims) => {
            assert!(
                !resigned,
                "accepted a token re-signed by an attacker: {token}"
            );
            assert_eq!(&token, original, "accepted a mutated token: {token}");
            assert_eq!(claims, f.claims);
        }
        Err(error) => check_refusal(error),
    }
}

const HEADER_NAMES: &[&str] = &[
    "authorization",
    "cookie",
    "host",
    "origin",
    "referer",
    "sec-fetch-site",
];

const METHODS: &[Method] = &[
    Method::GET,
    Method::HEAD,
    Method::OPTIONS,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
];

/// Target `extract`: a header map of arbitrary values for the headers the extractors read.
pub fn extract(data: &[u8]) {
    let mut input = Bytes(data);
    let mut headers = HeaderMap::new();
    for _ in 0..input.below(8) {
        let name = HeaderName::from_static(HEADER_NAMES[input.below(HEADER_NAMES.len())]);
        let value = input.chunk().to_vec();
        if let Ok(value) = HeaderValue::from_bytes(&value) {
            headers.append(name, value);
        }
    }
    match tokengate_axum::credential(&headers) {
        Ok(c) => {
            assert!(!c.token.is_empty());
            let from = match c.source {
                CredentialSource::Bearer => "authorization",
                CredentialSource::Cookie => {
                    assert!(
                        headers.get("authorization").is_none(),
                        "cookie used over a Bearer header"
                    );
                    "cookie"
                }
            };
            assert!(
                headers
                    .get_all(from)
                    .iter()
                    .any(|v| v.to_str().is_ok_and(|s| s.contains(c.token))),
                "credential {:?} not found in its header",
                c.token
            );
        }
        Err(error) => {
            let response = error.into_response();
            assert!(response.status().is_client_error());
        }
    }
    for method in METHODS {
        let same = tokengate_axum::extract::same_origin(method, &headers);
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            assert!(same, "a safe method was refused");
        } else if same && headers.get("sec-fetch-site").is_none() {
            assert!(headers.get("host").is_some(), "same-origin without a host");
        }
    }
}
