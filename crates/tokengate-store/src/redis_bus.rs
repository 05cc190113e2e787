//! The cluster's push channel for revocations, on Redis.
//!
//! Every node keeps the full live revocation index in memory and rebuilds it from the SQL
//! store (the source of truth) at start and after every reconnect; Redis only carries each
//! new revocation to the other nodes within milliseconds. Nothing here is on the
//! per-request path, and Redis keeps no revocation state at all: its memory use does not
//! grow with the revocations, and it can be flushed or replaced at any time.
//!
//! Layout, under a `namespace` (such as `tokengate`):
//!
//! - `{ns}:revocations:events`: the pub/sub channel. Each message is one JSON object,
//!   `{"type":"revocation","revocation":{..}}` or
//!   `{"type":"heartbeat","node_id":"..","sent_ms":..}` (`sent_ms`: when the node sent it,
//!   on its own clock; absent from older nodes' heartbeats). Anything else is logged and
//!   skipped, so a newer node can add message types.
//! - `{ns}:revocations`: a sorted set that earlier versions wrote on every publish and
//!   never trimmed (nothing ever read it: nodes catch up from the SQL store).
//!   [`RedisBus::connect`] deletes it, so upgrading frees what it held.
//!
//! A publish lost on the way (Redis down, a node reconnecting) is not a revocation lost: it
//! is durable in the store before it is published, and every node tails the store.
//!
//! The Redis is one server or a master watched by Redis Sentinel (`redis+sentinel://`);
//! [`endpoint`] opens every connection, and behind Sentinel finds the master again after a
//! failover.

mod endpoint;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{ErrorKind, RedisError, RedisResult, ServerErrorKind};
use serde::{Deserialize, Serialize};
use tokengate_core::{Millis, Revocation};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::error::{Result, StoreError};
use endpoint::{CommandConnection, Endpoint, Timeouts};

pub use endpoint::{ROLE_RECHECK, SENTINEL_SCHEME};

/// Bound on one command (or `MULTI` pipeline) and its reply. The default of the `redis`
/// crate (500 ms) is too tight for a large batch on a busy server.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on one TCP connect + handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Bound on a whole operation, reconnect attempts included, so that a caller (a sign-out
/// handler) never hangs on a Redis that does not answer.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
const TIMEOUTS: Timeouts = Timeouts {
    connect: CONNECT_TIMEOUT,
    response: RESPONSE_TIMEOUT,
};
/// First and largest wait between the subscriber's reconnect attempts.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often the subscriber pings its connection, and how long it waits for the answer. A
/// connection that dies without a FIN or RST (a partition, a frozen host) delivers nothing
/// and reports no error; only a ping notices.
const PING_INTERVAL: Duration = Duration::from_secs(1);
const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// Events buffered for a slow receiver. When full the subscriber waits; Redis then buffers
/// on its side, and past its `client-output-buffer-limit` drops the connection, which is
/// reported as [`BusEvent::Lost`] rather than losing messages silently.
const EVENT_BUFFER: usize = 1024;

/// What travels on the channel.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireMessage {
    Revocation {
        revocation: Revocation,
    },
    Heartbeat {
        node_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sent_ms: Option<i64>,
    },
    /// A batch too large to push one by one was recorded: read it from the store.
    CatchUp {},
}

/// The most revocations [`RedisBus::publish`] pushes one by one. A larger batch (a bulk
/// import) would flood every subscriber (Redis disconnects a subscriber whose output buffer
/// passes 32 MiB, about 190 000 messages) and delay the heartbeats queued behind it: it
/// is announced by one [`BusEvent::CatchUp`] instead, and every node reads it from the
/// store.
pub const PUSH_BATCH_LIMIT: usize = 1_000;

/// A connection to the cluster's Redis: the channel that pushes each revocation to every
/// node.
///
/// Cheap to clone; clones share one self-healing connection for commands. Each
/// [`subscribe`](RedisBus::subscribe) opens its own pub/sub connection.
#[derive(Clone)]
pub struct RedisBus {
    endpoint: Arc<Endpoint>,
    conn: Arc<CommandConnection>,
    names: Arc<Names>,
}

struct Names {
    namespace: String,
    channel: String,
}

