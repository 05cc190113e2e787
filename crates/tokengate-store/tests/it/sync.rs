//! [`IndexSync`] against a real Redis and a real database, each reached through a
//! [`FreezableProxy`] that stops forwarding bytes (a hung server, a link that drops
//! everything): the durable-record tail and the bus prove the index current independently,
//! so either keeps the node serving while the other hangs, and a hang of both is noticed
//! by timeout and recovered from by itself.
//!
//! These run on the real clock: the bounds asserted are the product's own promises
//! (`max_staleness` = 2 s here), each with a documented margin for a shared, noisy machine.
//! Without Redis or Postgres a test prints `skipped: <reason>` and passes, unless
//! `TOKENGATE_REQUIRE_SERVICES=1` makes it fail.

use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use tokengate_core::{
    Clock, Freshness, Proof, Revocation, RevocationIndex, StalenessPolicy, SystemClock,
};
use tokengate_store::redis_bus::PUSH_BATCH_LIMIT;
use tokengate_store::{IndexSync, RedisBus, SqliteStore, Store};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::common::FreezableProxy;
use super::postgres;
use super::redis_bus::{skip, Namespace, SHARED_REDIS};

const MAX_STALENESS: Duration = Duration::from_secs(2);
/// Longer than `max_staleness`: a proof source that hangs this long would have let the
/// node turn stale on its own.
const HANG: Duration = Duration::from_secs(4);
/// Bound on recovering after a heal: the subscriber's reconnect backoff (up to 2 s), a
/// connect, a catch-up read and a heartbeat round trip, with slack for a busy machine.
const RECOVERY: Duration = Duration::from_secs(15);

