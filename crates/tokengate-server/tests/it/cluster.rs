//! A cluster: several `tokengate` processes on one Postgres database and one Redis.
//!
//! These tests need PostgreSQL and Redis ([`common::services`] says which, and how a test
//! skips without them). Outage tests start their own `redis-server` on a random port; the
//! shared one is never stopped. The fault tests under load are in `faults.rs`.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::services::{namespace, node_env, services, skip, OwnRedis, SHARED_REDIS_URL};
use common::Server;
use reqwest::StatusCode;

/// Poll `f` until it is true or `limit` passes.
pub(crate) async fn within(limit: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Two nodes on the database at `db_url` and the shared Redis, in a fresh namespace.
fn two_nodes(db_url: &str) -> (Server, Server) {
    let ns = namespace();
    let env = node_env(db_url, SHARED_REDIS_URL, &ns);
    (Server::start_with_env(&env), Server::start_with_env(&env))
}

#[tokio::test]
async fn token_from_one_node_works_on_the_other_and_signout_reaches_it() {
    let Some(db) = services() else { return };
    let (a, b) = two_nodes(&db.url());
    let (ca, cb) = (a.client(), b.client());

    let email = ca.new_user("cluster").await;
    let tokens = ca.signin_ok(&email).await;
    assert_eq!(
        cb.me_status(&tokens.access_token).await,
        StatusCode::OK,
        "a token signed on A verifies on B"
    );

    // The session lives in the shared database: B can refresh what A issued.
    let refreshed = cb.refresh(&tokens.refresh_token).await;
    refreshed.expect(StatusCode::OK);
    let fresh = common::Tokens::from_resp(&refreshed);
    assert_eq!(ca.me_status(&fresh.access_token).await, StatusCode::OK);

    ca.signout(&fresh.access_token)
        .await
        .expect(StatusCode::NO_CONTENT);
    let refused = within(Duration::from_secs(2), async || {
        cb.me_status(&fresh.access_token).await == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(refused, "B must refuse a token signed out on A within 2 s");
    assert_eq!(
        cb.me_status(&tokens.access_token).await,
        StatusCode::UNAUTHORIZED,
        "the whole session"
    );
}

#[tokio::test]
async fn node_started_after_revocations_refuses_them_from_its_first_request() {
    let Some(db) = services() else { return };
    let ns = namespace();
    let db_url = db.url();
    let env = node_env(&db_url, SHARED_REDIS_URL, &ns);
    let a = Server::start_with_env(&env);
    let ca = a.client();
    let email = ca.new_user("late").await;
    let revoked = ca.signin_ok(&email).await;
    let kept = ca.signin_ok(&email).await;
    ca.signout(&revoked.access_token)
        .await
        .expect(StatusCode::NO_CONTENT);

    let b = Server::start_with_env(&env);
    let cb = b.client();
    assert_eq!(
        cb.me_status(&revoked.access_token).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(cb.me_status(&kept.access_token).await, StatusCode::OK);
}

#[tokio::test]
async fn redis_outage_keeps_nodes_current_through_the_store_and_signout_reaches_them() {
    let Some(db) = services() else { return };
    let Some(mut redis) = OwnRedis::start(&[]) else {
        skip("cannot start a private redis-server");
        return;
    };
    let ns = namespace();
    let (db_url, redis_url) = (db.url(), redis.url());
    let mut env = node_env(&db_url, &redis_url, &ns);
    env.push(("TOKENGATE_MAX_STALENESS", "2s"));
    let a = Server::start_with_env(&env);
    let b = Server::start_with_env(&env);
    let (ca, cb) = (a.client(), b.client());

    let email = ca.new_user("outage").await;
    let kept = ca.signin_ok(&email).await;
    let ended = ca.signin_ok(&email).await;
    let after_heal = ca.signin_ok(&email).await;
    assert_eq!(cb.me_status(&kept.access_token).await, StatusCode::OK);

    redis.kill();
    // Past max_staleness without the bus: every read of the durable record (each second)
    // still proves B's index current, so B keeps serving under fail_closed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        cb.me_status(&kept.access_token).await,
        StatusCode::OK,
        "the store's tail keeps B current while Redis is down"
    );
    assert_eq!(cb.get("/readyz", None).await.status, StatusCode::OK);

    // Signing out keeps working (durable in Postgres, acknowledged after at most 250 ms
    // trying to publish), and B reads it from the store within max_staleness (2 s; 1 s
    // of margin for two processes on a shared machine).
    ca.signout(&ended.access_token)
        .await
        .expect(StatusCode::NO_CONTENT);
    let refused = within(Duration::from_secs(3), async || {
        cb.me_status(&ended.access_token).await == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(refused, "the outage sign-out reached B through the store");

    assert!(redis.spawn(), "restart the private redis-server");
    ca.signout(&after_heal.access_token)
        .await
        .expect(StatusCode::NO_CONTENT);
    let refused = within(Duration::from_secs(3), async || {
        cb.me_status(&after_heal.access_token).await == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(refused, "a sign-out after the heal reaches B");
    assert_eq!(cb.me_status(&kept.access_token).await, StatusCode::OK);
    assert_eq!(cb.get("/readyz", None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn keys_rotated_by_the_cli_reach_every_node() {
    let Some(db) = services() else { return };
    let (a, b) = two_nodes(&db.url());
    let (ca, cb) = (a.client(), b.client());
    let email = ca.new_user("keys").await;
    let before = ca.signin_ok(&email).await;
    let old_kid = common::jwt_header(&before.access_token)["kid"].clone();

    a.cli_ok(&["keys", "rotate"], None);
    let rotated = within(Duration::from_secs(5), async || {
        let t = cb.signin_ok(&email).await;
        common::jwt_header(&t.access_token)["kid"] != old_kid
    })
    .await;
    assert!(rotated, "B signs with the new key");
    let after = cb.signin_ok(&email).await;
    assert_eq!(
        ca.me_status(&after.access_token).await,
        StatusCode::OK,
        "A verifies B's new key"
    );
    assert_eq!(
        cb.me_status(&before.access_token).await,
        StatusCode::OK,
        "old tokens keep working"
    );
}

#[tokio::test]
async fn refuses_to_start_on_a_redis_that_may_evict_revocations() {
    let Some(_db) = services() else { return };
    let Some(redis) = OwnRedis::start(&["--maxmemory-policy", "allkeys-lru"]) else {
        skip("cannot start a private redis-server");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(["--redis-url", &redis.url()])
        .env_remove("TOKENGATE_REDIS_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("maxmemory-policy"), "{stderr}");
}

#[tokio::test]
async fn a_gate_sign_out_on_one_node_is_refused_on_the_other() {
    use crate::gate::{webui_config_file, webui_token};
    let Some(db) = services() else { return };
    let config_dir = tempfile::tempdir().unwrap();
    let config = webui_config_file(config_dir.path());
    let ns = namespace();
    let db_url = db.url();
    let mut env = node_env(&db_url, SHARED_REDIS_URL, &ns);
    env.push(("TOKENGATE_CONFIG", &config));
    let (a, b) = (Server::start_with_env(&env), Server::start_with_env(&env));
    let (ca, cb) = (a.client(), b.client());

    let (signed_out, kept) = (webui_token("alice"), webui_token("bob"));
    for token in [&signed_out, &kept] {
        cb.get("/v1/verify", Some(token))
            .await
            .expect(StatusCode::OK);
    }
    ca.send(
        ca.raw(reqwest::Method::POST, "/v1/gate/signout")
            .header("cookie", format!("token={signed_out}")),
    )
    .await
    .expect(StatusCode::OK);
    let refused = within(Duration::from_secs(2), async || {
        cb.get("/v1/verify", Some(&signed_out)).await.status == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(refused, "node B still accepts a token signed out on node A");
    cb.get("/v1/verify", Some(&kept))
        .await
        .expect(StatusCode::OK);
}
