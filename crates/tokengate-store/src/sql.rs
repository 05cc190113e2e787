//! The SQL store, written once for SQLite and Postgres.
//!
//! Both schemas keep the same tables and columns under the same names with the same meaning
//! (ids as 16-byte UUIDs, times as integer Unix seconds), and both understand `$1`-style
//! placeholders, so almost every statement and all of the logic around them (refresh
//! rotation with reuse detection, the first user becoming admin, key rotation, the purge
//! budget, row decoding, error mapping) live here, in [`SqlStore`]'s one [`Store`]
//! implementation. [`Dialect`] holds what truly differs: how rows and tables are locked,
//! the insertion-order column, the purge statements, bulk inserts, and the bulk load; its
//! implementations are in `sqlite.rs` and `postgres.rs`.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::error::ErrorKind;
use sqlx::migrate::{Migrate, Migrator};
use sqlx::pool::{PoolConnection, PoolOptions};
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, TransactionManager,
    Type,
};
use tokengate_core::{Revocation, RevocationKind, Role, Timestamp};
use uuid::Uuid;

use crate::error::{Detail, Result, StoreError};
use crate::model::{
    LiveRevocations, NewSession, NewUser, RefreshOutcome, RefreshRotation, RefreshTokenInfo,
    Session, StoredKey, User, UserChange,
};
use crate::store::Store;

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
pub trait SqlRow {
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
pub struct PurgeBudget {
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

/// A value both databases bind and decode the same way.
pub trait Column<DB: Database>: Type<DB> + for<'q> Encode<'q, DB> + Send {}

impl<DB: Database, T> Column<DB> for T where T: Type<DB> + for<'q> Encode<'q, DB> + Send {}

/// What differs between SQLite and Postgres; everything else is written once, below, in
/// terms of it. Implemented for [`sqlx::Sqlite`] and [`sqlx::Postgres`] in their modules.
///
/// Placeholders are `$1`, `$2`, ... for both: SQLite understands them too, and a number
/// used twice is one parameter on both.
pub trait Dialect: Database + Sized
where
    for<'c> &'c mut Self::Connection: Executor<'c, Database = Self>,
    for<'q> Self::Arguments<'q>: IntoArguments<'q, Self>,
    Self::Row: SqlRow,
    Uuid: Column<Self>,
    i64: Column<Self>,
    bool: Column<Self>,
    String: Column<Self>,
    Vec<u8>: Column<Self>,
    Option<i64>: Column<Self>,
    Option<String>: Column<Self>,
{
    /// Appended to a `SELECT` of one row that is then updated: Postgres locks it until
    /// commit; SQLite's write transaction already holds the whole database.
    const LOCK_FOR_UPDATE: &'static str;
    /// Appended to the `SELECT` of the user's row in `create_session`: held until commit,
    /// so a password change or disable cannot slip in between (see `postgres.rs`).
    const LOCK_FOR_SHARE: &'static str;
    /// The column that orders rows inserted in the same second: insertion order.
    const INSERTION_ORDER: &'static str;
    /// The five statements of a purge, each taking `$1` = before and `$2` = limit:
    /// expired revocations, expired refresh tokens, then (in one transaction) the refresh
    /// tokens of dead sessions and the dead sessions left without tokens, and last the
    /// expired records of seen signals.
    const PURGE: [&'static str; 5];
    /// Connections per node.
    const POOL_SIZE: u32;
    /// How long an operation waits for a pooled connection (or, while connecting, for the
    /// server to come up) before reporting the store unavailable.
    const ACQUIRE_TIMEOUT: Duration;
    /// Rows per statement when recording a batch of revocations.
    const REVOCATIONS_PER_INSERT: usize;

    /// The pool every store of this dialect opens: [`Self::POOL_SIZE`] connections, each
    /// waited for at most [`Self::ACQUIRE_TIMEOUT`].
    fn pool_options() -> PoolOptions<Self> {
        PoolOptions::new()
            .max_connections(Self::POOL_SIZE)
            .acquire_timeout(Self::ACQUIRE_TIMEOUT)
    }

    /// How many rows a statement changed.
    fn rows_affected(done: &Self::QueryResult) -> u64;

    /// The statement that begins a transaction that will write; `None` for `BEGIN`.
    const BEGIN_WRITE: Option<&'static str>;

    /// Keep other writers off `table` until commit (a no-op where the write transaction
    /// already excludes them).
    fn lock_table(
        conn: &mut Self::Connection,
        table: &'static str,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Insert revocations in the given order, inside the caller's transaction.
    fn insert_revocations(
        conn: &mut Self::Connection,
        revocations: &[Revocation],
        now: Timestamp,
    ) -> impl Future<Output = Result<()>> + Send;

    /// End every live session of a user except `keep` and record their revocations,
    /// oldest first, inside the caller's transaction.
    fn end_user_sessions_in(
        conn: &mut Self::Connection,
        user_id: Uuid,
        keep: Option<Uuid>,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<Revocation>>> + Send;

    /// [`Store::touch_sessions`] with a non-empty batch.
    fn touch_sessions(
        pool: &Pool<Self>,
        seen: &[(Uuid, Timestamp)],
    ) -> impl Future<Output = Result<()>> + Send;

    /// [`Store::load_live_revocations`] from `horizon` on.
    fn load_live(
        pool: &Pool<Self>,
        horizon: Timestamp,
    ) -> impl Future<Output = Result<LiveRevocations>> + Send;

    // ---- written once for both databases ----

    /// Begin a transaction that will write.
    fn begin_write(pool: &Pool<Self>) -> impl Future<Output = Result<Tx<Self>>> + Send {
        Tx::begin(pool, Self::BEGIN_WRITE)
    }

    /// The user with this id.
    fn user_in(
        conn: &mut Self::Connection,
        id: Uuid,
    ) -> impl Future<Output = Result<Option<User>>> + Send {
        async move {
            let row = sqlx::query(concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(conn)
            .await
            .map_err(map_err)?;
            row.as_ref().map(|r| user(r, 0)).transpose()
        }
    }

    /// The session with this id; with `for_update`, locked until the transaction ends.
    fn session_in(
        conn: &mut Self::Connection,
        id: Uuid,
        for_update: bool,
    ) -> impl Future<Output = Result<Option<Session>>> + Send {
        async move {
            let lock = if for_update {
                Self::LOCK_FOR_UPDATE
            } else {
                ""
            };
            let sql = format!(
                "SELECT {} FROM sessions WHERE id = $1{lock}",
                session_columns!()
            );
            let row = sqlx::query(&sql)
                .bind(id)
                .fetch_optional(conn)
                .await
                .map_err(map_err)?;
            row.as_ref().map(|r| session(r, 0)).transpose()
        }
    }

    /// Mark a live session (locked by the caller) ended and record its revocation; the
    /// caller owns the transaction.
    fn end_session_in(
        conn: &mut Self::Connection,
        sid: Uuid,
        access_exp: Timestamp,
        now: Timestamp,
    ) -> impl Future<Output = Result<Revocation>> + Send {
        async move {
            sqlx::query("UPDATE sessions SET ended_at = $1 WHERE id = $2")
                .bind(now.as_secs())
                .bind(sid)
                .execute(&mut *conn)
                .await
                .map_err(map_err)?;
            let rev = Revocation::Session {
                sid,
                exp: access_exp,
            };
            Self::insert_revocations(conn, &[rev], now).await?;
            Ok(rev)
        }
    }

    /// Every signing key, oldest first.
    fn all_keys_in(
        conn: &mut Self::Connection,
    ) -> impl Future<Output = Result<Vec<StoredKey>>> + Send {
        async move {
            let sql = format!(
                "SELECT {} FROM signing_keys ORDER BY created_at, {}",
                key_columns!(),
                Self::INSERTION_ORDER
            );
            let rows = sqlx::query(&sql).fetch_all(conn).await.map_err(map_err)?;
            rows.iter().map(|r| key(r, 0)).collect()
        }
    }

    fn insert_key(
        conn: &mut Self::Connection,
        stored: &StoredKey,
    ) -> impl Future<Output = Result<()>> + Send {
        async move {
            sqlx::query(concat!(
                "INSERT INTO signing_keys (",
                key_columns!(),
                ") VALUES ($1, $2, $3, $4, $5)"
            ))
            .bind(stored.kid.clone())
            .bind(stored.alg.clone())
            .bind(stored.private_der.clone())
            .bind(stored.created_at.as_secs())
            .bind(stored.verify_until.map(Timestamp::as_secs))
            .execute(conn)
            .await
            .map_err(map_err)?;
            Ok(())
        }
    }

    fn create_user_in(
        conn: &mut Self::Connection,
        new: &NewUser,
    ) -> impl Future<Output = Result<End<Role>>> + Send {
        async move {
            // The "first user" decision and the insert happen with other writers kept off the
            // table, so two concurrent sign-ups (on any nodes) cannot both see an empty table
            // and both become admin. Sign-ups are rare; the lock is held for two statements.
            Self::lock_table(&mut *conn, "users").await?;
            let any_user = sqlx::query("SELECT EXISTS (SELECT 1 FROM users)")
                .fetch_one(&mut *conn)
                .await
                .map_err(map_err)?
                .flag(0)?;
            let role = if any_user { new.role } else { Role::Admin };
            sqlx::query(concat!(
                "INSERT INTO users (",
                user_columns!(),
                ") VALUES ($1, $2, $3, $4, FALSE, $5)"
            ))
            .bind(new.id)
            .bind(new.email.clone())
            .bind(new.password_hash.clone())
            .bind(role.as_str().to_owned())
            .bind(new.created_at.as_secs())
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
            Ok(End::Commit(role))
        }
    }

    /// Apply `change` to a user's row, then end the sessions it ends. `None` when there
    /// is no such user.
    fn update_user_in(
        conn: &mut Self::Connection,
        user_id: Uuid,
        change: UserChange<'_>,
        now: Timestamp,
    ) -> impl Future<Output = Result<End<Option<Vec<Revocation>>>>> + Send {
        async move {
            let (update, end_sessions, keep) = match change {
                UserChange::Password { hash, keep } => (
                    sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
                        .bind(hash.to_owned()),
                    true,
                    keep,
                ),
                UserChange::Disabled(disabled) => (
                    sqlx::query("UPDATE users SET disabled = $1 WHERE id = $2").bind(disabled),
                    disabled,
                    None,
                ),
            };
            // The update locks the user's row first: a sign-in checking the old state either
            // committed its session before (and it is ended below) or waits and then fails.
            let done = update
                .bind(user_id)
                .execute(&mut *conn)
                .await
                .map_err(map_err)?;
            if Self::rows_affected(&done) == 0 {
                return Ok(End::Rollback(None));
            }
            let revocations = if end_sessions {
                Self::end_user_sessions_in(conn, user_id, keep, now).await?
            } else {
                Vec::new()
            };
            Ok(End::Commit(Some(revocations)))
        }
    }

    fn create_session_in(
        conn: &mut Self::Connection,
        new: &NewSession,
    ) -> impl Future<Output = Result<End<bool>>> + Send {
        async move {
            // Checked inside the write transaction, on Postgres with the user's row held until
            // commit: a password change or disable that committed after the caller's password
            // check makes this sign-in fail, and one that starts later waits for this session
            // to exist, so it ends it.
            let sql = format!(
                "SELECT password_hash FROM users WHERE id = $1 AND NOT disabled{}",
                Self::LOCK_FOR_SHARE
            );
            let current = sqlx::query(&sql)
                .bind(new.user_id)
                .fetch_optional(&mut *conn)
                .await
                .map_err(map_err)?;
            let current = current.map(|row| row.text(0)).transpose()?;
            if current.as_deref() != Some(new.password_hash.as_str()) {
                return Ok(End::Rollback(false));
            }
            sqlx::query(concat!(
                "INSERT INTO sessions (",
                session_columns!(),
                ") VALUES ($1, $2, $3, $3, $4, $5, $6, $7, NULL)"
            ))
            .bind(new.id)
            .bind(new.user_id)
            .bind(new.created_at.as_secs())
            .bind(new.user_agent.clone())
            .bind(new.ip.clone())
            .bind(new.access_exp.as_secs())
            .bind(new.refresh_exp.as_secs())
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
            Self::insert_refresh_token(
                conn,
                new.refresh_hash,
                new.id,
                new.refresh_exp,
                new.created_at,
            )
            .await?;
            Ok(End::Commit(true))
        }
    }

    fn insert_refresh_token(
        conn: &mut Self::Connection,
        hash: [u8; 32],
        sid: Uuid,
        exp: Timestamp,
        now: Timestamp,
    ) -> impl Future<Output = Result<()>> + Send {
        async move {
            sqlx::query(
                "INSERT INTO refresh_tokens (hash, session_id, exp, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(hash.to_vec())
            .bind(sid)
            .bind(exp.as_secs())
            .bind(now.as_secs())
            .execute(conn)
            .await
            .map_err(map_err)?;
            Ok(())
        }
    }

    fn end_session_body(
        conn: &mut Self::Connection,
        sid: Uuid,
        now: Timestamp,
    ) -> impl Future<Output = Result<End<Option<Revocation>>>> + Send {
        async move {
            // Locked: of two concurrent sign-outs of one session, the second waits and then
            // sees it ended, so the revocation is recorded once; a concurrent rotation's new
            // `access_exp` is seen before it is revoked.
            let Some(session) = Self::session_in(&mut *conn, sid, true).await? else {
                return Ok(End::Rollback(None));
            };
            if session.ended_at.is_some() {
                // Idempotent: the revocation was recorded when it ended; hand it out again so a
                // retried sign-out still gets applied to the caller's index.
                return Ok(End::Rollback(Some(Revocation::Session {
                    sid,
                    exp: session.access_exp,
                })));
            }
            let rev = Self::end_session_in(conn, sid, session.access_exp, now).await?;
            Ok(End::Commit(Some(rev)))
        }
    }

    fn rotate_refresh_in(
        conn: &mut Self::Connection,
        rotation: &RefreshRotation,
    ) -> impl Future<Output = Result<End<RefreshOutcome>>> + Send {
        async move {
            let now = rotation.now;
            // Locked: of two concurrent rotations of the token, the second waits for the first
            // to commit and then reads `used_at` as set (reuse), so exactly one rotates.
            let sql = format!(
                "SELECT session_id, exp, used_at FROM refresh_tokens WHERE hash = $1{}",
                Self::LOCK_FOR_UPDATE
            );
            let token = sqlx::query(&sql)
                .bind(rotation.presented_hash.to_vec())
                .fetch_optional(&mut *conn)
                .await
                .map_err(map_err)?;
            let Some(token) = token else {
                return Ok(End::Rollback(RefreshOutcome::Unknown));
            };
            let sid = token.uuid(0)?;
            let exp = token.ts(1)?;
            let used_at = token.opt_ts(2)?;

            // The session is locked too: a concurrent sign-out either ended it first (and this
            // refuses) or waits and then revokes the `access_exp` written here.
            let session = Self::session_in(&mut *conn, sid, true)
                .await?
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("refresh token of missing session {sid}").into())
                })?;
            if session.ended_at.is_some() {
                return Ok(End::Rollback(RefreshOutcome::SessionEnded));
            }
            // The user's row is read without a lock: `set_disabled` locks the user before the
            // sessions, so locking it here (after the session) could deadlock. A disable racing
            // this rotation waits for the session lock and then ends the session with the
            // `access_exp` written here, so nothing minted now outlives it.
            let user = Self::user_in(&mut *conn, session.user_id)
                .await?
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("session {sid} of missing user").into())
                })?;
            if user.disabled {
                return Ok(End::Rollback(RefreshOutcome::UserDisabled));
            }
            if let Some(used_at) = used_at {
                let within_grace = !rotation.grace.is_zero() && used_at.plus(rotation.grace) >= now;
                if !within_grace {
                    // A used token presented again means two parties hold the family: end it.
                    let revocation =
                        Self::end_session_in(conn, sid, session.access_exp, now).await?;
                    return Ok(End::Commit(RefreshOutcome::Reused { revocation }));
                }
            }
            if exp < now {
                return Ok(End::Rollback(RefreshOutcome::Expired));
            }

            // A grace retry keeps the first `used_at`, so retries cannot stretch the window.
            sqlx::query(
                "UPDATE refresh_tokens SET used_at = $1 WHERE hash = $2 AND used_at IS NULL",
            )
            .bind(now.as_secs())
            .bind(rotation.presented_hash.to_vec())
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
            Self::insert_refresh_token(
                &mut *conn,
                rotation.new_hash,
                sid,
                rotation.new_refresh_exp,
                now,
            )
            .await?;
            // access_exp only grows: it bounds every access token of the session ever minted,
            // which is what a later session revocation must cover.
            let access_exp = session.access_exp.max(rotation.new_access_exp);
            sqlx::query("UPDATE sessions SET access_exp = $1, refresh_exp = $2 WHERE id = $3")
                .bind(access_exp.as_secs())
                .bind(rotation.new_refresh_exp.as_secs())
                .bind(sid)
                .execute(&mut *conn)
                .await
                .map_err(map_err)?;
            Ok(End::Commit(RefreshOutcome::Rotated {
                session: Session {
                    access_exp,
                    refresh_exp: rotation.new_refresh_exp,
                    ..session
                },
                user,
            }))
        }
    }

