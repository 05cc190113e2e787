//! The attack battery: forged and mangled tokens (RFC 8725 and the CVEs behind it) sent to a
//! running server. Every one must get 401 with an RFC 6750 `WWW-Authenticate` challenge on
//! both `GET /v1/auth/me` and `GET /v1/verify` (forward auth), and never a 500.

use crate::common;

use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use common::{jwt_claims, jwt_header, unique_email, Client, InProcess};
use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokengate_core::{Algorithm, Clock, SigningKey};

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `b64(header).b64(payload).signature` with the bytes exactly as given.
fn unsigned(header: &[u8], payload: &[u8], signature: &str) -> String {
    format!("{}.{}.{signature}", b64(header), b64(payload))
}

fn sign(key: &SigningKey, header: &Value, payload: &Value) -> String {
    key.sign_compact(
        &serde_json::to_vec(header).unwrap(),
        &serde_json::to_vec(payload).unwrap(),
    )
    .unwrap()
}

/// The server, an admin, a victim with a real token, and the server's signing key.
struct Target {
    node: InProcess,
    client: Client,
    admin_token: String,
    victim_id: String,
    /// A real access token of the victim.
    token: String,
    header: Value,
    claims: Value,
    server_key: std::sync::Arc<SigningKey>,
}

impl Target {
    async fn start() -> Target {
        let node = InProcess::start().await;
        let client = node.client();
        let admin = client.new_user("admin").await;
        let admin_token = client.signin_ok(&admin).await.access_token;
        let victim = unique_email("victim");
        let victim_id = client.signup_ok(&victim).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let token = client.signin_ok(&victim).await.access_token;
        let server_key = node
            .node
            .state
            .sessions
            .keys()
            .signer(node.node.state.now());
        Target {
            header: jwt_header(&token),
            claims: jwt_claims(&token),
            node,
            client,
            admin_token,
            victim_id,
            token,
            server_key,
        }
    }

    fn kid(&self) -> String {
        self.header["kid"].as_str().unwrap().to_owned()
    }

    fn now(&self) -> i64 {
        self.node.clock.now().as_secs()
    }

    /// The real claims with `edit` applied.
    fn claims_with(&self, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
        let mut claims = self.claims.clone();
        edit(claims.as_object_mut().unwrap());
        claims
    }

    /// The real header with `edit` applied.
    fn header_with(&self, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
        let mut header = self.header.clone();
        edit(header.as_object_mut().unwrap());
        header
    }

    async fn status_on(&self, path: &str, token: &str) -> StatusCode {
        self.client.get(path, Some(token)).await.status
    }

    /// Assert `token` is refused with a proper 401 on `/v1/auth/me` and `/v1/verify`.
    async fn refused(&self, case: &str, token: &str) {
        for path in ["/v1/auth/me", "/v1/verify"] {
            let value = HeaderValue::from_bytes(format!("Bearer {token}").as_bytes());
            let resp = match value {
                Ok(value) => {
                    self.client
                        .send(
                            self.client
                                .raw(Method::GET, path)
                                .header(AUTHORIZATION, value),
                        )
                        .await
                }
                Err(_) => panic!("{case}: token is not a valid header value"),
            };
            assert_eq!(
                resp.status,
                StatusCode::UNAUTHORIZED,
                "{case} on {path}: expected 401, got {} with {:?}",
                resp.status,
                resp.text
            );
            resp.expect_challenge();
        }
    }
}

#[tokio::test]
async fn the_control_forgery_with_the_server_key_and_the_real_header_is_accepted() {
    // Without this, every refusal below could be an artefact of broken forging.
    let t = Target::start().await;
    let token = sign(&t.server_key, &t.header, &t.claims);
    assert_eq!(t.status_on("/v1/auth/me", &token).await, StatusCode::OK);
    assert_eq!(t.status_on("/v1/verify", &token).await, StatusCode::OK);
    assert_eq!(t.status_on("/v1/auth/me", &t.token).await, StatusCode::OK);
}

