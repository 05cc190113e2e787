//! Sessions end to end: refresh rotation and reuse detection, password change,
//! sign-out everywhere, listing and ending sessions, the admin endpoints and bulk import.

use crate::common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokengate_core::{Claims, RevocationKind};
use uuid::Uuid;

/// Refresh tokens are refused with a 401 and an `invalid_grant` (or `invalid_token`) body.
#[track_caller]
fn assert_refresh_refused(resp: &Resp) -> String {
    let (error, description) = resp.expect_error(StatusCode::UNAUTHORIZED);
    assert!(
        error == "invalid_grant" || error == "invalid_token",
        "unexpected error code {error}: {}",
        resp.text
    );
    resp.expect_challenge();
    description
}

fn is_rfc3339(value: &Value) -> bool {
    value.as_str().is_some_and(|s| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
    })
}

#[tokio::test]
async fn refresh_rotates_to_working_tokens_and_a_reused_refresh_token_revokes_the_session() {
    let server = Server::start();
    let client = server.client();
    let email = client.new_user("rotate").await;
    let first = client.signin_ok(&email).await;
    let bystander = client.signin_ok(&email).await;

    let resp = client.refresh(&first.refresh_token).await;
    let second = Tokens::from_resp(&resp);
    assert_eq!(second.session_id, first.session_id, "{}", resp.text);
    assert_eq!(second.token_type, "Bearer");
    assert_eq!(second.expires_in, 900);
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_ne!(jti(&second.access_token), jti(&first.access_token));
    let me = client.me(&second.access_token).await;
    me.expect(StatusCode::OK);
    assert_eq!(me.json()["session_id"], first.session_id.as_str());

    let third = client.refresh_ok(&second.refresh_token).await;
    assert_eq!(third.session_id, first.session_id);
    client.me(&third.access_token).await.expect(StatusCode::OK);
    // Rotation keeps one session; it does not add entries to the list.
    let list = client.sessions(&third.access_token).await;
    list.expect(StatusCode::OK);
    assert_eq!(list.json().as_array().unwrap().len(), 2, "{}", list.text);

    // `first.refresh_token` was already used: theft. 401, and the whole session goes.
    let description = assert_refresh_refused(&client.refresh(&first.refresh_token).await);
    assert!(
        description.contains("already used") || description.contains("reuse"),
        "{description}"
    );
    for access in [&first, &second, &third] {
        client.me(&access.access_token).await.expect_invalid_token();
    }
    assert_refresh_refused(&client.refresh(&third.refresh_token).await);
    assert_refresh_refused(&client.refresh(&second.refresh_token).await);

    // Another session of the same user is not part of the stolen family.
    client
        .me(&bystander.access_token)
        .await
        .expect(StatusCode::OK);
    client.refresh_ok(&bystander.refresh_token).await;
}

#[tokio::test]
async fn signout_revokes_every_access_token_of_the_session_and_its_refresh_token() {
    let server = Server::start();
    let client = server.client();
    let email = client.new_user("family").await;
    let first = client.signin_ok(&email).await;
    let other_session = client.signin_ok(&email).await;
    let second = client.refresh_ok(&first.refresh_token).await;
    let third = client.refresh_ok(&second.refresh_token).await;

    // Sign out with the oldest access token of the session.
    client
        .signout(&first.access_token)
        .await
        .expect(StatusCode::NO_CONTENT);
    for tokens in [&first, &second, &third] {
        client.me(&tokens.access_token).await.expect_invalid_token();
    }
    let description = assert_refresh_refused(&client.refresh(&third.refresh_token).await);
    assert!(
        description.contains("ended") || description.contains("revoked"),
        "{description}"
    );
    client
        .me(&other_session.access_token)
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn unknown_and_malformed_refresh_tokens_are_refused_with_a_clear_description() {
    let server = Server::start();
    let client = server.client();
    let email = client.new_user("badrefresh").await;
    let tokens = client.signin_ok(&email).await;

    let unknown = format!("tgr_{}", "A".repeat(43));
    let description = assert_refresh_refused(&client.refresh(&unknown).await);
    assert!(description.contains("unknown"), "{description}");

    let malformed = [
        "garbage".to_owned(),
        String::new(),
        "tgr_".to_owned(),
        format!("tgr_{}", "A".repeat(4096)),
        tokens.access_token.clone(),
        tokens.refresh_token[..tokens.refresh_token.len() - 1].to_owned(),
    ];
    for text in &malformed {
        let description = assert_refresh_refused(&client.refresh(text).await);
        assert!(
            description.contains("malformed") || description.contains("unknown"),
            "{text:?}: {description}"
        );
    }
    client
        .post("/v1/auth/refresh", None, Some(&json!({})))
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY);
    client
        .post(
            "/v1/auth/refresh",
            None,
            Some(&json!({"refresh_token": 42})),
        )
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY);

    // None of that disturbed the real session.
    client.refresh_ok(&tokens.refresh_token).await;
}

