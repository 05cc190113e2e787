//! [`RedisBus`] against a real Redis.
//!
//! Most tests use the shared Redis on 127.0.0.1:6379, each under its own namespace whose keys
//! it deletes at the end. Outage and configuration tests start their own `redis-server` on a
//! free port and never touch the shared one. Without the service a test prints
//! `skipped: <reason>` and passes, unless `TOKENGATE_REQUIRE_SERVICES=1` makes it fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;
use tokengate_core::{Millis, Revocation, Timestamp};
use tokengate_store::redis_bus::PUSH_BATCH_LIMIT;
use tokengate_store::{BusEvent, RedisBus, StoreError};
use tokio::sync::mpsc::Receiver;
use uuid::Uuid;

pub(crate) const SHARED_REDIS: &str = "redis://127.0.0.1:6379";
/// The bound on every wait for an event.
const WAIT: Duration = Duration::from_secs(5);
/// Reconnecting waits out the subscriber's backoff (up to 2 s) first; more slack.
const RECONNECT_WAIT: Duration = Duration::from_secs(15);

/// Skip (or, with `TOKENGATE_REQUIRE_SERVICES=1`, fail) a test whose service is missing.
pub(crate) fn skip(reason: &str) {
    if std::env::var("TOKENGATE_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("TOKENGATE_REQUIRE_SERVICES=1 but {reason}");
    }
    println!("skipped: {reason}");
}

/// A unique namespace on the shared Redis; any key under it goes when this is dropped (also
/// when the test fails).
pub(crate) struct Namespace(pub(crate) String);

impl Namespace {
    pub(crate) fn new() -> Self {
        Namespace(format!("tokengate-test-{}", Uuid::new_v4().simple()))
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Ok(client) = redis::Client::open(SHARED_REDIS) {
            if let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(1)) {
                let _: redis::RedisResult<i64> = redis::cmd("DEL")
                    .arg(format!("{}:revocations", self.0))
                    .query(&mut conn);
            }
        }
    }
}

/// A bus on the shared Redis under a fresh namespace, or `None` (after `skip`) without one.
pub(crate) async fn shared_bus() -> Option<(RedisBus, Namespace)> {
    let ns = Namespace::new();
    match RedisBus::connect(SHARED_REDIS, &ns.0).await {
        Ok(bus) => Some((bus, ns)),
        Err(e) => {
            skip(&format!("no Redis at {SHARED_REDIS}: {e}"));
            None
        }
    }
}

/// A `redis-server` of this test's own, killed when dropped.
struct OwnRedis {
    port: u16,
    child: Option<Child>,
    dir: TempDir,
}

