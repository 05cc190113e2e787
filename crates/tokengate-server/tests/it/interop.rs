//! Interop, against the real binary or in process with a manual clock: the JWKS
//! under each signing algorithm, key rotation, RFC 7009 revoke, RFC 7662 introspect,
//! forward auth (`/v1/verify`) and the revocation event stream.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::header::{CONTENT_TYPE, COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokengate_core::Clock;

/// JWK members that carry private or symmetric key material (RFC 7518 section 6).
const SECRET_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

async fn jwks(client: &Client) -> Value {
    let resp = client.get("/.well-known/jwks.json", None).await;
    resp.expect(StatusCode::OK);
    let body = resp.json();
    assert!(body["keys"].is_array(), "JWKS without `keys`: {body}");
    body
}

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .expect("keys array")
        .iter()
        .map(|k| k["kid"].as_str().expect("string kid").to_owned())
        .collect()
}

#[track_caller]
fn assert_public_only(jwks: &Value) {
    for key in jwks["keys"].as_array().expect("keys array") {
        let members = key.as_object().expect("JWK object");
        for secret in SECRET_MEMBERS {
            assert!(
                !members.contains_key(*secret),
                "JWKS publishes private or symmetric member {secret:?}: {key}"
            );
        }
        assert_ne!(key["kty"], "oct", "JWKS publishes a symmetric key: {key}");
    }
}

/// `POST path` with a form body, optionally as `token`'s Bearer.
async fn post_form(client: &Client, path: &str, bearer: Option<&str>, body: &str) -> Resp {
    let mut request = client
        .raw(Method::POST, path)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body.to_owned());
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    client.send(request).await
}

/// Introspect `token` as `caller`; assert 200 and return the body.
async fn introspect(client: &Client, caller: &str, token: &str) -> Value {
    let resp = post_form(
        client,
        "/oauth2/introspect",
        Some(caller),
        &format!("token={token}"),
    )
    .await;
    resp.expect(StatusCode::OK);
    resp.json()
}

/// A server's first user (the admin) and a second, ordinary user, both signed in.
struct People {
    admin: Tokens,
    user: Value,
    user_email: String,
    user_tokens: Tokens,
}

async fn admin_and_user(client: &Client) -> People {
    let admin_email = unique_email("admin");
    let admin_user = client.signup_ok(&admin_email).await;
    assert_eq!(admin_user["role"], "admin", "{admin_user}");
    let admin = client.signin_ok(&admin_email).await;
    let user_email = unique_email("user");
    let user = client.signup_ok(&user_email).await;
    assert_eq!(user["role"], "user", "{user}");
    let user_tokens = client.signin_ok(&user_email).await;
    People {
        admin,
        user,
        user_email,
        user_tokens,
    }
}

fn header<'a>(resp: &'a Resp, name: &str) -> &'a str {
    resp.headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {:?}", resp.headers))
        .to_str()
        .expect("ASCII header")
}

// ---------------------------------------------------------------------------------------
// JWKS and signing algorithms
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn jwks_publishes_the_current_kid_and_no_private_material() {
    let server = Server::start();
    let client = server.client();
    let email = client.new_user("jwks").await;
    let tokens = client.signin_ok(&email).await;

    let jwks = jwks(&client).await;
    assert_public_only(&jwks);
    let token_kid = kid(&tokens.access_token);
    assert!(
        kids(&jwks).contains(&token_kid),
        "the kid of a new token ({token_kid}) is not in the JWKS: {jwks}"
    );
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == token_kid.as_str())
        .unwrap();
    assert_eq!(key["alg"], "EdDSA", "{key}");
    assert_eq!(key["use"], "sig", "{key}");
}

/// Sign-in under `alg`: the token header names it, its key is published (public parts
/// only, of the right type) and the token is accepted.
async fn signing_alg_works(alg: &str, kty: &str) {
    let server = Server::start_with_env(&[("TOKENGATE_SIGNING_ALG", alg)]);
    let client = server.client();
    let email = client.new_user("alg").await;
    let tokens = client.signin_ok(&email).await;

    let header = jwt_header(&tokens.access_token);
    assert_eq!(header["alg"], alg, "{header}");
    client.me(&tokens.access_token).await.expect(StatusCode::OK);

    let jwks = jwks(&client).await;
    assert_public_only(&jwks);
    let token_kid = kid(&tokens.access_token);
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == token_kid.as_str())
        .unwrap_or_else(|| panic!("kid {token_kid} not in the JWKS: {jwks}"));
    assert_eq!(key["alg"], alg, "{key}");
    assert_eq!(key["kty"], kty, "{key}");
}