#[tokio::test]
async fn password_change_keeps_the_current_session_and_ends_every_other_one() {
    let server = Server::start();
    let client = server.client();
    let email = client.new_user("password").await;
    let current = client.signin_ok(&email).await;
    let other = client.signin_ok(&email).await;
    let another = client.signin_ok(&email).await;

    client
        .password(&current.access_token, PASSWORD, NEW_PASSWORD)
        .await
        .expect(StatusCode::NO_CONTENT);

    client
        .me(&current.access_token)
        .await
        .expect(StatusCode::OK);
    for ended in [&other, &another] {
        client.me(&ended.access_token).await.expect_invalid_token();
        assert_refresh_refused(&client.refresh(&ended.refresh_token).await);
    }
    let refreshed = client.refresh_ok(&current.refresh_token).await;
    assert_eq!(refreshed.session_id, current.session_id);

    client
        .signin(&email, PASSWORD)
        .await
        .expect_error(StatusCode::UNAUTHORIZED);
    Tokens::from_resp(&client.signin(&email, NEW_PASSWORD).await);
}

#[tokio::test]
async fn password_change_with_a_wrong_current_password_or_a_weak_new_one_changes_nothing() {
    let server = Server::start();
    let client = server.client();
    let email = client.new_user("nochange").await;
    let current = client.signin_ok(&email).await;
    let other = client.signin_ok(&email).await;

    let wrong = client
        .password(&current.access_token, "not my password", NEW_PASSWORD)
        .await;
    assert!(
        wrong.status == StatusCode::FORBIDDEN || wrong.status == StatusCode::UNAUTHORIZED,
        "wrong current password: {} {}",
        wrong.status,
        wrong.text
    );
    wrong.expect_error(wrong.status);

    let (_, description) = client
        .password(&current.access_token, PASSWORD, "short")
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(description.contains("password"), "{description}");

    client
        .password(&current.access_token, PASSWORD, "")
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY);
    client
        .post(
            "/v1/auth/password",
            Some(&current.access_token),
            Some(&json!({})),
        )
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY);

    // Nothing was revoked and the password is unchanged.
    client.me(&other.access_token).await.expect(StatusCode::OK);
    client
        .me(&current.access_token)
        .await
        .expect(StatusCode::OK);
    client
        .signin(&email, NEW_PASSWORD)
        .await
        .expect_error(StatusCode::UNAUTHORIZED);
    client.signin_ok(&email).await;

    // Without a token: 401.
    client
        .post(
            "/v1/auth/password",
            None,
            Some(&json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD})),
        )
        .await
        .expect_invalid_token();
}