#[tokio::test]
async fn alg_none_in_any_case_with_or_without_a_signature_is_refused() {
    let t = Target::start().await;
    let real_signature = t.token.rsplit('.').next().unwrap().to_owned();
    let payload = serde_json::to_vec(&t.claims).unwrap();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = serde_json::to_vec(&t.header_with(|h| {
            h.insert("alg".into(), json!(alg));
        }))
        .unwrap();
        t.refused(
            &format!("alg {alg}, empty signature"),
            &unsigned(&header, &payload, ""),
        )
        .await;
        t.refused(
            &format!("alg {alg}, real signature"),
            &unsigned(&header, &payload, &real_signature),
        )
        .await;
        let no_kid = serde_json::to_vec(&json!({"alg": alg, "typ": "at+jwt"})).unwrap();
        t.refused(
            &format!("alg {alg}, no kid"),
            &unsigned(&no_kid, &payload, ""),
        )
        .await;
        // Two segments only.
        t.refused(
            &format!("alg {alg}, two segments"),
            &format!("{}.{}", b64(&header), b64(&payload)),
        )
        .await;
    }
}

#[tokio::test]
async fn hs256_keyed_with_the_public_key_is_refused() {
    let t = Target::start().await;
    let jwks = t.client.get("/.well-known/jwks.json", None).await.json();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == json!(t.kid()))
        .expect("the current key in the JWKS")
        .clone();
    let x = jwk["x"].as_str().unwrap();
    let raw_public = URL_SAFE_NO_PAD.decode(x).unwrap();
    let jwk_text = serde_json::to_vec(&jwk).unwrap();
    let secrets: [(&str, &[u8]); 3] = [
        ("raw public key bytes", &raw_public),
        ("base64url text of x", x.as_bytes()),
        ("JWK JSON", &jwk_text),
    ];
    for (what, secret) in secrets {
        let hmac = SigningKey::hs256(secret).unwrap();
        let header = t.header_with(|h| {
            h.insert("alg".into(), json!("HS256"));
        });
        t.refused(
            &format!("HS256 keyed with the {what}, real kid"),
            &sign(&hmac, &header, &t.claims),
        )
        .await;
        // And with the kid the HMAC key would compute for itself.
        let header = t.header_with(|h| {
            h.insert("alg".into(), json!("HS256"));
            h.insert("kid".into(), json!(hmac.kid()));
        });
        t.refused(
            &format!("HS256 keyed with the {what}, its own kid"),
            &sign(&hmac, &header, &t.claims),
        )
        .await;
    }
}

#[tokio::test]
async fn stripped_altered_and_truncated_signatures_are_refused() {
    let t = Target::start().await;
    let (input, signature) = t.token.rsplit_once('.').unwrap();
    t.refused("signature stripped", &format!("{input}.")).await;
    t.refused("signature and dot stripped", input).await;
    let mut sig = URL_SAFE_NO_PAD.decode(signature).unwrap();
    sig[0] ^= 0x01;
    t.refused("one bit flipped", &format!("{input}.{}", b64(&sig)))
        .await;
    let last = sig.len() - 1;
    sig[0] ^= 0x01;
    sig[last] ^= 0x80;
    t.refused("last byte altered", &format!("{input}.{}", b64(&sig)))
        .await;
    t.refused(
        "signature truncated by 1 byte",
        &format!("{input}.{}", b64(&sig[..last])),
    )
    .await;
    t.refused(
        "signature truncated to half",
        &format!("{input}.{}", &signature[..signature.len() / 2]),
    )
    .await;
    t.refused(
        "signature of zeros",
        &format!("{input}.{}", b64(&[0u8; 64])),
    )
    .await;
    t.refused("extra segment", &format!("{}.{signature}", t.token))
        .await;
    // Another valid token's signature on this token's input.
    let other = sign(
        &t.server_key,
        &t.header,
        &t.claims_with(|c| {
            c.insert("email".into(), json!("mallory@example.com"));
        }),
    );
    let other_sig = other.rsplit('.').next().unwrap();
    let header_payload_of_other = other.rsplit_once('.').unwrap().0;
    t.refused("signature swapped", &format!("{input}.{other_sig}"))
        .await;
    t.refused(
        "payload of another token",
        &format!("{header_payload_of_other}.{signature}"),
    )
    .await;
}

