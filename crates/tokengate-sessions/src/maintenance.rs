//! The one background task a node runs beside its request handlers; an embedder starts it
//! with `maintenance.spawn()` and stops it with `handle.stop().await`.
//!
//! Each part is a small loop that ends on stop:
//! - the index sync ([`IndexSync`]): independent loops that read revocations recorded after
//!   the last one seen (by the admin CLI or another process on the same database), and in
//!   a cluster receive pushed revocations and send and receive heartbeats through Redis;
//!   each success proves the index current (see [`tokengate_core::Freshness`]), and the
//!   edges of the stale state are logged;
//! - index purge: drop expired index entries in bounded batches, every second;
//! - store purge: delete expired rows in bounded batches, every minute;
//! - activity flush: write sessions' `last_seen_at` in one batch every
//!   [`ACTIVITY_FLUSH_EVERY`], and once more on stop;
//! - key reload: pick up a rotation made by another process, retire expired keys, every
//!   second.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokengate_store::{IndexSync, RedisBus};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::activity::ACTIVITY_FLUSH_EVERY;
use crate::service::SessionService;

const INDEX_PURGE_EVERY: Duration = Duration::from_secs(1);
const INDEX_PURGE_BATCH: usize = 10_000;
const STORE_PURGE_EVERY: Duration = Duration::from_secs(60);
const STORE_PURGE_BATCH: u32 = 1_000;
const KEYS_RELOAD_EVERY: Duration = Duration::from_secs(1);

/// What the maintenance task reports, for metrics; every method does nothing by default.
pub trait MaintenanceEvents: Send + Sync + 'static {
    /// The index purge dropped `n` expired entries in one batch.
    fn index_purged(&self, n: usize) {
        let _ = n;
    }
}

/// Reports nothing.
struct NoEvents;

impl MaintenanceEvents for NoEvents {}

/// The not yet started maintenance of one [`SessionService`] (see the module docs).
#[must_use = "the revocation index stays current only while the maintenance runs: call spawn()"]
pub struct Maintenance {
    service: Arc<SessionService>,
    cursor: i64,
    bus: Option<RedisBus>,
    events: Arc<dyn MaintenanceEvents>,
}

impl std::fmt::Debug for Maintenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maintenance")
            .field("cursor", &self.cursor)
            .field("cluster", &self.bus.is_some())
            .finish_non_exhaustive()
    }
}

impl Maintenance {
    pub(crate) fn new(service: Arc<SessionService>, cursor: i64, bus: Option<RedisBus>) -> Self {
        Maintenance {
            service,
            cursor,
            bus,
            events: Arc::new(NoEvents),
        }
    }

    /// Report what the tasks do to `events` (metrics).
    pub fn with_events(mut self, events: Arc<dyn MaintenanceEvents>) -> Self {
        self.events = events;
        self
    }

    /// Start every task on the current tokio runtime.
    pub fn spawn(self) -> MaintenanceHandle {
        let (shutdown, stop) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let service = self.service;
        let sync = IndexSync {
            store: service.store().clone(),
            bus: self.bus,
            index: service.index().clone(),
            freshness: service.freshness().clone(),
            clock: service.clock().clone(),
            node_id: uuid::Uuid::new_v4().to_string(),
        };
        tasks.spawn(sync.run(self.cursor, stop.clone()));
        tasks.spawn(purge_index(service.clone(), self.events, stop.clone()));
        tasks.spawn(purge_store(service.clone(), stop.clone()));
        tasks.spawn(flush_activity(service.clone(), stop.clone()));
        tasks.spawn(reload_keys(service, stop));
        MaintenanceHandle { tasks, shutdown }
    }
}

/// The running maintenance. Dropping it aborts the tasks without the final activity
/// flush: call [`stop`](Self::stop).
#[derive(Debug)]
pub struct MaintenanceHandle {
    tasks: JoinSet<()>,
    shutdown: watch::Sender<bool>,
}

impl MaintenanceHandle {
    /// Stop every task, flushing the activity they hold, and wait for them.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Run `tick` every `period` until stop; `tick` once more on the way out when `final_tick`.
async fn every<F, Fut>(
    period: Duration,
    mut stop: watch::Receiver<bool>,
    final_tick: bool,
    mut tick: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => tick().await,
            _ = stop.changed() => {
                if final_tick {
                    tick().await;
                }
                return;
            }
        }
    }
}

async fn purge_index(
    service: Arc<SessionService>,
    events: Arc<dyn MaintenanceEvents>,
    stop: watch::Receiver<bool>,
) {
    every(INDEX_PURGE_EVERY, stop, false, || async {
        let now = service.now();
        // Bounded batches with a yield between them: readers never wait on a purge.
        loop {
            let purged = service.index().purge(now, INDEX_PURGE_BATCH);
            events.index_purged(purged);
            if purged < INDEX_PURGE_BATCH {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
}

async fn purge_store(service: Arc<SessionService>, stop: watch::Receiver<bool>) {
    every(STORE_PURGE_EVERY, stop, false, || async {
        let before = service.now().minus(service.config().leeway);
        loop {
            match service
                .store()
                .purge_expired(before, STORE_PURGE_BATCH)
                .await
            {
                Ok(n) if n >= u64::from(STORE_PURGE_BATCH) => tokio::task::yield_now().await,
                Ok(_) => return,
                Err(error) => {
                    tracing::warn!(%error, "purging expired rows failed; will retry");
                    return;
                }
            }
        }
    })
    .await;
}

async fn flush_activity(service: Arc<SessionService>, stop: watch::Receiver<bool>) {
    every(ACTIVITY_FLUSH_EVERY, stop, true, || async {
        let activity = service.activity();
        let seen = activity.snapshot();
        if seen.is_empty() {
            return;
        }
        match service.store().touch_sessions(&seen).await {
            Ok(()) => activity.forget_older_than(service.now().minus(ACTIVITY_FLUSH_EVERY * 4)),
            Err(error) => tracing::warn!(%error, "flushing last_seen_at failed; will retry"),
        }
    })
    .await;
}

async fn reload_keys(service: Arc<SessionService>, stop: watch::Receiver<bool>) {
    every(KEYS_RELOAD_EVERY, stop, false, || async {
        if let Err(error) = service
            .keys()
            .reload(service.store().as_ref(), service.now())
            .await
        {
            tracing::warn!(%error, "reloading signing keys failed; will retry");
        }
    })
    .await;
}