impl fmt::Debug for RedisBus {
    // Not derived: the endpoint holds the URL's password, which must never be logged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBus")
            .field("namespace", &self.names.namespace)
            .finish_non_exhaustive()
    }
}

/// What a subscription reports, in the order it happened.
///
/// The first event is `Connected`; after that `Lost` and `Connected` alternate, with
/// messages only in between a `Connected` and the next `Lost`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusEvent {
    /// The subscription is (re)established; everything published from now on will arrive.
    /// The receiver must catch up from the durable store before trusting its index again.
    Connected,
    /// A revocation pushed by some node (possibly this one).
    Revocation(Revocation),
    /// A heartbeat from `node_id`.
    Heartbeat {
        /// The node that sent it.
        node_id: String,
        /// When it was sent, on the sender's clock ([`tokengate_core::Clock::now_ms`]);
        /// `None` from a node that predates the stamp.
        sent_ms: Option<Millis>,
    },
    /// The subscription broke; messages may be lost until the next `Connected`.
    Lost,
    /// Some node recorded more revocations than the bus pushes one by one
    /// ([`PUSH_BATCH_LIMIT`]): the receiver reads them from the store, and until a read
    /// that started after this event has succeeded, the heartbeats coming back prove
    /// nothing (as after `Connected`).
    CatchUp,
}

/// Keeps a subscription's background task alive; dropping it stops the task and closes
/// its pub/sub connection (the receiver then yields `None`).
#[derive(Debug)]
pub struct BusSubscription {
    task: JoinHandle<()>,
    reconnect: Arc<Notify>,
}

impl BusSubscription {
    /// Drop the current pub/sub connection and start over (reported as [`BusEvent::Lost`],
    /// then [`BusEvent::Connected`] once a new one works): for a connection that still
    /// answers pings but no longer delivers, as the owner notices when its own heartbeats
    /// stop coming back. Does nothing while no connection is up.
    pub fn reconnect(&self) {
        self.reconnect.notify_waiters();
    }
}

impl Drop for BusSubscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RedisBus {
    /// Connect to the Redis at `url`, with every key and channel under `namespace`. `url`
    /// names one server (`redis://[user:password@]host:port[/db]`) or the sentinels of a
    /// master (`redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/MASTER[/DB]`;
    /// see [`check_url`](RedisBus::check_url)).
    ///
    /// Refuses (with [`StoreError::Unavailable`]) a Redis whose `maxmemory-policy` is
    /// `allkeys-*`, or whose policy cannot be read. The check dates from when the bus kept
    /// revocations in Redis; it stays so that a deployment is judged as it always was, though
    /// with no key of tokengate's left to evict it no longer protects anything.
    ///
    /// Deletes the revocation set earlier versions left under the namespace (see the
    /// module documentation); failing to is only logged.
    pub async fn connect(url: &str, namespace: &str) -> Result<RedisBus> {
        let endpoint = Arc::new(Endpoint::parse(url)?);
        let conn = Arc::new(CommandConnection::new(endpoint.clone(), TIMEOUTS));
        let mut lease = match tokio::time::timeout(OPERATION_TIMEOUT, conn.get()).await {
            Ok(Ok(lease)) => lease,
            Ok(Err(e)) => return Err(unavailable("connect", e)),
            Err(_) => return Err(timed_out("connect")),
        };
        let policy =
            match tokio::time::timeout(OPERATION_TIMEOUT, eviction_policy(&mut lease.conn)).await {
                Ok(policy) => policy?,
                Err(_) => return Err(timed_out("reading maxmemory-policy")),
            };
        if policy.starts_with("allkeys-") {
            return Err(StoreError::Unavailable(
                format!(
                    "refusing redis with maxmemory-policy {policy}: it may evict revocations; \
                     set maxmemory-policy to noeviction (or a volatile-* policy)"
                )
                .into(),
            ));
        }
        let bus = RedisBus {
            endpoint,
            conn,
            names: Arc::new(Names {
                namespace: namespace.to_owned(),
                channel: format!("{namespace}:revocations:events"),
            }),
        };
        if let Err(error) = bus.delete_legacy_set().await {
            tracing::warn!(%error, "cannot delete the revocation set earlier versions left in redis");
        }
        Ok(bus)
    }

