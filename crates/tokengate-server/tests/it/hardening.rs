//! The findings of the outside security review (issue 16) that concern the revocation
//! surface: the event stream outliving its credential, the bulk import's unbounded `exp`,
//! repeats and whole-body parse, repeated RFC 7009 revocations, and revoking everything
//! issued before a key compromise.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::*;

/// Sign up (the first user of a fresh store is the admin) and sign in.
async fn first_admin(client: &Client) -> Tokens {
    let email = unique_email("admin");
    let user = client.signup_ok(&email).await;
    assert_eq!(user["role"], "admin", "{user}");
    client.signin_ok(&email).await
}

/// The first user (an admin) signed in, then an ordinary user `email` signed in.
async fn admin_and_user(client: &Client, prefix: &str) -> (Tokens, String, Tokens) {
    let admin = first_admin(client).await;
    let email = client.new_user(prefix).await;
    let user = client.signin_ok(&email).await;
    (admin, email, user)
}

/// Open the revocation event stream with `token`.
async fn open_events(url: &str, token: &str) -> reqwest::Response {
    let stream = reqwest::Client::new()
        .get(format!("{url}/v1/events/revocations"))
        .bearer_auth(token)
        .send()
        .await
        .expect("open the event stream");
    assert_eq!(stream.status(), StatusCode::OK);
    stream
}

/// Read `stream` until its body ends; panic if it is still open after `bound`.
async fn ends_within(stream: &mut reqwest::Response, bound: Duration, what: &str) {
    let deadline = Instant::now() + bound;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.chunk()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) | Ok(Err(_)) => return,
            Err(_) => panic!("the event stream is still open {bound:?} after {what}"),
        }
    }
}

