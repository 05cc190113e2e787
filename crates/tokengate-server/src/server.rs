//! Start-up and the background tasks that keep a node's state current.
//!
//! Start: open the store, load the keys, load every live revocation into the index —
//! only then bind the listener. Background tasks, each a small loop that stops on shutdown:
//! - [`IndexSync`]: read revocations recorded after the last one seen (by the admin CLI or
//!   another process on the same database) every 250 ms, and in a cluster receive pushed
//!   revocations and heartbeats from Redis; it decides when the index counts as current;
//! - the publisher: pushes this node's revocations to the other nodes (cluster only);
//! - `purge`: drop expired index entries (bounded batches) and delete expired rows;
//! - `activity`: flush sessions' `last_seen_at` to the store in one batch;
//! - `keys`: pick up a key rotation made by another process, retire expired keys.

use std::sync::Arc;
use std::time::Duration;

use tokengate_axum::{Freshness, Gate};
use tokengate_core::{Clock, RevocationIndex, Verifier, VerifierConfig};
use tokengate_store::{
    IndexSync, PostgresStore, RedisBus, RevocationPublisher, SqliteStore, Store,
};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::keyring::KeyRing;
use crate::password::Passwords;
use crate::state::{AppState, SessionActivity, ACTIVITY_FLUSH_EVERY};

const INDEX_PURGE_EVERY: Duration = Duration::from_secs(1);
const INDEX_PURGE_BATCH: usize = 10_000;
const STORE_PURGE_EVERY: Duration = Duration::from_secs(60);
const STORE_PURGE_BATCH: u32 = 1_000;
const KEYS_RELOAD_EVERY: Duration = Duration::from_secs(1);

/// Open the store named by the configuration.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let url = config.database_url();
    if url.starts_with("sqlite:") {
        create_private_dir(&config.data_dir)?;
        let store = SqliteStore::connect(&url)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open {url}: {e}"))?;
        Ok(Arc::new(store))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        // The URL may carry a password: never echo it.
        let store = PostgresStore::connect(&url)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the Postgres database: {e}"))?;
        Ok(Arc::new(store))
    } else {
        anyhow::bail!("unsupported database URL: expected sqlite://PATH or postgres://...")
    }
}

fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| anyhow::anyhow!("cannot create data dir {}: {e}", dir.display()))?;
    }
    Ok(())
}

/// A started node: its state and its background tasks.
pub struct Node {
    /// What the handlers share.
    pub state: AppState,
    tasks: JoinSet<()>,
    shutdown: watch::Sender<bool>,
}