    /// One `DELETE` of a purge (see [`Dialect::PURGE`]); counts its rows in `budget`.
    fn purge_step(
        conn: &mut Self::Connection,
        statement: &'static str,
        before: i64,
        budget: &mut PurgeBudget,
    ) -> impl Future<Output = Result<()>> + Send {
        async move {
            if budget.any_left() {
                let done = sqlx::query(statement)
                    .bind(before)
                    .bind(budget.limit())
                    .execute(conn)
                    .await
                    .map_err(map_err)?;
                budget.take(Self::rows_affected(&done));
            }
            Ok(())
        }
    }

    /// Purge dead sessions: their remaining refresh tokens first (foreign key), then the
    /// sessions left without tokens; one transaction so none is orphaned halfway.
    fn purge_sessions_in(
        conn: &mut Self::Connection,
        before: i64,
        budget: &mut PurgeBudget,
    ) -> impl Future<Output = Result<End<()>>> + Send {
        async move {
            Self::purge_step(&mut *conn, Self::PURGE[2], before, budget).await?;
            Self::purge_step(conn, Self::PURGE[3], before, budget).await?;
            Ok(End::Commit(()))
        }
    }

    fn rotate_signing_key_in(
        conn: &mut Self::Connection,
        stored: &StoredKey,
        old_keys_verify_until: Timestamp,
    ) -> impl Future<Output = Result<End<()>>> + Send {
        async move {
            // Without the table lock, two concurrent rotations would each stamp only the keys
            // their snapshot shows and leave two keys without `verify_until`.
            Self::lock_table(&mut *conn, "signing_keys").await?;
            sqlx::query("UPDATE signing_keys SET verify_until = $1 WHERE verify_until IS NULL")
                .bind(old_keys_verify_until.as_secs())
                .execute(&mut *conn)
                .await
                .map_err(map_err)?;
            Self::insert_key(conn, stored).await?;
            Ok(End::Commit(()))
        }
    }