#[tokio::test]
async fn re_encoded_header_or_payload_is_refused() {
    let t = Target::start().await;
    let mut parts = t.token.split('.');
    let (header_b64, payload_b64, signature) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let spaced_header = serde_json::to_vec_pretty(&t.header).unwrap();
    let mut reordered = serde_json::Map::new();
    let obj = t.claims.as_object().unwrap();
    for key in obj.keys().rev() {
        reordered.insert(key.clone(), obj[key].clone());
    }
    let reordered_payload = serde_json::to_vec(&Value::Object(reordered)).unwrap();
    let spaced_payload = serde_json::to_vec_pretty(&t.claims).unwrap();
    let header_bytes = URL_SAFE_NO_PAD.decode(header_b64).unwrap();
    let payload_bytes = URL_SAFE_NO_PAD.decode(payload_b64).unwrap();
    let cases = [
        (
            "header with whitespace",
            format!("{}.{payload_b64}.{signature}", b64(&spaced_header)),
        ),
        (
            "payload with whitespace",
            format!("{header_b64}.{}.{signature}", b64(&spaced_payload)),
        ),
        (
            "payload keys reordered",
            format!("{header_b64}.{}.{signature}", b64(&reordered_payload)),
        ),
        (
            "padded base64url header",
            format!(
                "{}.{payload_b64}.{signature}",
                URL_SAFE.encode(&header_bytes)
            ),
        ),
        (
            "padded base64url payload",
            format!(
                "{header_b64}.{}.{signature}",
                URL_SAFE.encode(&payload_bytes)
            ),
        ),
        (
            "standard base64 payload",
            format!(
                "{header_b64}.{}.{signature}",
                STANDARD.encode(&payload_bytes)
            ),
        ),
        (
            "trailing padding on the signature",
            format!("{header_b64}.{payload_b64}.{signature}=="),
        ),
    ];
    for (case, token) in cases {
        if token == t.token {
            continue; // an encoding that happens to be identical proves nothing
        }
        t.refused(case, &token).await;
    }
}

#[tokio::test]
async fn kid_pointing_at_a_path_a_url_or_an_unknown_key_is_refused() {
    let t = Target::start().await;
    for kid in [
        "../../../../etc/passwd",
        "/dev/null",
        "http://evil.example/key",
        "unknown-kid",
        "",
        "' OR 1=1 --",
    ] {
        let header = t.header_with(|h| {
            h.insert("kid".into(), json!(kid));
        });
        // Signed by the server's own key: only the kid is wrong.
        t.refused(
            &format!("kid {kid:?}"),
            &sign(&t.server_key, &header, &t.claims),
        )
        .await;
    }
    let header = t.header_with(|h| {
        h.remove("kid");
    });
    t.refused("no kid", &sign(&t.server_key, &header, &t.claims))
        .await;
    let header = t.header_with(|h| {
        h.insert("kid".into(), json!(42));
    });
    t.refused("numeric kid", &sign(&t.server_key, &header, &t.claims))
        .await;
}

