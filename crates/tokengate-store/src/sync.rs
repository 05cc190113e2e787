//! Keeping a node's in-memory [`RevocationIndex`] current, and proving that it is: tail the
//! durable record, and in a cluster receive every revocation pushed over the [`RedisBus`].
//!
//! A node serves from its index only while it holds a proof, younger than `max_staleness`,
//! that the index has seen every acknowledged revocation (see [`Freshness`]). Two kinds of
//! proof, produced by loops that never wait on each other, each with its own timeout:
//!
//! - **The tail** reads the revocations recorded after the last one seen, every
//!   [`TAIL_EVERY`] on a single node and [`CLUSTER_TAIL_EVERY`] in a cluster (at most
//!   `max_staleness / 2`), bounded by [`TAIL_TIMEOUT`]. A read that started at `t0` and
//!   succeeded has seen every revocation committed before `t0` (on Postgres, inserts into
//!   `revocations` commit in `seq` order, so tailing by sequence number skips nothing; see
//!   `lock_revocation_order`): it proves the index current as of `t0`.
//! - **The bus** (cluster): the receiver applies pushed revocations; the heartbeat sender
//!   publishes this node's heartbeat, stamped with its send time `t0`, every
//!   [`HEARTBEAT_EVERY`] (at most `max_staleness / 4`). Redis delivers a channel's messages
//!   in order, so when that heartbeat comes back every message that reached Redis before
//!   `t0` has been received. A node publishes each revocation before acknowledging it
//!   ([`RevocationPublisher::publish`]), so this proves every revocation acknowledged
//!   before `t0`, provided a tail read started after the subscription connected (what was
//!   published before it was never delivered). No own heartbeat back within
//!   [`ROUND_TRIP_PERIODS`] heartbeat periods (a Redis that hangs, a link that stops
//!   forwarding bytes) and the receiver forces a reconnect.
//!
//! A batch larger than [`PUSH_BATCH_LIMIT`](crate::redis_bus::PUSH_BATCH_LIMIT) (a bulk
//! import) is not pushed one by one: one catch-up notice makes every node read it from the
//! store at once, and its heartbeats prove nothing until that read has succeeded.
//!
//! The residual risk: a node that cannot reach Redis still acknowledges a revocation once it
//! is durable (after at most [`PUBLISH_TIMEOUT`] trying to publish it). A node whose bus
//! works learns of it from its tail, within [`CLUSTER_TAIL_EVERY`] plus the read, not within
//! milliseconds; it keeps holding bus proofs meanwhile.
//!
//! A fourth loop watches [`Freshness`] and logs one WARN when the index turns stale and one
//! INFO when it recovers, with the number of requests answered while stale.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokengate_core::{Clock, Freshness, Millis, Proof, Revocation, RevocationIndex, Timestamp};
use tokengate_core::{StalenessPolicy, Transition};
use tokio::sync::{watch, Notify};
use tokio::time::{interval, timeout, MissedTickBehavior};

use crate::error::Result;
use crate::redis_bus::{BusEvent, RedisBus};
use crate::store::Store;

/// How often a single node reads new revocations from the store; a CLI revocation reaches
/// a running server within this.
pub const TAIL_EVERY: Duration = Duration::from_millis(250);
/// In a cluster the push does the work; the tail reconciles, and proves the index current
/// while the bus cannot.
pub const CLUSTER_TAIL_EVERY: Duration = Duration::from_secs(1);
/// Bound on one read of the tail (each batch): a database that does not answer is given
/// up on, and the next read tries again.
pub const TAIL_TIMEOUT: Duration = Duration::from_secs(2);
/// How often each cluster node publishes a heartbeat (at most `max_staleness / 4`).
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// A subscription over which none of this node's heartbeats came back for this many
/// heartbeat periods (3 s at the default period) is taken as hung, and reconnected.
pub const ROUND_TRIP_PERIODS: u32 = 3;
/// How long a revocation's acknowledgement waits for its publication on the bus.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_millis(250);
/// How often the stale state is looked at for its two log lines.
const OBSERVE_EVERY: Duration = Duration::from_millis(100);
const TAIL_BATCH: u32 = 10_000;