    fn insert_first_signing_key_in(
        conn: &mut Self::Connection,
        stored: &StoredKey,
    ) -> impl Future<Output = Result<End<Vec<StoredKey>>>> + Send {
        async move {
            // With the table locked, of several nodes starting at once exactly one sees the
            // table empty; the others wait, then see its key.
            Self::lock_table(&mut *conn, "signing_keys").await?;
            let any_key = sqlx::query("SELECT EXISTS (SELECT 1 FROM signing_keys)")
                .fetch_one(&mut *conn)
                .await
                .map_err(map_err)?
                .flag(0)?;
            if !any_key {
                Self::insert_key(&mut *conn, stored).await?;
            }
            Ok(End::Commit(Self::all_keys_in(conn).await?))
        }
    }
}

/// How a transaction body wants its transaction to end.
pub enum End<T> {
    /// Make the changes durable, then answer `T`.
    Commit(T),
    /// Nothing to keep (a refusal, or a read): release the locks, then answer `T`.
    Rollback(T),
}

/// A transaction on a connection of its own from the pool.
///
/// Unlike `sqlx::Transaction`, a connection whose `COMMIT` or `ROLLBACK` failed is closed
/// instead of going back to the pool. After a failed `COMMIT` (disk full, an I/O error)
/// SQLite may already have rolled the transaction back by itself; the driver still counts
/// it as open, its deferred `ROLLBACK` then fails too, and from then on every `BEGIN` on that
/// connection failed with "attempted to call begin_with at non-zero transaction depth"
/// until the pool retired it half an hour later. A new connection has no such state.
pub struct Tx<DB: Database> {
    conn: PoolConnection<DB>,
    open: bool,
}

impl<DB: Database> Tx<DB> {
    /// Take a connection and begin a transaction on it with `statement` (`None`: `BEGIN`).
    pub(crate) async fn begin(pool: &Pool<DB>, statement: Option<&'static str>) -> Result<Tx<DB>> {
        let mut conn = pool.acquire().await.map_err(map_err)?;
        match DB::TransactionManager::begin(&mut conn, statement.map(Cow::Borrowed)).await {
            Ok(()) => Ok(Tx { conn, open: true }),
            Err(e) => {
                // A connection that believes it is inside a transaction can never begin one.
                if DB::TransactionManager::get_transaction_depth(&conn) > 0 {
                    conn.close_on_drop();
                }
                Err(map_err(e))
            }
        }
    }