#[tokio::test]
async fn signout_all_ends_every_session_of_the_user_and_none_of_another_user() {
    let server = Server::start();
    let client = server.client();
    let email = unique_email("all");
    let neighbour_email = unique_email("neighbour");
    client.signup_ok(&email).await;
    client.signup_ok(&neighbour_email).await;
    let laptop = client.signin_ok(&email).await;
    let phone = client.signin_ok(&email).await;
    let neighbour = client.signin_ok(&neighbour_email).await;

    client
        .signout_all(&phone.access_token)
        .await
        .expect(StatusCode::NO_CONTENT);

    for ended in [&laptop, &phone] {
        client.me(&ended.access_token).await.expect_invalid_token();
        assert_refresh_refused(&client.refresh(&ended.refresh_token).await);
    }
    client
        .me(&neighbour.access_token)
        .await
        .expect(StatusCode::OK);
    let rotated = client.refresh_ok(&neighbour.refresh_token).await;
    client
        .me(&rotated.access_token)
        .await
        .expect(StatusCode::OK);
    let list = client.sessions(&rotated.access_token).await;
    list.expect(StatusCode::OK);
    assert_eq!(list.json().as_array().unwrap().len(), 1, "{}", list.text);
}

#[tokio::test]
async fn sessions_lists_own_live_sessions_with_exactly_one_current() {
    let server = Server::start();
    let device_a = Client::with_user_agent(&server.url(), "device-a/1.0");
    let device_b = Client::with_user_agent(&server.url(), "device-b/2.0");
    let email = unique_email("list");
    let stranger_email = unique_email("stranger");
    device_a.signup_ok(&email).await;
    device_a.signup_ok(&stranger_email).await;
    let a = device_a.signin_ok(&email).await;
    let b = device_b.signin_ok(&email).await;
    let stranger = device_b.signin_ok(&stranger_email).await;

    let resp = device_a.sessions(&a.access_token).await;
    resp.expect(StatusCode::OK);
    let list = resp.json();
    let sessions = list.as_array().expect("a JSON array");
    assert_eq!(sessions.len(), 2, "{list}");
    let current: Vec<&Value> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1, "exactly one current session: {list}");
    assert_eq!(current[0]["id"], a.session_id.as_str(), "{list}");
    for (tokens, agent) in [(&a, "device-a/1.0"), (&b, "device-b/2.0")] {
        let session = sessions
            .iter()
            .find(|s| s["id"] == tokens.session_id.as_str())
            .unwrap_or_else(|| panic!("session {} missing: {list}", tokens.session_id));
        assert_eq!(session["user_agent"], agent, "{session}");
        assert_eq!(session["ip"], "127.0.0.1", "{session}");
        assert!(is_rfc3339(&session["created_at"]), "{session}");
        assert!(is_rfc3339(&session["last_seen_at"]), "{session}");
        assert!(session["current"].is_boolean(), "{session}");
    }
    assert!(
        !list.to_string().contains(&stranger.session_id),
        "another user's session is listed: {list}"
    );

    // From the other device, the other session is the current one.
    let from_b = device_b.sessions(&b.access_token).await.json();
    let current: Vec<&Value> = from_b
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["current"] == true)
        .collect();
    assert_eq!(current.len(), 1, "{from_b}");
    assert_eq!(current[0]["id"], b.session_id.as_str(), "{from_b}");

    // A signed-out session is no longer listed.
    device_b
        .signout(&b.access_token)
        .await
        .expect(StatusCode::NO_CONTENT);
    let after = device_a.sessions(&a.access_token).await.json();
    let ids: Vec<&str> = after
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![a.session_id.as_str()], "{after}");
    device_a.sessions("garbage").await.expect_invalid_token();
}