impl OwnRedis {
    /// Start one on a free port with `extra` arguments, or `None` (after `skip`).
    async fn start(extra: &[&str]) -> Option<OwnRedis> {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let mut redis = OwnRedis {
            port,
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        if let Err(e) = redis.spawn(extra).await {
            skip(&e);
            return None;
        }
        Some(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Start the server (again) on this port and wait until it answers.
    async fn spawn(&mut self, extra: &[&str]) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run redis-server: {e}"))?;
        self.child = Some(child);
        let client = redis::Client::open(self.url()).unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                if redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
                {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "own redis-server on port {} did not start",
                    self.port
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Send `signal` (such as `STOP` or `CONT`) to the server.
    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the server runs");
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        // SIGKILL ends a stopped server too.
        self.kill();
    }
}

/// The next event, failing the test after [`WAIT`].
async fn next_event(rx: &mut Receiver<BusEvent>) -> BusEvent {
    next_event_within(rx, WAIT).await
}

async fn next_event_within(rx: &mut Receiver<BusEvent>, bound: Duration) -> BusEvent {
    match tokio::time::timeout(bound, rx.recv()).await {
        Ok(Some(event)) => event,
        Ok(None) => panic!("the subscription ended"),
        Err(_) => panic!("no bus event within {bound:?}"),
    }
}

/// Publish a fresh token revocation and assert the subscriber receives it: the bus
/// works end to end.
async fn assert_round_trip(bus: &RedisBus, rx: &mut Receiver<BusEvent>) {
    let after = token(now().plus(Duration::from_secs(600)));
    bus.publish(&[after]).await.unwrap();
    assert_eq!(next_event(rx).await, BusEvent::Revocation(after));
}

fn now() -> Timestamp {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    Timestamp::from_secs(i64::try_from(secs).unwrap())
}

/// One revocation of each kind, all expiring at `exp`.
fn one_of_each(exp: Timestamp) -> Vec<Revocation> {
    vec![
        Revocation::Token {
            jti: Uuid::new_v4(),
            exp,
        },
        Revocation::Session {
            sid: Uuid::new_v4(),
            exp,
        },
        Revocation::User {
            sub: Uuid::new_v4(),
            issued_before: exp.minus(Duration::from_secs(900)),
            exp,
        },
        Revocation::IssuedBefore {
            issued_before: exp.minus(Duration::from_secs(900)),
            exp,
        },
    ]
}

fn token(exp: Timestamp) -> Revocation {
    Revocation::Token {
        jti: Uuid::new_v4(),
        exp,
    }
}

#[tokio::test]
async fn publish_reaches_a_subscriber_of_another_handle() {
    let Some((node_a, ns)) = shared_bus().await else {
        return;
    };
    // A second connection, as another node would have.
    let node_b = RedisBus::connect(SHARED_REDIS, &ns.0).await.unwrap();
    let (_subscription, mut rx) = node_b.subscribe();
    assert_eq!(next_event(&mut rx).await, BusEvent::Connected);

    let revocations = one_of_each(now().plus(Duration::from_secs(3600)));
    node_a.publish(&revocations).await.unwrap();
    for expected in &revocations {
        assert_eq!(next_event(&mut rx).await, BusEvent::Revocation(*expected));
    }
    // An empty batch publishes nothing and succeeds.
    node_a.publish(&[]).await.unwrap();
}

#[tokio::test]
async fn a_batch_too_large_to_push_is_announced_by_one_catch_up() {
    let Some((bus, _ns)) = shared_bus().await else {
        return;
    };
    let (_subscription, mut rx) = bus.subscribe();
    assert_eq!(next_event(&mut rx).await, BusEvent::Connected);
    let exp = now().plus(Duration::from_secs(600));

    let import: Vec<Revocation> = (0..=PUSH_BATCH_LIMIT).map(|_| token(exp)).collect();
    bus.publish(&import).await.unwrap();
    assert_eq!(next_event(&mut rx).await, BusEvent::CatchUp);
    // Nothing else of the batch: the next event is the next publish.
    assert_round_trip(&bus, &mut rx).await;

    // At the limit, each is pushed.
    let batch: Vec<Revocation> = (0..PUSH_BATCH_LIMIT).map(|_| token(exp)).collect();
    bus.publish(&batch).await.unwrap();
    for expected in &batch {
        assert_eq!(next_event(&mut rx).await, BusEvent::Revocation(*expected));
    }
}

/// Every key under the namespace on the shared Redis, with its type and size.
async fn keys_under(ns: &Namespace) -> Vec<(String, String, i64)> {
    let client = redis::Client::open(SHARED_REDIS).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", ns.0))
        .query_async(&mut raw)
        .await
        .unwrap();
    let mut found = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut raw)
            .await
            .unwrap();
        let size: i64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&key)
            .query_async(&mut raw)
            .await
            .unwrap_or(-1);
        found.push((key, kind, size));
    }
    found
}

#[tokio::test]
async fn publishing_leaves_no_state_in_redis() {
    // Earlier versions added every published revocation to `{ns}:revocations` and never
    // removed one: 20 sign-outs left 20 members, and under `noeviction` Redis filled up.
    let Some((bus, ns)) = shared_bus().await else {
        return;
    };
    let (_subscription, mut rx) = bus.subscribe();
    assert_eq!(next_event(&mut rx).await, BusEvent::Connected);
    let t = |secs: i64| Timestamp::from_secs(1_700_000_000 + secs);
    let mut published = Vec::new();
    for i in 0..20 {
        // Half long expired, half far in the future: neither may stay behind.
        let exp = if i % 2 == 0 {
            t(i)
        } else {
            t(1_000_000_000 + i)
        };
        let batch = one_of_each(exp);
        bus.publish(&batch).await.unwrap();
        published.extend(batch);
    }
    bus.heartbeat("node-a", Millis::from_millis(0))
        .await
        .unwrap();
    for expected in &published {
        assert_eq!(next_event(&mut rx).await, BusEvent::Revocation(*expected));
    }
    assert_eq!(keys_under(&ns).await, vec![], "nothing kept in redis");
}

#[tokio::test]
async fn connect_deletes_the_revocation_set_earlier_versions_left() {
    let Some((_bus, ns)) = shared_bus().await else {
        return;
    };
    // What an earlier version left behind: one member per revocation ever published.
    let legacy = format!("{}:revocations", ns.0);
    let client = redis::Client::open(SHARED_REDIS).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    for i in 0..20_i64 {
        redis::cmd("ZADD")
            .arg(&legacy)
            .arg(1_700_000_000 + i)
            .arg(format!("{{\"kind\":\"token\",\"n\":{i}}}"))
            .query_async::<i64>(&mut raw)
            .await
            .unwrap();
    }
    assert_eq!(keys_under(&ns).await.len(), 1);

    let _upgraded = RedisBus::connect(SHARED_REDIS, &ns.0).await.unwrap();
    assert_eq!(keys_under(&ns).await, vec![]);
}

