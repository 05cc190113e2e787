//! The admin commands on the data of a running server. The server tails the
//! revocation record every 250 ms; we allow it 3 s to pick a CLI revocation up.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use uuid::Uuid;

/// How long a CLI revocation may take to reach the running server, with margin.
const REACH: Duration = Duration::from_secs(3);

fn password_line() -> String {
    format!("{PASSWORD}\n")
}

#[tokio::test]
async fn user_create_makes_users_who_can_sign_in_and_admin_flag_makes_an_admin() {
    let server = Server::start();
    let client = server.client();
    // The first user of a store is always admin; take that slot first.
    client.signup_ok(&unique_email("first")).await;

    let admin_email = unique_email("cli-admin");
    let out = server.cli_ok(
        &["user", "create", "--email", &admin_email, "--admin"],
        Some(&password_line()),
    );
    assert!(out.stdout.contains("role=admin"), "{}", out.stdout);
    let tokens = client.signin_ok(&admin_email).await;
    let me = client.me(&tokens.access_token).await;
    me.expect(StatusCode::OK);
    assert_eq!(me.json()["role"], "admin");

    let user_email = unique_email("cli-user");
    let out = server.cli_ok(
        &["user", "create", "--email", &user_email],
        Some(&password_line()),
    );
    assert!(out.stdout.contains("role=user"), "{}", out.stdout);
    let tokens = client.signin_ok(&user_email).await;
    assert_eq!(client.me(&tokens.access_token).await.json()["role"], "user");

    let duplicate = server.cli(
        &["user", "create", "--email", &user_email.to_uppercase()],
        Some(&password_line()),
    );
    assert!(!duplicate.success, "duplicate user created: {duplicate:?}");
    assert!(duplicate.stderr.contains("exists"), "{}", duplicate.stderr);
    let weak = server.cli(
        &["user", "create", "--email", &unique_email("weak")],
        Some("short\n"),
    );
    assert!(!weak.success, "weak password accepted: {weak:?}");
    assert!(weak.stderr.contains("password"), "{}", weak.stderr);
}

#[tokio::test]
async fn revoke_user_from_the_cli_reaches_the_running_server_in_time() {
    let server = Server::start();
    let client = server.client();
    let email = unique_email("revoke-user");
    let bystander_email = unique_email("bystander");
    client.signup_ok(&email).await;
    client.signup_ok(&bystander_email).await;
    let laptop = client.signin_ok(&email).await;
    let phone = client.signin_ok(&email).await;
    let bystander = client.signin_ok(&bystander_email).await;

    server.cli_ok(&["revoke", "--user", &email], None);
    let started = Instant::now();
    until_refused(&client, &laptop.access_token, REACH, "CLI revoke --user").await;
    until_refused(
        &client,
        &phone.access_token,
        REACH.saturating_sub(started.elapsed()),
        "CLI revoke --user (second session)",
    )
    .await;
    client
        .me(&bystander.access_token)
        .await
        .expect(StatusCode::OK);
    // Revoking a user's sessions does not disable the user.
    let again = client.signin_ok(&email).await;
    client.me(&again.access_token).await.expect(StatusCode::OK);

    let unknown = server.cli(&["revoke", "--user", &unique_email("nobody")], None);
    assert!(!unknown.success, "{unknown:?}");
}

#[tokio::test]
async fn revoke_session_and_revoke_jti_from_the_cli_reach_the_running_server_in_time() {
    let server = Server::start();
    let client = server.client();
    let email = client.new_user("revoke-one").await;
    let by_session = client.signin_ok(&email).await;
    let by_jti = client.signin_ok(&email).await;

    server.cli_ok(&["revoke", "--session", &by_session.session_id], None);
    until_refused(
        &client,
        &by_session.access_token,
        REACH,
        "CLI revoke --session",
    )
    .await;
    client.me(&by_jti.access_token).await.expect(StatusCode::OK);
    let resp = client.refresh(&by_session.refresh_token).await;
    resp.expect_error(StatusCode::UNAUTHORIZED);

    server.cli_ok(&["revoke", "--jti", &jti(&by_jti.access_token)], None);
    until_refused(&client, &by_jti.access_token, REACH, "CLI revoke --jti").await;
    // Only that token: its session lives on and mints a working token.
    let next = client.refresh_ok(&by_jti.refresh_token).await;
    assert_eq!(next.session_id, by_jti.session_id);
    client.me(&next.access_token).await.expect(StatusCode::OK);

    let unknown = Uuid::new_v4().to_string();
    let out = server.cli(&["revoke", "--session", &unknown], None);
    assert!(!out.success, "{out:?}");
    let out = server.cli(&["revoke", "--jti", "not-a-uuid"], None);
    assert!(!out.success, "{out:?}");
    let out = server.cli(&["revoke"], None);
    assert!(!out.success, "revoke without a target: {out:?}");
}

