//! Start-up and the background tasks that keep a node's state current.
//!
//! Start: open the store, load the keys, load every live revocation into the index —
//! only then bind the listener. Background tasks, each a small loop that stops on shutdown:
//! - `tail`: every 250 ms read revocations recorded after the last one seen (by the admin
//!   CLI or another process on the same database), apply them, and confirm freshness;
//! - `purge`: drop expired index entries (bounded batches) and delete expired rows;
//! - `activity`: flush sessions' `last_seen_at` to the store in one batch;
//! - `keys`: pick up a key rotation made by another process, retire expired keys.

use std::sync::Arc;
use std::time::Duration;

use tokengate_axum::{Freshness, Gate};
use tokengate_core::{Clock, RevocationIndex, Verifier, VerifierConfig};
use tokengate_store::{SqliteStore, Store};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::keyring::KeyRing;
use crate::password::Passwords;
use crate::state::{AppState, SessionActivity, ACTIVITY_FLUSH_EVERY};

/// How often the revocation record is tailed; a CLI revocation reaches the server within this.
pub const TAIL_EVERY: Duration = Duration::from_millis(250);
const TAIL_BATCH: u32 = 10_000;
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
    } else {
        anyhow::bail!("unsupported database URL {url:?}: expected sqlite://PATH")
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
        freshness.mark_in_sync(now);
        let activity = Arc::new(SessionActivity::default());
        let gate =
            Arc::new(Gate::new(verifier, index, clock, freshness).with_observer(activity.clone()));

        let state = AppState {
            config: Arc::new(config),
            store,
            gate,
            keys,
            passwords: Passwords::new()?,
            activity,
        };
        let (shutdown, stop) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(tail(state.clone(), live.cursor, stop.clone()));
        tasks.spawn(purge_index(state.clone(), stop.clone()));
        tasks.spawn(purge_store(state.clone(), stop.clone()));
        tasks.spawn(flush_activity(state.clone(), stop.clone()));
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

async fn tail(state: AppState, mut cursor: i64, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(TAIL_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.changed() => return,
        }
        // Note the time before reading: everything recorded up to then is now seen.
        let now = state.now();
        match tail_once(&state, &mut cursor, now).await {
            Ok(()) => {
                if failing {
                    tracing::info!("revocation tail recovered");
                    failing = false;
                }
                state.gate.freshness().mark_in_sync(now);
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, "cannot read new revocations; the index will turn stale");
                    failing = true;
                }
            }
        }
    }
}

/// Apply every revocation recorded after `cursor`.
async fn tail_once(
    state: &AppState,
    cursor: &mut i64,
    now: tokengate_core::Timestamp,
) -> tokengate_store::Result<()> {
    loop {
        let batch = state.store.revocations_after(*cursor, TAIL_BATCH).await?;
        for (seq, revocation) in &batch {
            state.index().apply(revocation, now);
            *cursor = *seq;
        }
        if batch.len() < TAIL_BATCH as usize {
            return Ok(());
        }
    }
}

async fn purge_index(state: AppState, stop: watch::Receiver<bool>) {
    every(INDEX_PURGE_EVERY, stop, false, || {
        let state = state.clone();
        async move {
            let now = state.now();
            // Bounded batches with a yield between them: readers never wait on a purge.
            while state.index().purge(now, INDEX_PURGE_BATCH) == INDEX_PURGE_BATCH {
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