#[tokio::test]
async fn jku_x5u_jwk_and_crit_headers_are_refused() {
    let t = Target::start().await;
    let attacker = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let attacker_jwk = serde_json::to_value(attacker.verifying_key().to_jwk().unwrap()).unwrap();
    let with = |name: &str, value: Value, kid: &str| {
        t.header_with(|h| {
            h.insert(name.into(), value);
            h.insert("kid".into(), json!(kid));
        })
    };
    let attacker_kid = attacker.kid().to_owned();
    let server_kid = t.kid();
    let hostile = [
        ("jku", json!("http://evil.example/jwks.json")),
        ("x5u", json!("http://evil.example/cert.pem")),
        ("jwk", attacker_jwk.clone()),
        (
            "x5c",
            json!(["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]),
        ),
    ];
    for (name, value) in &hostile {
        for kid in [&attacker_kid, &server_kid] {
            t.refused(
                &format!("{name} with the attacker's key, kid {kid}"),
                &sign(&attacker, &with(name, value.clone(), kid), &t.claims),
            )
            .await;
        }
        // Even the server's own signature does not make the header acceptable.
        t.refused(
            &format!("{name} signed by the server key"),
            &sign(
                &t.server_key,
                &with(name, value.clone(), &server_kid),
                &t.claims,
            ),
        )
        .await;
    }
    for crit in [json!(["exp"]), json!([]), json!(["b64"])] {
        t.refused(
            &format!("crit {crit}"),
            &sign(
                &t.server_key,
                &with("crit", crit.clone(), &server_kid),
                &t.claims,
            ),
        )
        .await;
    }
    // An attacker key under the attacker's kid, no hostile header at all.
    t.refused(
        "attacker key, attacker kid",
        &sign(
            &attacker,
            &with("typ", json!("at+jwt"), &attacker_kid),
            &t.claims,
        ),
    )
    .await;
}

#[tokio::test]
async fn expired_not_yet_valid_and_wrong_iss_aud_typ_are_refused() {
    let t = Target::start().await;
    let now = t.now();
    let hour = 3600;
    let cases: Vec<(&str, Value, Value)> = vec![
        (
            "expired an hour ago",
            t.header.clone(),
            t.claims_with(|c| {
                c.insert("iat".into(), json!(now - 2 * hour));
                c.insert("nbf".into(), json!(now - 2 * hour));
                c.insert("exp".into(), json!(now - hour));
            }),
        ),
        (
            "expired just past the leeway",
            t.header.clone(),
            t.claims_with(|c| {
                c.insert("exp".into(), json!(now - 31));
            }),
        ),
        (
            "nbf an hour ahead",
            t.header.clone(),
            t.claims_with(|c| {
                c.insert("nbf".into(), json!(now + hour));
            }),
        ),
        (
            "wrong iss",
            t.header.clone(),
            t.claims_with(|c| {
                c.insert("iss".into(), json!("https://evil.example"));
            }),
        ),
        (
            "wrong aud",
            t.header.clone(),
            t.claims_with(|c| {
                c.insert("aud".into(), json!("another-service"));
            }),
        ),
        (
            "aud as an array without ours",
            t.header.clone(),
            t.claims_with(|c| {
                c.insert("aud".into(), json!(["another-service"]));
            }),
        ),
        (
            "typ JWT",
            t.header_with(|h| {
                h.insert("typ".into(), json!("JWT"));
            }),
            t.claims.clone(),
        ),
        (
            "typ refresh+jwt",
            t.header_with(|h| {
                h.insert("typ".into(), json!("refresh+jwt"));
            }),
            t.claims.clone(),
        ),
        (
            "string exp",
            t.header.clone(),
            t.claims_with(|c| {
                c.insert("exp".into(), json!("9999999999"));
            }),
        ),
    ];
    for (case, header, claims) in cases {
        t.refused(case, &sign(&t.server_key, &header, &claims))
            .await;
    }
}

#[tokio::test]
async fn missing_jti_sid_exp_and_other_claims_are_refused() {
    let t = Target::start().await;
    for claim in ["jti", "sid", "exp", "sub", "iss", "aud", "nbf", "iat"] {
        let claims = t.claims_with(|c| {
            c.remove(claim);
        });
        t.refused(
            &format!("missing {claim}"),
            &sign(&t.server_key, &t.header, &claims),
        )
        .await;
    }
    for (claim, value) in [
        ("jti", json!("not-a-uuid")),
        ("sid", json!(null)),
        ("sub", json!("")),
    ] {
        let claims = t.claims_with(|c| {
            c.insert(claim.into(), value.clone());
        });
        t.refused(
            &format!("{claim} = {value}"),
            &sign(&t.server_key, &t.header, &claims),
        )
        .await;
    }
}

#[tokio::test]
async fn duplicate_json_keys_in_header_or_payload_are_refused() {
    let t = Target::start().await;
    let kid = t.kid();
    let payload = serde_json::to_vec(&t.claims).unwrap();
    let header = serde_json::to_vec(&t.header).unwrap();
    // Header: a second `alg` that a last-wins parser would read as `none`, and one the
    // other way round; a second `kid`.
    let headers = [
        format!(r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{kid}","alg":"none"}}"#),
        format!(r#"{{"alg":"none","typ":"at+jwt","kid":"{kid}","alg":"EdDSA"}}"#),
        format!(r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{kid}","kid":"other"}}"#),
        format!(r#"{{"alg":"EdDSA","typ":"at+jwt","typ":"at+jwt","kid":"{kid}"}}"#),
    ];
    for h in &headers {
        t.refused(
            &format!("duplicate header key {h}"),
            &t.server_key.sign_compact(h.as_bytes(), &payload).unwrap(),
        )
        .await;
    }
    // Payload: a second `exp` far in the future, a second `sub`, a second `sid`.
    let text = String::from_utf8(payload.clone()).unwrap();
    let body = text.trim_end_matches('}');
    let payloads = [
        format!(r#"{body},"exp":99999999999}}"#),
        format!(r#"{body},"sub":"{}"}}"#, uuid::Uuid::new_v4()),
        format!(r#"{body},"sid":"{}"}}"#, uuid::Uuid::new_v4()),
        format!(r#"{body},"role":"admin"}}"#),
    ];
    for p in &payloads {
        t.refused(
            &format!("duplicate payload key {p}"),
            &t.server_key.sign_compact(&header, p.as_bytes()).unwrap(),
        )
        .await;
    }
}

#[tokio::test]
async fn non_utf8_and_non_json_tokens_are_refused() {
    let t = Target::start().await;
    let payload = serde_json::to_vec(&t.claims).unwrap();
    let header = serde_json::to_vec(&t.header).unwrap();
    // Validly signed, but the header or payload is not UTF-8.
    let mut bad_header = header.clone();
    bad_header.insert(1, 0xff);
    t.refused(
        "non-UTF-8 header bytes",
        &t.server_key.sign_compact(&bad_header, &payload).unwrap(),
    )
    .await;
    let mut bad_payload = payload.clone();
    let at = bad_payload.len() - 2;
    bad_payload.splice(at..at, [0xc3, 0x28]);
    t.refused(
        "non-UTF-8 payload bytes",
        &t.server_key.sign_compact(&header, &bad_payload).unwrap(),
    )
    .await;
    t.refused(
        "payload not JSON",
        &t.server_key.sign_compact(&header, b"hello").unwrap(),
    )
    .await;
    t.refused(
        "payload a JSON array",
        &t.server_key.sign_compact(&header, b"[1,2]").unwrap(),
    )
    .await;
    t.refused("not base64", "!!!.@@@.###").await;
    t.refused("empty segments", "..").await;

    // Raw non-UTF-8 bytes in the Authorization header itself.
    for bytes in [
        &b"Bearer \xff\xfe\xfd"[..],
        &b"Bearer eyJ\x80.eyJ\x81.sig"[..],
    ] {
        for path in ["/v1/auth/me", "/v1/verify"] {
            let value = HeaderValue::from_bytes(bytes).unwrap();
            let resp = t
                .client
                .send(t.client.raw(Method::GET, path).header(AUTHORIZATION, value))
                .await;
            assert_eq!(
                resp.status,
                StatusCode::UNAUTHORIZED,
                "{path}: {}",
                resp.text
            );
            resp.expect_challenge();
        }
    }
}

#[tokio::test]
async fn a_100_kib_token_is_refused() {
    let t = Target::start().await;
    let big = "a".repeat(100 * 1024);
    t.refused("100 KiB of letters", &big).await;
    let (input, signature) = t.token.rsplit_once('.').unwrap();
    let padded_claims = t.claims_with(|c| {
        c.insert("junk".into(), json!("x".repeat(100 * 1024)));
    });
    t.refused(
        "100 KiB validly signed token",
        &sign(&t.server_key, &t.header, &padded_claims),
    )
    .await;
    t.refused(
        "real token with a 100 KiB signature",
        &format!("{input}.{signature}{}", "A".repeat(100 * 1024)),
    )
    .await;
}

#[tokio::test]
async fn a_disabled_users_token_is_refused() {
    let t = Target::start().await;
    assert_eq!(t.status_on("/v1/auth/me", &t.token).await, StatusCode::OK);
    t.client
        .post(
            &format!("/v1/admin/users/{}/disable", t.victim_id),
            Some(&t.admin_token),
            None,
        )
        .await
        .expect(StatusCode::NO_CONTENT);
    t.refused("token of a disabled user", &t.token).await;
    // A token minted for the disabled user before the disable, forged with the server key
    // and an earlier `iat`, is covered too.
    let earlier = t.claims_with(|c| {
        c.insert("jti".into(), json!(uuid::Uuid::new_v4().to_string()));
    });
    t.refused(
        "another token of the disabled user's session",
        &sign(&t.server_key, &t.header, &earlier),
    )
    .await;
}

/// There is no user deletion in tokengate (an admin disables a user, which revokes every
/// session). A token for a user id and session id that never existed can only be made with
/// the server's private signing key; the hot path does not touch the database (README "Architecture"),
/// so such a token IS accepted until it expires. The defence against a leaked signing key
/// is `tokengate keys rotate` plus a revocation of everything issued before an instant, not
/// a per-request database lookup. This test pins that documented behaviour (SECURITY.md).
#[tokio::test]
async fn a_token_of_a_nonexistent_user_is_only_as_good_as_the_signing_key() {
    let t = Target::start().await;
    let ghost = t.claims_with(|c| {
        c.insert("sub".into(), json!(uuid::Uuid::new_v4().to_string()));
        c.insert("sid".into(), json!(uuid::Uuid::new_v4().to_string()));
        c.insert("jti".into(), json!(uuid::Uuid::new_v4().to_string()));
    });
    let token = sign(&t.server_key, &t.header, &ghost);
    assert_eq!(t.status_on("/v1/verify", &token).await, StatusCode::OK);
    assert_eq!(t.status_on("/v1/auth/me", &token).await, StatusCode::OK);
    // Anything that does reach the database for the user refuses it cleanly (no 500).
    let resp = t
        .client
        .post(
            "/v1/auth/password",
            Some(&token),
            Some(&json!({"current_password": "x", "new_password": "y"})),
        )
        .await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{}", resp.text);
    // Signing out its (nonexistent) session is answered cleanly too.
    let resp = t.client.signout(&token).await;
    assert!(
        resp.status == StatusCode::NO_CONTENT || resp.status == StatusCode::UNAUTHORIZED,
        "{} {}",
        resp.status,
        resp.text
    );
}

#[tokio::test]
async fn answers_carry_the_security_headers_and_no_hsts_on_loopback() {
    let t = Target::start().await;
    for (path, token) in [
        ("/v1/auth/me", Some(t.token.as_str())),
        ("/v1/auth/me", None),
        ("/healthz", None),
        ("/no/such/endpoint", None),
    ] {
        let resp = t.client.get(path, token).await;
        let h = &resp.headers;
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert!(h.get("strict-transport-security").is_none(), "{path}");
        if path.starts_with("/v1/auth/") {
            assert_eq!(h["cache-control"], "no-store", "{path}");
        }
    }
    let resp = t.client.oauth_revoke("x").await;
    assert_eq!(resp.headers["cache-control"], "no-store");
}
