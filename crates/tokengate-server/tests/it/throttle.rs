//! Sign-in throttling of failed attempts, end to end: 429 with `Retry-After` past the
//! limit (before the password is checked), per (email, client IP) and per IP, the same for
//! unknown and known emails, and the window read from the node's clock.

use crate::common;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{unique_email, Client, InProcess, Resp, Tokens, PASSWORD};
use reqwest::StatusCode;
use serde_json::json;
use tokengate_server::config::Config;

/// A node with `per_account` failures per (email, IP) and `per_ip` per IP in 15 minutes.
async fn node(per_account: u32, per_ip: u32) -> InProcess {
    node_trusting(per_account, per_ip, "").await
}

/// [`node`], believing the forwarding headers of the proxies `trusted_proxies`.
async fn node_trusting(per_account: u32, per_ip: u32, trusted_proxies: &str) -> InProcess {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(InProcess::sqlite(dir.path()).await);
    let config = Config {
        signin_max_failures: per_account,
        signin_max_failures_per_ip: per_ip,
        trusted_proxies: trusted_proxies.parse().unwrap(),
        ..InProcess::config(dir.path())
    };
    InProcess::start_on(dir, config, store).await
}

/// A client whose connections come from `ip` (any 127.0.0.0/8 address is loopback on Linux),
/// optionally sending a forwarding header as a proxy would.
struct From {
    http: reqwest::Client,
    base: String,
    forwarding: Option<(&'static str, String)>,
}

impl From {
    fn new(node: &InProcess, ip: &str) -> From {
        From::to(node.url(), ip)
    }

    /// A client from `ip` of the server (or proxy) at `base`.
    fn to(base: String, ip: &str) -> From {
        let http = reqwest::Client::builder()
            .local_address(ip.parse::<IpAddr>().unwrap())
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        From {
            http,
            base,
            forwarding: None,
        }
    }

    /// A proxy at `ip` forwarding with `header: value` (`x-forwarded-for` or `forwarded`).
    fn proxy(node: &InProcess, ip: &str, header: &'static str, value: &str) -> From {
        From {
            forwarding: Some((header, value.to_owned())),
            ..From::new(node, ip)
        }
    }

