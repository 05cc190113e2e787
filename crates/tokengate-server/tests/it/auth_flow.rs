//! End to end against the real binary: sign-up, sign-in, `me`, sign-out, sign-out
//! everywhere, forged tokens and bad input.

use crate::common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokengate_core::{Algorithm, Claims, SigningKey};

fn is_uuid(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.parse::<uuid::Uuid>().is_ok())
}

#[tokio::test]
async fn first_user_becomes_admin_and_later_users_are_ordinary_users() {
    let server = Server::start();
    let client = server.client();

    let first_email = unique_email("first");
    let first = client.signup_ok(&first_email).await;
    assert_eq!(first["email"], first_email.as_str(), "{first}");
    assert_eq!(first["role"], "admin", "{first}");
    assert!(is_uuid(&first["id"]), "{first}");

    let second_email = unique_email("second");
    let second = client.signup_ok(&second_email).await;
    assert_eq!(second["email"], second_email.as_str(), "{second}");
    assert_eq!(second["role"], "user", "{second}");
    assert!(is_uuid(&second["id"]), "{second}");
    assert_ne!(first["id"], second["id"]);
}

#[tokio::test]
async fn signin_returns_a_bearer_token_pair_and_me_shows_its_session() {
    let server = Server::start();
    let client = server.client();
    let email = unique_email("shape");
    let user = client.signup_ok(&email).await;

    let resp = client.signin(&email, PASSWORD).await;
    let body = resp.json();
    let tokens = Tokens::from_resp(&resp);
    assert_eq!(tokens.token_type, "Bearer", "{body}");
    assert_eq!(tokens.expires_in, 900, "{body}");
    assert!(
        tokens.refresh_token.len() >= 43,
        "a refresh token carries at least 256 bits: {body}"
    );
    assert_ne!(tokens.refresh_token, tokens.access_token);
    assert!(is_uuid(&body["session_id"]), "{body}");

    let header = jwt_header(&tokens.access_token);
    assert_eq!(header["typ"], "at+jwt", "{header}");
    assert_eq!(header["alg"], "EdDSA", "{header}");
    assert!(
        header["kid"].as_str().is_some_and(|k| !k.is_empty()),
        "{header}"
    );
    let claims = jwt_claims(&tokens.access_token);
    assert_eq!(claims["sub"], user["id"], "{claims}");
    assert_eq!(claims["sid"], tokens.session_id.as_str(), "{claims}");
    assert_eq!(claims["email"], email.as_str(), "{claims}");
    assert_eq!(claims["role"], "admin", "{claims}");
    assert!(is_uuid(&claims["jti"]), "{claims}");
    for claim in ["iss", "aud", "iat", "nbf", "exp"] {
        assert!(!claims[claim].is_null(), "missing {claim}: {claims}");
    }
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 900, "{claims}");

    let me = client.me(&tokens.access_token).await;
    me.expect(StatusCode::OK);
    let me = me.json();
    assert_eq!(me["id"], user["id"], "{me}");
    assert_eq!(me["email"], email.as_str(), "{me}");
    assert_eq!(me["role"], "admin", "{me}");
    assert_eq!(me["session_id"], tokens.session_id.as_str(), "{me}");
}

#[tokio::test]
async fn signed_out_token_is_refused_and_a_new_signin_gets_a_new_jti_that_works() {
    let server = Server::start();
    let client = server.client();
    let email = client.new_user("signout").await;

    let first = client.signin_ok(&email).await;
    client.me(&first.access_token).await.expect(StatusCode::OK);

    let out = client.signout(&first.access_token).await;
    out.expect(StatusCode::NO_CONTENT);
    assert!(out.text.is_empty(), "204 with a body: {:?}", out.text);

    let description = client.me(&first.access_token).await.expect_invalid_token();
    assert!(
        description.contains("revoked"),
        "a signed-out token is refused as revoked: {description}"
    );
    // The revoked token cannot sign out again, nor refresh the session.
    client
        .signout(&first.access_token)
        .await
        .expect_invalid_token();
    client
        .refresh(&first.refresh_token)
        .await
        .expect_error(StatusCode::UNAUTHORIZED);

    let second = client.signin_ok(&email).await;
    assert_ne!(jti(&second.access_token), jti(&first.access_token));
    assert_ne!(second.session_id, first.session_id);
    let me = client.me(&second.access_token).await;
    me.expect(StatusCode::OK);
    assert_eq!(me.json()["session_id"], second.session_id.as_str());
    // The old one stays refused.
    client.me(&first.access_token).await.expect_invalid_token();
}

