//! Gate mode over HTTP: an app's own HS256 tokens (Open WebUI's shape) and a provider's
//! RS256 tokens from a JWK Set, at `/v1/verify`, the sign-out hook, the issuer's
//! revocation endpoint, RFC 7009 with client authentication, `/readyz` and RFC 8414.

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokengate_core::{Algorithm, SigningKey};
use tokengate_gate::testing::{provider_jwks, sign, TestProvider};
use tokengate_gate::IssuerConfig;

use crate::common::{Client, InProcess, Resp};

pub const WEBUI_SECRET: &str = "open-webui-secret-key-of-32-bytes!";
pub(crate) const CLIENT_SECRET: &str = "webui-client-secret";

/// Open WebUI's entry: no `iss`, subject in `id`, cookie `token`, one revoke client.
pub fn webui_issuer() -> IssuerConfig {
    let hash: String = Sha256::digest(CLIENT_SECRET.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    serde_json::from_value(json!({
        "name": "webui", "hs256_secret": WEBUI_SECRET, "audience_optional": true,
        "claims": {"subject": "id"}, "cookie": "token",
        "clients": [{"id": "webui", "secret_sha256": hash}],
    }))
    .unwrap()
}

/// A token as Open WebUI signs it: HS256, no `kid`, `{"id","exp","jti","iat"}`. Issued
/// two seconds ago, so that a cutoff taken now (which spares its own second) covers it.
pub fn webui_token(id: &str) -> String {
    let now = unix_now();
    sign_webui(
        json!({"id": id, "exp": now + 3600, "jti": uuid::Uuid::new_v4().to_string(), "iat": now - 2}),
    )
}

/// `payload` signed as Open WebUI signs: HS256 with its secret, header `{"alg","typ"}`.
pub fn sign_webui(payload: Value) -> String {
    let key = SigningKey::hs256(WEBUI_SECRET.as_bytes()).unwrap();
    sign(&key, json!({"alg": "HS256", "typ": "JWT"}), payload)
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn verify_bearer(client: &Client, token: &str) -> Resp {
    client.get("/v1/verify", Some(token)).await
}

async fn verify_cookie(client: &Client, name: &str, token: &str) -> Resp {
    client
        .send(
            client
                .raw(Method::GET, "/v1/verify")
                .header("cookie", format!("{name}={token}")),
        )
        .await
}

async fn gate_signout(client: &Client, cookie: &str) -> Resp {
    client
        .send(
            client
                .raw(Method::POST, "/v1/gate/signout")
                .header("cookie", format!("token={cookie}")),
        )
        .await
}

async fn revoke_at_issuer(client: &Client, auth: Option<&str>, body: &Value) -> Resp {
    let mut request = client
        .raw(Method::POST, "/v1/gate/webui/revocations")
        .json(body);
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    client.send(request).await
}

pub(crate) fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmodified_apps_tokens_verify_and_its_sign_out_hook_revokes_them() {
    let server = InProcess::start_with(|c| c.issuers = vec![webui_issuer()]).await;
    let client = server.client();
    let alice = webui_token("alice");

    for resp in [
        verify_bearer(&client, &alice).await,
        verify_cookie(&client, "token", &alice).await,
    ] {
        resp.expect(StatusCode::OK);
        assert_eq!(resp.headers["x-auth-issuer"], "webui");
        assert_eq!(resp.headers["x-auth-user-id"], "alice");
        assert!(resp.headers.get("x-auth-session-id").is_none());
    }
    // Own tokens are untouched, and say so.
    let email = client.new_user("own").await;
    let own = client.signin_ok(&email).await;
    let resp = verify_bearer(&client, &own.access_token).await;
    resp.expect(StatusCode::OK);
    assert_eq!(resp.headers["x-auth-issuer"], "tokengate");

    // The hook answers anything well-formed with 200 and revokes only a verified token.
    let before = server.node.state.index().len();
    gate_signout(&client, "garbage")
        .await
        .expect(StatusCode::OK);
    let forged = format!("{}x", &alice[..alice.len() - 1]);
    gate_signout(&client, &forged).await.expect(StatusCode::OK);
    client
        .send(client.raw(Method::POST, "/v1/gate/signout"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(server.node.state.index().len(), before, "nothing revoked");

    gate_signout(&client, &alice).await.expect(StatusCode::OK);
    let description = verify_cookie(&client, "token", &alice)
        .await
        .expect_invalid_token();
    assert!(description.contains("revoked"), "{description}");
    // Alice signs in again in the app: her new token works.
    verify_bearer(&client, &webui_token("alice"))
        .await
        .expect(StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_revokes_a_user_through_its_client_and_admins_may_too() {
    let server = InProcess::start_with(|c| c.issuers = vec![webui_issuer()]).await;
    let client = server.client();
    let admin_email = client.new_user("admin").await;
    let admin = client.signin_ok(&admin_email).await;
    let user_email = client.new_user("user").await;
    let user = client.signin_ok(&user_email).await;
    let (bob, carol) = (webui_token("bob"), webui_token("carol"));
    let good = basic("webui", CLIENT_SECRET);

    // Refused callers revoke nothing.
    let before = server.node.state.index().len();
    let resp = revoke_at_issuer(
        &client,
        Some(&basic("webui", "wrong")),
        &json!({"sub": "bob"}),
    )
    .await;
    let (error, _) = resp.expect_error(StatusCode::UNAUTHORIZED);
    assert_eq!(error, "invalid_client");
    assert!(resp.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic"));
    let (error, _) = revoke_at_issuer(&client, None, &json!({"sub": "bob"}))
        .await
        .expect_error(StatusCode::UNAUTHORIZED);
    assert_eq!(error, "invalid_client");
    let bearer = format!("Bearer {}", user.access_token);
    let (error, _) = revoke_at_issuer(&client, Some(&bearer), &json!({"sub": "bob"}))
        .await
        .expect_error(StatusCode::FORBIDDEN);
    assert_eq!(error, "insufficient_scope");
    assert_eq!(server.node.state.index().len(), before);

    // Bad requests.
    for body in [
        json!({}),
        json!({"sub": "bob", "sid": "s"}),
        json!({"sub": ""}),
        json!({"sub": "bob", "exp": 5}),
        json!({"issued_before": unix_now() + 3600}),
    ] {
        revoke_at_issuer(&client, Some(&good), &body)
            .await
            .expect_error(StatusCode::BAD_REQUEST);
    }
    revoke_at_issuer(&client, Some(&good), &json!({"sub": 5}))
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY);
    let resp = client
        .send(
            client
                .raw(Method::POST, "/v1/gate/nobody/revocations")
                .header("authorization", &good)
                .json(&json!({"sub": "bob"})),
        )
        .await;
    resp.expect_error(StatusCode::NOT_FOUND);

    revoke_at_issuer(&client, Some(&good), &json!({"sub": "bob"}))
        .await
        .expect(StatusCode::NO_CONTENT);
    verify_bearer(&client, &bob).await.expect_invalid_token();
    verify_bearer(&client, &carol).await.expect(StatusCode::OK);

    let admin_bearer = format!("Bearer {}", admin.access_token);
    let cutoff = unix_now() + 1;
    server.advance(Duration::from_secs(2)).await;
    revoke_at_issuer(
        &client,
        Some(&admin_bearer),
        &json!({"issued_before": cutoff}),
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    verify_bearer(&client, &carol).await.expect_invalid_token();
    // Own tokens are not the issuer's: untouched.
    verify_bearer(&client, &admin.access_token)
        .await
        .expect(StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc_7009_revokes_a_gate_token_for_its_issuers_client_only() {
    let server = InProcess::start_with(|c| c.issuers = vec![webui_issuer()]).await;
    let client = server.client();
    let dave = webui_token("dave");
    let revoke = |auth: Option<String>| {
        let mut request = client
            .raw(Method::POST, "/oauth2/revoke")
            .form(&[("token", dave.as_str())]);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        client.send(request)
    };
    let (error, _) = revoke(None).await.expect_error(StatusCode::UNAUTHORIZED);
    assert_eq!(error, "invalid_client");
    revoke(Some(basic("webui", "nope")))
        .await
        .expect_error(StatusCode::UNAUTHORIZED);
    verify_bearer(&client, &dave).await.expect(StatusCode::OK);
    revoke(Some(basic("webui", CLIENT_SECRET)))
        .await
        .expect(StatusCode::OK);
    verify_bearer(&client, &dave).await.expect_invalid_token();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_server_metadata_names_the_endpoints() {
    let server = InProcess::start().await;
    let resp = server
        .client()
        .get("/.well-known/oauth-authorization-server", None)
        .await;
    resp.expect(StatusCode::OK);
    let body: Value = resp.json();
    let config = &server.node.state.config;
    assert_eq!(body["issuer"], config.issuer.as_str());
    for endpoint in ["jwks_uri", "revocation_endpoint", "introspection_endpoint"] {
        assert!(
            body[endpoint].as_str().unwrap().starts_with('/')
                || body[endpoint].as_str().unwrap().starts_with("http"),
            "{body}"
        );
    }
}

pub(crate) fn sso_issuer(iss: &str) -> IssuerConfig {
    serde_json::from_value(json!({
        "name": "sso", "issuer": iss,
        "discovery": format!("{iss}/.well-known/openid-configuration"),
        "audiences": ["my-app"], "claims": {"role": "realm_access.roles"},
    }))
    .unwrap()
}

fn sso_token(key: &SigningKey, iss: &str, aud: &str) -> String {
    let now = unix_now();
    sign(
        key,
        json!({"alg": "RS256", "typ": "JWT", "kid": key.kid()}),
        json!({
            "iss": iss, "aud": aud, "sub": "alice", "sid": "sso-session-1", "email": "alice@example.com",
            "realm_access": {"roles": ["admin", "user"]}, "iat": now, "exp": now + 300,
            "jti": uuid::Uuid::new_v4().to_string(),
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_providers_tokens_verify_with_its_fetched_keys() {
    let key = SigningKey::generate(Algorithm::RS256).unwrap();
    let provider = TestProvider::start(provider_jwks(&[&key])).await;
    let iss = provider.issuer();
    let server = InProcess::start_with(|c| c.issuers = vec![sso_issuer(&iss)]).await;
    let client = server.client();

    let token = sso_token(&key, &iss, "my-app");
    let resp = verify_bearer(&client, &token).await;
    resp.expect(StatusCode::OK);
    assert_eq!(resp.headers["x-auth-issuer"], "sso");
    assert_eq!(resp.headers["x-auth-user-id"], "alice");
    assert_eq!(resp.headers["x-auth-session-id"], "sso-session-1");
    assert_eq!(resp.headers["x-auth-role"], "admin,user");
    assert_eq!(resp.headers["x-auth-email"], "alice@example.com");

    let description = verify_bearer(&client, &sso_token(&key, &iss, "other-app"))
        .await
        .expect_invalid_token();
    assert!(description.contains("audience"), "{description}");
    // HS256 "signed" with the RSA public key's bytes: no HS256 key at this issuer.
    let public = serde_json::to_vec(&key.verifying_key().to_jwk().unwrap()).unwrap();
    let forged = format!(
        "{}.{}",
        {
            let header =
                URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"HS256","kid":"{}"}}"#, key.kid()));
            let payload = token.split('.').nth(1).unwrap();
            format!("{header}.{payload}")
        },
        {
            use hmac::{Hmac, Mac};
            let header =
                URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"HS256","kid":"{}"}}"#, key.kid()));
            let input = format!("{header}.{}", token.split('.').nth(1).unwrap());
            let mut mac = Hmac::<Sha256>::new_from_slice(&public).unwrap();
            mac.update(input.as_bytes());
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        }
    );
    verify_bearer(&client, &forged).await.expect_invalid_token();

    // The provider's session ends: the app revokes it by `sid`.
    let admin_email = client.new_user("admin").await;
    let admin = client.signin_ok(&admin_email).await;
    let resp = client
        .post(
            "/v1/gate/sso/revocations",
            Some(&admin.access_token),
            Some(&json!({"sid": "sso-session-1"})),
        )
        .await;
    resp.expect(StatusCode::NO_CONTENT);
    verify_bearer(&client, &token).await.expect_invalid_token();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_whose_keys_never_arrived_gets_503_and_readyz_names_it() {
    // Nothing listens on this port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let iss = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(InProcess::sqlite(dir.path()).await);
    let mut config = InProcess::config(dir.path());
    config.issuers = vec![sso_issuer(&iss)];
    let server = InProcess::serve(dir, config, store).await;
    let client = server.client();

    let resp = client.get("/readyz", None).await;
    resp.expect(StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = resp.json();
    assert_eq!(body["issuers_not_ready"], json!(["sso"]));
    let key = SigningKey::generate(Algorithm::RS256).unwrap();
    let (error, description) = verify_bearer(&client, &sso_token(&key, &iss, "my-app"))
        .await
        .expect_error(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error, "temporarily_unavailable");
    assert!(description.contains("sso"), "{description}");
    // Tokens of an issuer nobody configured: 401, not 503.
    verify_bearer(
        &client,
        &sso_token(&key, "https://elsewhere.example", "my-app"),
    )
    .await
    .expect_invalid_token();
}

/// A configuration file holding [`webui_issuer`] as TOML, in `dir`.
pub fn webui_config_file(dir: &std::path::Path) -> String {
    let hash: String = Sha256::digest(CLIENT_SECRET.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let path = dir.join("gate.toml");
    std::fs::write(
        &path,
        format!(
            "[[issuers]]\nname = \"webui\"\nhs256_secret = \"{WEBUI_SECRET}\"\n\
             audience_optional = true\nclaims = {{ subject = \"id\" }}\ncookie = \"token\"\n\
             clients = [{{ id = \"webui\", secret_sha256 = \"{hash}\" }}]\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn gate_revocations_from_the_hook_and_the_cli_survive_sigkill() {
    let config_dir = tempfile::tempdir().unwrap();
    let config = webui_config_file(config_dir.path());
    let mut server = crate::common::Server::start_with_env(&[("TOKENGATE_CONFIG", &config)]);
    let client = server.client();
    let (alice, bob, carol) = (
        webui_token("alice"),
        webui_token("bob"),
        webui_token("carol"),
    );
    for token in [&alice, &bob, &carol] {
        verify_bearer(&client, token).await.expect(StatusCode::OK);
    }

    let listed = server.cli_ok(&["issuers", "list"], None);
    assert!(listed.stdout.contains("webui"), "{}", listed.stdout);
    assert!(listed.stdout.contains("hs256 secret"), "{}", listed.stdout);

    gate_signout(&client, &alice).await.expect(StatusCode::OK);
    let out = server.cli_ok(&["revoke", "--issuer", "webui", "--sub", "bob"], None);
    assert!(out.stdout.contains("bob"), "{}", out.stdout);
    for bad in [
        &["revoke", "--issuer", "nobody", "--sub", "bob"][..],
        &["revoke", "--sub", "bob"][..],
        &["revoke", "--issuer", "webui"][..],
    ] {
        assert!(!server.cli(bad, None).success, "{bad:?} succeeded");
    }
    // The CLI wrote to the store; the running node reads it within a second.
    crate::common::eventually(Duration::from_secs(5), "bob refused", || {
        let client = client.clone();
        let bob = bob.clone();
        async move { verify_bearer(&client, &bob).await.status == StatusCode::UNAUTHORIZED }
    })
    .await;

    // No graceful shutdown: both revocations were durable when acknowledged.
    server.kill();
    server.restart();
    let client = server.client();
    verify_bearer(&client, &alice).await.expect_invalid_token();
    verify_bearer(&client, &bob).await.expect_invalid_token();
    verify_bearer(&client, &carol).await.expect(StatusCode::OK);
}
