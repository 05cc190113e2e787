//! Whether this node's revocation index can be trusted, and what to do when it cannot.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// What a node does while it cannot be sure its revocation index is current.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StalenessPolicy {
    /// Answer 503 on authenticated routes until the index is current again.
    #[default]
    FailClosed,
    /// Keep serving from the last index (logged and counted).
    FailOpen,
}

impl std::str::FromStr for StalenessPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fail_closed" => Ok(StalenessPolicy::FailClosed),
            "fail_open" => Ok(StalenessPolicy::FailOpen),
            other => Err(format!(
                "unknown staleness policy {other:?} (expected fail_closed or fail_open)"
            )),
        }
    }
}

/// Whether this node's index is known to be current.
///
/// Whatever keeps the index in sync (the SQL tail, the Redis subscription) calls
/// [`Freshness::mark_in_sync`] each time it has confirmed it has seen every revocation;
/// [`Freshness::mark_lost`] when it knows it has not (a dropped subscription). The index is
/// stale once it has not been confirmed for longer than `max_staleness`, or right away
/// after `mark_lost` until the next `mark_in_sync`.
#[derive(Debug)]
pub struct Freshness {
    policy: StalenessPolicy,
    max_staleness: Duration,
    /// Unix seconds of the last confirmation; `i64::MIN` = lost (never, or since mark_lost).
    confirmed_at: AtomicI64,
    /// When sync was lost (Unix seconds), `i64::MAX` while in sync.
    lost_at: AtomicI64,
}

impl Freshness {
    /// A node that has not synced yet: stale until the first `mark_in_sync`.
    pub fn new(policy: StalenessPolicy, max_staleness: Duration) -> Self {
        Freshness {
            policy,
            max_staleness,
            confirmed_at: AtomicI64::new(i64::MIN),
            lost_at: AtomicI64::new(i64::MIN),
        }
    }

    /// The index has seen every revocation recorded up to `now`.
    pub fn mark_in_sync(&self, now: Timestamp) {
        self.confirmed_at.fetch_max(now.as_secs(), Ordering::AcqRel);
        self.lost_at.store(i64::MAX, Ordering::Release);
    }

    /// The channel that keeps the index current is broken as of `now`.
    pub fn mark_lost(&self, now: Timestamp) {
        // Keep the earliest loss time if already lost.
        let _ = self
            .lost_at
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                (cur == i64::MAX).then_some(now.as_secs())
            });
    }

    /// Whether the index may be missing revocations at `now`.
    pub fn is_stale(&self, now: Timestamp) -> bool {
        let confirmed = self.confirmed_at.load(Ordering::Acquire);
        if confirmed == i64::MIN {
            return true;
        }
        let limit = i64::try_from(self.max_staleness.as_secs()).unwrap_or(i64::MAX);
        let lost_at = self.lost_at.load(Ordering::Acquire);
        let unconfirmed_for = now.as_secs().saturating_sub(confirmed);
        unconfirmed_for > limit
            || (lost_at != i64::MAX && now.as_secs().saturating_sub(lost_at) > limit)
    }

    /// The configured policy.
    pub fn policy(&self) -> StalenessPolicy {
        self.policy
    }

    /// Seconds since the index was last confirmed current (for metrics), if ever.
    pub fn lag_secs(&self, now: Timestamp) -> Option<i64> {
        let confirmed = self.confirmed_at.load(Ordering::Acquire);
        (confirmed != i64::MIN).then(|| now.as_secs().saturating_sub(confirmed).max(0))
    }
}