    async fn signin(&self, email: &str, password: &str) -> Resp {
        let mut request = self
            .http
            .post(format!("{}/v1/auth/signin", self.base))
            .json(&json!({"email": email, "password": password}));
        if let Some((name, value)) = &self.forwarding {
            request = request.header(*name, value);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{text}");
        Resp {
            status,
            headers,
            text,
        }
    }
}

fn retry_after(resp: &Resp) -> u64 {
    let (error, _) = resp.expect_error(StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error, "too_many_requests");
    resp.headers
        .get("retry-after")
        .expect("429 carries Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn fail(client: &Client, email: &str, times: usize) {
    for _ in 0..times {
        client
            .signin(email, "wrong password, clearly")
            .await
            .expect_error(StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn past_the_limit_even_the_right_password_gets_429_with_retry_after() {
    let node = node(3, 50).await;
    let client = node.client();
    let email = client.new_user("ada").await;
    fail(&client, &email, 3).await;
    // The right password is not even checked: the throttle answers first.
    let resp = client.signin(&email, PASSWORD).await;
    let secs = retry_after(&resp);
    assert!((1..=900).contains(&secs), "Retry-After {secs}");
    // Case and whitespace do not make another account.
    retry_after(
        &client
            .signin(&format!("  {}", email.to_uppercase()), PASSWORD)
            .await,
    );
}

#[tokio::test]
async fn the_window_frees_after_retry_after_on_the_nodes_clock() {
    let node = node(2, 50).await;
    let client = node.client();
    let email = client.new_user("ada").await;
    fail(&client, &email, 2).await;
    let secs = retry_after(&client.signin(&email, PASSWORD).await);
    assert_eq!(secs, 900, "the window is 15 minutes and no time has passed");
    node.advance(Duration::from_secs(secs - 1)).await;
    retry_after(&client.signin(&email, PASSWORD).await);
    node.advance(Duration::from_secs(1)).await;
    client.signin_ok(&email).await;
}

#[tokio::test]
async fn unknown_and_known_emails_throttle_identically() {
    let node = node(3, 50).await;
    let client = node.client();
    let known = client.new_user("known").await;
    let unknown = unique_email("unknown");
    for email in [&known, &unknown] {
        for _ in 0..3 {
            let (error, _) = client
                .signin(email, "wrong password, clearly")
                .await
                .expect_error(StatusCode::UNAUTHORIZED);
            assert_eq!(error, "invalid_grant");
        }
    }
    let a = client.signin(&known, "wrong password, clearly").await;
    let b = client.signin(&unknown, "wrong password, clearly").await;
    assert_eq!(retry_after(&a), retry_after(&b));
    assert_eq!(a.json(), b.json(), "the same answer for both");
}

#[tokio::test]
async fn a_client_that_has_not_failed_is_not_slowed() {
    let node = node(3, 50).await;
    let email = unique_email("ada");
    node.client().signup_ok(&email).await;
    let attacker = From::new(&node, "127.0.0.1");
    let owner = From::new(&node, "127.0.0.2");
    for _ in 0..3 {
        attacker
            .signin(&email, "wrong password, clearly")
            .await
            .expect(StatusCode::UNAUTHORIZED);
    }
    retry_after(&attacker.signin(&email, PASSWORD).await);
    owner.signin(&email, PASSWORD).await.expect(StatusCode::OK);
    // The owner's success does not reset the attacker's counter.
    retry_after(&attacker.signin(&email, PASSWORD).await);
}

#[tokio::test]
async fn a_success_resets_only_its_own_clients_counter() {
    let node = node(3, 50).await;
    let email = unique_email("ada");
    node.client().signup_ok(&email).await;
    let a = From::new(&node, "127.0.0.1");
    let b = From::new(&node, "127.0.0.2");
    for _ in 0..2 {
        a.signin(&email, "wrong password, clearly")
            .await
            .expect(StatusCode::UNAUTHORIZED);
        b.signin(&email, "wrong password, clearly")
            .await
            .expect(StatusCode::UNAUTHORIZED);
    }
    b.signin(&email, PASSWORD).await.expect(StatusCode::OK);
    // b starts over: two more failures stay under the limit of three.
    for _ in 0..2 {
        b.signin(&email, "wrong password, clearly")
            .await
            .expect(StatusCode::UNAUTHORIZED);
    }
    b.signin(&email, PASSWORD).await.expect(StatusCode::OK);
    // a still has its two: a third failure reaches the limit.
    a.signin(&email, "wrong password, clearly")
        .await
        .expect(StatusCode::UNAUTHORIZED);
    retry_after(&a.signin(&email, PASSWORD).await);
}

#[tokio::test]
async fn the_per_ip_limit_spans_accounts() {
    let node = node(5, 4).await;
    let email = unique_email("ada");
    node.client().signup_ok(&email).await;
    let sprayer = From::new(&node, "127.0.0.1");
    spray(&sprayer, 4).await;
    // Any account, even with its right password, from that IP: 429.
    retry_after(&sprayer.signin(&email, PASSWORD).await);
    // Another IP is not affected.
    From::new(&node, "127.0.0.2")
        .signin(&email, PASSWORD)
        .await
        .expect(StatusCode::OK);
}

/// Fail `times` sign-ins of fresh accounts through `client` (the per-IP limit's count).
async fn spray(client: &From, times: usize) {
    for n in 0..times {
        client
            .signin(&unique_email(&format!("spray{n}")), "Winter2026!")
            .await
            .expect(StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_per_ip_limit_keys_on_the_forwarded_client() {
    let node = node_trusting(5, 2, "127.0.0.1, 10.0.0.0/8").await;
    let email = unique_email("ada");
    node.client().signup_ok(&email).await;
    // A client that wrote its own X-Forwarded-For entry: the proxy appended the real one.
    let sprayer = From::proxy(
        &node,
        "127.0.0.1",
        "x-forwarded-for",
        "1.1.1.1, 198.51.100.1",
    );
    spray(&sprayer, 2).await;
    retry_after(&sprayer.signin(&email, PASSWORD).await);
    // The same address behind a second trusted hop, and in a Forwarded header: one client.
    let again = From::proxy(
        &node,
        "127.0.0.1",
        "forwarded",
        "for=198.51.100.1, for=10.1.2.3",
    );
    retry_after(&again.signin(&email, PASSWORD).await);
    // Another client behind the same proxy has its own count, and its session records
    // its own address.
    let neighbour = From::proxy(
        &node,
        "127.0.0.1",
        "forwarded",
        "for=\"[2001:db8::1]:4711\";proto=https",
    );
    let resp = neighbour.signin(&email, PASSWORD).await;
    let tokens = Tokens::from_resp(&resp);
    let sessions = node.client().sessions(&tokens.access_token).await;
    let sessions = sessions.expect(StatusCode::OK).json();
    let current = sessions
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == true)
        .unwrap();
    assert_eq!(current["ip"], "2001:db8::1", "{sessions}");
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    let node = node_trusting(5, 2, "10.0.0.0/8").await;
    let email = unique_email("ada");
    node.client().signup_ok(&email).await;
    let sprayer = From::proxy(&node, "127.0.0.1", "x-forwarded-for", "198.51.100.1");
    spray(&sprayer, 2).await;
    // Claiming another address changes nothing: the peer 127.0.0.1 is the client.
    for (header, value) in [
        ("x-forwarded-for", "198.51.100.2"),
        ("forwarded", "for=198.51.100.3"),
    ] {
        let claimed = From::proxy(&node, "127.0.0.1", header, value);
        retry_after(&claimed.signin(&email, PASSWORD).await);
    }
    let resp = From::new(&node, "127.0.0.2").signin(&email, PASSWORD).await;
    let tokens = Tokens::from_resp(&resp);
    let sessions = node.client().sessions(&tokens.access_token).await;
    assert_eq!(sessions.expect(StatusCode::OK).json()[0]["ip"], "127.0.0.2");
}

/// nginx in front of `node`, appending the client to `X-Forwarded-For` as the usual
/// `proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;` does.
fn nginx_in_front(binary: &std::path::Path, node: &InProcess) -> crate::nginx::Nginx {
    let upstream = node.url();
    crate::nginx::Nginx::start_with(binary, |dir, front| {
        let body = format!(
            "    server {{
        listen 127.0.0.1:{front};
        location / {{
            proxy_pass {upstream};
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
"
        );
        (crate::nginx::http_conf(dir, &body), Vec::new())
    })
}

#[tokio::test]
async fn behind_a_real_nginx_a_client_cannot_forge_its_address() {
    let Some(binary) = crate::nginx::nginx_or_skip() else {
        return;
    };
    let node = node_trusting(5, 2, "127.0.0.1").await;
    let nginx = nginx_in_front(&binary, &node);
    let email = unique_email("ada");
    node.client().signup_ok(&email).await;
    // The sprayer writes its neighbour's address into X-Forwarded-For; nginx appends the
    // sprayer's own, and that is the one tokengate keys on.
    let sprayer = From {
        forwarding: Some(("x-forwarded-for", "127.0.0.3".to_owned())),
        ..From::to(nginx.url(), "127.0.0.2")
    };
    spray(&sprayer, 2).await;
    retry_after(&sprayer.signin(&email, PASSWORD).await);
    let neighbour = From::to(nginx.url(), "127.0.0.3");
    let resp = neighbour.signin(&email, PASSWORD).await;
    let tokens = Tokens::from_resp(&resp);
    let sessions = node.client().sessions(&tokens.access_token).await;
    assert_eq!(sessions.expect(StatusCode::OK).json()[0]["ip"], "127.0.0.3");
}

#[tokio::test]
async fn concurrent_guesses_cannot_exceed_the_limit() {
    let node = node(3, 50).await;
    let email = unique_email("ada");
    node.client().signup_ok(&email).await;
    let client = node.client();
    let guesses = (0..12).map(|_| {
        let client = client.clone();
        let email = email.clone();
        async move {
            client
                .signin(&email, "wrong password, clearly")
                .await
                .status
        }
    });
    let statuses = futures_util::future::join_all(guesses).await;
    let checked = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let throttled = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((checked, throttled), (3, 9), "{statuses:?}");
}

#[test]
fn the_limits_default_to_five_per_account_fifty_per_ip_in_fifteen_minutes() {
    let config = Config::default();
    assert_eq!(config.signin_max_failures, 5);
    assert_eq!(config.signin_max_failures_per_ip, 50);
    assert_eq!(config.signin_failure_window, Duration::from_secs(900));
}