#[tokio::test]
async fn the_event_stream_ends_when_its_admin_signs_out() {
    let server = Server::start();
    let client = server.client();
    let admin = first_admin(&client).await;
    let mut stream = open_events(&server.url(), &admin.access_token).await;

    client
        .signout(&admin.access_token)
        .await
        .expect(StatusCode::NO_CONTENT);
    ends_within(&mut stream, Duration::from_secs(5), "the admin signed out").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_ends_when_its_token_expires() {
    let server = InProcess::start().await;
    let client = server.client();
    let admin = first_admin(&client).await;
    let mut stream = open_events(&server.url(), &admin.access_token).await;

    let config = &server.node.state.config;
    // Just before exp + leeway the stream stays open...
    server.advance(config.access_ttl).await;
    let quiet = tokio::time::timeout(Duration::from_millis(1500), stream.chunk()).await;
    assert!(
        !matches!(quiet, Ok(Ok(None))),
        "the stream ended before its token expired"
    );
    // ...and once past it, the stream ends.
    server.advance(config.leeway + Duration::from_secs(1)).await;
    ends_within(&mut stream, Duration::from_secs(5), "the token expired").await;
}

/// POST a raw JSON body to the import as `token`.
async fn import_raw(client: &Client, token: &str, body: Vec<u8>) -> Resp {
    client
        .send(
            client
                .raw(Method::POST, "/v1/admin/revocations")
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_exp_past_refresh_ttl_is_refused_naming_the_entry() {
    let server = InProcess::start().await;
    let client = server.client();
    let admin = first_admin(&client).await;
    let state = &server.node.state;
    let now = state.now().as_secs();
    let before = state.index().len();

    let far = [
        json!(i64::MAX),
        json!(now + state.config.refresh_ttl.as_secs() as i64 + 3600),
    ];
    for exp in far {
        let body = json!([
            {"jti": Uuid::new_v4().to_string(), "exp": now + 60},
            {"jti": Uuid::new_v4().to_string(), "exp": exp},
        ]);
        let (_, description) = client
            .import_revocations(&admin.access_token, &body)
            .await
            .expect_error(StatusCode::BAD_REQUEST);
        assert!(description.contains("entry 1"), "{description}");
        assert_eq!(state.index().len(), before, "{exp}: something was imported");
    }
    // Up to now + refresh_ttl is fine.
    let body = json!([{"jti": Uuid::new_v4().to_string(), "exp": now + state.config.refresh_ttl.as_secs() as i64}]);
    client
        .import_revocations(&admin.access_token, &body)
        .await
        .expect(StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_of_one_jti_many_times_is_stored_once() {
    let server = InProcess::start().await;
    let client = server.client();
    let admin = first_admin(&client).await;
    let state = &server.node.state;
    let now = state.now();
    let before = server.stored_revocations().await.len();

    let jti = Uuid::new_v4();
    let body: Vec<Value> = (0..10_000)
        .map(|i| json!({"jti": jti.to_string(), "exp": now.as_secs() + 60 + i % 7}))
        .collect();
    client
        .import_revocations(&admin.access_token, &Value::Array(body))
        .await
        .expect(StatusCode::NO_CONTENT);
    let after = server.stored_revocations().await;
    assert_eq!(
        after.len(),
        before + 1,
        "one jti stored {} times",
        after.len() - before
    );
    let kept = after
        .iter()
        .find(|r| r.subject_id() == jti)
        .expect("the jti is stored");
    assert_eq!(
        kept.exp().as_secs(),
        now.as_secs() + 66,
        "the latest exp is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_import_of_non_objects_is_refused_at_entry_0() {
    let server = InProcess::start().await;
    let client = server.client();
    let admin = first_admin(&client).await;

    // Almost 16 MiB of `[0,0,...]`.
    let count = 8 * 1024 * 1024 - 2;
    let mut body = Vec::with_capacity(2 * count + 2);
    body.push(b'[');
    for i in 0..count {
        if i > 0 {
            body.push(b',');
        }
        body.push(b'0');
    }
    body.push(b']');
    assert!(body.len() <= 16 * 1024 * 1024);
    let resp = import_raw(&client, &admin.access_token, body).await;
    let (error, description) = resp.expect_error(StatusCode::BAD_REQUEST);
    assert_eq!(error, "invalid_request");
    assert!(description.starts_with("entry 0:"), "{description}");

    // The rest of the contract stands: not an array 422, wrong type 415, too many 400.
    let resp = import_raw(&client, &admin.access_token, b"{\"jti\": 1}".to_vec()).await;
    resp.expect_error(StatusCode::UNPROCESSABLE_ENTITY);
    let resp = import_raw(&client, &admin.access_token, b"[{\"jti\": ".to_vec()).await;
    resp.expect_error(StatusCode::BAD_REQUEST);
    let resp = client
        .send(
            client
                .raw(Method::POST, "/v1/admin/revocations")
                .bearer_auth(&admin.access_token)
                .header("content-type", "text/plain")
                .body("[]"),
        )
        .await;
    resp.expect_error(StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_one_access_token_again_writes_nothing_new() {
    let server = InProcess::start().await;
    let client = server.client();
    let (admin, email, user) = admin_and_user(&client, "revoker").await;
    let jti = jti(&user.access_token);
    let (_, before) = server.stored_records_of(&jti).await;

    for _ in 0..5 {
        client
            .oauth_revoke(&user.access_token)
            .await
            .expect(StatusCode::OK);
    }
    let (of_token, all) = server.stored_records_of(&jti).await;
    assert_eq!(
        of_token, 1,
        "one token revoked 5 times stored {of_token} times"
    );
    assert_eq!(all, before + 1);
    client.me(&user.access_token).await.expect_invalid_token();
    client.me(&admin.access_token).await.expect(StatusCode::OK);

    // A refresh token's session is ended once, however often it is revoked.
    let other = client.signin_ok(&email).await;
    for _ in 0..3 {
        client
            .oauth_revoke(&other.refresh_token)
            .await
            .expect(StatusCode::OK);
    }
    let (of_session, _) = server.stored_records_of(&other.session_id).await;
    assert_eq!(
        of_session, 1,
        "one session ended 3 times stored {of_session} times"
    );
    client.me(&other.access_token).await.expect_invalid_token();
}

/// Tokens on both sides of a cutoff on a running server: an admin, a user `email`
/// signed in (`old`), then a cutoff (Unix seconds) a whole second after `old`'s `iat`,
/// then the same user signed in again (`new`).
struct AcrossCutoff {
    server: Server,
    client: Client,
    admin: Tokens,
    email: String,
    old: Tokens,
    cutoff: i64,
    new: Tokens,
}

async fn across_cutoff() -> AcrossCutoff {
    let server = Server::start();
    let client = server.client();
    let (admin, email, old) = admin_and_user(&client, "victim").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let cutoff = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let new = client.signin_ok(&email).await;
    AcrossCutoff {
        server,
        client,
        admin,
        email,
        old,
        cutoff,
        new,
    }
}

#[tokio::test]
async fn revoke_issued_before_refuses_older_tokens_on_the_running_server() {
    let t = across_cutoff().await;

    // A cutoff in the future is refused.
    let future = (t.cutoff + 3600).to_string();
    let out = t.server.cli(&["revoke", "--issued-before", &future], None);
    assert!(!out.success, "{}", out.stdout);

    let cutoff = t.cutoff.to_string();
    t.server
        .cli_ok(&["revoke", "--issued-before", &cutoff], None);
    until_refused(
        &t.client,
        &t.old.access_token,
        Duration::from_secs(3),
        "the old token",
    )
    .await;
    until_refused(
        &t.client,
        &t.admin.access_token,
        Duration::from_secs(3),
        "the admin's old token",
    )
    .await;
    t.client
        .me(&t.new.access_token)
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn revoke_user_issued_before_spares_other_users() {
    let t = across_cutoff().await;
    let cutoff = time::OffsetDateTime::from_unix_timestamp(t.cutoff)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();

    t.server.cli_ok(
        &["revoke", "--user", &t.email, "--issued-before", &cutoff],
        None,
    );
    until_refused(
        &t.client,
        &t.old.access_token,
        Duration::from_secs(3),
        "the user's old token",
    )
    .await;
    t.client
        .me(&t.new.access_token)
        .await
        .expect(StatusCode::OK);
    t.client
        .me(&t.admin.access_token)
        .await
        .expect(StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_revokes_everything_issued_before() {
    let server = InProcess::start().await;
    let client = server.client();
    let (admin, email, old) = admin_and_user(&client, "victim").await;
    let state = &server.node.state;
    let cutoff = state.now().as_secs() + 1;
    server.advance(Duration::from_secs(1)).await;

    let (error, _) = client
        .post(
            "/v1/admin/revocations/issued-before",
            Some(&old.access_token),
            Some(&json!({"issued_before": cutoff})),
        )
        .await
        .expect_error(StatusCode::FORBIDDEN);
    assert_eq!(error, "insufficient_scope");
    client
        .post(
            "/v1/admin/revocations/issued-before",
            Some(&admin.access_token),
            Some(&json!({"issued_before": cutoff + 3600})),
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST);
    client
        .post(
            "/v1/admin/revocations/issued-before",
            Some(&admin.access_token),
            Some(&json!({"issued_before": cutoff})),
        )
        .await
        .expect(StatusCode::NO_CONTENT);
    client.me(&old.access_token).await.expect_invalid_token();
    let new = client.signin_ok(&email).await;
    client.me(&new.access_token).await.expect(StatusCode::OK);
}