/// What the sync loops keep current.
pub struct IndexSync {
    /// The durable record (source of truth).
    pub store: Arc<dyn Store>,
    /// The cluster's push channel, if any.
    pub bus: Option<RedisBus>,
    /// The index to keep current.
    pub index: Arc<RevocationIndex>,
    /// Given a proof each time the index is proved current.
    pub freshness: Arc<Freshness>,
    /// The one clock.
    pub clock: Arc<dyn Clock>,
    /// This node's name in heartbeats: unique per process, so that only its own heartbeats
    /// count as its round trips.
    pub node_id: String,
}

/// The periods of the loops, from `max_staleness`.
#[derive(Clone, Copy, Debug)]
struct Periods {
    tail: Duration,
    heartbeat: Duration,
    round_trip: Duration,
}

impl Periods {
    fn new(max_staleness: Duration, cluster: bool) -> Self {
        let floor = Duration::from_millis(50);
        let tail = if cluster {
            CLUSTER_TAIL_EVERY.min(max_staleness / 2)
        } else {
            TAIL_EVERY.min(max_staleness / 2)
        };
        let heartbeat = HEARTBEAT_EVERY.min(max_staleness / 4).max(floor);
        Periods {
            tail: tail.max(floor),
            heartbeat,
            round_trip: heartbeat * ROUND_TRIP_PERIODS,
        }
    }
}

/// What the loops share: when the newest successful tail read started (the bus's proofs
/// count only once a read started after the subscription connected), and a way for the
/// receiver to ask for a read at once.
struct Shared {
    tail_read_from: AtomicI64,
    read_now: Notify,
}

impl IndexSync {
    /// Run until `stop` turns true (or its sender is gone). `cursor` is the sequence number
    /// of the last revocation already in the index (from
    /// [`Store::load_live_revocations`]).
    pub async fn run(self, cursor: i64, stop: watch::Receiver<bool>) {
        let periods = Periods::new(self.freshness.max_staleness(), self.bus.is_some());
        let shared = Shared {
            tail_read_from: AtomicI64::new(i64::MIN),
            read_now: Notify::new(),
        };
        // Polled side by side: none awaits another, so a Redis that hangs stalls neither the
        // tail nor the log, and a database that hangs stalls neither the bus nor the log.
        tokio::join!(
            until(stop.clone(), self.tail(cursor, &shared, periods)),
            until(stop.clone(), self.receive(&shared, periods)),
            until(stop.clone(), self.send_heartbeats(periods)),
            until(stop, self.watch_freshness()),
        );
    }