#[tokio::test]
async fn signout_all_revokes_every_session_and_an_immediate_signin_works() {
    let server = Server::start();
    let client = server.client();
    let email = client.new_user("everywhere").await;
    let laptop = client.signin_ok(&email).await;
    let phone = client.signin_ok(&email).await;

    client
        .signout_all(&laptop.access_token)
        .await
        .expect(StatusCode::NO_CONTENT);
    // Right after (normally the same second): the cutoff must not catch the new token.
    let fresh = client.signin_ok(&email).await;
    client.me(&fresh.access_token).await.expect(StatusCode::OK);

    for old in [&laptop, &phone] {
        client.me(&old.access_token).await.expect_invalid_token();
        client
            .refresh(&old.refresh_token)
            .await
            .expect_error(StatusCode::UNAUTHORIZED);
    }
    client.me(&fresh.access_token).await.expect(StatusCode::OK);
}

#[tokio::test]
async fn token_signed_by_another_key_is_refused() {
    let server = Server::start();
    let client = server.client();
    let email = client.new_user("forged").await;
    let real = client.signin_ok(&email).await;
    let claims: Claims = serde_json::from_value(jwt_claims(&real.access_token)).unwrap();
    let attacker = SigningKey::generate(Algorithm::EdDSA).unwrap();

    // Same claims, the attacker's own kid.
    let forged = attacker.sign(&claims).unwrap();
    let description = client.me(&forged).await.expect_invalid_token();
    assert!(description.contains("key"), "{description}");

    // Same claims, the server's kid, the attacker's signature.
    let header = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid(&real.access_token)});
    let forged_kid = attacker
        .sign_compact(
            header.to_string().as_bytes(),
            &serde_json::to_vec(&claims).unwrap(),
        )
        .unwrap();
    let description = client.me(&forged_kid).await.expect_invalid_token();
    assert!(description.contains("signature"), "{description}");

    // `alg: none` with the server's kid and no signature.
    let none_header = json!({"alg": "none", "typ": "at+jwt", "kid": kid(&real.access_token)});
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(none_header.to_string()),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
    );
    client.me(&unsigned).await.expect_invalid_token();

    // The genuine token is unaffected.
    client.me(&real.access_token).await.expect(StatusCode::OK);
}