    /// Commit; on failure the connection is closed rather than reused.
    pub(crate) async fn commit(mut self) -> Result<()> {
        let committed = DB::TransactionManager::commit(&mut self.conn).await;
        // Only once it has returned: cancelled mid-way, the transaction is still open and
        // `Drop` queues its rollback.
        self.open = false;
        if committed.is_err() {
            self.conn.close_on_drop();
        }
        committed.map_err(map_err)
    }

    /// Roll back; on failure the connection is closed rather than reused.
    async fn rollback(mut self) -> Result<()> {
        let rolled_back = DB::TransactionManager::rollback(&mut self.conn).await;
        self.open = false;
        if rolled_back.is_err() {
            self.conn.close_on_drop();
        }
        rolled_back.map_err(map_err)
    }
}

impl<DB: Database> Deref for Tx<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        &self.conn
    }
}

impl<DB: Database> DerefMut for Tx<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.conn
    }
}

impl<DB: Database> Drop for Tx<DB> {
    fn drop(&mut self) {
        if self.open {
            // Dropped mid-way (the caller's future was cancelled): the driver rolls back
            // before the connection's next use, as `sqlx::Transaction` does.
            DB::TransactionManager::start_rollback(&mut self.conn);
        }
    }
}

/// End `tx` as its body asked, or roll it back after an error.
///
/// Every transaction is ended explicitly: one merely dropped would be rolled back only when
/// the pool next touches its connection (in a background task), holding its locks, and so
/// blocking other writers, until then.
pub(crate) async fn finish<DB: Database, T>(tx: Tx<DB>, body: Result<End<T>>) -> Result<T> {
    match body {
        Ok(End::Commit(value)) => {
            tx.commit().await?;
            Ok(value)
        }
        Ok(End::Rollback(value)) => {
            rollback(tx).await;
            Ok(value)
        }
        Err(e) => {
            rollback(tx).await;
            Err(e)
        }
    }
}

