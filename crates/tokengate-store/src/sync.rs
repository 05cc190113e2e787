//! Keeping a node's in-memory [`RevocationIndex`] current: tail the durable record, and
//! in a cluster receive every revocation pushed over the [`RedisBus`].
//!
//! - Single node: every [`TAIL_EVERY`], read the revocations recorded after the last one
//!   seen (by the admin CLI or any other process on the same database), apply them, and
//!   confirm the index as current.
//! - Cluster: revocations arrive by push within milliseconds; the index counts as current
//!   while heartbeats (published by every node each second) keep arriving through Redis.
//!   After every (re)connect the node first catches up from the durable record, and only
//!   then trusts its index again. The tail keeps running as a safety net (a publish that
//!   failed after its revocation was recorded still arrives within a second).
//!
//! [`RevocationPublisher`] is the sending half: handlers hand it revocations that are
//! already durable, and a task publishes them without making the request wait on Redis.

use std::sync::Arc;
use std::time::Duration;

use tokengate_core::{Clock, Freshness, Revocation, RevocationIndex, Timestamp};
use tokio::sync::{mpsc, watch};

use crate::error::Result;
use crate::redis_bus::{BusEvent, RedisBus};
use crate::store::Store;

/// How often a single node reads new revocations from the store; a CLI revocation reaches
/// a running server within this.
pub const TAIL_EVERY: Duration = Duration::from_millis(250);
/// In a cluster the push does the work; the tail only reconciles.
pub const CLUSTER_TAIL_EVERY: Duration = Duration::from_secs(1);
/// How often each cluster node publishes a heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
const TAIL_BATCH: u32 = 10_000;

/// What the sync loop keeps current.
pub struct IndexSync {
    /// The durable record (source of truth).
    pub store: Arc<dyn Store>,
    /// The cluster's push channel, if any.
    pub bus: Option<RedisBus>,
    /// The index to keep current.
    pub index: Arc<RevocationIndex>,
    /// Marked in sync when the index is known current.
    pub freshness: Arc<Freshness>,
    /// The one clock.
    pub clock: Arc<dyn Clock>,
    /// This node's name in heartbeats.
    pub node_id: String,
}

impl IndexSync {
    /// Run until `stop` turns true. `cursor` is the sequence number of the last
    /// revocation already in the index (from [`Store::load_live_revocations`]).
    pub async fn run(self, mut cursor: i64, mut stop: watch::Receiver<bool>) {
        let cluster = self.bus.is_some();
        let mut tail = tokio::time::interval(if cluster {
            CLUSTER_TAIL_EVERY
        } else {
            TAIL_EVERY
        });
        tail.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (_subscription, mut events) = match &self.bus {
            Some(bus) => {
                let (subscription, events) = bus.subscribe();
                (Some(subscription), Some(events))
            }
            None => (None, None),
        };
        // Cluster: connected to the bus and caught up from the store since connecting.
        let mut connected = false;
        let mut caught_up = false;
        let mut tail_failing = false;
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tail.tick() => {
                    let now = self.clock.now();
                    match self.catch_up(&mut cursor, now).await {
                        Ok(()) => {
                            if tail_failing {
                                tracing::info!("reading the revocation record works again");
                                tail_failing = false;
                            }
                            if !cluster {
                                self.freshness.mark_in_sync(now);
                            } else if connected && !caught_up {
                                caught_up = true;
                                self.freshness.mark_in_sync(now);
                            }
                        }
                        Err(error) => {
                            if !tail_failing {
                                tracing::warn!(%error, "cannot read new revocations from the store");
                                tail_failing = true;
                            }
                        }
                    }
                }
                _ = heartbeat.tick(), if cluster => {
                    if let Some(bus) = &self.bus {
                        // A failure shows up as missing heartbeats on every node.
                        let _ = bus.heartbeat(&self.node_id).await;
                    }
                }
                event = recv(&mut events), if cluster => match event {
                    Some(BusEvent::Connected) => {
                        connected = true;
                        let now = self.clock.now();
                        caught_up = self.catch_up(&mut cursor, now).await.is_ok();
                        if caught_up {
                            self.freshness.mark_in_sync(now);
                        }
                        tracing::info!(caught_up, "revocation bus connected");
                    }
                    Some(BusEvent::Revocation(revocation)) => {
                        self.index.apply(&revocation, self.clock.now());
                    }
                    Some(BusEvent::Heartbeat { .. }) => {
                        if caught_up {
                            self.freshness.mark_in_sync(self.clock.now());
                        }
                    }
                    Some(BusEvent::Lost) => {
                        connected = false;
                        caught_up = false;
                        self.freshness.mark_lost(self.clock.now());
                        tracing::warn!("revocation bus lost; the index turns stale after max_staleness");
                    }
                    None => {
                        tracing::error!("revocation bus subscription ended");
                        events = None;
                        self.freshness.mark_lost(self.clock.now());
                    }
                },
            }
        }
    }

    /// Apply every revocation recorded after `cursor`.
    async fn catch_up(&self, cursor: &mut i64, now: Timestamp) -> Result<()> {
        loop {
            let batch = self.store.revocations_after(*cursor, TAIL_BATCH).await?;
            for (seq, revocation) in &batch {
                self.index.apply(revocation, now);
                *cursor = *seq;
            }
            if batch.len() < TAIL_BATCH as usize {
                return Ok(());
            }
        }
    }
}

async fn recv(events: &mut Option<mpsc::Receiver<BusEvent>>) -> Option<BusEvent> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

/// Hands durable revocations to the bus without making a request wait on Redis.
#[derive(Clone, Debug, Default)]
pub struct RevocationPublisher {
    queue: Option<mpsc::Sender<Vec<Revocation>>>,
}

/// Revocations waiting to be published; beyond this a publish is dropped (logged): the
/// other nodes still get it from the store within [`CLUSTER_TAIL_EVERY`].
const PUBLISH_QUEUE: usize = 4096;

impl RevocationPublisher {
    /// A publisher that publishes nothing (single node).
    pub fn none() -> Self {
        RevocationPublisher { queue: None }
    }

    /// A publisher feeding `bus`, and the task that drains it (run it until shutdown).
    pub fn to_bus(bus: RedisBus) -> (Self, impl std::future::Future<Output = ()>) {
        let (tx, mut rx) = mpsc::channel::<Vec<Revocation>>(PUBLISH_QUEUE);
        let task = async move {
            while let Some(batch) = rx.recv().await {
                if let Err(error) = bus.publish(&batch).await {
                    tracing::warn!(%error, count = batch.len(), "publishing revocations failed; other nodes will read them from the store");
                }
            }
        };
        (RevocationPublisher { queue: Some(tx) }, task)
    }

    /// Queue revocations that are already durable for publication.
    pub fn publish(&self, revocations: &[Revocation]) {
        let Some(queue) = &self.queue else {
            return;
        };
        if revocations.is_empty() {
            return;
        }
        if queue.try_send(revocations.to_vec()).is_err() {
            tracing::warn!(
                count = revocations.len(),
                "publish queue full; other nodes will read these from the store"
            );
        }
    }
}