    /// Read what the store recorded after `cursor` every `periods.tail` (or at once when
    /// the receiver asks), and prove the index current as of each read's start.
    async fn tail(&self, mut cursor: i64, shared: &Shared, periods: Periods) {
        let mut every = interval(periods.tail);
        every.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let outage = OutageLog::new("reading new revocations from the store");
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = shared.read_now.notified() => {}
            }
            let started = self.clock.now_ms();
            match self.catch_up(&mut cursor, self.clock.now()).await {
                Ok(()) => {
                    shared
                        .tail_read_from
                        .fetch_max(started.as_millis(), Ordering::AcqRel);
                    self.freshness.mark_in_sync(Proof::Store, started);
                    outage.succeeded();
                }
                Err(error) => outage.failed(&error),
            }
        }
    }

    /// Apply every revocation recorded after `cursor`, each batch read within
    /// [`TAIL_TIMEOUT`]. A read given up on leaves `cursor` after the last one applied.
    async fn catch_up(&self, cursor: &mut i64, now: Timestamp) -> Result<()> {
        loop {
            let batch = match timeout(
                TAIL_TIMEOUT,
                self.store.revocations_after(*cursor, TAIL_BATCH),
            )
            .await
            {
                Ok(batch) => batch?,
                Err(_) => {
                    return Err(crate::StoreError::Unavailable(
                        format!("no answer within {TAIL_TIMEOUT:?}").into(),
                    ))
                }
            };
            for (seq, revocation) in &batch {
                self.index.apply(revocation, now);
                *cursor = *seq;
            }
            if batch.len() < TAIL_BATCH as usize {
                return Ok(());
            }
        }
    }

    /// Cluster: apply pushed revocations, and turn this node's heartbeats coming back into
    /// proofs; reconnect a subscription over which none came back in time.
    async fn receive(&self, shared: &Shared, periods: Periods) {
        let Some(bus) = &self.bus else {
            return std::future::pending().await;
        };
        let (subscription, mut events) = bus.subscribe();
        // When the current subscription connected, if it is connected.
        let mut connected_at: Option<Millis> = None;
        // When a heartbeat of ours last came back (or the subscription connected).
        let mut last_round_trip = self.clock.now_ms();
        let mut watchdog = interval(periods.heartbeat);
        watchdog.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(BusEvent::Connected) => {
                        let now = self.clock.now_ms();
                        connected_at = Some(now);
                        last_round_trip = now;
                        // Whatever was published before the subscription is read from the
                        // store; bus proofs count once that read has succeeded.
                        shared.read_now.notify_one();
                        tracing::info!("revocation bus connected");
                    }
                    Some(BusEvent::Revocation(revocation)) => {
                        self.index.apply(&revocation, self.clock.now());
                    }
                    Some(BusEvent::Heartbeat { node_id, sent_ms }) => {
                        let (Some(connected), Some(sent)) = (connected_at, sent_ms) else {
                            continue;
                        };
                        if node_id != self.node_id {
                            continue;
                        }
                        let now = self.clock.now_ms();
                        last_round_trip = now;
                        if shared.tail_read_from.load(Ordering::Acquire) >= connected.as_millis() {
                            // Never a proof from the future, whatever the message says.
                            self.freshness.mark_in_sync(Proof::Bus, sent.min(now));
                        }
                    }
                    Some(BusEvent::CatchUp) => {
                        // A batch too large to push was recorded before this was sent: read
                        // it from the store now. Until a read that starts after this moment
                        // has succeeded, a heartbeat coming back proves nothing about it.
                        if connected_at.is_some() {
                            connected_at = Some(self.clock.now_ms());
                        }
                        shared.read_now.notify_one();
                    }
                    Some(BusEvent::Lost) => {
                        connected_at = None;
                        tracing::warn!("revocation bus lost; reconnecting (the store's tail keeps proving the index current meanwhile)");
                    }
                    None => {
                        tracing::error!("revocation bus subscription ended");
                        return std::future::pending().await;
                    }
                },
                _ = watchdog.tick() => {
                    let now = self.clock.now_ms();
                    if connected_at.is_some() && now.since(last_round_trip) > periods.round_trip {
                        tracing::warn!(
                            waited_ms = u64::try_from(now.since(last_round_trip).as_millis()).unwrap_or(u64::MAX),
                            "no heartbeat came back through redis; reconnecting the subscription"
                        );
                        connected_at = None;
                        last_round_trip = now;
                        subscription.reconnect();
                    }
                }
            }
        }
    }

    /// Cluster: publish this node's heartbeat, stamped with its send time, every
    /// `periods.heartbeat`. Each publish is bounded by the bus's own operation timeout, not
    /// cut shorter: its response timeout is what replaces a command connection that stopped
    /// answering (the request path's publishes give up sooner, see [`PUBLISH_TIMEOUT`]), and
    /// nothing else waits on this loop.
    async fn send_heartbeats(&self, periods: Periods) {
        let Some(bus) = &self.bus else {
            return std::future::pending().await;
        };
        let mut every = interval(periods.heartbeat);
        every.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let outage = OutageLog::new("publishing heartbeats");
        loop {
            every.tick().await;
            let sent = self.clock.now_ms();
            match bus.heartbeat(&self.node_id, sent).await {
                Ok(()) => outage.succeeded(),
                Err(error) => outage.failed(&error),
            }
        }
    }

    /// Log the edges of the stale state: one WARN when the index turns stale, one INFO when
    /// it recovers (with the requests answered meanwhile), never a line per request.
    async fn watch_freshness(&self) {
        let mut every = interval(OBSERVE_EVERY);
        every.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let policy = match self.freshness.policy() {
            StalenessPolicy::FailClosed => "fail_closed: authenticated requests get 503",
            StalenessPolicy::FailOpen => "fail_open: serving from the last index",
        };
        loop {
            every.tick().await;
            match self.freshness.observe(self.clock.now_ms()) {
                Some(Transition::WentStale { proof_age }) => tracing::warn!(
                    proof_age_ms =
                        proof_age.map(|age| u64::try_from(age.as_millis()).unwrap_or(u64::MAX)),
                    max_staleness_ms = u64::try_from(self.freshness.max_staleness().as_millis())
                        .unwrap_or(u64::MAX),
                    "revocation index stale: no proof that it has seen every revocation ({policy})"
                ),
                Some(Transition::Recovered {
                    stale_for,
                    stale_answers,
                }) => tracing::info!(
                    stale_for_ms = u64::try_from(stale_for.as_millis()).unwrap_or(u64::MAX),
                    stale_answers,
                    "revocation index current again"
                ),
                None => {}
            }
        }
    }
}

