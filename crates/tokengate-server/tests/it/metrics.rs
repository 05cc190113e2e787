//! `GET /metrics`: after a sign-in, a wrong password, a sign-out and a refused token, each
//! is counted in the Prometheus (OpenMetrics) text; one sign-out counts one revocation.

use crate::common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;

/// The value of the sample `name{labels}` (exact label text), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
}

async fn scrape(client: &Client) -> String {
    let resp = client.get("/metrics", None).await;
    resp.expect(StatusCode::OK);
    let content_type = resp.headers["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(resp.text.ends_with("# EOF\n"), "{}", resp.text);
    resp.text
}

#[tokio::test]
async fn sign_in_sign_out_and_refused_tokens_are_counted() {
    let server = Server::start();
    let client = server.client();
    let email = client.new_user("metrics").await;

    let before = scrape(&client).await;
    assert_eq!(
        value(&before, "tokengate_signins_total{outcome=\"ok\"}"),
        Some(0.0)
    );
    assert_eq!(
        value(
            &before,
            "tokengate_auth_requests_total{outcome=\"revoked\"}"
        ),
        Some(0.0)
    );

    let tokens = client.signin_ok(&email).await;
    client
        .signin(&email, "not the right password")
        .await
        .expect(StatusCode::UNAUTHORIZED);
    client.me(&tokens.access_token).await.expect(StatusCode::OK);
    client
        .signout(&tokens.access_token)
        .await
        .expect(StatusCode::NO_CONTENT);
    client.me(&tokens.access_token).await.expect_invalid_token();
    client
        .get("/v1/auth/me", Some("not-a-jwt"))
        .await
        .expect_invalid_token();
    client.get("/v1/auth/me", None).await.expect_invalid_token();

    // Revocations are counted by a task subscribed to the index: wait for it.
    eventually(
        Duration::from_secs(5),
        "the session revocation to be counted",
        || {
            let client = client.clone();
            async move {
                let text = scrape(&client).await;
                value(&text, "tokengate_revocations_total{kind=\"session\"}") == Some(1.0)
            }
        },
    )
    .await;
    let text = scrape(&client).await;
    let expect = |series: &str, want: f64| {
        assert_eq!(value(&text, series), Some(want), "{series} in\n{text}");
    };
    expect("tokengate_signins_total{outcome=\"ok\"}", 1.0);
    expect("tokengate_signins_total{outcome=\"invalid\"}", 1.0);
    expect("tokengate_auth_requests_total{outcome=\"revoked\"}", 1.0);
    expect("tokengate_auth_requests_total{outcome=\"invalid\"}", 1.0);
    expect("tokengate_auth_requests_total{outcome=\"missing\"}", 1.0);
    // `me` accepted once, and sign-out accepted the token once.
    expect("tokengate_auth_requests_total{outcome=\"ok\"}", 2.0);
    expect("tokengate_revocation_index_entries{kind=\"session\"}", 1.0);
    expect("tokengate_store_errors_total", 0.0);
    // 192 shards of at least one 8-slot group each, whatever the index holds.
    let bytes = value(&text, "tokengate_revocation_index_bytes").expect("bytes gauge");
    assert!(bytes >= 192.0 * 8.0 * 25.0, "index bytes {bytes}");
    let lag = value(&text, "tokengate_revocation_index_lag_seconds").expect("lag gauge");
    assert!((0.0..5.0).contains(&lag), "lag {lag}");
    // The latency histogram has the sign-in route, by status.
    let count = "tokengate_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/auth/signin\",status=\"200\"}";
    expect(count, 1.0);
    let inf = "tokengate_http_request_duration_seconds_bucket{le=\"+Inf\",method=\"POST\",route=\"/v1/auth/signin\",status=\"401\"}";
    expect(inf, 1.0);
    // Every family is documented for Prometheus, with its type. OpenMetrics names a
    // counter family without the `_total` of its samples.
    for (family, kind) in [
        ("tokengate_auth_requests", "counter"),
        ("tokengate_auth_served_stale", "counter"),
        ("tokengate_signins", "counter"),
        ("tokengate_throttled_requests", "counter"),
        ("tokengate_revocations", "counter"),
        ("tokengate_revocation_events_missed", "counter"),
        ("tokengate_revocation_index_entries", "gauge"),
        ("tokengate_revocation_index_bytes", "gauge"),
        ("tokengate_revocation_index_purged", "counter"),
        ("tokengate_revocation_index_lag_seconds", "gauge"),
        ("tokengate_revocation_index_stale", "gauge"),
        ("tokengate_revocation_index_proof_age_seconds", "gauge"),
        ("tokengate_stale_answers", "counter"),
        ("tokengate_store_errors", "counter"),
        ("tokengate_http_request_duration_seconds", "histogram"),
    ] {
        let type_line = format!("# TYPE {family} {kind}");
        assert!(
            text.lines().any(|l| l == type_line),
            "{type_line} in\n{text}"
        );
        assert!(text.contains(&format!("# HELP {family} ")), "{family}");
    }
    // A path no route matches is labelled `unmatched`, whatever the path.
    client
        .get("/no/such/path", None)
        .await
        .expect(StatusCode::NOT_FOUND);
    let text = scrape(&client).await;
    let unmatched = "tokengate_http_request_duration_seconds_count{method=\"-\",route=\"unmatched\",status=\"404\"}";
    assert_eq!(value(&text, unmatched), Some(1.0), "{text}");
    assert!(!text.contains("/no/such/path"), "{text}");
}

#[tokio::test]
async fn throttled_sign_ins_are_counted() {
    let server = Server::start_with_env(&[("TOKENGATE_SIGNIN_MAX_FAILURES", "1")]);
    let client = server.client();
    let email = client.new_user("metrics-throttle").await;
    client
        .signin(&email, "wrong password one")
        .await
        .expect(StatusCode::UNAUTHORIZED);
    client
        .signin(&email, PASSWORD)
        .await
        .expect(StatusCode::TOO_MANY_REQUESTS);
    let text = scrape(&client).await;
    assert_eq!(
        value(&text, "tokengate_signins_total{outcome=\"throttled\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "tokengate_throttled_requests_total"),
        Some(1.0),
        "{text}"
    );
}

/// Issue 12: a sign-out revokes its session in the index twice over (the handler applies
/// it, then the store tail reads it back), and once counted both. It must count once.
#[tokio::test]
async fn one_sign_out_counts_one_revocation() {
    let node = InProcess::start().await;
    let client = node.client();
    let email = client.new_user("metrics-one-signout").await;
    let series = "tokengate_revocations_total{kind=\"session\"}";
    let before = value(&scrape(&client).await, series).expect("session counter");

    let tokens = client.signin_ok(&email).await;
    client
        .signout(&tokens.access_token)
        .await
        .expect(StatusCode::NO_CONTENT);
    // The node turns stale when its clock jumps, and ready again only once the store
    // tail has read the record at the new time: so the tail has seen the sign-out.
    node.advance(Duration::from_secs(10)).await;
    // The counter reads the index's events in order: once a later revocation (of
    // another kind) is counted, whatever the tail applied before it is counted too.
    let other = client.signin_ok(&email).await;
    let token_series = "tokengate_revocations_total{kind=\"token\"}";
    let tokens_before = value(&scrape(&client).await, token_series).expect("token counter");
    client
        .oauth_revoke(&other.access_token)
        .await
        .expect(StatusCode::OK);
    eventually(
        Duration::from_secs(5),
        "the token revocation to be counted",
        || {
            let client = client.clone();
            async move { value(&scrape(&client).await, token_series) == Some(tokens_before + 1.0) }
        },
    )
    .await;
    let after = value(&scrape(&client).await, series).expect("session counter");
    assert_eq!(after, before + 1.0, "one sign-out, one session revocation");
}
