//! What the SQLite and Postgres stores share: the column lists, decoding a row into a
//! record, sorting a database error into a [`StoreError`], and the bookkeeping of a
//! batched purge.
//!
//! Both schemas keep the same columns under the same names with the same meaning (ids as
//! 16-byte UUIDs, times as integer Unix seconds), so a row of either decodes the same way
//! through [`SqlRow`]. What truly differs (locking, bulk inserts, the bulk load) stays in
//! `sqlite.rs` and `postgres.rs`.

use std::str::FromStr;

use sqlx::error::ErrorKind;
use sqlx::{ColumnIndex, Decode, Row, Type};
use tokengate_core::{Revocation, RevocationKind, Role, Timestamp};
use uuid::Uuid;

use crate::error::{Result, StoreError};
use crate::model::{Session, StoredKey, User};

/// The columns [`user`] decodes, in its order.
macro_rules! user_columns {
    () => {
        "id, email, password_hash, role, disabled, created_at"
    };
}

/// The columns [`session`] decodes, in its order.
macro_rules! session_columns {
    () => {
        "id, user_id, created_at, last_seen_at, user_agent, ip, access_exp, refresh_exp, ended_at"
    };
}

/// The columns [`key`] decodes, in its order.
macro_rules! key_columns {
    () => {
        "kid, alg, private_der, created_at, verify_until"
    };
}

pub(crate) use {key_columns, session_columns, user_columns};

/// Sort a database error into what the caller can act on; the error itself is kept as
/// the source.
pub(crate) fn map_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) => match db.kind() {
            // A foreign key violation (a session for a user that does not exist) is, like
            // a taken email, a conflict with the stored state, not an outage to retry.
            ErrorKind::UniqueViolation | ErrorKind::ForeignKeyViolation => {
                StoreError::Conflict(db.message().to_owned())
            }
            _ => StoreError::unavailable("", e),
        },
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. } => StoreError::corrupt("", e),
        // Connection, pool, timeout, I/O and protocol errors: the database cannot be used
        // right now.
        _ => StoreError::unavailable("", e),
    }
}

/// A row of either database, read column by column with every failure sorted by
/// [`map_err`].
pub(crate) trait SqlRow {
    fn uuid(&self, col: usize) -> Result<Uuid>;
    fn int(&self, col: usize) -> Result<i64>;
    fn opt_int(&self, col: usize) -> Result<Option<i64>>;
    fn flag(&self, col: usize) -> Result<bool>;
    fn text(&self, col: usize) -> Result<String>;
    fn opt_text(&self, col: usize) -> Result<Option<String>>;
    fn bytes(&self, col: usize) -> Result<Vec<u8>>;

    fn ts(&self, col: usize) -> Result<Timestamp> {
        self.int(col).map(Timestamp::from_secs)
    }

    fn opt_ts(&self, col: usize) -> Result<Option<Timestamp>> {
        self.opt_int(col).map(|v| v.map(Timestamp::from_secs))
    }
}

impl<R> SqlRow for R
where
    R: Row,
    usize: ColumnIndex<R>,
    Uuid: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    i64: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    bool: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    String: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: for<'r> Decode<'r, R::Database> + Type<R::Database>,
{
    fn uuid(&self, col: usize) -> Result<Uuid> {
        self.try_get(col).map_err(map_err)
    }

    fn int(&self, col: usize) -> Result<i64> {
        self.try_get(col).map_err(map_err)
    }

    fn opt_int(&self, col: usize) -> Result<Option<i64>> {
        self.try_get(col).map_err(map_err)
    }

    fn flag(&self, col: usize) -> Result<bool> {
        self.try_get(col).map_err(map_err)
    }

    fn text(&self, col: usize) -> Result<String> {
        self.try_get(col).map_err(map_err)
    }

    fn opt_text(&self, col: usize) -> Result<Option<String>> {
        self.try_get(col).map_err(map_err)
    }

    fn bytes(&self, col: usize) -> Result<Vec<u8>> {
        self.try_get(col).map_err(map_err)
    }
}