/// One node's sync loops over `store` and `bus`, stopped when dropped.
struct Node {
    freshness: Arc<Freshness>,
    index: Arc<RevocationIndex>,
    clock: Arc<dyn Clock>,
    _stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Node {
    fn start(store: Arc<dyn Store>, bus: RedisBus) -> Node {
        let freshness = Arc::new(Freshness::new(StalenessPolicy::FailClosed, MAX_STALENESS));
        let index = Arc::new(RevocationIndex::new(Duration::from_secs(30)));
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let (stop, stopped) = watch::channel(false);
        let sync = IndexSync {
            store,
            bus: Some(bus),
            index: index.clone(),
            freshness: freshness.clone(),
            clock: clock.clone(),
            node_id: Uuid::new_v4().to_string(),
        };
        // The store starts empty: nothing to load, the tail starts at the beginning.
        let task = tokio::spawn(sync.run(0, stopped));
        Node {
            freshness,
            index,
            clock,
            _stop: stop,
            task,
        }
    }

    fn lag_of(&self, proof: Proof) -> Option<Duration> {
        self.freshness.lag_of(proof, self.clock.now_ms())
    }

    fn is_stale(&self) -> bool {
        self.freshness.is_stale(self.clock.now_ms())
    }

    /// Whether a proof of kind `proof` younger than a second arrives within `limit`.
    async fn proving_by(&self, proof: Proof, limit: Duration) -> bool {
        within(limit, || {
            self.lag_of(proof)
                .is_some_and(|lag| lag < Duration::from_secs(1))
        })
        .await
    }

    /// Sampled every 20 ms over `span`, the index never counts as stale.
    async fn never_stale_for(&self, span: Duration) {
        let deadline = tokio::time::Instant::now() + span;
        while tokio::time::Instant::now() < deadline {
            assert!(
                !self.is_stale(),
                "stale: store proof {:?} old, bus proof {:?} old",
                self.lag_of(Proof::Store),
                self.lag_of(Proof::Bus)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn within(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A token revocation live for the next hour (these tests run on the real clock).
fn token() -> Revocation {
    Revocation::Token {
        jti: Uuid::new_v4(),
        exp: SystemClock.now().plus(Duration::from_secs(3_600)),
    }
}

/// A bus on the shared Redis through a new proxy, or `None` (after `skip`).
async fn proxied_bus() -> Option<(RedisBus, FreezableProxy, Namespace)> {
    let upstream = SHARED_REDIS.trim_start_matches("redis://");
    let proxy = FreezableProxy::start(upstream).await;
    let ns = Namespace::new();
    match RedisBus::connect(&format!("redis://{}", proxy.addr()), &ns.0).await {
        Ok(bus) => Some((bus, proxy, ns)),
        Err(e) => {
            skip(&format!("no Redis at {SHARED_REDIS}: {e}"));
            None
        }
    }
}

#[tokio::test]
async fn the_store_tail_keeps_the_index_current_while_redis_hangs() {
    let Some((bus, redis, _ns)) = proxied_bus().await else {
        return;
    };
    let dir = TempDir::new().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("t.db")).await.unwrap());
    let node = Node::start(store.clone(), bus);
    assert!(
        node.proving_by(Proof::Bus, RECOVERY).await,
        "bus proofs flow"
    );

    redis.freeze();
    // Another process records a revocation: the tail applies it within max_staleness (a
    // read every second; 1 s of margin).
    store
        .record_revocations(&[token()], SystemClock.now())
        .await
        .unwrap();
    assert!(
        within(MAX_STALENESS + Duration::from_secs(1), || node.index.len()
            == 1)
        .await,
        "the tail applied the revocation while redis hangs"
    );
    node.never_stale_for(HANG).await;
    let bus_lag = node.lag_of(Proof::Bus).unwrap();
    assert!(bus_lag > MAX_STALENESS, "redis really hung ({bus_lag:?})");

    redis.thaw();
    assert!(
        node.proving_by(Proof::Bus, RECOVERY).await,
        "bus proofs come back by themselves after the heal"
    );
}

#[tokio::test]
async fn the_bus_keeps_the_index_current_while_the_database_hangs() {
    let Some((store, database, _schema)) = postgres::proxied().await else {
        return;
    };
    let Some((bus, _ns)) = super::redis_bus::shared_bus().await else {
        return;
    };
    // Another node's handle on the same channel.
    let other = bus.clone();
    let node = Node::start(Arc::new(store), bus);
    assert!(
        node.proving_by(Proof::Bus, RECOVERY).await,
        "bus proofs flow"
    );

    database.freeze();
    other.publish(&[token()]).await.unwrap();
    assert!(
        within(Duration::from_secs(2), || node.index.len() == 1).await,
        "a pushed revocation is applied while the database hangs"
    );
    node.never_stale_for(HANG).await;
    let store_lag = node.lag_of(Proof::Store).unwrap();
    assert!(
        store_lag > MAX_STALENESS,
        "the database really hung ({store_lag:?})"
    );

    database.thaw();
    assert!(
        node.proving_by(Proof::Store, RECOVERY).await,
        "the tail proves again after the heal"
    );
}

#[tokio::test]
async fn a_node_whose_database_and_redis_both_hang_turns_stale_in_time_and_recovers() {
    let Some((store, database, _schema)) = postgres::proxied().await else {
        return;
    };
    let Some((bus, redis, _ns)) = proxied_bus().await else {
        return;
    };
    let node = Node::start(Arc::new(store), bus);
    assert!(
        node.proving_by(Proof::Bus, RECOVERY).await,
        "bus proofs flow"
    );
    assert!(
        node.proving_by(Proof::Store, RECOVERY).await,
        "store proofs flow"
    );

    database.freeze();
    redis.freeze();
    // Stale once the newest proof is older than max_staleness: proofs were under a second
    // old at the freeze, so within 2 s of it (1 s of margin for the sampling).
    assert!(
        within(MAX_STALENESS + Duration::from_secs(1), || node.is_stale()).await,
        "no proof for max_staleness: stale"
    );

    database.thaw();
    redis.thaw();
    assert!(
        within(RECOVERY, || !node.is_stale()).await,
        "current again by itself after the heal"
    );
    assert!(
        node.proving_by(Proof::Bus, RECOVERY).await,
        "bus proofs again"
    );
}

#[tokio::test]
async fn a_batch_too_large_to_push_makes_the_bus_prove_nothing_until_the_store_is_read() {
    let Some((store, database, _schema)) = postgres::proxied().await else {
        return;
    };
    let Some((bus, _ns)) = super::redis_bus::shared_bus().await else {
        return;
    };
    let other = bus.clone();
    let store = Arc::new(store);
    let node = Node::start(store.clone(), bus);
    assert!(
        node.proving_by(Proof::Bus, RECOVERY).await,
        "bus proofs flow"
    );

    // Another node records a bulk import, then announces it: one catch-up notice, not one
    // message per revocation.
    let import: Vec<Revocation> = (0..=PUSH_BATCH_LIMIT).map(|_| token()).collect();
    store
        .record_revocations(&import, SystemClock.now())
        .await
        .unwrap();
    database.freeze();
    other.publish(&import).await.unwrap();
    // Heartbeats still come back, but they cannot prove the import was seen: with the store
    // unreadable the node turns stale (proofs were under a second old: 1 s of margin).
    assert!(
        within(MAX_STALENESS + Duration::from_secs(1), || node.is_stale()).await,
        "stale: bus proof {:?} old, the import unread",
        node.lag_of(Proof::Bus)
    );

    database.thaw();
    assert!(
        within(RECOVERY, || node.index.len() == import.len()).await,
        "the import is read from the store after the heal"
    );
    assert!(
        node.proving_by(Proof::Bus, RECOVERY).await,
        "bus proofs again once the store was read"
    );
}