/// Roll back, best effort: the answer is already decided, and if the connection broke,
/// the database ends the transaction itself (and the connection is not reused).
async fn rollback<DB: Database>(tx: Tx<DB>) {
    if let Err(e) = tx.rollback().await {
        tracing::debug!(error = %e, "rolling back failed");
    }
}

/// How often applying the migrations is tried: two processes starting on a fresh database
/// at the same moment can race, and the loser succeeds on a retry (it then sees them
/// applied).
const MIGRATION_ATTEMPTS: u32 = 3;

/// The store over `pool`, once `migrator` has brought its schema up to date.
pub(crate) async fn migrated<DB: Database>(
    pool: Pool<DB>,
    migrator: &Migrator,
) -> Result<SqlStore<DB>>
where
    DB::Connection: Migrate,
{
    let mut attempt = 1;
    loop {
        match migrator.run(&pool).await {
            Ok(()) => return Ok(SqlStore { pool }),
            Err(e) if attempt < MIGRATION_ATTEMPTS => {
                tracing::debug!(error = %e, attempt, "applying migrations failed; retrying");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                attempt += 1;
            }
            Err(e) => return Err(StoreError::Migration(Detail::caused_by("", e))),
        }
    }
}

/// A [`Store`] on a SQL database: [`SqliteStore`](crate::SqliteStore) and
/// [`PostgresStore`](crate::PostgresStore) are this over their [`Dialect`].
///
/// Cloning is cheap and shares the pool.
pub struct SqlStore<DB: Database> {
    pub(crate) pool: Pool<DB>,
}