/// Decode the [`user_columns!`] starting at `first`.
pub(crate) fn user(row: &impl SqlRow, first: usize) -> Result<User> {
    let role = row.text(first + 3)?;
    Ok(User {
        id: row.uuid(first)?,
        email: row.text(first + 1)?,
        password_hash: row.text(first + 2)?,
        role: Role::from_str(&role).map_err(|e| StoreError::Corrupt(e.into()))?,
        disabled: row.flag(first + 4)?,
        created_at: row.ts(first + 5)?,
    })
}

/// Decode the [`session_columns!`] starting at `first`.
pub(crate) fn session(row: &impl SqlRow, first: usize) -> Result<Session> {
    Ok(Session {
        id: row.uuid(first)?,
        user_id: row.uuid(first + 1)?,
        created_at: row.ts(first + 2)?,
        last_seen_at: row.ts(first + 3)?,
        user_agent: row.opt_text(first + 4)?,
        ip: row.opt_text(first + 5)?,
        access_exp: row.ts(first + 6)?,
        refresh_exp: row.ts(first + 7)?,
        ended_at: row.opt_ts(first + 8)?,
    })
}

/// Decode the [`key_columns!`] starting at `first`.
pub(crate) fn key(row: &impl SqlRow, first: usize) -> Result<StoredKey> {
    Ok(StoredKey {
        kid: row.text(first)?,
        alg: row.text(first + 1)?,
        private_der: row.bytes(first + 2)?,
        created_at: row.ts(first + 3)?,
        verify_until: row.opt_ts(first + 4)?,
    })
}

/// Decode a revocation from the columns `kind, id, issued_before, exp` starting at `first`.
pub(crate) fn revocation(row: &impl SqlRow, first: usize) -> Result<Revocation> {
    let kind = row.text(first)?;
    let kind = RevocationKind::from_str(&kind).map_err(|e| StoreError::Corrupt(e.into()))?;
    let id = row.uuid(first + 1)?;
    let issued_before = row.opt_ts(first + 2)?;
    let exp = row.ts(first + 3)?;
    Revocation::from_parts(kind, id, issued_before, exp).map_err(|e| StoreError::Corrupt(e.into()))
}

/// The statement of `revocations_after`: the same on both databases (`$n` placeholders
/// are understood by SQLite too).
pub(crate) const REVOCATIONS_AFTER: &str =
    "SELECT seq, kind, id, issued_before, exp FROM revocations WHERE seq > $1 ORDER BY seq LIMIT $2";

/// Decode the rows of [`REVOCATIONS_AFTER`].
pub(crate) fn sequenced_revocations(rows: &[impl SqlRow]) -> Result<Vec<(i64, Revocation)>> {
    rows.iter()
        .map(|row| Ok((row.int(0)?, revocation(row, 1)?)))
        .collect()
}

/// How much of a purge's row budget is left, and how many rows it deleted so far.
pub(crate) struct PurgeBudget {
    left: u64,
    deleted: u64,
}

impl PurgeBudget {
    pub(crate) fn new(limit: u32) -> PurgeBudget {
        PurgeBudget {
            left: u64::from(limit),
            deleted: 0,
        }
    }

    /// Whether another statement may still delete rows.
    pub(crate) fn any_left(&self) -> bool {
        self.left > 0
    }

    /// The `LIMIT` of the next statement; both databases take it as a signed integer, and a
    /// `u32`-derived budget always fits.
    pub(crate) fn limit(&self) -> i64 {
        i64::try_from(self.left).unwrap_or(i64::MAX)
    }

    /// Count `n` deleted rows against the budget.
    pub(crate) fn take(&mut self, n: u64) {
        self.deleted += n;
        self.left = self.left.saturating_sub(n);
    }

    /// The rows deleted in all.
    pub(crate) fn deleted(&self) -> u64 {
        self.deleted
    }
}