    /// Check `url` as [`connect`](RedisBus::connect) reads it, without connecting, so that
    /// a bad URL is a start-up error rather than a bus that never connects. The error says
    /// why; it never quotes the URL (it may hold a password).
    pub fn check_url(url: &str) -> std::result::Result<(), String> {
        Endpoint::parse_or_explain(url).map(|_| ())
    }

    /// Delete `{ns}:revocations`, the sorted set earlier versions added every revocation to
    /// and never trimmed. `UNLINK` frees its memory in the background.
    async fn delete_legacy_set(&self) -> Result<()> {
        let cmd = redis::cmd("UNLINK")
            .arg(format!("{}:revocations", self.names.namespace))
            .to_owned();
        let cmd = &cmd;
        self.run(
            "deleting the legacy revocation set",
            move |mut conn| async move { cmd.query_async::<u64>(&mut conn).await },
        )
        .await
        .map(|_deleted| ())
    }

    /// Publish each of `revocations` on the channel, all in one `MULTI` (so a batch reaches
    /// the subscribers whole or not at all); a batch of more than [`PUSH_BATCH_LIMIT`] is
    /// announced by one [`BusEvent::CatchUp`] instead. Returns once Redis has executed it;
    /// any failure is [`StoreError::Unavailable`]. The revocations must already be durable
    /// in the store: Redis keeps nothing, and a node that misses a message reads it from
    /// the store.
    pub async fn publish(&self, revocations: &[Revocation]) -> Result<()> {
        if revocations.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        let messages = if revocations.len() > PUSH_BATCH_LIMIT {
            vec![encode(&WireMessage::CatchUp {})?]
        } else {
            revocations
                .iter()
                .map(|revocation| {
                    encode(&WireMessage::Revocation {
                        revocation: *revocation,
                    })
                })
                .collect::<Result<Vec<_>>>()?
        };
        for message in messages {
            pipe.cmd("PUBLISH")
                .arg(&self.names.channel)
                .arg(message)
                .ignore();
        }
        let pipe = &pipe;
        // Replaying the whole MULTI after a lost reply is harmless: applying a revocation
        // twice changes nothing.
        self.run("publish", move |mut conn| async move {
            pipe.query_async::<()>(&mut conn).await
        })
        .await
    }

    /// Publish a heartbeat from `node_id`, sent at `sent` on its clock, on the channel.
    /// When a node receives its own heartbeat back, it has received every message that
    /// reached Redis before `sent` (see `sync`).
    pub async fn heartbeat(&self, node_id: &str, sent: Millis) -> Result<()> {
        let message = encode(&WireMessage::Heartbeat {
            node_id: node_id.to_owned(),
            sent_ms: Some(sent.as_millis()),
        })?;
        let cmd = redis::cmd("PUBLISH")
            .arg(&self.names.channel)
            .arg(message)
            .to_owned();
        let cmd = &cmd;
        self.run("heartbeat", move |mut conn| async move {
            cmd.query_async::<i64>(&mut conn).await
        })
        .await
        .map(|_receivers| ())
    }

    /// Subscribe to the channel. A background task holds a pub/sub connection, reconnects
    /// with capped backoff (100 ms doubling to 2 s) for as long as the returned
    /// [`BusSubscription`] lives, and reports [`BusEvent`]s in order on the receiver.
    ///
    /// # Panics
    /// When called outside a Tokio runtime (it spawns the task).
    pub fn subscribe(&self) -> (BusSubscription, mpsc::Receiver<BusEvent>) {
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let reconnect = Arc::new(Notify::new());
        let task = tokio::spawn(subscriber(
            self.endpoint.clone(),
            self.names.channel.clone(),
            tx,
            reconnect.clone(),
        ));
        (BusSubscription { task, reconnect }, rx)
    }