impl Node {
    /// Build the state: keys, the live revocation set in the index, then the background tasks.
    pub async fn start(
        config: Config,
        clock: Arc<dyn Clock>,
        store: Arc<dyn Store>,
    ) -> anyhow::Result<Node> {
        let now = clock.now();
        let verifier = Arc::new(Verifier::new(
            VerifierConfig {
                issuer: config.issuer.clone(),
                audience: config.audience.clone(),
                leeway: config.leeway,
            },
            Vec::new(),
        ));
        let keys = Arc::new(KeyRing::load(store.as_ref(), &config, verifier.clone(), now).await?);

        let index = Arc::new(RevocationIndex::new(config.leeway));
        let live = store.load_live_revocations(now, config.leeway).await?;
        let loaded = index.load(live.revocations, now);
        tracing::info!(revocations = loaded, "revocation index loaded");

        let freshness = Arc::new(Freshness::new(
            config.staleness_policy,
            config.max_staleness,
        ));
        let bus = match &config.redis_url {
            Some(url) => Some(
                RedisBus::connect(url, &config.redis_namespace)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot use redis: {e}"))?,
            ),
            None => None,
        };
        // The index was just loaded from the store, the source of truth: it is current
        // now. In a cluster it stays so only while the bus is connected (see IndexSync).
        freshness.mark_in_sync(now);
        let activity = Arc::new(SessionActivity::default());
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let sync = IndexSync {
            store: store.clone(),
            bus: bus.clone(),
            index: index.clone(),
            freshness: freshness.clone(),
            clock: clock.clone(),
            node_id: uuid::Uuid::new_v4().to_string(),
        };
        let observer = Arc::new(crate::metrics::GateObserver {
            activity: activity.clone(),
            metrics: metrics.clone(),
        });
        let gate = Arc::new(Gate::new(verifier, index, clock, freshness).with_observer(observer));

        let (shutdown, stop) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let publisher = match bus {
            Some(bus) => {
                let (publisher, drain) = RevocationPublisher::to_bus(bus);
                let mut stop = stop.clone();
                tasks.spawn(async move {
                    tokio::select! {
                        _ = drain => {}
                        _ = stop.changed() => {}
                    }
                });
                publisher
            }
            None => RevocationPublisher::none(),
        };

        let throttle = Arc::new(crate::throttle::SigninThrottle::new(
            crate::throttle::ThrottleLimits {
                max_failures: config.signin_max_failures,
                max_failures_per_ip: config.signin_max_failures_per_ip,
                window: config.signin_failure_window,
            },
        ));
        let state = AppState {
            config: Arc::new(config),
            store,
            gate,
            keys,
            passwords: Passwords::new()?,
            activity,
            publisher,
            throttle,
            metrics,
        };
        tasks.spawn(sync.run(live.cursor, stop.clone()));
        tasks.spawn(purge_index(state.clone(), stop.clone()));
        tasks.spawn(purge_store(state.clone(), stop.clone()));
        tasks.spawn(flush_activity(state.clone(), stop.clone()));
        let counted = crate::metrics::count_revocations(state.clone(), stop.clone());
        tasks.spawn(counted);
        tasks.spawn(reload_keys(state.clone(), stop));
        Ok(Node {
            state,
            tasks,
            shutdown,
        })
    }

    /// Stop the background tasks, flushing what they hold.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Run `tick` every `period` until shutdown; `tick` once more on the way out when `final_tick`.
async fn every<F, Fut>(
    period: Duration,
    mut stop: watch::Receiver<bool>,
    final_tick: bool,
    mut tick: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
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

async fn purge_index(state: AppState, stop: watch::Receiver<bool>) {
    every(INDEX_PURGE_EVERY, stop, false, || {
        let state = state.clone();
        async move {
            let now = state.now();
            // Bounded batches with a yield between them: readers never wait on a purge.
            loop {
                let purged = state.index().purge(now, INDEX_PURGE_BATCH);
                state.metrics.index_purged(purged);
                if purged < INDEX_PURGE_BATCH {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
    })
    .await;
}

async fn purge_store(state: AppState, stop: watch::Receiver<bool>) {
    every(STORE_PURGE_EVERY, stop, false, || {
        let state = state.clone();
        async move {
            let before = state.now().minus(state.config.leeway);
            loop {
                match state.store.purge_expired(before, STORE_PURGE_BATCH).await {
                    Ok(n) if n >= u64::from(STORE_PURGE_BATCH) => tokio::task::yield_now().await,
                    Ok(_) => return,
                    Err(error) => {
                        tracing::warn!(%error, "purging expired rows failed; will retry");
                        return;
                    }
                }
            }
        }
    })
    .await;
}

async fn flush_activity(state: AppState, stop: watch::Receiver<bool>) {
    every(ACTIVITY_FLUSH_EVERY, stop, true, || {
        let state = state.clone();
        async move {
            let seen = state.activity.snapshot();
            if seen.is_empty() {
                return;
            }
            match state.store.touch_sessions(&seen).await {
                Ok(()) => state
                    .activity
                    .forget_older_than(state.now().minus(ACTIVITY_FLUSH_EVERY * 4)),
                Err(error) => tracing::warn!(%error, "flushing last_seen_at failed; will retry"),
            }
        }
    })
    .await;
}

async fn reload_keys(state: AppState, stop: watch::Receiver<bool>) {
    every(KEYS_RELOAD_EVERY, stop, false, || {
        let state = state.clone();
        async move {
            if let Err(error) = state.keys.reload(state.store.as_ref(), state.now()).await {
                tracing::warn!(%error, "reloading signing keys failed; will retry");
            }
        }
    })
    .await;
}
