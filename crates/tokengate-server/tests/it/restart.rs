//! A sign-out survives a crash: SIGKILL right after the 204, restart on the same data dir
//!.

use crate::common;

use common::*;
use reqwest::StatusCode;

#[tokio::test]
async fn signed_out_token_is_refused_after_a_sigkill_and_restart() {
    let mut server = Server::start();
    let client = server.client();
    let email = client.new_user("crash").await;
    let signed_out = client.signin_ok(&email).await;
    let kept = client.signin_ok(&email).await;

    client
        .signout(&signed_out.access_token)
        .await
        .expect(StatusCode::NO_CONTENT);
    // No graceful shutdown: the revocation must already be durable.
    server.kill();
    server.restart();
    let client = server.client();

    client.assert_signed_out(&signed_out).await;

    // The session that was not signed out still works: the keys were persisted.
    let me = client.me(&kept.access_token).await;
    me.expect(StatusCode::OK);
    assert_eq!(me.json()["session_id"], kept.session_id.as_str());

    let fresh = client.signin_ok(&email).await;
    client.me(&fresh.access_token).await.expect(StatusCode::OK);
    assert_eq!(kid(&fresh.access_token), kid(&kept.access_token));
}

#[tokio::test]
async fn signout_all_and_refresh_rotation_survive_a_sigkill_and_restart() {
    let mut server = Server::start();
    let client = server.client();
    let email = unique_email("crash-all");
    let other_email = unique_email("crash-other");
    client.signup_ok(&email).await;
    client.signup_ok(&other_email).await;
    let first = client.signin_ok(&email).await;
    let second = client.signin_ok(&email).await;
    let other = client.signin_ok(&other_email).await;
    let rotated = client.refresh_ok(&other.refresh_token).await;

    client
        .signout_all(&first.access_token)
        .await
        .expect(StatusCode::NO_CONTENT);
    server.kill();
    server.restart();
    let client = server.client();

    for old in [&first, &second] {
        client.me(&old.access_token).await.expect_invalid_token();
    }
    // The other user's session is intact, and its rotated refresh token still refreshes.
    client
        .me(&rotated.access_token)
        .await
        .expect(StatusCode::OK);
    client.refresh_ok(&rotated.refresh_token).await;
    client.signin_ok(&email).await;
}