#[tokio::test]
async fn malformed_bodies_missing_fields_wrong_types_and_huge_bodies_get_clear_4xx() {
    let server = Server::start();
    let client = server.client();
    let email = unique_email("input");

    for path in ["/v1/auth/signup", "/v1/auth/signin"] {
        let malformed = client
            .send(
                client
                    .raw(Method::POST, path)
                    .header(CONTENT_TYPE, "application/json")
                    .body(r#"{"email": "a@example.com", "password": "#),
            )
            .await;
        let (error, description) = malformed.expect_error(StatusCode::BAD_REQUEST);
        assert_eq!(error, "invalid_request");
        assert!(description.contains("JSON"), "{description}");

        let missing = client
            .post(path, None, Some(&json!({ "email": email })))
            .await;
        let (_, description) = missing.expect_error(StatusCode::UNPROCESSABLE_ENTITY);
        assert!(description.contains("password"), "{description}");

        let mistyped = client
            .post(
                path,
                None,
                Some(&json!({"email": email, "password": 12345678})),
            )
            .await;
        mistyped.expect_error(StatusCode::UNPROCESSABLE_ENTITY);

        let valid = json!({"email": email, "password": PASSWORD}).to_string();
        let text_plain = client
            .send(
                client
                    .raw(Method::POST, path)
                    .header(CONTENT_TYPE, "text/plain")
                    .body(valid.clone()),
            )
            .await;
        text_plain.expect_error(StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let no_type = client
            .send(client.raw(Method::POST, path).body(valid))
            .await;
        no_type.expect_error(StatusCode::UNSUPPORTED_MEDIA_TYPE);

        let huge = json!({"email": email, "password": "x".repeat(70 * 1024)});
        let too_large = client.post(path, None, Some(&huge)).await;
        too_large.expect_error(StatusCode::PAYLOAD_TOO_LARGE);
    }
    // None of that created the account.
    client
        .signin(&email, PASSWORD)
        .await
        .expect_error(StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn duplicate_email_is_a_conflict_whatever_its_case() {
    let server = Server::start();
    let client = server.client();
    let email = client.new_user("dup").await;

    let (error, _) = client
        .signup(&email, "another strong passphrase")
        .await
        .expect_error(StatusCode::CONFLICT);
    assert_eq!(error, "conflict");
    client
        .signup(&email.to_uppercase(), "another strong passphrase")
        .await
        .expect_error(StatusCode::CONFLICT);
    client
        .signup(&format!("  {email} "), "another strong passphrase")
        .await
        .expect_error(StatusCode::CONFLICT);
    // The original password still signs in; the address is not case-sensitive at sign-in.
    client.signin_ok(&email.to_uppercase()).await;
}

#[tokio::test]
async fn weak_passwords_and_invalid_emails_are_unprocessable() {
    let server = Server::start();
    let client = server.client();
    let email = unique_email("weak");

    let too_long = "Ab1!cD2@".repeat(40);
    for weak in [
        "short",
        "password",
        "12345678",
        "aaaaaaaaaaaa",
        email.as_str(),
        too_long.as_str(),
    ] {
        let (_, description) = client
            .signup(&email, weak)
            .await
            .expect_error(StatusCode::UNPROCESSABLE_ENTITY);
        assert!(description.contains("password"), "{weak}: {description}");
    }
    let long_email = format!("{}@example.com", "a".repeat(300));
    for bad_email in [
        "not-an-email",
        "@example.com",
        "someone@",
        "a b@example.com",
        "",
        long_email.as_str(),
    ] {
        let (_, description) = client
            .signup(bad_email, PASSWORD)
            .await
            .expect_error(StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            description.contains("email"),
            "{bad_email:?}: {description}"
        );
    }
    // Nothing was created: the address is still free.
    client.signup_ok(&email).await;
}

#[tokio::test]
async fn garbage_truncated_oversized_and_non_bearer_credentials_are_refused_with_a_challenge() {
    let server = Server::start();
    let client = server.client();
    let email = client.new_user("garbage").await;
    let real = client.signin_ok(&email).await.access_token;

    let (head, rest) = real.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    let mut flipped_signature = signature.to_owned();
    let last = flipped_signature.pop().unwrap();
    flipped_signature.push(if last == 'A' { 'B' } else { 'A' });
    let oversized = format!("{real}{}", "A".repeat(9 * 1024));
    let cases: Vec<(&str, String)> = vec![
        ("garbage", "garbage".to_owned()),
        ("three dots of nothing", "..".to_owned()),
        ("not base64", "@@@.###.$$$".to_owned()),
        ("truncated", real[..real.len() - 10].to_owned()),
        ("no signature part", format!("{head}.{payload}")),
        (
            "flipped signature",
            format!("{head}.{payload}.{flipped_signature}"),
        ),
        ("9 KiB", oversized),
    ];
    for (what, token) in &cases {
        let resp = client.me(token).await;
        assert_eq!(
            resp.status,
            StatusCode::UNAUTHORIZED,
            "{what}: {}",
            resp.text
        );
        resp.expect_invalid_token();
    }

    let schemes = [
        format!(
            "Basic {}",
            URL_SAFE_NO_PAD.encode(format!("{email}:{PASSWORD}"))
        ),
        format!("Token {real}"),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        real.clone(),
    ];
    for authorization in &schemes {
        let resp = client
            .send(
                client
                    .raw(Method::GET, "/v1/auth/me")
                    .header("authorization", authorization),
            )
            .await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{authorization:?}");
        resp.expect_invalid_token();
    }
    // A header that is not even text.
    let resp = client
        .send(client.raw(Method::GET, "/v1/auth/me").header(
            "authorization",
            reqwest::header::HeaderValue::from_bytes(b"Bearer \xff\xfe\xfd").unwrap(),
        ))
        .await;
    resp.expect_invalid_token();
    // No credential at all.
    client.get("/v1/auth/me", None).await.expect_invalid_token();
    // Every authenticated route refuses the same way.
    client.signout("garbage").await.expect_invalid_token();
    client.signout_all("garbage").await.expect_invalid_token();

    // And the real token still works afterwards.
    client.me(&real).await.expect(StatusCode::OK);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json_errors() {
    let server = Server::start();
    let client = server.client();
    for path in ["/nope", "/v1/auth/nothing", "/v1/auth/sessions/a/b"] {
        let (error, _) = client
            .get(path, None)
            .await
            .expect_error(StatusCode::NOT_FOUND);
        assert_eq!(error, "not_found", "{path}");
    }
    client
        .post("/v1/nothing", None, Some(&json!({})))
        .await
        .expect_error(StatusCode::NOT_FOUND);
    client
        .get("/v1/auth/signin", None)
        .await
        .expect_error(StatusCode::METHOD_NOT_ALLOWED);
    client.get("/healthz", None).await.expect(StatusCode::OK);
}

#[tokio::test]
async fn wrong_password_and_unknown_email_get_byte_identical_401s() {
    let server = Server::start();
    let client = server.client();
    let email = client.new_user("known").await;

    let wrong_password = client.signin(&email, "not the right password").await;
    let unknown_email = client
        .signin(&unique_email("nobody"), "not the right password")
        .await;
    let invalid_email = client
        .signin("not-an-email", "not the right password")
        .await;
    for resp in [&wrong_password, &unknown_email, &invalid_email] {
        resp.expect_error(StatusCode::UNAUTHORIZED);
        resp.expect_challenge();
    }
    assert_eq!(wrong_password.text, unknown_email.text);
    assert_eq!(wrong_password.text, invalid_email.text);
    assert_eq!(
        wrong_password.headers.get("www-authenticate"),
        unknown_email.headers.get("www-authenticate")
    );
    // The account still signs in with the right password.
    client.signin_ok(&email).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_signups_make_exactly_one_admin_and_one_account_per_email() {
    let server = Server::start();
    let client = server.client();
    let shared_email = unique_email("same");
    let mut racers = tokio::task::JoinSet::new();
    for i in 0..6 {
        let client = client.clone();
        // Half of them race for the same address.
        let email = if i % 2 == 0 {
            shared_email.clone()
        } else {
            unique_email("racer")
        };
        racers.spawn(async move { client.signup(&email, PASSWORD).await });
    }
    let mut created = Vec::new();
    let mut conflicts = 0;
    while let Some(resp) = racers.join_next().await {
        let resp = resp.unwrap();
        if resp.status == StatusCode::CREATED {
            created.push(resp.json());
        } else {
            resp.expect_error(StatusCode::CONFLICT);
            conflicts += 1;
        }
    }
    assert_eq!(created.len(), 4, "{created:?}");
    assert_eq!(conflicts, 2);
    let admins = created.iter().filter(|u| u["role"] == "admin").count();
    assert_eq!(admins, 1, "exactly one first user: {created:?}");
    assert_eq!(
        created
            .iter()
            .filter(|u| u["email"] == shared_email.as_str())
            .count(),
        1
    );
}

#[tokio::test]
async fn access_ttl_from_the_environment_sets_the_token_lifetime() {
    let server = Server::start_with_env(&[("TOKENGATE_ACCESS_TTL", "90s")]);
    let client = server.client();
    let email = client.new_user("ttl").await;
    let tokens = client.signin_ok(&email).await;
    assert_eq!(tokens.expires_in, 90);
    let claims = jwt_claims(&tokens.access_token);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        90,
        "{claims}"
    );
    client.me(&tokens.access_token).await.expect(StatusCode::OK);
}
