//! `last_seen_at` of sessions without a database write per request.

use std::time::Duration;

use tokengate_core::{Claims, Timestamp};
use uuid::Uuid;

/// How often the activity map is written to the store.
pub const ACTIVITY_FLUSH_EVERY: Duration = Duration::from_secs(15);

/// When each session was last seen by this process: the request gate records each accepted
/// token's session here (a read-only check when already recorded this second), and the
/// maintenance task flushes the map to the store in one batch every
/// [`ACTIVITY_FLUSH_EVERY`].
#[derive(Default)]
pub struct SessionActivity {
    seen: papaya::HashMap<Uuid, Timestamp, foldhash::fast::RandomState>,
}

impl std::fmt::Debug for SessionActivity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionActivity")
            .field("sessions", &self.seen.len())
            .finish()
    }
}

impl SessionActivity {
    /// A token of `claims.sid` was accepted at `now` (call it from the gate's observer).
    pub fn accepted(&self, claims: &Claims, now: Timestamp) {
        self.seen_at(claims.sid, now);
    }

    /// Session `sid` was seen at `now`.
    pub fn seen_at(&self, sid: Uuid, now: Timestamp) {
        let seen = self.seen.pin();
        if seen.get(&sid) != Some(&now) {
            seen.insert(sid, now);
        }
    }

    /// Sessions seen since they were last flushed, with the time.
    pub fn snapshot(&self) -> Vec<(Uuid, Timestamp)> {
        self.seen.pin().iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Forget sessions not seen since `before` (already flushed).
    pub fn forget_older_than(&self, before: Timestamp) {
        self.seen.pin().retain(|_, seen| *seen >= before);
    }

    /// The last time `sid` was seen by this process, if recently.
    pub fn last_seen(&self, sid: Uuid) -> Option<Timestamp> {
        self.seen.pin().get(&sid).copied()
    }
}
