//! Keeping the index current: revocations made by other processes on the same database.
//!
//! This process applies its own sign-outs to its index directly. Another process (the
//! `tokengate` admin CLI, another copy of this app) can only leave them in the store, so
//! the library's [`IndexSync`] reads the revocations recorded after the last one it saw
//! every 250 ms, applies them — which also closes the websockets they cover — and confirms
//! the index's [`Freshness`](tokengate_axum::Freshness). If the store stops answering,
//! confirmations stop, and after [`MAX_STALENESS`](crate::MAX_STALENESS) authenticated
//! requests get 503 (`fail_closed`) rather than trusting an index that may be missing
//! revocations. With a `RedisBus` in `IndexSync::bus`, several copies of the app would also
//! receive each other's revocations by push.
//!
//! A second small loop purges index entries whose tokens have expired, in bounded batches.

use std::sync::Arc;
use std::time::Duration;

use tokengate_axum::Gate;
use tokengate_store::{IndexSync, Store};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const PURGE_EVERY: Duration = Duration::from_secs(1);
const PURGE_BATCH: usize = 10_000;

/// The running sync and purge tasks; dropping it stops them.
#[derive(Debug)]
pub struct Tail {
    _stop: watch::Sender<bool>,
    purge: JoinHandle<()>,
}

impl Drop for Tail {
    fn drop(&mut self) {
        // Dropping the sender stops IndexSync; the purge loop is aborted.
        self.purge.abort();
    }
}

/// Start keeping `gate`'s index current from `cursor` (the one
/// [`Store::load_live_revocations`] gave).
pub fn spawn(store: Arc<dyn Store>, gate: Arc<Gate>, cursor: i64) -> Tail {
    let (stop, stopped) = watch::channel(false);
    let sync = IndexSync {
        store,
        bus: None,
        index: Arc::clone(gate.index()),
        freshness: Arc::clone(gate.freshness()),
        clock: Arc::clone(gate.clock()),
        node_id: uuid::Uuid::new_v4().to_string(),
    };
    tokio::spawn(sync.run(cursor, stopped));
    let purge = tokio::spawn(async move {
        let mut interval = tokio::time::interval(PURGE_EVERY);
        loop {
            interval.tick().await;
            let now = gate.clock().now();
            while gate.index().purge(now, PURGE_BATCH) == PURGE_BATCH {
                tokio::task::yield_now().await;
            }
        }
    });
    Tail { _stop: stop, purge }
}