#[tokio::test]
async fn eddsa_signs_tokens_that_work() {
    signing_alg_works("EdDSA", "OKP").await;
}

#[tokio::test]
async fn es256_signs_tokens_that_work() {
    signing_alg_works("ES256", "EC").await;
}

#[tokio::test]
async fn rs256_signs_tokens_that_work() {
    signing_alg_works("RS256", "RSA").await;
}

#[tokio::test]
async fn hs256_publishes_no_keys_and_its_tokens_work() {
    let secret = "an HS256 secret of at least thirty-two bytes, for tests";
    assert!(secret.len() >= 32);
    let server = Server::start_with_env(&[
        ("TOKENGATE_SIGNING_ALG", "HS256"),
        ("TOKENGATE_HS256_SECRET", secret),
    ]);
    let client = server.client();
    let email = client.new_user("hs256").await;
    let tokens = client.signin_ok(&email).await;
    assert_eq!(jwt_header(&tokens.access_token)["alg"], "HS256");

    let jwks = jwks(&client).await;
    assert_eq!(
        jwks["keys"].as_array().unwrap().len(),
        0,
        "an HS256 secret must never be published: {jwks}"
    );
    assert!(
        !jwks.to_string().contains(secret),
        "the secret leaks: {jwks}"
    );

    client.me(&tokens.access_token).await.expect(StatusCode::OK);
    client
        .get("/v1/verify", Some(&tokens.access_token))
        .await
        .expect(StatusCode::OK);
    client
        .signout(&tokens.access_token)
        .await
        .expect(StatusCode::NO_CONTENT);
    client.me(&tokens.access_token).await.expect_invalid_token();
}