#[tokio::test]
async fn deleting_an_own_other_session_revokes_it_at_once() {
    let server = Server::start();
    let client = server.client();
    let email = client.new_user("delete").await;
    let keep = client.signin_ok(&email).await;
    let lost_phone = client.signin_ok(&email).await;

    client
        .delete_session(&keep.access_token, &lost_phone.session_id)
        .await
        .expect(StatusCode::NO_CONTENT);
    client
        .me(&lost_phone.access_token)
        .await
        .expect_invalid_token();
    assert_refresh_refused(&client.refresh(&lost_phone.refresh_token).await);
    client.me(&keep.access_token).await.expect(StatusCode::OK);
    let list = client.sessions(&keep.access_token).await.json();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["id"], keep.session_id.as_str(), "{list}");

    // Deleting it again: it is no longer a live session.
    client
        .delete_session(&keep.access_token, &lost_phone.session_id)
        .await
        .expect_error(StatusCode::NOT_FOUND);

    // Ending one's own current session is a sign-out.
    client
        .delete_session(&keep.access_token, &keep.session_id)
        .await
        .expect(StatusCode::NO_CONTENT);
    client.me(&keep.access_token).await.expect_invalid_token();
    assert_refresh_refused(&client.refresh(&keep.refresh_token).await);
}

#[tokio::test]
async fn deleting_another_users_session_is_404_and_revokes_nothing() {
    let server = Server::start();
    let client = server.client();
    let attacker_email = unique_email("attacker");
    let victim_email = unique_email("victim");
    client.signup_ok(&attacker_email).await;
    client.signup_ok(&victim_email).await;
    let attacker = client.signin_ok(&attacker_email).await;
    let victim = client.signin_ok(&victim_email).await;

    let (error, _) = client
        .delete_session(&attacker.access_token, &victim.session_id)
        .await
        .expect_error(StatusCode::NOT_FOUND);
    assert_eq!(error, "not_found");
    let unknown = Uuid::new_v4().to_string();
    for id in [unknown.as_str(), "not-a-uuid", "12345"] {
        client
            .delete_session(&attacker.access_token, id)
            .await
            .expect_error(StatusCode::NOT_FOUND);
    }

    client.me(&victim.access_token).await.expect(StatusCode::OK);
    client.refresh_ok(&victim.refresh_token).await;
    client
        .me(&attacker.access_token)
        .await
        .expect(StatusCode::OK);
    client
        .delete_session("garbage", &victim.session_id)
        .await
        .expect_invalid_token();
}

