//! Logs: a full sign-in / refresh / sign-out run, through the API and the pages,
//! leaves no token, refresh token or password in the server's log, and every line written
//! inside a request carries its request id (text and JSON formats).

use crate::common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Sign in, refresh, use, sign out (API), and sign in through the page; returns every
/// secret the run handled.
async fn full_run(server: &Server, request_id: &str) -> Vec<String> {
    let client = server.client();
    let email = client.new_user("logs").await;
    let signin = client
        .send(
            client
                .raw(Method::POST, "/v1/auth/signin")
                .header("x-request-id", request_id)
                .json(&json!({"email": email, "password": PASSWORD})),
        )
        .await;
    assert_eq!(
        signin.headers["x-request-id"].to_str().unwrap(),
        request_id,
        "the request id is echoed"
    );
    let first = Tokens::from_resp(&signin);
    let second = client.refresh_ok(&first.refresh_token).await;
    client.me(&second.access_token).await.expect(StatusCode::OK);
    // A reused refresh token is logged as such, without the token.
    client
        .refresh(&first.refresh_token)
        .await
        .expect_challenge();
    client
        .signin(&email, "a wrong password attempt")
        .await
        .expect(StatusCode::UNAUTHORIZED);
    let third = client.signin_ok(&email).await;
    client
        .signout(&third.access_token)
        .await
        .expect(StatusCode::NO_CONTENT);
    let generated = client.get("/healthz", None).await;
    assert!(
        generated.headers.contains_key("x-request-id"),
        "generated when absent"
    );

    // The page flow: its cookie is the access token.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form = http.get(server.url()).send().await.unwrap();
    let csrf_cookie = form
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("tokengate_csrf="))
        .unwrap();
    let csrf = csrf_cookie
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("tokengate_csrf=")
        .to_owned();
    let page = http
        .post(format!("{}/signin", server.url()))
        .header("origin", server.url())
        .header("cookie", format!("tokengate_csrf={csrf}"))
        .form(&[
            ("email", email.as_str()),
            ("password", PASSWORD),
            ("csrf", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    let cookies: Vec<String> = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .collect();
    let page_secrets = cookies
        .iter()
        .filter_map(|c| c.split_once('='))
        .filter(|(k, _)| *k == "tokengate_session" || *k == "tokengate_refresh")
        .map(|(_, v)| v.to_owned());

    let mut secrets = vec![
        PASSWORD.to_owned(),
        "a wrong password attempt".to_owned(),
        first.access_token,
        first.refresh_token,
        second.access_token,
        second.refresh_token,
        third.access_token,
        third.refresh_token,
        csrf,
    ];
    secrets.extend(page_secrets);
    secrets
}

fn assert_no_secrets(log: &str, secrets: &[String]) {
    assert!(!log.is_empty());
    for line in log.lines() {
        for secret in secrets {
            assert!(
                !line.contains(secret.as_str()),
                "a secret is logged: {line}"
            );
            // Nor the refresh token without its prefix, nor a JWS's signature alone.
            if let Some(rest) = secret.strip_prefix("tgr_") {
                assert!(!line.contains(rest), "a refresh token is logged: {line}");
            }
            if let Some((_, signature)) = secret.rsplit_once('.') {
                assert!(
                    !line.contains(signature),
                    "a token signature is logged: {line}"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_full_run_logs_no_secret_and_every_request_line_has_its_request_id() {
    let server = Server::start();
    let request_id = "logs-test-request-0001";
    let secrets = full_run(&server, request_id).await;
    let log = server.log();
    assert_no_secrets(&log, &secrets);

    let signed_in = log
        .lines()
        .find(|l| l.contains("signed in") && l.contains(request_id))
        .unwrap_or_else(|| panic!("no `signed in` line with the client's request id:\n{log}"));
    assert!(signed_in.contains("request_id="), "{signed_in}");
    // Every line written inside a request names its request id.
    for line in log.lines().filter(|l| l.contains("request{")) {
        assert!(line.contains("request_id="), "{line}");
    }
    let reused = log
        .lines()
        .find(|l| l.contains("refresh token reused"))
        .unwrap_or_else(|| panic!("no reuse line:\n{log}"));
    assert!(reused.contains("request_id="), "{reused}");
}

#[tokio::test]
async fn json_logs_carry_the_request_id_and_no_secret() {
    let server = Server::start_with_env(&[("TOKENGATE_LOG_FORMAT", "json")]);
    let request_id = "logs-test-request-json";
    let secrets = full_run(&server, request_id).await;
    let log = server.log();
    assert_no_secrets(&log, &secrets);
    let mut in_requests = 0;
    for line in log.lines().filter(|l| l.starts_with('{')) {
        let entry: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if let Some(span) = entry.get("span") {
            if span["name"] == "request" {
                in_requests += 1;
                assert!(span["request_id"].is_string(), "{line}");
            }
        }
    }
    assert!(in_requests > 0, "no line inside a request:\n{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("signed in") && l.contains(request_id)),
        "{log}"
    );
}

/// Issue 16: a client's `x-request-id` that could forge a text log record (spaces, `=`)
/// or flood the log (over 64 bytes) is replaced by a generated id, in the log and in the
/// answer.
#[tokio::test]
async fn an_unsafe_or_overlong_request_id_is_replaced_and_never_logged() {
    let server = Server::start();
    let client = server.client();
    let email = client.new_user("logs-forged-id").await;
    let forged = "x signed in user_id=00000000-0000-0000-0000-00000000f04d";
    let overlong = "a".repeat(65);
    for sent in [forged, overlong.as_str()] {
        let signin = client
            .send(
                client
                    .raw(Method::POST, "/v1/auth/signin")
                    .header("x-request-id", sent)
                    .json(&json!({"email": email, "password": PASSWORD})),
            )
            .await;
        signin.expect(StatusCode::OK);
        let echoed = signin.headers["x-request-id"].to_str().unwrap().to_owned();
        assert_ne!(echoed, sent);
        uuid::Uuid::parse_str(&echoed).unwrap_or_else(|e| panic!("{e}: {echoed}"));
        let log = server.log();
        assert!(!log.contains(sent), "the client's id is logged:\n{log}");
        assert!(
            log.lines()
                .any(|l| l.contains("signed in") && l.contains(&echoed)),
            "no `signed in` line with the generated id {echoed}:\n{log}"
        );
    }
}