impl<DB: Database> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        SqlStore {
            pool: self.pool.clone(),
        }
    }
}

impl<DB: Database> fmt::Debug for SqlStore<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStore")
            .field("database", &DB::NAME)
            .field("pool", &self.pool)
            .finish()
    }
}

#[async_trait]
impl<DB: Dialect> Store for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    DB::Row: SqlRow,
    Uuid: Column<DB>,
    i64: Column<DB>,
    bool: Column<DB>,
    String: Column<DB>,
    Vec<u8>: Column<DB>,
    Option<i64>: Column<DB>,
    Option<String>: Column<DB>,
{
    async fn create_user(&self, new: NewUser) -> Result<User> {
        let mut tx = DB::begin_write(&self.pool).await?;
        let body = DB::create_user_in(&mut tx, &new).await;
        let role = finish(tx, body).await?;
        Ok(User {
            id: new.id,
            email: new.email,
            password_hash: new.password_hash,
            role,
            disabled: false,
            created_at: new.created_at,
        })
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE email = $1"
        ))
        .bind(email.to_owned())
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.as_ref().map(|r| user(r, 0)).transpose()
    }

    async fn user_by_id(&self, id: Uuid) -> Result<Option<User>> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        DB::user_in(&mut conn, id).await
    }

    async fn update_user(
        &self,
        user_id: Uuid,
        change: UserChange<'_>,
        now: Timestamp,
    ) -> Result<Option<Vec<Revocation>>> {
        let mut tx = DB::begin_write(&self.pool).await?;
        let body = DB::update_user_in(&mut tx, user_id, change, now).await;
        finish(tx, body).await
    }

    async fn create_session(&self, new: NewSession) -> Result<bool> {
        let mut tx = DB::begin_write(&self.pool).await?;
        let body = DB::create_session_in(&mut tx, &new).await;
        finish(tx, body).await
    }

    async fn session(&self, id: Uuid) -> Result<Option<Session>> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        DB::session_in(&mut conn, id, false).await
    }

    async fn refresh_token(&self, hash: [u8; 32]) -> Result<Option<RefreshTokenInfo>> {
        // One statement, so token and session come from one snapshot. The foreign key
        // guarantees the session exists.
        let row = sqlx::query(concat!(
            "SELECT rt.exp, rt.used_at, ",
            "s.id, s.user_id, s.created_at, s.last_seen_at, s.user_agent, s.ip, ",
            "s.access_exp, s.refresh_exp, s.ended_at ",
            "FROM refresh_tokens rt JOIN sessions s ON s.id = rt.session_id WHERE rt.hash = $1"
        ))
        .bind(hash.to_vec())
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(RefreshTokenInfo {
            exp: row.ts(0)?,
            used_at: row.opt_ts(1)?,
            session: session(&row, 2)?,
        }))
    }

    async fn live_sessions(&self, user_id: Uuid, now: Timestamp) -> Result<Vec<Session>> {
        let sql = format!(
            "SELECT {} FROM sessions \
             WHERE user_id = $1 AND ended_at IS NULL AND (refresh_exp >= $2 OR access_exp >= $2) \
             ORDER BY created_at, {}",
            session_columns!(),
            DB::INSERTION_ORDER
        );
        let rows = sqlx::query(&sql)
            .bind(user_id)
            .bind(now.as_secs())
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(|r| session(r, 0)).collect()
    }

    async fn touch_sessions(&self, seen: &[(Uuid, Timestamp)]) -> Result<()> {
        if seen.is_empty() {
            return Ok(());
        }
        DB::touch_sessions(&self.pool, seen).await
    }

    async fn end_session(&self, sid: Uuid, now: Timestamp) -> Result<Option<Revocation>> {
        let mut tx = DB::begin_write(&self.pool).await?;
        let body = DB::end_session_body(&mut tx, sid, now).await;
        finish(tx, body).await
    }

    async fn end_user_sessions(
        &self,
        user_id: Uuid,
        keep: Option<Uuid>,
        now: Timestamp,
    ) -> Result<Vec<Revocation>> {
        let mut tx = DB::begin_write(&self.pool).await?;
        let body = DB::end_user_sessions_in(&mut tx, user_id, keep, now)
            .await
            .map(End::Commit);
        finish(tx, body).await
    }

    async fn end_sessions_created_before(&self, cutoff: Timestamp, now: Timestamp) -> Result<u64> {
        let mut tx = DB::begin_write(&self.pool).await?;
        let body = sqlx::query(
            "UPDATE sessions SET ended_at = $1 \
             WHERE ended_at IS NULL AND created_at < $2 RETURNING id",
        )
        .bind(now.as_secs())
        .bind(cutoff.as_secs())
        .fetch_all(&mut *tx)
        .await
        .map(|ended| End::Commit(ended.len() as u64))
        .map_err(map_err);
        finish(tx, body).await
    }

    async fn rotate_refresh(&self, rotation: RefreshRotation) -> Result<RefreshOutcome> {
        let mut tx = DB::begin_write(&self.pool).await?;
        let body = DB::rotate_refresh_in(&mut tx, &rotation).await;
        finish(tx, body).await
    }

    async fn record_revocations(&self, revocations: &[Revocation], now: Timestamp) -> Result<()> {
        if revocations.is_empty() {
            return Ok(());
        }
        // One transaction for all chunks: all or none (and on SQLite a single fsync).
        let mut tx = DB::begin_write(&self.pool).await?;
        let body = DB::insert_revocations(&mut tx, revocations, now)
            .await
            .map(End::Commit);
        finish(tx, body).await
    }

    async fn record_revocations_once(
        &self,
        signal: Uuid,
        signal_exp: Timestamp,
        revocations: &[Revocation],
        now: Timestamp,
    ) -> Result<bool> {
        let mut tx = DB::begin_write(&self.pool).await?;
        let body = async {
            // Insert-if-absent: of two deliveries of one signal, on one node or on two,
            // exactly one inserts the row (the other waits for its commit, then finds it).
            let done = sqlx::query(
                "INSERT INTO seen_signals (id, exp) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
            )
            .bind(signal)
            .bind(signal_exp.as_secs())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
            if DB::rows_affected(&done) == 0 {
                return Ok(End::Rollback(false));
            }
            if !revocations.is_empty() {
                DB::insert_revocations(&mut tx, revocations, now).await?;
            }
            Ok(End::Commit(true))
        }
        .await;
        finish(tx, body).await
    }

    async fn load_live_revocations(
        &self,
        now: Timestamp,
        leeway: Duration,
    ) -> Result<LiveRevocations> {
        DB::load_live(&self.pool, now.minus(leeway)).await
    }

    async fn revocations_after(&self, cursor: i64, limit: u32) -> Result<Vec<(i64, Revocation)>> {
        let rows = sqlx::query(REVOCATIONS_AFTER)
            .bind(cursor)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        sequenced_revocations(&rows)
    }

    async fn purge_expired(&self, before: Timestamp, limit: u32) -> Result<u64> {
        // `limit` bounds the rows of the whole call; each statement deletes through a
        // bounded subquery, so none holds the write lock or many row locks for long.
        let mut budget = PurgeBudget::new(limit);
        let before = before.as_secs();
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        DB::purge_step(&mut conn, DB::PURGE[0], before, &mut budget).await?;
        DB::purge_step(&mut conn, DB::PURGE[1], before, &mut budget).await?;
        drop(conn);
        if budget.any_left() {
            let mut tx = DB::begin_write(&self.pool).await?;
            let body = DB::purge_sessions_in(&mut tx, before, &mut budget).await;
            finish(tx, body).await?;
        }
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        DB::purge_step(&mut conn, DB::PURGE[4], before, &mut budget).await?;
        Ok(budget.deleted())
    }

    async fn signing_keys(&self) -> Result<Vec<StoredKey>> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        DB::all_keys_in(&mut conn).await
    }

    async fn rotate_signing_key(
        &self,
        key: StoredKey,
        old_keys_verify_until: Timestamp,
    ) -> Result<()> {
        let mut tx = DB::begin_write(&self.pool).await?;
        let body = DB::rotate_signing_key_in(&mut tx, &key, old_keys_verify_until).await;
        finish(tx, body).await
    }

    async fn insert_first_signing_key(&self, key: StoredKey) -> Result<Vec<StoredKey>> {
        let mut tx = DB::begin_write(&self.pool).await?;
        let body = DB::insert_first_signing_key_in(&mut tx, &key).await;
        finish(tx, body).await
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }
}