    /// Run `op` on the shared connection, bounded in time. A connection error (or a server
    /// that turned replica) drops the connection and is retried once on a new one: a
    /// broken connection is noticed only when a command fails on it, so the first command
    /// after a Redis restart or a failover fails although Redis is back.
    async fn run<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let first = match tokio::time::timeout(OPERATION_TIMEOUT, self.attempt(&op)).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) if is_connection_error(&e) => e,
            Ok(Err(e)) => return Err(unavailable(what, e)),
            Err(_) => return Err(timed_out(what)),
        };
        tracing::debug!(error = %first, "redis {what} failed on a broken connection; retrying once");
        match tokio::time::timeout(OPERATION_TIMEOUT, self.attempt(&op)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(unavailable(what, e)),
            Err(_) => Err(timed_out(what)),
        }
    }

    /// One try of `op`; the connection is dropped when it failed as a connection.
    async fn attempt<T, F, Fut>(&self, op: &F) -> RedisResult<T>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let lease = self.conn.get().await?;
        let result = op(lease.conn.clone()).await;
        if let Err(e) = &result {
            if is_connection_error(e) {
                self.conn.discard(&lease).await;
            }
        }
        result
    }
}

/// The server's `maxmemory-policy`: from `INFO memory` (allowed where `CONFIG` is renamed
/// or disabled, as on most managed Redis), else from `CONFIG GET`.
async fn eviction_policy(conn: &mut MultiplexedConnection) -> Result<String> {
    let info: RedisResult<String> = redis::cmd("INFO").arg("memory").query_async(conn).await;
    if let Ok(info) = &info {
        let found = info
            .lines()
            .find_map(|line| line.trim().strip_prefix("maxmemory_policy:"));
        if let Some(policy) = found {
            return Ok(policy.trim().to_owned());
        }
    }
    let config: RedisResult<Vec<String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(conn)
        .await;
    match config {
        // The reply is [name, value] (a map on RESP3, which converts the same way).
        Ok(pair) if pair.len() == 2 => Ok(pair[1].clone()),
        Ok(_) => Err(StoreError::Unavailable(
            "cannot read redis maxmemory-policy (not in INFO memory nor CONFIG GET); refusing \
             because an allkeys-* policy could evict revocations"
                .into(),
        )),
        Err(e) => Err(StoreError::unavailable(
            "cannot read redis maxmemory-policy; refusing because an allkeys-* policy could \
             evict revocations",
            e,
        )),
    }
}

/// Why a subscription stopped.
enum Stop {
    /// The connection broke; reconnect.
    Broken(String),
    /// Nobody listens any more; end the task.
    ReceiverGone,
}

/// The subscription task: connect, report, pump messages, and on any break report `Lost`
/// and start over, until the receiver is dropped or the task aborted.
async fn subscriber(
    endpoint: Arc<Endpoint>,
    channel: String,
    tx: mpsc::Sender<BusEvent>,
    reconnect: Arc<Notify>,
) {
    let mut backoff = MIN_BACKOFF;
    // Log the first failed attempt of an outage as a warning and the retries quietly: the
    // `Lost` event already tells the owner, and a 2 s retry loop would flood the log.
    let mut failures: u64 = 0;
    loop {
        match tokio::time::timeout(CONNECT_TIMEOUT * 2, open_subscription(&endpoint, &channel))
            .await
        {
            Ok(Ok((sink, stream))) => {
                if failures > 0 {
                    tracing::info!(attempts = failures + 1, "redis subscription re-established");
                }
                backoff = MIN_BACKOFF;
                failures = 0;
                // Sent only after SUBSCRIBE is confirmed: from here on every message arrives.
                if tx.send(BusEvent::Connected).await.is_err() {
                    return;
                }
                match pump(sink, stream, &tx, &reconnect).await {
                    Stop::ReceiverGone => return,
                    Stop::Broken(reason) => {
                        tracing::warn!(%reason, "redis subscription lost; reconnecting");
                        if tx.send(BusEvent::Lost).await.is_err() {
                            return;
                        }
                    }
                }
            }
            Ok(Err(e)) => log_failure(&mut failures, &e.to_string()),
            Err(_) => log_failure(&mut failures, "timed out"),
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn log_failure(failures: &mut u64, error: &str) {
    *failures += 1;
    if *failures == 1 {
        tracing::warn!(%error, "cannot subscribe to redis; retrying with backoff");
    } else {
        tracing::debug!(%error, attempt = *failures, "cannot subscribe to redis");
    }
}

async fn open_subscription(
    endpoint: &Endpoint,
    channel: &str,
) -> RedisResult<(PubSubSink, PubSubStream)> {
    let (mut sink, stream) = endpoint.pubsub(TIMEOUTS).await?.split();
    sink.subscribe(channel).await?;
    Ok((sink, stream))
}

/// Forward the messages of one subscription until it breaks or nobody listens.
async fn pump(
    sink: PubSubSink,
    mut stream: PubSubStream,
    tx: &mpsc::Sender<BusEvent>,
    reconnect: &Notify,
) -> Stop {
    // Polled alongside the stream in this task, not spawned: it ends with the subscription.
    let mut keepalive = Box::pin(keepalive(sink));
    // Created before the loop: a request made while a message is being forwarded counts.
    let mut asked = std::pin::pin!(reconnect.notified());
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else {
                    return Stop::Broken("connection closed".to_owned());
                };
                if let Some(event) = decode(message.get_payload_bytes()) {
                    if tx.send(event).await.is_err() {
                        return Stop::ReceiverGone;
                    }
                }
            }
            reason = &mut keepalive => return Stop::Broken(reason),
            () = &mut asked => {
                return Stop::Broken("no heartbeat of this node came back".to_owned())
            }
            () = tx.closed() => return Stop::ReceiverGone,
        }
    }
}