#[tokio::test]
async fn heartbeat_is_received() {
    let Some((bus, _ns)) = shared_bus().await else {
        return;
    };
    let (_subscription, mut rx) = bus.subscribe();
    assert_eq!(next_event(&mut rx).await, BusEvent::Connected);
    let sent = Millis::from_millis(1_700_000_000_123);
    bus.heartbeat("node-a", sent).await.unwrap();
    assert_eq!(
        next_event(&mut rx).await,
        BusEvent::Heartbeat {
            node_id: "node-a".to_owned(),
            sent_ms: Some(sent),
        }
    );
}

#[tokio::test]
async fn malformed_message_is_skipped() {
    let Some((bus, ns)) = shared_bus().await else {
        return;
    };
    let (_subscription, mut rx) = bus.subscribe();
    assert_eq!(next_event(&mut rx).await, BusEvent::Connected);

    // What a foreign or broken client could publish on the channel.
    let channel = format!("{}:revocations:events", ns.0);
    let client = redis::Client::open(SHARED_REDIS).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let garbage: [&[u8]; 6] = [
        b"not json",
        &[0xff, 0xfe, 0x00],
        b"",
        br#"{"type":"revocation"}"#,
        br#"{"type":"revocation","revocation":{"kind":"token","jti":"nope","exp":1}}"#,
        br#"{"type":"from_a_newer_node","x":1}"#,
    ];
    for payload in garbage {
        redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(payload)
            .query_async::<i64>(&mut raw)
            .await
            .unwrap();
    }
    let good = token(now().plus(Duration::from_secs(600)));
    bus.publish(&[good]).await.unwrap();
    assert_eq!(next_event(&mut rx).await, BusEvent::Revocation(good));
}

#[tokio::test]
async fn dropping_the_subscription_closes_the_receiver() {
    let Some((bus, _ns)) = shared_bus().await else {
        return;
    };
    let (subscription, mut rx) = bus.subscribe();
    assert_eq!(next_event(&mut rx).await, BusEvent::Connected);
    drop(subscription);
    match tokio::time::timeout(WAIT, rx.recv()).await {
        Ok(None) => {}
        other => panic!("expected the receiver to close, got {other:?}"),
    }
}

#[tokio::test]
async fn subscriber_reports_lost_then_connected_when_redis_restarts() {
    let Some(mut redis) = OwnRedis::start(&[]).await else {
        return;
    };
    let bus = RedisBus::connect(&redis.url(), "tokengate").await.unwrap();
    let (_subscription, mut rx) = bus.subscribe();
    assert_eq!(next_event(&mut rx).await, BusEvent::Connected);

    redis.kill();
    assert_eq!(next_event(&mut rx).await, BusEvent::Lost);
    // While Redis is down a publish fails (in bounded time) instead of pretending.
    let during = token(now().plus(Duration::from_secs(600)));
    assert!(matches!(
        bus.publish(&[during]).await,
        Err(StoreError::Unavailable(_))
    ));

    redis.spawn(&[]).await.unwrap();
    assert_eq!(
        next_event_within(&mut rx, RECONNECT_WAIT).await,
        BusEvent::Connected
    );
    // The command connection recovers by itself too: the first publish after the restart
    // goes through.
    assert_round_trip(&bus, &mut rx).await;
}

#[tokio::test]
async fn subscriber_reports_lost_when_redis_stops_answering_and_recovers() {
    // A frozen server (or a partition) closes no socket: only the subscriber's ping notices.
    let Some(redis) = OwnRedis::start(&[]).await else {
        return;
    };
    let bus = RedisBus::connect(&redis.url(), "tokengate").await.unwrap();
    let (_subscription, mut rx) = bus.subscribe();
    assert_eq!(next_event(&mut rx).await, BusEvent::Connected);

    redis.signal("STOP");
    // Ping interval plus ping timeout, with slack.
    assert_eq!(
        next_event_within(&mut rx, RECONNECT_WAIT).await,
        BusEvent::Lost
    );
    redis.signal("CONT");
    assert_eq!(
        next_event_within(&mut rx, RECONNECT_WAIT).await,
        BusEvent::Connected
    );
    assert_round_trip(&bus, &mut rx).await;
}

#[tokio::test]
async fn connect_refuses_allkeys_eviction_policy() {
    let Some(redis) = OwnRedis::start(&["--maxmemory-policy", "allkeys-lru"]).await else {
        return;
    };
    match RedisBus::connect(&redis.url(), "tokengate").await {
        Err(StoreError::Unavailable(message)) => {
            assert!(message.to_string().contains("allkeys-lru"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    // A policy that evicts only keys with a TTL is accepted.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    for policy in ["volatile-lru", "noeviction"] {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory-policy")
            .arg(policy)
            .query_async::<()>(&mut raw)
            .await
            .unwrap();
        RedisBus::connect(&redis.url(), "tokengate").await.unwrap();
    }
}