// ---------------------------------------------------------------------------------------
// Key rotation
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_new_kid_for_new_tokens_old_tokens_verify_until_the_old_key_retires() {
    let node = InProcess::start().await;
    let client = node.client();
    let email = client.new_user("rotate").await;
    let old = client.signin_ok(&email).await;
    let old_kid = kid(&old.access_token);
    assert!(kids(&jwks(&client).await).contains(&old_kid));

    let state = &node.node.state;
    let rotated_at = node.clock.now();
    assert_eq!(state.now(), rotated_at);
    let new_kid = state.sessions.admin().rotate_key().await.expect("rotate");
    assert_ne!(new_kid, old_kid);

    // The server reloads its keys every second: the new key is published, the old one stays.
    eventually(Duration::from_secs(10), "the new key in the JWKS", || {
        let client = client.clone();
        let new_kid = new_kid.clone();
        async move { kids(&jwks(&client).await).contains(&new_kid) }
    })
    .await;
    let published = jwks(&client).await;
    assert!(kids(&published).contains(&old_kid), "{published}");
    assert_public_only(&published);

    // New tokens carry the new kid. (A new key may sign only after a short activation
    // delay, so the clock moves a second at a time, for at most ten seconds.)
    let second = client.signin_ok(&email).await;
    let mut refresh = second.refresh_token.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    let fresh = loop {
        let next = client.refresh_ok(&refresh).await;
        refresh = next.refresh_token.clone();
        if kid(&next.access_token) == new_kid {
            break next;
        }
        assert!(
            Instant::now() < deadline,
            "new tokens still carry kid {} after the rotation to {new_kid}",
            kid(&next.access_token)
        );
        if node.clock.now().as_secs() - rotated_at.as_secs() < 10 {
            node.advance(Duration::from_secs(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    client.me(&fresh.access_token).await.expect(StatusCode::OK);
    let fresh_signin = client.signin_ok(&email).await;
    assert_eq!(kid(&fresh_signin.access_token), new_kid);

    // The old token keeps working, well into its lifetime.
    client.me(&old.access_token).await.expect(StatusCode::OK);
    node.advance(Duration::from_secs(600)).await;
    client.me(&old.access_token).await.expect(StatusCode::OK);
    client
        .get("/v1/verify", Some(&old.access_token))
        .await
        .expect(StatusCode::OK);

    // Until `retire_after` (access_ttl + leeway, and any activation delay) the old key is
    // published; give the reload task two turns to prove it keeps it.
    let retire_at = rotated_at.plus(tokengate_sessions::keyring::retire_after(
        state.sessions.config(),
    ));
    node.clock.set(retire_at.minus(Duration::from_secs(2)));
    node.wait_ready().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let published = jwks(&client).await;
    assert!(
        kids(&published).contains(&old_kid),
        "the old key left the JWKS before retire_after: {published}"
    );

    // Past it, the old key leaves the JWKS and its token (expired by then anyway) is refused.
    node.clock.set(retire_at.plus(Duration::from_secs(2)));
    node.wait_ready().await;
    eventually(
        Duration::from_secs(10),
        "the old key to leave the JWKS",
        || {
            let client = client.clone();
            let old_kid = old_kid.clone();
            async move { !kids(&jwks(&client).await).contains(&old_kid) }
        },
    )
    .await;
    let published = jwks(&client).await;
    assert!(kids(&published).contains(&new_kid), "{published}");
    client.me(&old.access_token).await.expect_invalid_token();
    let after = client.signin_ok(&email).await;
    assert_eq!(kid(&after.access_token), new_kid);
    client.me(&after.access_token).await.expect(StatusCode::OK);
}

// ---------------------------------------------------------------------------------------
// RFC 7009 revoke
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn revoke_without_a_token_is_invalid_request_unknown_tokens_are_ok_json_is_415() {
    let server = Server::start();
    let client = server.client();

    for body in ["", "token_type_hint=access_token", "token="] {
        let resp = post_form(&client, "/oauth2/revoke", None, body).await;
        let (error, _) = resp.expect_error(StatusCode::BAD_REQUEST);
        assert_eq!(error, "invalid_request", "body {body:?}: {}", resp.text);
    }
    client.oauth_revoke("garbage").await.expect(StatusCode::OK);
    client
        .oauth_revoke("eyJhbGciOiJFZERTQSJ9.e30.c2ln")
        .await
        .expect(StatusCode::OK);
    let unknown_refresh = format!("tgr_{}", "A".repeat(43));
    client
        .oauth_revoke(&unknown_refresh)
        .await
        .expect(StatusCode::OK);
    post_form(
        &client,
        "/oauth2/revoke",
        None,
        "token=x&token_type_hint=refresh_token",
    )
    .await
    .expect(StatusCode::OK);

    let json_body = json!({"token": "garbage"});
    let resp = client.post("/oauth2/revoke", None, Some(&json_body)).await;
    resp.expect_error(StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn revoke_an_access_token_refuses_it_but_not_the_rest_of_its_session() {
    let server = Server::start();
    let client = server.client();
    let email = client.new_user("revoke-at").await;
    let first = client.signin_ok(&email).await;
    let second = client.refresh_ok(&first.refresh_token).await;
    assert_eq!(second.session_id, first.session_id);

    client
        .oauth_revoke(&first.access_token)
        .await
        .expect(StatusCode::OK);
    client.me(&first.access_token).await.expect_invalid_token();
    client.me(&second.access_token).await.expect(StatusCode::OK);
    // Revoking it again is still 200.
    client
        .oauth_revoke(&first.access_token)
        .await
        .expect(StatusCode::OK);
    // The session's refresh token still works.
    let third = client.refresh_ok(&second.refresh_token).await;
    client.me(&third.access_token).await.expect(StatusCode::OK);
}

#[tokio::test]
async fn revoke_a_refresh_token_ends_its_whole_session() {
    let server = Server::start();
    let client = server.client();
    let email = client.new_user("revoke-rt").await;
    let tokens = client.signin_ok(&email).await;
    let other_session = client.signin_ok(&email).await;

    let resp = post_form(
        &client,
        "/oauth2/revoke",
        None,
        &format!(
            "token={}&token_type_hint=refresh_token",
            tokens.refresh_token
        ),
    )
    .await;
    resp.expect(StatusCode::OK);
    client.me(&tokens.access_token).await.expect_invalid_token();
    let refused = client.refresh(&tokens.refresh_token).await;
    refused.expect_challenge();
    client
        .me(&other_session.access_token)
        .await
        .expect(StatusCode::OK);
    client
        .oauth_revoke(&tokens.refresh_token)
        .await
        .expect(StatusCode::OK);
}

// ---------------------------------------------------------------------------------------
// RFC 7662 introspect
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn introspect_needs_an_admin() {
    let server = Server::start();
    let client = server.client();
    let people = admin_and_user(&client).await;
    let body = format!("token={}", people.user_tokens.access_token);

    let anonymous = post_form(&client, "/oauth2/introspect", None, &body).await;
    anonymous.expect_invalid_token();
    let as_user = post_form(
        &client,
        "/oauth2/introspect",
        Some(&people.user_tokens.access_token),
        &body,
    )
    .await;
    as_user.expect_invalid_token();
    let as_admin = introspect(
        &client,
        &people.admin.access_token,
        &people.user_tokens.access_token,
    )
    .await;
    assert_eq!(as_admin["active"], true, "{as_admin}");
}

#[tokio::test]
async fn introspect_access_tokens_active_then_inactive_after_signout() {
    let server = Server::start();
    let client = server.client();
    let people = admin_and_user(&client).await;
    let admin = &people.admin.access_token;
    let token = &people.user_tokens.access_token;

    let active = introspect(&client, admin, token).await;
    assert_eq!(active["active"], true, "{active}");
    assert_eq!(active["sub"], people.user["id"], "{active}");
    assert_eq!(
        active["sid"],
        people.user_tokens.session_id.as_str(),
        "{active}"
    );
    assert_eq!(active["jti"], jti(token).as_str(), "{active}");
    assert_eq!(active["exp"], jwt_claims(token)["exp"], "{active}");
    assert_eq!(active["email"], people.user_email.as_str(), "{active}");

    for garbage in ["garbage", "eyJhbGciOiJFZERTQSJ9.e30.c2ln"] {
        let inactive = introspect(&client, admin, garbage).await;
        assert_eq!(inactive, json!({"active": false}), "{garbage}");
    }

    client.signout(token).await.expect(StatusCode::NO_CONTENT);
    let after = introspect(&client, admin, token).await;
    assert_eq!(after, json!({"active": false}));
    // The session's refresh token ended with it.
    let refresh = introspect(&client, admin, &people.user_tokens.refresh_token).await;
    assert_eq!(refresh, json!({"active": false}));
}

#[tokio::test]
async fn introspect_refresh_tokens_active_until_rotated() {
    let server = Server::start();
    let client = server.client();
    let people = admin_and_user(&client).await;
    let admin = &people.admin.access_token;
    let refresh = &people.user_tokens.refresh_token;

    let active = introspect(&client, admin, refresh).await;
    assert_eq!(active["active"], true, "{active}");
    assert_eq!(
        active["sid"],
        people.user_tokens.session_id.as_str(),
        "{active}"
    );
    assert_eq!(active["sub"], people.user["id"], "{active}");

    let next = client.refresh_ok(refresh).await;
    let rotated = introspect(&client, admin, refresh).await;
    assert_eq!(rotated, json!({"active": false}));
    let current = introspect(&client, admin, &next.refresh_token).await;
    assert_eq!(current["active"], true, "{current}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspect_reports_expired_access_tokens_inactive() {
    let node = InProcess::start().await;
    let client = node.client();
    let people = admin_and_user(&client).await;
    let token = &people.user_tokens.access_token;
    assert_eq!(
        introspect(&client, &people.admin.access_token, token).await["active"],
        true
    );

    let config = &node.node.state.config;
    node.advance(config.access_ttl + config.leeway + Duration::from_secs(2))
        .await;
    // The admin's own token expired too: sign in again.
    let admin_email = jwt_claims(&people.admin.access_token)["email"]
        .as_str()
        .unwrap()
        .to_owned();
    let admin = client.signin_ok(&admin_email).await;
    let expired = introspect(&client, &admin.access_token, token).await;
    assert_eq!(expired, json!({"active": false}));
}

// ---------------------------------------------------------------------------------------
// Forward auth
// ---------------------------------------------------------------------------------------

async fn verify_with(client: &Client, bearer: Option<&str>, cookie: Option<&str>) -> Resp {
    let mut request = client.raw(Method::GET, "/v1/verify");
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    if let Some(token) = cookie {
        request = request.header(COOKIE, format!("tokengate_session={token}"));
    }
    client.send(request).await
}

#[track_caller]
fn assert_identity(resp: &Resp, user: &Value, session_id: &str) {
    resp.expect(StatusCode::OK);
    assert_eq!(header(resp, "x-auth-user-id"), user["id"].as_str().unwrap());
    assert_eq!(
        header(resp, "x-auth-email"),
        user["email"].as_str().unwrap()
    );
    assert_eq!(header(resp, "x-auth-role"), user["role"].as_str().unwrap());
    assert_eq!(header(resp, "x-auth-session-id"), session_id);
}

#[tokio::test]
async fn verify_sets_identity_headers_and_the_bearer_wins_over_the_cookie() {
    let server = Server::start();
    let client = server.client();
    let a_email = unique_email("verify-a");
    let a = client.signup_ok(&a_email).await;
    let a_tokens = client.signin_ok(&a_email).await;
    let b_email = unique_email("verify-b");
    let b = client.signup_ok(&b_email).await;
    let b_tokens = client.signin_ok(&b_email).await;

    let bearer = verify_with(&client, Some(&a_tokens.access_token), None).await;
    assert_identity(&bearer, &a, &a_tokens.session_id);
    let cookie = verify_with(&client, None, Some(&a_tokens.access_token)).await;
    assert_identity(&cookie, &a, &a_tokens.session_id);

    // Cookie of A, Bearer of B: the Bearer header wins.
    let both = verify_with(
        &client,
        Some(&b_tokens.access_token),
        Some(&a_tokens.access_token),
    )
    .await;
    assert_identity(&both, &b, &b_tokens.session_id);

    // No credential, and a signed-out one: 401.
    verify_with(&client, None, None)
        .await
        .expect_invalid_token();
    client
        .signout(&b_tokens.access_token)
        .await
        .expect(StatusCode::NO_CONTENT);
    verify_with(&client, Some(&b_tokens.access_token), None)
        .await
        .expect_invalid_token();
    // The Bearer still wins when it is the one refused: no fallback to A's cookie.
    verify_with(
        &client,
        Some(&b_tokens.access_token),
        Some(&a_tokens.access_token),
    )
    .await
    .expect_invalid_token();
}

// ---------------------------------------------------------------------------------------
// Revocation events
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn revocation_events_need_an_admin() {
    let server = Server::start();
    let client = server.client();
    let people = admin_and_user(&client).await;

    client
        .get("/v1/events/revocations", None)
        .await
        .expect_invalid_token();
    let (error, _) = client
        .get(
            "/v1/events/revocations",
            Some(&people.user_tokens.access_token),
        )
        .await
        .expect_error(StatusCode::FORBIDDEN);
    assert_eq!(error, "insufficient_scope");
}

/// The `data` of the first `revocation` event in `text` whose `id` is `id`.
fn revocation_event(text: &str, id: &str) -> Option<Value> {
    let text = text.replace("\r\n", "\n");
    for block in text.split("\n\n") {
        let mut event = None;
        let mut data = String::new();
        for line in block.lines() {
            if let Some(name) = line.strip_prefix("event:") {
                event = Some(name.trim().to_owned());
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push_str(value.strip_prefix(' ').unwrap_or(value));
            }
        }
        if event.as_deref() != Some("revocation") {
            continue;
        }
        if let Ok(value) = serde_json::from_str::<Value>(&data) {
            if value["id"] == id {
                return Some(value);
            }
        }
    }
    None
}

/// Read the open event `stream` until a `revocation` event for `id` arrives (its `data`),
/// panicking after `bound`.
pub(crate) async fn next_revocation_event(
    stream: &mut reqwest::Response,
    id: &str,
    bound: Duration,
) -> Value {
    let deadline = Instant::now() + bound;
    let mut received = String::new();
    loop {
        if let Some(event) = revocation_event(&received, id) {
            return event;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.chunk()).await {
            Ok(Ok(Some(bytes))) => received.push_str(&String::from_utf8_lossy(&bytes)),
            Ok(Ok(None)) => panic!("the event stream ended; received {received:?}"),
            Ok(Err(error)) => panic!("reading the event stream: {error}; received {received:?}"),
            Err(_) => {
                panic!("no revocation event for {id} within {bound:?}; received {received:?}")
            }
        }
    }
}

#[tokio::test]
async fn revocation_events_stream_a_session_revocation_on_signout() {
    let server = Server::start();
    let client = server.client();
    let people = admin_and_user(&client).await;

    let http = reqwest::Client::new();
    let mut stream = http
        .get(format!("{}/v1/events/revocations", server.url()))
        .bearer_auth(&people.admin.access_token)
        .send()
        .await
        .expect("open the event stream");
    assert_eq!(stream.status(), StatusCode::OK);
    let content_type = stream
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/event-stream"),
        "content-type {content_type:?}"
    );

    // Headers have arrived, so the handler has subscribed: sign the user out now.
    client
        .signout(&people.user_tokens.access_token)
        .await
        .expect(StatusCode::NO_CONTENT);

    let sid = people.user_tokens.session_id.as_str();
    let event = next_revocation_event(&mut stream, sid, Duration::from_secs(5)).await;
    assert_eq!(event["kind"], "session", "{event}");
    assert_eq!(event["id"], sid, "{event}");
    assert!(event["exp"].is_i64(), "{event}");
}