/// Ping the subscription connection every [`PING_INTERVAL`]; returns why it stopped
/// answering, and never returns while it answers.
async fn keepalive(mut sink: PubSubSink) -> String {
    loop {
        tokio::time::sleep(PING_INTERVAL).await;
        match tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return format!("ping failed: {e}"),
            Err(_) => return format!("no answer to ping within {PING_TIMEOUT:?}"),
        }
    }
}

/// Decode one channel message; anything malformed is logged and skipped, since the channel
/// is open to any Redis client and a bad message must not stop the others.
fn decode(payload: &[u8]) -> Option<BusEvent> {
    match serde_json::from_slice::<WireMessage>(payload) {
        Ok(WireMessage::Revocation { revocation }) => Some(BusEvent::Revocation(revocation)),
        Ok(WireMessage::Heartbeat { node_id, sent_ms }) => Some(BusEvent::Heartbeat {
            node_id,
            sent_ms: sent_ms.map(Millis::from_millis),
        }),
        Ok(WireMessage::CatchUp {}) => Some(BusEvent::CatchUp),
        Err(e) => {
            // The length, not the payload: it is foreign input of any size.
            tracing::warn!(len = payload.len(), error = %e, "skipping a malformed bus message");
            None
        }
    }
}

fn encode<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::corrupt("cannot encode", e))
}

/// Whether `e` means the connection (not the command) failed, so a retry on a fresh one
/// may succeed. `READONLY` is one: the server was a master when connected and has since
/// been demoted (a failover); a new connection asks the sentinels where the master is.
fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
        || e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
}

fn unavailable(what: &str, e: RedisError) -> StoreError {
    StoreError::unavailable(format!("redis {what}"), e)
}

fn timed_out(what: &str) -> StoreError {
    StoreError::Unavailable(format!("redis {what}: no answer within {OPERATION_TIMEOUT:?}").into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokengate_core::Timestamp;
    use uuid::Uuid;

    #[test]
    fn wire_messages_round_trip_and_garbage_is_skipped() {
        let revocation = Revocation::Token {
            jti: Uuid::new_v4(),
            exp: Timestamp::from_secs(1_700_000_000),
        };
        let json = encode(&WireMessage::Revocation { revocation }).unwrap();
        assert_eq!(
            decode(json.as_bytes()),
            Some(BusEvent::Revocation(revocation))
        );
        let json = encode(&WireMessage::Heartbeat {
            node_id: "a".into(),
            sent_ms: Some(1_700_000_000_250),
        })
        .unwrap();
        assert_eq!(
            decode(json.as_bytes()),
            Some(BusEvent::Heartbeat {
                node_id: "a".into(),
                sent_ms: Some(Millis::from_millis(1_700_000_000_250)),
            })
        );
        // An older node's heartbeat, without the stamp, still decodes.
        assert_eq!(
            decode(br#"{"type":"heartbeat","node_id":"b"}"#),
            Some(BusEvent::Heartbeat {
                node_id: "b".into(),
                sent_ms: None,
            })
        );
        assert_eq!(decode(b"not json"), None);
        assert_eq!(decode(&[0xff, 0xfe]), None);
        assert_eq!(decode(br#"{"type":"revocation"}"#), None);
        assert_eq!(decode(br#"{"type":"future_kind","x":1}"#), None);
    }
}