/// An admin (the first user of a fresh server) with a session, and their user id.
async fn admin(client: &Client) -> (Tokens, String) {
    let email = unique_email("admin");
    let user = client.signup_ok(&email).await;
    assert_eq!(user["role"], "admin", "{user}");
    let tokens = client.signin_ok(&email).await;
    (tokens, user["id"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn admin_disable_cuts_off_existing_tokens_at_once_and_blocks_signin() {
    let server = Server::start();
    let client = server.client();
    let (admin, admin_id) = admin(&client).await;
    let email = unique_email("disabled");
    let user = client.signup_ok(&email).await;
    let user_id = user["id"].as_str().unwrap();
    let first = client.signin_ok(&email).await;
    let second = client.signin_ok(&email).await;

    // A non-admin may not.
    let (error, _) = client
        .post(
            &format!("/v1/admin/users/{admin_id}/disable"),
            Some(&first.access_token),
            None,
        )
        .await
        .expect_error(StatusCode::FORBIDDEN);
    assert_eq!(error, "insufficient_scope");
    client.me(&admin.access_token).await.expect(StatusCode::OK);

    client
        .post(
            &format!("/v1/admin/users/{user_id}/disable"),
            Some(&admin.access_token),
            None,
        )
        .await
        .expect(StatusCode::NO_CONTENT);

    for tokens in [&first, &second] {
        client.me(&tokens.access_token).await.expect_invalid_token();
        let refresh = client.refresh(&tokens.refresh_token).await;
        assert!(
            refresh.status == StatusCode::UNAUTHORIZED || refresh.status == StatusCode::FORBIDDEN,
            "refresh of a disabled user: {} {}",
            refresh.status,
            refresh.text
        );
        refresh.expect_error(refresh.status);
    }
    let (error, _) = client
        .signin(&email, PASSWORD)
        .await
        .expect_error(StatusCode::FORBIDDEN);
    assert_eq!(error, "account_disabled");
    // A wrong password does not reveal that the account is disabled.
    client
        .signin(&email, "not the right password")
        .await
        .expect_error(StatusCode::UNAUTHORIZED);

    client.me(&admin.access_token).await.expect(StatusCode::OK);
    for id in [Uuid::new_v4().to_string(), "not-a-uuid".to_owned()] {
        client
            .post(
                &format!("/v1/admin/users/{id}/disable"),
                Some(&admin.access_token),
                None,
            )
            .await
            .expect_error(StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn admin_revoke_ends_every_session_of_the_user_who_can_sign_in_again() {
    let server = Server::start();
    let client = server.client();
    let (admin, admin_id) = admin(&client).await;
    let email = unique_email("revoked");
    let user = client.signup_ok(&email).await;
    let user_id = user["id"].as_str().unwrap();
    let first = client.signin_ok(&email).await;
    let second = client.signin_ok(&email).await;

    client
        .post(
            &format!("/v1/admin/users/{admin_id}/revoke"),
            Some(&first.access_token),
            None,
        )
        .await
        .expect_error(StatusCode::FORBIDDEN);
    client
        .post(
            &format!("/v1/admin/users/{user_id}/revoke"),
            Some(&admin.access_token),
            None,
        )
        .await
        .expect(StatusCode::NO_CONTENT);

    for tokens in [&first, &second] {
        client.me(&tokens.access_token).await.expect_invalid_token();
        assert_refresh_refused(&client.refresh(&tokens.refresh_token).await);
    }
    client.me(&admin.access_token).await.expect(StatusCode::OK);
    // Not disabled: a new sign-in works, right away.
    let again = client.signin_ok(&email).await;
    client.me(&again.access_token).await.expect(StatusCode::OK);

    client
        .post(
            &format!("/v1/admin/users/{}/revoke", Uuid::new_v4()),
            Some(&admin.access_token),
            None,
        )
        .await
        .expect_error(StatusCode::NOT_FOUND);
    client
        .post(
            "/v1/admin/users/not-a-uuid/revoke",
            Some(&admin.access_token),
            None,
        )
        .await
        .expect_error(StatusCode::NOT_FOUND);
    client
        .post(&format!("/v1/admin/users/{user_id}/revoke"), None, None)
        .await
        .expect_invalid_token();
}

/// `n` bulk-import entries expiring at `exp`.
fn entries(n: usize, exp: i64) -> (Vec<Uuid>, Vec<Value>) {
    let jtis: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
    let body = jtis
        .iter()
        .map(|jti| json!({"jti": jti.to_string(), "exp": exp}))
        .collect();
    (jtis, body)
}

#[tokio::test]
async fn bulk_import_of_100000_ids_is_durable_across_a_restart() {
    let mut server = Server::start();
    let client = server.client();
    let (admin, _) = admin(&client).await;
    let email = client.new_user("plain").await;
    let user = client.signin_ok(&email).await;

    let iat = jwt_claims(&admin.access_token)["iat"].as_i64().unwrap();
    let (_, body) = entries(100_000, iat + 3600);
    let body = Value::Array(body);
    // A non-admin is refused before the body is read (so send a small one: the server
    // may close the connection without reading a large upload).
    let (_, small) = entries(2, iat + 3600);
    client
        .import_revocations(&user.access_token, &Value::Array(small))
        .await
        .expect_error(StatusCode::FORBIDDEN);
    client
        .import_revocations(&admin.access_token, &body)
        .await
        .expect(StatusCode::NO_CONTENT);
    let before = client.indexed_revocations().await;
    assert!(before >= 100_000, "index holds {before}");

    server.kill();
    server.restart();
    let client = server.client();
    let after = client.indexed_revocations().await;
    assert!(after >= 100_000, "index after restart holds {after}");
    client.me(&admin.access_token).await.expect(StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_import_makes_every_imported_id_refused() {
    let server = InProcess::start().await;
    let client = server.client();
    let (admin, _) = admin(&client).await;
    let state = &server.node.state;
    let now = state.now();
    let before = state.index().len();

    let (jtis, body) = entries(100_000, now.as_secs() + 3600);
    client
        .import_revocations(&admin.access_token, &Value::Array(body))
        .await
        .expect(StatusCode::NO_CONTENT);
    assert!(
        state.index().len() >= before + 100_000,
        "index holds {} (was {before})",
        state.index().len()
    );
    assert!(server.stored_revocations().await.len() >= 100_000);

    // Every one of them is refused by the index of the node.
    let template: Claims = serde_json::from_value(jwt_claims(&admin.access_token)).unwrap();
    for jti in &jtis {
        let claims = Claims {
            jti: *jti,
            sid: Uuid::new_v4(),
            sub: Uuid::new_v4(),
            ..template.clone()
        };
        assert_eq!(
            state.index().check(&claims, state.now()),
            Err(RevocationKind::Token),
            "imported jti {jti} is not refused"
        );
    }

    // And over HTTP: tokens signed by the server's own key, carrying imported ids.
    let signer = state.sessions.keys().signer(state.now());
    for jti in [jtis[0], jtis[1], jtis[50_000], jtis[99_999]] {
        let token = signer
            .sign(&Claims {
                jti,
                ..template.clone()
            })
            .unwrap();
        let description = client.me(&token).await.expect_invalid_token();
        assert!(description.contains("revoked"), "{description}");
    }
    let control = signer
        .sign(&Claims {
            jti: Uuid::new_v4(),
            ..template.clone()
        })
        .unwrap();
    client.me(&control).await.expect(StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_import_with_one_bad_entry_or_too_many_entries_applies_nothing() {
    let server = InProcess::start().await;
    let client = server.client();
    let (admin, _) = admin(&client).await;
    let state = &server.node.state;
    let now = state.now();
    let exp = now.as_secs() + 3600;
    let index_before = state.index().len();
    let store_before = server.stored_revocations().await.len();

    let bad_entries: Vec<(usize, Value)> = vec![
        (7, json!({"jti": "not-a-uuid", "exp": exp})),
        (0, json!({"exp": exp})),
        (3, json!({"jti": Uuid::new_v4().to_string()})),
        (5, json!({"jti": Uuid::new_v4().to_string(), "exp": "soon"})),
        (9, json!({"jti": Uuid::new_v4().to_string(), "exp": -5})),
        (2, json!("just a string")),
    ];
    for (position, bad) in bad_entries {
        let (_, mut body) = entries(10, exp);
        body[position] = bad.clone();
        let (error, description) = client
            .import_revocations(&admin.access_token, &Value::Array(body))
            .await
            .expect_error(StatusCode::BAD_REQUEST);
        assert_eq!(error, "invalid_request");
        assert!(
            description.contains(&format!("entry {position}")),
            "{bad} at {position}: {description}"
        );
        assert_eq!(state.index().len(), index_before, "{bad}: index changed");
        assert_eq!(
            server.stored_revocations().await.len(),
            store_before,
            "{bad}: store changed"
        );
    }

    let (_, body) = entries(100_001, exp);
    let (_, description) = client
        .import_revocations(&admin.access_token, &Value::Array(body))
        .await
        .expect_error(StatusCode::BAD_REQUEST);
    assert!(description.contains("100000"), "{description}");
    assert_eq!(state.index().len(), index_before);
    assert_eq!(server.stored_revocations().await.len(), store_before);

    for not_a_list in [
        json!({"jti": Uuid::new_v4().to_string(), "exp": exp}),
        json!(null),
    ] {
        let resp = client
            .import_revocations(&admin.access_token, &not_a_list)
            .await;
        assert!(
            resp.status.is_client_error(),
            "{not_a_list}: {}",
            resp.status
        );
        resp.expect_error(resp.status);
    }
    assert_eq!(state.index().len(), index_before);

    // Importing the same ids twice (a retried migration) is fine.
    let (_, again) = entries(3, exp);
    for _ in 0..2 {
        client
            .import_revocations(&admin.access_token, &Value::Array(again.clone()))
            .await
            .expect(StatusCode::NO_CONTENT);
    }
    assert!(state.index().len() >= index_before + 3);
    let index_before = state.index().len();

    // An empty import is fine and changes nothing; the admin is unaffected throughout.
    client
        .import_revocations(&admin.access_token, &json!([]))
        .await
        .expect(StatusCode::NO_CONTENT);
    assert_eq!(state.index().len(), index_before);
    client.me(&admin.access_token).await.expect(StatusCode::OK);
}

/// Sign-ins kept in flight at once by [`signins_during`].
const IN_FLIGHT: usize = 6;
/// At most this many sign-ins in all.
const MAX_SIGNINS: usize = 60;

/// Keep [`IN_FLIGHT`] sign-ins with `password` running (a steady flow, started before
/// `during`) until `during` completes; returns its output and every sign-in answer.
async fn signins_during<T, F>(
    client: &Client,
    email: &str,
    password: &str,
    during: F,
) -> (T, Vec<Resp>)
where
    T: Send + 'static,
    F: std::future::Future<Output = T> + Send + 'static,
{
    let mut racers = tokio::task::JoinSet::new();
    let mut spawned = 0;
    let mut spawn = |racers: &mut tokio::task::JoinSet<Resp>| {
        if spawned < MAX_SIGNINS {
            spawned += 1;
            let client = client.clone();
            let email = email.to_owned();
            let password = password.to_owned();
            racers.spawn(async move { client.signin(&email, &password).await });
        }
    };
    for _ in 0..IN_FLIGHT {
        spawn(&mut racers);
    }
    let mut answers = Vec::new();
    // Once one has finished, the others are certainly under way.
    answers.push(racers.join_next().await.unwrap().unwrap());
    spawn(&mut racers);
    let mut during = tokio::spawn(during);
    let output = loop {
        tokio::select! {
            output = &mut during => break output.unwrap(),
            Some(done) = racers.join_next() => {
                answers.push(done.unwrap());
                spawn(&mut racers);
            }
        }
    };
    while let Some(done) = racers.join_next().await {
        answers.push(done.unwrap());
    }
    (output, answers)
}

/// The sessions of sign-ins that answered 200 and whose access token still works.
async fn surviving_sessions(client: &Client, answers: &[Resp]) -> (usize, Vec<String>) {
    let mut signed_in = 0;
    let mut survivors = Vec::new();
    for resp in answers {
        if resp.status != StatusCode::OK {
            resp.expect_error(resp.status);
            continue;
        }
        signed_in += 1;
        let tokens = Tokens::from_resp(resp);
        let me = client.me(&tokens.access_token).await;
        if me.status == StatusCode::OK {
            survivors.push(tokens.session_id);
        } else {
            me.expect_invalid_token();
        }
    }
    (signed_in, survivors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signins_racing_a_password_change_leave_no_session_made_with_the_old_password() {
    // No failure limit: the racing sign-ins in flight count as failures until answered, and
    // the password change is checked behind the same throttle; this test is about the race.
    let server = Server::start_with_env(&[("TOKENGATE_SIGNIN_MAX_FAILURES", "0")]);
    let client = server.client();
    let email = client.new_user("race-password").await;
    let current = client.signin_ok(&email).await;

    // Old-password sign-ins in flight while the password changes: each either finished
    // before the change (then it is an "other session" and must be revoked) or after it
    // (then the old password must have failed). None may leave a working session.
    let change = {
        let client = client.clone();
        let token = current.access_token.clone();
        async move { client.password(&token, PASSWORD, NEW_PASSWORD).await }
    };
    let (changed, answers) = signins_during(&client, &email, PASSWORD, change).await;
    changed.expect(StatusCode::NO_CONTENT);
    let (signed_in, survivors) = surviving_sessions(&client, &answers).await;
    assert!(
        survivors.is_empty(),
        "{} of {signed_in} sessions signed in with the old password survived the change: {survivors:?}",
        survivors.len()
    );
    client
        .me(&current.access_token)
        .await
        .expect(StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signins_racing_an_admin_disable_leave_no_working_session() {
    let server = Server::start();
    let client = server.client();
    let (admin, _) = admin(&client).await;
    let email = unique_email("race-disable");
    let user = client.signup_ok(&email).await;
    let user_id = user["id"].as_str().unwrap().to_owned();

    let disable = {
        let client = client.clone();
        let token = admin.access_token.clone();
        async move {
            client
                .post(
                    &format!("/v1/admin/users/{user_id}/disable"),
                    Some(&token),
                    None,
                )
                .await
        }
    };
    let (disabled, answers) = signins_during(&client, &email, PASSWORD, disable).await;
    disabled.expect(StatusCode::NO_CONTENT);
    let (signed_in, survivors) = surviving_sessions(&client, &answers).await;
    assert!(
        survivors.is_empty(),
        "{} of {signed_in} sessions of a disabled user still work: {survivors:?}",
        survivors.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refresh_token_used_twice_at_once_mints_at_most_one_pair_and_ends_the_session() {
    let server = Server::start();
    let client = server.client();
    let email = client.new_user("race-refresh").await;
    let tokens = client.signin_ok(&email).await;

    let mut racers = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let client = client.clone();
        let refresh_token = tokens.refresh_token.clone();
        racers.spawn(async move { client.refresh(&refresh_token).await });
    }
    let mut minted = Vec::new();
    while let Some(resp) = racers.join_next().await {
        let resp = resp.unwrap();
        if resp.status == StatusCode::OK {
            minted.push(Tokens::from_resp(&resp));
        } else {
            assert_refresh_refused(&resp);
        }
    }
    assert!(
        minted.len() <= 1,
        "one refresh token minted {} pairs",
        minted.len()
    );
    // Whichever came second was a reuse: the whole session is gone, including any pair
    // the first one minted.
    client.me(&tokens.access_token).await.expect_invalid_token();
    for pair in &minted {
        client.me(&pair.access_token).await.expect_invalid_token();
        assert_refresh_refused(&client.refresh(&pair.refresh_token).await);
    }
}

/// The API's sign-outs clear a cookie-authenticated caller's cookies exactly as the pages
/// do: the session cookie with `Secure` when not listening on loopback, and the refresh
/// cookie too. (They used to clear the session cookie without `Secure`, which a browser
/// keeps, and leave the refresh cookie.) A Bearer caller gets no cookies.
#[tokio::test]
async fn api_signouts_clear_the_same_cookies_as_the_pages() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(InProcess::sqlite(dir.path()).await);
    let mut config = InProcess::config(dir.path());
    config.listen = "0.0.0.0:8080".parse().unwrap();
    let server = InProcess::start_on(dir, config, store).await;
    let client = server.client();
    let email = client.new_user("api-signout-cookies").await;
    for path in ["/v1/auth/signout", "/v1/auth/signout-all"] {
        let tokens = client.signin_ok(&email).await;
        let request = client
            .raw(reqwest::Method::POST, path)
            .header(
                "cookie",
                format!("tokengate_session={}", tokens.access_token),
            )
            .header("origin", server.url());
        let resp = client.send(request).await;
        resp.expect(StatusCode::NO_CONTENT);
        let set: Vec<&str> = resp
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            set,
            [
                "tokengate_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax; Secure",
                "tokengate_refresh=; Path=/account; Max-Age=0; HttpOnly; SameSite=Lax; Secure",
            ],
            "{path}"
        );
        assert_eq!(
            client.me_status(&tokens.access_token).await,
            StatusCode::UNAUTHORIZED
        );

        let bearer = client.signin_ok(&email).await;
        let resp = client.post(path, Some(&bearer.access_token), None).await;
        resp.expect(StatusCode::NO_CONTENT);
        assert!(resp.headers.get("set-cookie").is_none(), "{path}");
    }
}
