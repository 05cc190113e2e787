//! An issuer's logout signals over HTTP, in process, from a stand-in provider's keys:
//! `POST /v1/gate/{issuer}/backchannel-logout` (OpenID Connect Back-Channel Logout 1.0) and
//! `POST /v1/gate/{issuer}/ssf` (RFC 8935 push of Security Event Tokens). What each answer
//! looks like, that a refused signal revokes nothing, and that an accepted one shows in the
//! revocation event stream and in `/metrics`. (Every defective token is covered in the gate
//! crate's tests; the provider-driven cluster test is in `oidc.rs`.)

use std::time::Duration;

use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokengate_core::{Algorithm, SigningKey};
use tokengate_gate::ids::{digest, IdKind};
use tokengate_gate::signals::{BACKCHANNEL_LOGOUT_EVENT, CAEP_SESSION_REVOKED};
use tokengate_gate::testing::{provider_jwks, sign, TestProvider};

use crate::common::{InProcess, Resp};
use crate::gate::{sso_issuer, unix_now};
use crate::interop::next_revocation_event;

const CLIENT_ID: &str = "my-app";
const SSF_AUDIENCE: &str = "https://gate.example.com";

/// A node gating a stand-in provider as issuer `sso`, taking its logout tokens and SETs.
struct Fixture {
    key: SigningKey,
    provider: TestProvider,
    server: InProcess,
}

impl Fixture {
    async fn start() -> Fixture {
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let provider = TestProvider::start(provider_jwks(&[&key])).await;
        let mut sso = sso_issuer(&provider.issuer());
        sso.backchannel_logout = Some(tokengate_gate::BackchannelLogout {
            client_id: CLIENT_ID.into(),
        });
        sso.ssf = Some(tokengate_gate::SharedSignals {
            audience: SSF_AUDIENCE.into(),
        });
        let server = InProcess::start_with(move |c| c.issuers = vec![sso]).await;
        Fixture {
            key,
            provider,
            server,
        }
    }

    fn header(&self, typ: &str) -> Value {
        json!({"alg": "ES256", "typ": typ, "kid": self.key.kid()})
    }

    /// An access token of alice in session `sid`.
    fn access_token(&self, sid: &str) -> String {
        let now = unix_now();
        sign(
            &self.key,
            self.header("JWT"),
            json!({
                "iss": self.provider.issuer(), "aud": "my-app", "sub": "alice", "sid": sid,
                "jti": uuid::Uuid::new_v4().to_string(), "iat": now - 2, "exp": now + 300,
            }),
        )
    }

    /// A logout token for session `sid` of alice, with `patch` merged into its claims.
    fn logout_token(&self, sid: &str, patch: Value) -> String {
        let now = unix_now();
        let mut claims = json!({
            "iss": self.provider.issuer(), "aud": CLIENT_ID, "iat": now, "exp": now + 120,
            "jti": uuid::Uuid::new_v4().to_string(), "sid": sid, "sub": "alice",
            "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
        });
        for (k, v) in patch.as_object().unwrap() {
            claims[k] = v.clone();
        }
        sign(&self.key, self.header("logout+jwt"), claims)
    }

    /// A SET revoking session `sid`, with `patch` merged into its claims.
    fn session_revoked(&self, sid: &str, patch: Value) -> String {
        let mut claims = json!({
            "iss": self.provider.issuer(), "aud": SSF_AUDIENCE, "iat": unix_now(),
            "jti": uuid::Uuid::new_v4().to_string(),
            "events": {CAEP_SESSION_REVOKED: {"subject": {"session": {"format": "opaque", "id": sid}}}},
        });
        for (k, v) in patch.as_object().unwrap() {
            claims[k] = v.clone();
        }
        sign(&self.key, self.header("secevent+jwt"), claims)
    }

    async fn backchannel(&self, issuer: &str, body: String, content_type: &str) -> Resp {
        let client = self.server.client();
        client
            .send(
                client
                    .raw(
                        reqwest::Method::POST,
                        &format!("/v1/gate/{issuer}/backchannel-logout"),
                    )
                    .header(CONTENT_TYPE, content_type)
                    .body(body),
            )
            .await
    }

