//! Start-up: open the store (and the cluster bus), start the session service — which
//! loads the keys and every live revocation into the index before anything listens — and
//! its maintenance task (`tokengate_sessions::maintenance`), then build the request gate.
//! The server adds tasks of its own: counting applied revocations for `/metrics`, and
//! fetching gate issuers' keys.

use std::sync::Arc;

use tokengate_axum::Gate;
use tokengate_core::Clock;
use tokengate_gate::service::KEY_REFRESH_TICK;
use tokengate_gate::{GateService, Issuers};
use tokengate_sessions::{MaintenanceEvents, MaintenanceHandle, SessionService};
use tokengate_store::{BoundedStore, PostgresStore, RedisBus, SqliteStore, Store};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::state::{session_config, AppState};

/// Open the store named by the configuration, each call bounded by `database_timeout`.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let url = config.database_url();
    let bounded = |store: Arc<dyn Store>| -> Arc<dyn Store> {
        Arc::new(BoundedStore::new(store, config.database_timeout))
    };
    if url.starts_with("sqlite:") {
        create_private_dir(&config.data_dir)?;
        let store = SqliteStore::connect(&url)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open {url}: {e}"))?;
        Ok(bounded(Arc::new(store)))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        // The URL may carry a password: never echo it.
        let store = PostgresStore::connect(&url)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the Postgres database: {e}"))?;
        Ok(bounded(Arc::new(store)))
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
    maintenance: MaintenanceHandle,
    tasks: JoinSet<()>,
    shutdown: watch::Sender<bool>,
}

/// Fetch gate issuers' keys: at once, then whenever a set's time is up, until shutdown.
async fn refresh_issuer_keys(issuers: Arc<GateService>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(KEY_REFRESH_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                issuers.refresh_keys().await;
            }
            _ = stop.changed() => return,
        }
    }
}

/// The maintenance task's reports, counted for `/metrics`.
struct MaintenanceMetrics(Arc<Metrics>);

impl MaintenanceEvents for MaintenanceMetrics {
    fn index_purged(&self, n: usize) {
        self.0.index_purged(n);
    }
}

impl Node {
    /// Start the session service (keys, then the live revocation set in the index), its
    /// maintenance, and the gate over it.
    pub async fn start(
        config: Config,
        clock: Arc<dyn Clock>,
        store: Arc<dyn Store>,
    ) -> anyhow::Result<Node> {
        let bus = match &config.redis_url {
            Some(url) => Some(
                RedisBus::connect(url, &config.redis_namespace)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot use redis: {e}"))?,
            ),
            None => None,
        };
        let (sessions, maintenance) =
            SessionService::start(store, session_config(&config), clock, bus).await?;
        let metrics = Arc::new(Metrics::default());
        let maintenance = maintenance
            .with_events(Arc::new(MaintenanceMetrics(metrics.clone())))
            .spawn();
        let observer = Arc::new(crate::metrics::GateObserver {
            activity: sessions.activity().clone(),
            metrics: metrics.clone(),
        });
        let gate = Arc::new(
            Gate::new(
                sessions.verifier().clone(),
                sessions.index().clone(),
                sessions.clock().clone(),
                sessions.freshness().clone(),
            )
            .with_observer(observer),
        );
        let issuers = Issuers::new(&config.issuers, config.leeway).map_err(anyhow::Error::msg)?;
        let issuers = Arc::new(GateService::new(issuers, sessions.clone()));
        let state = AppState {
            config: Arc::new(config),
            sessions,
            gate,
            metrics,
            issuers,
        };
        let (shutdown, stop) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(crate::metrics::count_revocations(
            state.clone(),
            stop.clone(),
        ));
        if !state.issuers.issuers().is_empty() {
            tasks.spawn(refresh_issuer_keys(state.issuers.clone(), stop));
        }
        Ok(Node {
            state,
            maintenance,
            tasks,
            shutdown,
        })
    }

    /// Stop the background tasks, flushing what they hold.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        self.maintenance.stop().await;
        while self.tasks.join_next().await.is_some() {}
    }
}
