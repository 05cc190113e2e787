//! Keeping the index current: revocations made by other processes on the same database.
//!
//! This process applies its own sign-outs to its index directly. Another process (the
//! `tokengate` admin CLI, another copy of this app) can only leave them in the store, so
//! every [`TAIL_EVERY`] this task reads the revocations recorded after the last one it saw,
//! applies them — which also closes the websockets they cover — and confirms the index's
//! [`Freshness`](tokengate_axum::Freshness). If the store stops answering, confirmations
//! stop, and after [`MAX_STALENESS`](crate::MAX_STALENESS) authenticated requests get 503
//! (`fail_closed`) rather than trusting an index that may be missing revocations.
//!
//! The same loop purges index entries whose tokens have expired, in bounded batches.

use std::sync::Arc;
use std::time::Duration;

use tokengate_axum::Gate;
use tokengate_core::{RevocationIndex, Timestamp};
use tokengate_store::{SqliteStore, Store};
use tokio::task::JoinHandle;

/// How often the store is read for new revocations.
pub const TAIL_EVERY: Duration = Duration::from_millis(250);
const TAIL_BATCH: u32 = 10_000;
const PURGE_BATCH: usize = 10_000;

/// The running tail; dropping it stops the task.
#[derive(Debug)]
pub struct Tail(JoinHandle<()>);

impl Drop for Tail {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Start tailing the store from `cursor` (the one [`Store::load_live_revocations`] gave).
pub fn spawn(store: Arc<SqliteStore>, gate: Arc<Gate>, cursor: i64) -> Tail {
    Tail(tokio::spawn(run(store, gate, cursor)))
}

async fn run(store: Arc<SqliteStore>, gate: Arc<Gate>, mut cursor: i64) {
    let mut interval = tokio::time::interval(TAIL_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        interval.tick().await;
        // Read the time first: everything recorded up to it is seen once the read succeeds.
        let now = gate.clock().now();
        match catch_up(store.as_ref(), gate.index(), &mut cursor, now).await {
            Ok(()) => {
                if failing {
                    tracing::info!("revocation tail recovered");
                    failing = false;
                }
                gate.freshness().mark_in_sync(now);
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, "cannot read new revocations; the index will turn stale");
                    failing = true;
                }
            }
        }
        while gate.index().purge(now, PURGE_BATCH) == PURGE_BATCH {
            tokio::task::yield_now().await;
        }
    }
}

/// Apply every revocation recorded after `cursor`, moving the cursor along.
async fn catch_up(
    store: &dyn Store,
    index: &RevocationIndex,
    cursor: &mut i64,
    now: Timestamp,
) -> tokengate_store::Result<()> {
    loop {
        let batch = store.revocations_after(*cursor, TAIL_BATCH).await?;
        for (seq, revocation) in &batch {
            index.apply(revocation, now);
            *cursor = *seq;
        }
        if batch.len() < TAIL_BATCH as usize {
            return Ok(());
        }
    }
}