    async fn logout(&self, token: &str) -> Resp {
        self.backchannel(
            "sso",
            format!("logout_token={token}"),
            "application/x-www-form-urlencoded",
        )
        .await
    }

    async fn push(&self, issuer: &str, set: &str, content_type: &str) -> Resp {
        let client = self.server.client();
        client
            .send(
                client
                    .raw(reqwest::Method::POST, &format!("/v1/gate/{issuer}/ssf"))
                    .header(CONTENT_TYPE, content_type)
                    .body(set.to_owned()),
            )
            .await
    }

    async fn verify_status(&self, token: &str) -> StatusCode {
        self.server
            .client()
            .get("/v1/verify", Some(token))
            .await
            .status
    }
}

/// A 400 of the back-channel logout route: `invalid_request`, `no-store`; its description.
#[track_caller]
fn logout_refused(resp: &Resp) -> String {
    let (error, description) = resp.expect_error(StatusCode::BAD_REQUEST);
    assert_eq!(error, "invalid_request", "{}", resp.text);
    assert_eq!(resp.headers[CACHE_CONTROL], "no-store", "{}", resp.text);
    description
}

/// A 400 of the SSF route: RFC 8935's `{"err","description"}`; its `err`.
#[track_caller]
fn set_refused(resp: &Resp) -> String {
    assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{}", resp.text);
    let body = resp.json();
    assert!(body["description"].is_string(), "{body}");
    body["err"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_back_channel_logout_ends_its_session_in_the_event_stream_and_metrics() {
    let f = Fixture::start().await;
    let client = f.server.client();
    let admin = client
        .signup_ok(&crate::common::unique_email("admin"))
        .await;
    let admin = client.signin_ok(admin["email"].as_str().unwrap()).await;
    let (ended, kept) = (f.access_token("sid-1"), f.access_token("sid-2"));
    assert_eq!(f.verify_status(&ended).await, StatusCode::OK);

    let mut events = reqwest::Client::new()
        .get(format!("{}/v1/events/revocations", f.server.url()))
        .bearer_auth(&admin.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);

    let resp = f.logout(&f.logout_token("sid-1", json!({}))).await;
    resp.expect(StatusCode::OK);
    assert_eq!(resp.headers[CACHE_CONTROL], "no-store");
    assert_eq!(f.verify_status(&ended).await, StatusCode::UNAUTHORIZED);
    assert_eq!(f.verify_status(&kept).await, StatusCode::OK);

    // The event stream tells of it under the session's id in the index (docs/gate.md).
    let id = digest("sso", IdKind::Session, b"sid-1").to_string();
    let event = next_revocation_event(&mut events, &id, Duration::from_secs(5)).await;
    assert_eq!(event["kind"], "session", "{event}");

    // A replay, then a pushed SET for the other session.
    let replay = f
        .logout(&f.logout_token("sid-1", json!({"jti": "fixed"})))
        .await;
    replay.expect(StatusCode::OK);
    let again = f
        .logout(&f.logout_token("sid-1", json!({"jti": "fixed"})))
        .await;
    assert!(logout_refused(&again).contains("replayed"));
    f.push(
        "sso",
        &f.session_revoked("sid-2", json!({})),
        "application/secevent+jwt",
    )
    .await
    .expect(StatusCode::ACCEPTED);
    assert_eq!(f.verify_status(&kept).await, StatusCode::UNAUTHORIZED);

    let metrics = client.get("/metrics", None).await.text;
    for line in [
        r#"tokengate_gate_signals_total{issuer="sso",kind="backchannel_logout",outcome="accepted"} 2"#,
        r#"tokengate_gate_signals_total{issuer="sso",kind="backchannel_logout",outcome="replayed"} 1"#,
        r#"tokengate_gate_signals_total{issuer="sso",kind="ssf",outcome="accepted"} 1"#,
        r#"tokengate_gate_signal_events_total{issuer="sso",event="session_revoked"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_back_channel_logout_is_a_json_400_and_revokes_nothing() {
    let f = Fixture::start().await;
    let token = f.access_token("sid-1");
    let form = "application/x-www-form-urlencoded";
    let logout = f.logout_token("sid-1", json!({}));

    let as_json = f
        .backchannel(
            "sso",
            json!({"logout_token": logout}).to_string(),
            "application/json",
        )
        .await;
    assert!(logout_refused(&as_json).contains("Content-Type"));
    let missing = f.backchannel("sso", "state=x".into(), form).await;
    assert!(logout_refused(&missing).contains("logout_token"));
    let twice = f
        .backchannel(
            "sso",
            format!("logout_token={logout}&logout_token={logout}"),
            form,
        )
        .await;
    logout_refused(&twice);
    for (what, bad) in [
        (
            "expired",
            f.logout_token("sid-1", json!({"exp": unix_now() - 60})),
        ),
        ("nonce", f.logout_token("sid-1", json!({"nonce": "abc"}))),
        (
            "wrong aud",
            f.logout_token("sid-1", json!({"aud": "other"})),
        ),
        ("no events", f.logout_token("sid-1", json!({"events": {}}))),
        ("garbage", "not.a.jwt".to_owned()),
    ] {
        let description = logout_refused(&f.logout(&bad).await);
        assert!(!description.is_empty(), "{what}");
    }
    assert_eq!(f.verify_status(&token).await, StatusCode::OK);

    // An unknown issuer, and one without the table: 404 (JSON).
    let (error, _) = f
        .backchannel("nobody", format!("logout_token={logout}"), form)
        .await
        .expect_error(StatusCode::NOT_FOUND);
    assert_eq!(error, "not_found");
    f.logout(&logout).await.expect(StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_set_is_202_and_its_refusals_use_rfc_8935_codes() {
    let f = Fixture::start().await;
    let token = f.access_token("sid-1");
    let secevent = "application/secevent+jwt";

    let set = f.session_revoked("sid-1", json!({}));
    assert_eq!(
        set_refused(&f.push("sso", &set, "application/jwt").await),
        "invalid_request"
    );
    assert_eq!(
        set_refused(
            &f.push(
                "sso",
                &f.session_revoked("sid-1", json!({"aud": "elsewhere"})),
                secevent
            )
            .await
        ),
        "invalid_audience"
    );
    assert_eq!(
        set_refused(
            &f.push(
                "sso",
                &f.session_revoked("sid-1", json!({"iss": "https://evil.example"})),
                secevent
            )
            .await
        ),
        "invalid_issuer"
    );
    let forged = {
        let other = SigningKey::generate(Algorithm::ES256).unwrap();
        let mut parts: Vec<String> = set.split('.').map(str::to_owned).collect();
        let signed = sign(&other, f.header("secevent+jwt"), json!({}));
        parts[2] = signed.rsplit('.').next().unwrap().to_owned();
        parts.join(".")
    };
    assert_eq!(
        set_refused(&f.push("sso", &forged, secevent).await),
        "invalid_key"
    );
    assert_eq!(
        f.verify_status(&token).await,
        StatusCode::OK,
        "nothing was revoked"
    );

    let accepted = f
        .push("sso", &set, "application/secevent+jwt; charset=utf-8")
        .await;
    accepted.expect(StatusCode::ACCEPTED);
    assert_eq!(f.verify_status(&token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        set_refused(&f.push("sso", &set, secevent).await),
        "invalid_request"
    );

    let (error, _) = f
        .push("nobody", &set, secevent)
        .await
        .expect_error(StatusCode::NOT_FOUND);
    assert_eq!(error, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_without_signal_tables_answers_404_on_both_routes() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let provider = TestProvider::start(provider_jwks(&[&key])).await;
    let sso = sso_issuer(&provider.issuer());
    let server = InProcess::start_with(move |c| c.issuers = vec![sso]).await;
    let client = server.client();
    for (path, content_type) in [
        (
            "/v1/gate/sso/backchannel-logout",
            "application/x-www-form-urlencoded",
        ),
        ("/v1/gate/sso/ssf", "application/secevent+jwt"),
    ] {
        let resp = client
            .send(
                client
                    .raw(reqwest::Method::POST, path)
                    .header(CONTENT_TYPE, content_type)
                    .body("logout_token=x"),
            )
            .await;
        let (error, description) = resp.expect_error(StatusCode::NOT_FOUND);
        assert_eq!(error, "not_found", "{path}");
        assert!(
            description.contains("does not accept"),
            "{path}: {description}"
        );
    }
}