/// Run `task` until `stop` turns true or its sender is gone.
async fn until(mut stop: watch::Receiver<bool>, task: impl std::future::Future<Output = ()>) {
    tokio::select! {
        () = task => {}
        _ = stop.wait_for(|stopped| *stopped) => {}
    }
}

/// Logs an operation that keeps failing once when it starts failing (WARN) and once when
/// it works again (INFO, with the count), not once per attempt.
#[derive(Debug)]
struct OutageLog {
    what: &'static str,
    failures: AtomicU64,
}

impl OutageLog {
    const fn new(what: &'static str) -> Self {
        OutageLog {
            what,
            failures: AtomicU64::new(0),
        }
    }

    fn failed(&self, error: &dyn fmt::Display) {
        if self.failures.fetch_add(1, Ordering::AcqRel) == 0 {
            tracing::warn!(%error, "{} failed; retrying", self.what);
        } else {
            tracing::debug!(%error, "{} failed again", self.what);
        }
    }

    fn succeeded(&self) {
        let failures = self.failures.swap(0, Ordering::AcqRel);
        if failures > 0 {
            tracing::info!(failures, "{} works again", self.what);
        }
    }
}

/// Publishes the revocations a node records to the other nodes, before the node
/// acknowledges them (see the module documentation for why the order matters).
#[derive(Clone, Debug)]
pub struct RevocationPublisher {
    bus: Option<RedisBus>,
    outage: Arc<OutageLog>,
}

impl RevocationPublisher {
    /// A publisher that publishes nothing (single node).
    pub fn none() -> Self {
        RevocationPublisher::on(None)
    }

    /// A publisher on `bus`.
    pub fn to_bus(bus: RedisBus) -> Self {
        RevocationPublisher::on(Some(bus))
    }

    fn on(bus: Option<RedisBus>) -> Self {
        RevocationPublisher {
            bus,
            outage: Arc::new(OutageLog::new("publishing revocations on the bus")),
        }
    }

    /// Publish revocations that are already durable, waiting at most [`PUBLISH_TIMEOUT`].
    /// A failure is logged (once per outage), never returned: the revocation is durable,
    /// and the other nodes read it from the store within [`CLUSTER_TAIL_EVERY`].
    pub async fn publish(&self, revocations: &[Revocation]) {
        let Some(bus) = &self.bus else {
            return;
        };
        if revocations.is_empty() {
            return;
        }
        match timeout(PUBLISH_TIMEOUT, bus.publish(revocations)).await {
            Ok(Ok(())) => self.outage.succeeded(),
            Ok(Err(error)) => self.outage.failed(&error),
            Err(_) => self.outage.failed(&format!(
                "no answer within {PUBLISH_TIMEOUT:?}; other nodes will read {} revocation(s) from the store",
                revocations.len()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_follow_a_tight_staleness_bound() {
        let p = Periods::new(Duration::from_secs(2), true);
        assert_eq!(p.tail, Duration::from_secs(1));
        assert_eq!(p.heartbeat, Duration::from_millis(500));
        assert_eq!(p.round_trip, Duration::from_millis(1_500));
        let p = Periods::new(Duration::from_secs(5), true);
        assert_eq!(p.tail, CLUSTER_TAIL_EVERY);
        assert_eq!(p.heartbeat, HEARTBEAT_EVERY);
        assert_eq!(p.round_trip, Duration::from_secs(3));
        let p = Periods::new(Duration::from_secs(5), false);
        assert_eq!(p.tail, TAIL_EVERY);
        let p = Periods::new(Duration::ZERO, false);
        assert_eq!(p.tail, Duration::from_millis(50));
        assert_eq!(p.heartbeat, Duration::from_millis(50));
    }
}