#[tokio::test]
async fn user_disable_from_the_cli_cuts_off_tokens_and_blocks_signin() {
    let server = Server::start();
    let client = server.client();
    let email = client.new_user("cli-disable").await;
    let tokens = client.signin_ok(&email).await;

    server.cli_ok(&["user", "disable", &email], None);
    until_refused(&client, &tokens.access_token, REACH, "CLI user disable").await;
    let (error, _) = client
        .signin(&email, PASSWORD)
        .await
        .expect_error(StatusCode::FORBIDDEN);
    assert_eq!(error, "account_disabled");
    let refresh = client.refresh(&tokens.refresh_token).await;
    assert!(
        refresh.status == StatusCode::UNAUTHORIZED || refresh.status == StatusCode::FORBIDDEN,
        "{} {}",
        refresh.status,
        refresh.text
    );

    let unknown = server.cli(&["user", "disable", &unique_email("nobody")], None);
    assert!(!unknown.success, "{unknown:?}");
}

#[tokio::test]
async fn revocations_import_from_the_cli_applies_every_line_or_none() {
    let server = Server::start();
    let client = server.client();
    let email = client.new_user("cli-import").await;
    let imported = client.signin_ok(&email).await;
    let spared = client.signin_ok(&email).await;
    let marker = client.signin_ok(&email).await;
    let exp_of = |token: &str| jwt_claims(token)["exp"].as_i64().unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    let path = file.path().to_str().unwrap().to_owned();

    let good = format!(
        "# from the old system\n\n{} {}\n{} {}\n  {} {}  \n",
        jti(&imported.access_token),
        exp_of(&imported.access_token),
        Uuid::new_v4(),
        exp_of(&imported.access_token),
        Uuid::new_v4(),
        exp_of(&imported.access_token) + 60,
    );
    std::fs::write(&path, good).unwrap();
    let out = server.cli_ok(&["revocations", "import", &path], None);
    assert!(out.stdout.contains('3'), "{}", out.stdout);
    until_refused(&client, &imported.access_token, REACH, "CLI import").await;

    // Line 2 is bad: nothing of the file is recorded, and the error names the line.
    let bad = format!(
        "{} {}\nnot-a-uuid {}\n{} {}\n",
        jti(&spared.access_token),
        exp_of(&spared.access_token),
        exp_of(&spared.access_token),
        Uuid::new_v4(),
        exp_of(&spared.access_token),
    );
    std::fs::write(&path, bad).unwrap();
    let out = server.cli(&["revocations", "import", &path], None);
    assert!(!out.success, "a bad import succeeded: {out:?}");
    assert!(out.stderr.contains("line 2"), "{}", out.stderr);
    std::fs::write(&path, format!("{} soon\n", Uuid::new_v4())).unwrap();
    let out = server.cli(&["revocations", "import", &path], None);
    assert!(!out.success, "{out:?}");
    assert!(out.stderr.contains("line 1"), "{}", out.stderr);
    let out = server.cli(
        &["revocations", "import", "/nonexistent/denylist.txt"],
        None,
    );
    assert!(!out.success, "{out:?}");

    // A later good import is seen by the server; by then the failed ones would have been
    // too, had they recorded anything.
    std::fs::write(
        &path,
        format!(
            "{} {}\n",
            jti(&marker.access_token),
            exp_of(&marker.access_token)
        ),
    )
    .unwrap();
    server.cli_ok(&["revocations", "import", &path], None);
    until_refused(&client, &marker.access_token, REACH, "CLI import (marker)").await;
    client.me(&spared.access_token).await.expect(StatusCode::OK);
}

#[tokio::test]
async fn keys_rotate_switches_new_tokens_to_the_new_key_and_old_tokens_keep_working() {
    let server = Server::start();
    let client = server.client();
    let email = client.new_user("rotate-keys").await;
    let old = client.signin_ok(&email).await;
    let old_kid = kid(&old.access_token);

    let list = server.cli_ok(&["keys", "list"], None);
    assert!(list.stdout.contains(&old_kid), "{}", list.stdout);

    let out = server.cli_ok(&["keys", "rotate"], None);
    let new_kid = out
        .stdout
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .find(|word| word.len() >= 16 && *word != old_kid)
        .unwrap_or_else(|| panic!("no kid in {:?}", out.stdout))
        .to_owned();
    assert_ne!(new_kid, old_kid);

    // The server picks the new key up by itself; refresh (cheap) until it signs with it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut refresh_token = old.refresh_token.clone();
    loop {
        let next = client.refresh_ok(&refresh_token).await;
        refresh_token = next.refresh_token;
        if kid(&next.access_token) == new_kid {
            client.me(&next.access_token).await.expect(StatusCode::OK);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server still signs with {} after the rotation",
            kid(&next.access_token)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fresh = client.signin_ok(&email).await;
    assert_eq!(kid(&fresh.access_token), new_kid);
    client.me(&fresh.access_token).await.expect(StatusCode::OK);
    // Signed by the previous key, still valid until it expires.
    client.me(&old.access_token).await.expect(StatusCode::OK);

    let list = server.cli_ok(&["keys", "list"], None);
    let line_of = |kid: &str| {
        list.stdout
            .lines()
            .find(|line| line.contains(kid))
            .unwrap_or_else(|| panic!("{kid} not listed:\n{}", list.stdout))
            .to_owned()
    };
    assert!(line_of(&new_kid).contains("current"), "{}", list.stdout);
    assert!(!line_of(&old_kid).contains("current"), "{}", list.stdout);
}
