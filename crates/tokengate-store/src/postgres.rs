//! [`PostgresStore`]: the cluster backend, one Postgres database shared by every node.
//!
//! Several processes write the same tables at once, so every read-then-write is made safe
//! by a lock taken inside its transaction (SQLite gets the same from `BEGIN IMMEDIATE`):
//!
//! - `create_user`, `insert_first_signing_key` and `rotate_signing_key` lock their whole
//!   (small, rarely written) table against other writers: "is it empty?" and "which key is
//!   current?" are questions about the table, not about one row.
//! - `create_session` holds the user's row `FOR SHARE` while it checks the password hash
//!   and the disabled flag; `change_password` and `set_disabled` update that row, so the
//!   two serialise and a sign-in never outlives the password it was checked against.
//! - `rotate_refresh` locks the presented refresh token `FOR UPDATE` and then its session,
//!   so of two concurrent rotations of one token exactly one rotates and the other sees it
//!   used; and a concurrent sign-out sees the session's final `access_exp`.
//! - Every transaction that inserts into `revocations` first takes one advisory lock, so
//!   those inserts commit in `seq` order (see [`lock_revocation_order`]).
//!
//! Loading the live set at start uses binary `COPY` decoded straight into the result, so a
//! million revocations load in about a second (see `load_live_in`).
//!
//! Locks are always taken in the same order (a user's row, then session rows in id order,
//! then refresh tokens before their session, and the revocation lock last of all, after
//! which nothing else is waited for), so these transactions cannot deadlock each other.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use sqlx::error::ErrorKind;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres, Transaction};
use tokengate_core::{Revocation, Role, Timestamp};
use uuid::Uuid;

use crate::error::{Detail, Result, StoreError};
use crate::model::{
    LiveRevocations, NewSession, NewUser, RefreshOutcome, RefreshRotation, RefreshTokenInfo,
    Session, StoredKey, User,
};
use crate::sql::{self, key_columns, map_err, session_columns, user_columns, PurgeBudget, SqlRow};
use crate::store::Store;

mod copy;

use copy::CopyDecoder;

/// Connections per node: enough for the request handlers' writes beside a load or a purge.
const POOL_SIZE: u32 = 8;
/// How long an operation waits for a pooled connection (or, while connecting, for the
/// server to come up) before reporting the store unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Rows per `INSERT` when recording revocations: each chunk is one statement of four
/// arrays, so this only bounds the size of one message (about 2 MB).
const REVOCATIONS_PER_INSERT: usize = 50_000;
/// The advisory lock that orders inserts into `revocations` (see [`lock_revocation_order`]).
/// Any constant works as long as every writer uses the same one; this is "tokgrevo".
const REVOCATION_ORDER_LOCK: i64 = 0x746f_6b67_7265_766f;
/// Longest schema name Postgres keeps (NAMEDATALEN - 1).
const MAX_SCHEMA_NAME: usize = 63;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The Postgres [`Store`]: a connection pool over one database (and one schema in it).
///
/// Every node of a cluster connects its own `PostgresStore` to the same database; all the
/// cross-node coordination is done with locks inside Postgres. Cloning is cheap and shares
/// the pool.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connect to the database a `postgres://` or `postgresql://` URL names and bring its
    /// schema up to date.
    ///
    /// Migrations run under a Postgres advisory lock (sqlx takes it), so several nodes
    /// starting at once on a fresh database are safe: one applies them, the others wait
    /// and find them applied. The tables go to the first schema of the connection's
    /// `search_path` (normally `public`).
    pub async fn connect(url: &str) -> Result<PostgresStore> {
        Self::open(parse_url(url)?).await
    }

    /// Like [`connect`](Self::connect), but keep every table in `schema`, created if
    /// missing. Several independent stores can then share one database (the tests give
    /// each test a fresh schema this way).
    ///
    /// `schema` must be a plain lower-case identifier (`[a-z_][a-z0-9_]*`, at most 63
    /// bytes, not starting with `pg_`): it is used unquoted in `search_path`.
    pub async fn connect_with_schema(url: &str, schema: &str) -> Result<PostgresStore> {
        check_schema_name(schema)?;
        let options = parse_url(url)?;
        create_schema(&options, schema).await?;
        Self::open(options.options([("search_path", schema)])).await
    }

    async fn open(options: PgConnectOptions) -> Result<PostgresStore> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::unavailable("cannot connect to Postgres", e))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Migration(Detail::caused_by("", e)))?;
        Ok(PostgresStore { pool })
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(map_err)
    }
}

/// Parse a Postgres URL. The URL itself never goes into an error: it may hold a password.
fn parse_url(url: &str) -> Result<PgConnectOptions> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(StoreError::Unavailable(
            "not a Postgres URL (expected postgres:// or postgresql://)".into(),
        ));
    }
    PgConnectOptions::from_str(url).map_err(|e| StoreError::unavailable("invalid Postgres URL", e))
}

/// Only names that need no quoting anywhere: the name goes into `search_path` as is.
fn check_schema_name(schema: &str) -> Result<()> {
    let mut chars = schema.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && schema.len() <= MAX_SCHEMA_NAME
        && !schema.starts_with("pg_");
    if valid {
        Ok(())
    } else {
        Err(StoreError::Unavailable(
            format!(
                "invalid schema name {schema:?}: use [a-z_][a-z0-9_]*, at most 63 bytes, not pg_*"
            )
            .into(),
        ))
    }
}

/// Create `schema` if it is missing, on a connection of its own (the pool's connections
/// name it in their `search_path`, which must exist before the migrations run).
async fn create_schema(options: &PgConnectOptions, schema: &str) -> Result<()> {
    let mut conn = PgConnection::connect_with(options)
        .await
        .map_err(|e| StoreError::unavailable("cannot connect to Postgres", e))?;
    // The name was checked to be a plain identifier, so quoting it is enough.
    let created = sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
        .execute(&mut conn)
        .await;
    // Best effort: the connection is done with either way.
    let _ = conn.close().await;
    match created {
        Ok(_) => Ok(()),
        // `IF NOT EXISTS` is not atomic: of two processes creating it at the same moment,
        // one can fail on the catalogue's unique index. The schema exists, which is all
        // that was asked.
        Err(sqlx::Error::Database(db))
            if db.kind() == ErrorKind::UniqueViolation || db.code().as_deref() == Some("42P06") =>
        {
            Ok(())
        }
        Err(e) => Err(map_err(e)),
    }
}

// ---- statements shared by several operations ----

/// Make this transaction's inserts into `revocations` commit in `seq` order.
///
/// Readers tail the table by `seq` (`revocations_after(cursor)`) and move their cursor to
/// the highest `seq` they saw. Postgres hands out a sequence number when a row is inserted
/// but the row only becomes visible when its transaction commits, so without this a
/// transaction holding `seq = 7` could commit after one holding `seq = 8`: a reader that
/// saw 8 would move its cursor past 7 and never see it, a revocation silently missing
/// from that node's index.
///
/// Holding one transaction-level advisory lock from before the first insert until commit
/// means only one transaction at a time can draw numbers, and it commits (becomes visible)
/// before the lock passes on. So every number below a visible one is visible too (or was
/// rolled back, leaving a harmless gap), and a cursor never skips a record. Transactions
/// take this lock last, after every row lock they need, so while holding it they wait for
/// nothing and it cannot take part in a deadlock. Taking it again in the same transaction
/// is harmless.
async fn lock_revocation_order(conn: &mut PgConnection) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(REVOCATION_ORDER_LOCK)
        .execute(conn)
        .await
        .map_err(map_err)?;
    Ok(())
}

/// Insert revocations in the given order (so their `seq` follow it), inside the caller's
/// transaction, after taking the revocation order lock.
async fn insert_revocations(
    conn: &mut PgConnection,
    revocations: &[Revocation],
    now: Timestamp,
) -> Result<()> {
    if revocations.is_empty() {
        return Ok(());
    }
    lock_revocation_order(&mut *conn).await?;
    for chunk in revocations.chunks(REVOCATIONS_PER_INSERT) {
        let kinds: Vec<&str> = chunk.iter().map(|r| r.kind().as_str()).collect();
        let ids: Vec<Uuid> = chunk.iter().map(Revocation::subject_id).collect();
        let cutoffs: Vec<Option<i64>> = chunk
            .iter()
            .map(|r| r.issued_before().map(Timestamp::as_secs))
            .collect();
        let exps: Vec<i64> = chunk.iter().map(|r| r.exp().as_secs()).collect();
        // One statement of four arrays instead of a bound value per field (Postgres allows
        // at most 65 535 per statement). `ORDER BY n` makes the sequence numbers follow
        // the order of the arrays.
        sqlx::query(
            "INSERT INTO revocations (kind, id, issued_before, exp, created_at)
             SELECT kind, id, issued_before, exp, $5
             FROM UNNEST($1::text[], $2::uuid[], $3::int8[], $4::int8[])
                  WITH ORDINALITY AS r (kind, id, issued_before, exp, n)
             ORDER BY n",
        )
        .bind(kinds)
        .bind(ids)
        .bind(cutoffs)
        .bind(exps)
        .bind(now.as_secs())
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
    }
    Ok(())
}

/// The session with this id; with `for_update`, locked until the transaction ends.
async fn session_in(
    conn: &mut PgConnection,
    id: Uuid,
    for_update: bool,
) -> Result<Option<Session>> {
    let sql = if for_update {
        concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions WHERE id = $1 FOR UPDATE"
        )
    } else {
        concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions WHERE id = $1"
        )
    };
    let row = sqlx::query(sql)
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(map_err)?;
    row.as_ref().map(|r| sql::session(r, 0)).transpose()
}

async fn user_in(conn: &mut PgConnection, id: Uuid) -> Result<Option<User>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        user_columns!(),
        " FROM users WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
    .map_err(map_err)?;
    row.as_ref().map(|r| sql::user(r, 0)).transpose()
}

/// Mark a live session, locked by the caller, ended and record its revocation; the caller
/// owns the transaction.
async fn end_session_in(
    conn: &mut PgConnection,
    sid: Uuid,
    access_exp: Timestamp,
    now: Timestamp,
) -> Result<Revocation> {
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
    insert_revocations(conn, &[rev], now).await?;
    Ok(rev)
}

/// End every live session of a user except `keep`; the caller owns the transaction.
async fn end_user_sessions_in(
    conn: &mut PgConnection,
    user_id: Uuid,
    keep: Option<Uuid>,
    now: Timestamp,
) -> Result<Vec<Revocation>> {
    // The sessions are locked in id order first (as `touch_sessions` locks them), so two
    // transactions ending or touching overlapping sessions queue instead of deadlocking.
    // The update then reads each row's newest `access_exp`: a rotation that committed
    // while this waited is covered by the revocation. Results come oldest first, as
    // SQLite gives them.
    let rows = sqlx::query(
        "WITH target AS (
             SELECT id FROM sessions
             WHERE user_id = $1 AND ended_at IS NULL AND (refresh_exp >= $2 OR access_exp >= $2)
               AND id IS DISTINCT FROM $3
             ORDER BY id
             FOR UPDATE
         ), ended AS (
             UPDATE sessions s SET ended_at = $2
             FROM target WHERE s.id = target.id AND s.ended_at IS NULL
             RETURNING s.id, s.access_exp, s.created_at, s.ord
         )
         SELECT id, access_exp FROM ended ORDER BY created_at, ord",
    )
    .bind(user_id)
    .bind(now.as_secs())
    .bind(keep)
    .fetch_all(&mut *conn)
    .await
    .map_err(map_err)?;
    let revocations = rows
        .iter()
        .map(|row| {
            Ok(Revocation::Session {
                sid: row.uuid(0)?,
                exp: row.ts(1)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    insert_revocations(conn, &revocations, now).await?;
    Ok(revocations)
}

async fn all_keys_in(conn: &mut PgConnection) -> Result<Vec<StoredKey>> {
    // `ord` breaks ties between keys made in the same second: insertion order.
    let rows = sqlx::query(concat!(
        "SELECT ",
        key_columns!(),
        " FROM signing_keys ORDER BY created_at, ord"
    ))
    .fetch_all(conn)
    .await
    .map_err(map_err)?;
    rows.iter().map(|r| sql::key(r, 0)).collect()
}

async fn insert_key(conn: &mut PgConnection, key: &StoredKey) -> Result<()> {
    sqlx::query(concat!(
        "INSERT INTO signing_keys (",
        key_columns!(),
        ") VALUES ($1, $2, $3, $4, $5)"
    ))
    .bind(&key.kid)
    .bind(&key.alg)
    .bind(&key.private_der)
    .bind(key.created_at.as_secs())
    .bind(key.verify_until.map(Timestamp::as_secs))
    .execute(conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

/// Lock a small table against every other writer until commit (readers are not blocked).
/// SHARE ROW EXCLUSIVE conflicts with itself and with ordinary inserts and updates, so
/// "is it empty?" or "which rows are current?" stays true until this transaction commits.
async fn lock_table(conn: &mut PgConnection, table: &str) -> Result<()> {
    sqlx::query(&format!("LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE"))
        .execute(conn)
        .await
        .map_err(map_err)?;
    Ok(())
}

// ---- transaction bodies ----
//
// Each compound operation is a body that runs on the transaction's connection and says how
// the transaction must end; `finish` then ends it explicitly. A transaction merely dropped
// would be rolled back only when the pool next touches its connection (in a background
// task), holding its row locks, and so blocking other nodes, until then.

/// How a transaction body wants its transaction to end.
enum End<T> {
    /// Make the changes durable, then answer `T`.
    Commit(T),
    /// Nothing to keep (a refusal, or a read): release the locks, then answer `T`.
    Rollback(T),
}

/// End `tx` as its body asked, or roll it back after an error.
async fn finish<T>(tx: Transaction<'static, Postgres>, body: Result<End<T>>) -> Result<T> {
    match body {
        Ok(End::Commit(value)) => {
            tx.commit().await.map_err(map_err)?;
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
/// Postgres ends the transaction itself (and the pool discards the connection).
async fn rollback(tx: Transaction<'static, Postgres>) {
    if let Err(e) = tx.rollback().await {
        tracing::debug!(error = %e, "rolling back failed");
    }
}

async fn create_user_in(conn: &mut PgConnection, new: &NewUser) -> Result<End<Role>> {
    // The "first user" decision and the insert happen under a table lock, so two
    // concurrent sign-ups (on any nodes) cannot both see an empty table and both become
    // admin. Sign-ups are rare; the lock is held for two statements.
    lock_table(&mut *conn, "users").await?;
    let any_user: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users)")
        .fetch_one(&mut *conn)
        .await
        .map_err(map_err)?;
    let role = if any_user { new.role } else { Role::Admin };
    sqlx::query(concat!(
        "INSERT INTO users (",
        user_columns!(),
        ") VALUES ($1, $2, $3, $4, FALSE, $5)"
    ))
    .bind(new.id)
    .bind(&new.email)
    .bind(&new.password_hash)
    .bind(role.as_str())
    .bind(new.created_at.as_secs())
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;
    Ok(End::Commit(role))
}

/// Set one column of a user's row, then (when `end_sessions`) end every live session but
/// `keep`. `None` when there is no such user.
async fn update_user_in(
    conn: &mut PgConnection,
    update: sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>,
    user_id: Uuid,
    end_sessions: bool,
    keep: Option<Uuid>,
    now: Timestamp,
) -> Result<End<Option<Vec<Revocation>>>> {
    // The update locks the user's row first: a sign-in checking the old state either
    // committed its session before (and it is ended below) or waits and then fails.
    let done = update.execute(&mut *conn).await.map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Ok(End::Rollback(None));
    }
    let revocations = if end_sessions {
        end_user_sessions_in(conn, user_id, keep, now).await?
    } else {
        Vec::new()
    };
    Ok(End::Commit(Some(revocations)))
}

async fn create_session_in(conn: &mut PgConnection, new: &NewSession) -> Result<End<bool>> {
    // FOR SHARE holds the user's row until commit: a password change or disable that is
    // in flight is waited for and then seen (Postgres re-reads a locked row's newest
    // version), and one that starts later waits for this session to exist, so it ends it.
    let current = sqlx::query_scalar::<_, String>(
        "SELECT password_hash FROM users WHERE id = $1 AND NOT disabled FOR SHARE",
    )
    .bind(new.user_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_err)?;
    if current.as_deref() != Some(new.password_hash.as_str()) {
        return Ok(End::Rollback(false));
    }
    sqlx::query(concat!(
        "INSERT INTO sessions (",
        session_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL)"
    ))
    .bind(new.id)
    .bind(new.user_id)
    .bind(new.created_at.as_secs())
    .bind(new.created_at.as_secs())
    .bind(&new.user_agent)
    .bind(&new.ip)
    .bind(new.access_exp.as_secs())
    .bind(new.refresh_exp.as_secs())
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;
    sqlx::query(
        "INSERT INTO refresh_tokens (hash, session_id, exp, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(new.refresh_hash.as_slice())
    .bind(new.id)
    .bind(new.refresh_exp.as_secs())
    .bind(new.created_at.as_secs())
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;
    Ok(End::Commit(true))
}

async fn end_session_body(
    conn: &mut PgConnection,
    sid: Uuid,
    now: Timestamp,
) -> Result<End<Option<Revocation>>> {
    // FOR UPDATE: of two concurrent sign-outs of one session, the second waits and then
    // sees it ended, so the revocation is recorded once; a concurrent rotation's new
    // `access_exp` is seen before it is revoked.
    let Some(session) = session_in(&mut *conn, sid, true).await? else {
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
    let rev = end_session_in(conn, sid, session.access_exp, now).await?;
    Ok(End::Commit(Some(rev)))
}

async fn rotate_refresh_in(
    conn: &mut PgConnection,
    rotation: &RefreshRotation,
) -> Result<End<RefreshOutcome>> {
    let now = rotation.now;
    // FOR UPDATE on the token: of two concurrent rotations of it, the second waits for the
    // first to commit and then reads `used_at` as set (reuse), so exactly one rotates.
    let token = sqlx::query(
        "SELECT session_id, exp, used_at FROM refresh_tokens WHERE hash = $1 FOR UPDATE",
    )
    .bind(rotation.presented_hash.as_slice())
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
    let session = session_in(&mut *conn, sid, true).await?.ok_or_else(|| {
        StoreError::Corrupt(format!("refresh token of missing session {sid}").into())
    })?;
    if session.ended_at.is_some() {
        return Ok(End::Rollback(RefreshOutcome::SessionEnded));
    }
    // The user's row is read without a lock: `set_disabled` locks the user before the
    // sessions, so locking it here (after the session) could deadlock. A disable racing
    // this rotation waits for the session lock and then ends the session with the
    // `access_exp` written here, so nothing minted now outlives it.
    let user = user_in(&mut *conn, session.user_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("session {sid} of missing user").into()))?;
    if user.disabled {
        return Ok(End::Rollback(RefreshOutcome::UserDisabled));
    }
    if let Some(used_at) = used_at {
        let within_grace = !rotation.grace.is_zero() && used_at.plus(rotation.grace) >= now;
        if !within_grace {
            // A used token presented again means two parties hold the family: end it.
            let revocation = end_session_in(conn, sid, session.access_exp, now).await?;
            return Ok(End::Commit(RefreshOutcome::Reused { revocation }));
        }
    }
    if exp < now {
        return Ok(End::Rollback(RefreshOutcome::Expired));
    }

    // A grace retry keeps the first `used_at`, so retries cannot stretch the window.
    sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE hash = $2 AND used_at IS NULL")
        .bind(now.as_secs())
        .bind(rotation.presented_hash.as_slice())
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
    sqlx::query(
        "INSERT INTO refresh_tokens (hash, session_id, exp, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(rotation.new_hash.as_slice())
    .bind(sid)
    .bind(rotation.new_refresh_exp.as_secs())
    .bind(now.as_secs())
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;
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

async fn load_live_in(conn: &mut PgConnection, horizon: Timestamp) -> Result<End<LiveRevocations>> {
    let cursor: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM revocations")
        .fetch_one(&mut *conn)
        .await
        .map_err(map_err)?;
    // A million rows through ordinary query results cost about a microsecond each in
    // the driver (a row object, a stream item, per-column decoding): most of a second.
    // Binary COPY sends the same four columns with far less work on both sides, and they
    // are decoded here straight into the vector. COPY takes no bind parameters; the
    // horizon is an integer, so formatting it in is safe. No ORDER BY: the live set is a
    // set, and a sequential scan is much cheaper than walking the `seq` index.
    let statement = format!(
        "COPY (SELECT kind, id, issued_before, exp FROM revocations WHERE exp >= {}) \
         TO STDOUT (FORMAT binary)",
        horizon.as_secs()
    );
    let mut chunks = conn.copy_out_raw(&statement).await.map_err(map_err)?;
    let mut decoder = CopyDecoder::default();
    let mut revocations = Vec::new();
    let mut corrupt = None;
    while let Some(chunk) = chunks.try_next().await.map_err(map_err)? {
        if corrupt.is_none() {
            if let Err(e) = decoder.feed(&chunk, &mut revocations) {
                corrupt = Some(e);
            }
        }
        // After an error the rest is still read: stopping half-way would leave the
        // connection in the middle of the COPY.
    }
    if let Some(e) = corrupt {
        return Err(e);
    }
    decoder.finish()?;
    Ok(End::Rollback(LiveRevocations {
        revocations,
        cursor,
    }))
}

/// Purge dead sessions: their remaining refresh tokens first (foreign key), then the
/// sessions left without tokens; one transaction so none is orphaned halfway.
async fn purge_sessions_in(
    conn: &mut PgConnection,
    before: i64,
    budget: &mut PurgeBudget,
) -> Result<End<()>> {
    let n = sqlx::query(
        "DELETE FROM refresh_tokens WHERE hash IN (
            SELECT rt.hash FROM sessions s JOIN refresh_tokens rt ON rt.session_id = s.id
            WHERE GREATEST(s.access_exp, s.refresh_exp) < $1
            LIMIT $2 FOR UPDATE OF rt SKIP LOCKED)",
    )
    .bind(before)
    .bind(budget.limit())
    .execute(&mut *conn)
    .await
    .map_err(map_err)?
    .rows_affected();
    budget.take(n);
    if budget.any_left() {
        let n = sqlx::query(
            "DELETE FROM sessions WHERE id IN (
                SELECT s.id FROM sessions s
                WHERE GREATEST(s.access_exp, s.refresh_exp) < $1
                  AND NOT EXISTS (SELECT 1 FROM refresh_tokens rt WHERE rt.session_id = s.id)
                LIMIT $2 FOR UPDATE OF s SKIP LOCKED)",
        )
        .bind(before)
        .bind(budget.limit())
        .execute(&mut *conn)
        .await
        .map_err(map_err)?
        .rows_affected();
        budget.take(n);
    }
    Ok(End::Commit(()))
}

async fn rotate_signing_key_in(
    conn: &mut PgConnection,
    key: &StoredKey,
    old_keys_verify_until: Timestamp,
) -> Result<End<()>> {
    // Without the table lock, two concurrent rotations would each stamp only the keys
    // their snapshot shows and leave two keys without `verify_until`.
    lock_table(&mut *conn, "signing_keys").await?;
    sqlx::query("UPDATE signing_keys SET verify_until = $1 WHERE verify_until IS NULL")
        .bind(old_keys_verify_until.as_secs())
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
    insert_key(conn, key).await?;
    Ok(End::Commit(()))
}

async fn insert_first_signing_key_in(
    conn: &mut PgConnection,
    key: &StoredKey,
) -> Result<End<Vec<StoredKey>>> {
    // Under the table lock, of several nodes starting at once exactly one sees the table
    // empty; the others wait, then see its key.
    lock_table(&mut *conn, "signing_keys").await?;
    let any_key: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM signing_keys)")
        .fetch_one(&mut *conn)
        .await
        .map_err(map_err)?;
    if !any_key {
        insert_key(&mut *conn, key).await?;
    }
    Ok(End::Commit(all_keys_in(conn).await?))
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_user(&self, new: NewUser) -> Result<User> {
        let mut tx = self.begin().await?;
        let body = create_user_in(&mut tx, &new).await;
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
        .bind(email)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.as_ref().map(|r| sql::user(r, 0)).transpose()
    }

    async fn user_by_id(&self, id: Uuid) -> Result<Option<User>> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        user_in(&mut conn, id).await
    }

    async fn change_password(
        &self,
        user_id: Uuid,
        password_hash: &str,
        keep: Option<Uuid>,
        now: Timestamp,
    ) -> Result<Option<Vec<Revocation>>> {
        let update = sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(user_id);
        let mut tx = self.begin().await?;
        let body = update_user_in(&mut tx, update, user_id, true, keep, now).await;
        finish(tx, body).await
    }

    async fn set_disabled(
        &self,
        user_id: Uuid,
        disabled: bool,
        now: Timestamp,
    ) -> Result<Option<Vec<Revocation>>> {
        let update = sqlx::query("UPDATE users SET disabled = $1 WHERE id = $2")
            .bind(disabled)
            .bind(user_id);
        let mut tx = self.begin().await?;
        let body = update_user_in(&mut tx, update, user_id, disabled, None, now).await;
        finish(tx, body).await
    }

    async fn create_session(&self, new: NewSession) -> Result<bool> {
        let mut tx = self.begin().await?;
        let body = create_session_in(&mut tx, &new).await;
        finish(tx, body).await
    }

    async fn session(&self, id: Uuid) -> Result<Option<Session>> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        session_in(&mut conn, id, false).await
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
        .bind(hash.as_slice())
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(RefreshTokenInfo {
            exp: row.ts(0)?,
            used_at: row.opt_ts(1)?,
            session: sql::session(&row, 2)?,
        }))
    }

    async fn live_sessions(&self, user_id: Uuid, now: Timestamp) -> Result<Vec<Session>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions WHERE user_id = $1 AND ended_at IS NULL AND (refresh_exp >= $2 OR access_exp >= $2)",
            " ORDER BY created_at, ord"
        ))
        .bind(user_id)
        .bind(now.as_secs())
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter().map(|r| sql::session(r, 0)).collect()
    }

    async fn touch_sessions(&self, seen: &[(Uuid, Timestamp)]) -> Result<()> {
        if seen.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = seen.iter().map(|(id, _)| *id).collect();
        let times: Vec<i64> = seen.iter().map(|(_, at)| at.as_secs()).collect();
        // One statement for the batch. Several nodes flush batches naming the same
        // sessions (a client's requests are spread over the nodes), so rows are locked in
        // id order first: two flushes then queue instead of deadlocking. Rows that would
        // not move forward are not locked or written at all.
        sqlx::query(
            "WITH seen AS (
                 SELECT id, max(at) AS at FROM UNNEST($1::uuid[], $2::int8[]) AS t (id, at)
                 GROUP BY id
             ), target AS (
                 SELECT s.id, seen.at FROM sessions s JOIN seen ON seen.id = s.id
                 WHERE s.last_seen_at < seen.at
                 ORDER BY s.id
                 FOR UPDATE OF s
             )
             UPDATE sessions s SET last_seen_at = GREATEST(s.last_seen_at, target.at)
             FROM target WHERE s.id = target.id",
        )
        .bind(ids)
        .bind(times)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn end_session(&self, sid: Uuid, now: Timestamp) -> Result<Option<Revocation>> {
        let mut tx = self.begin().await?;
        let body = end_session_body(&mut tx, sid, now).await;
        finish(tx, body).await
    }

    async fn end_user_sessions(
        &self,
        user_id: Uuid,
        keep: Option<Uuid>,
        now: Timestamp,
    ) -> Result<Vec<Revocation>> {
        let mut tx = self.begin().await?;
        let body = end_user_sessions_in(&mut tx, user_id, keep, now)
            .await
            .map(End::Commit);
        finish(tx, body).await
    }

    async fn rotate_refresh(&self, rotation: RefreshRotation) -> Result<RefreshOutcome> {
        let mut tx = self.begin().await?;
        let body = rotate_refresh_in(&mut tx, &rotation).await;
        finish(tx, body).await
    }

    async fn record_revocations(&self, revocations: &[Revocation], now: Timestamp) -> Result<()> {
        if revocations.is_empty() {
            return Ok(());
        }
        // One transaction for all chunks: all or none.
        let mut tx = self.begin().await?;
        let body = insert_revocations(&mut tx, revocations, now)
            .await
            .map(End::Commit);
        finish(tx, body).await
    }

    async fn load_live_revocations(
        &self,
        now: Timestamp,
        leeway: Duration,
    ) -> Result<LiveRevocations> {
        // REPEATABLE READ: rows and cursor come from one snapshot, so a record committed
        // meanwhile is either loaded or after the cursor, never lost between the two.
        // (Records commit in `seq` order, so no record below the cursor can appear later.)
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(map_err)?;
        let body = load_live_in(&mut tx, now.minus(leeway)).await;
        finish(tx, body).await
    }

    async fn revocations_after(&self, cursor: i64, limit: u32) -> Result<Vec<(i64, Revocation)>> {
        let rows = sqlx::query(sql::REVOCATIONS_AFTER)
            .bind(cursor)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        sql::sequenced_revocations(&rows)
    }

    async fn purge_expired(&self, before: Timestamp, limit: u32) -> Result<u64> {
        // `limit` bounds the rows of the whole call; each statement deletes through a
        // bounded subquery, so none holds many row locks for long. SKIP LOCKED: nodes
        // purging at the same time split the work instead of queueing on each other, and
        // a purge never waits for a request (a row locked by a rotation is left for the
        // next round).
        let mut budget = PurgeBudget::new(limit);
        let before = before.as_secs();

        if budget.any_left() {
            let n = sqlx::query(
                "DELETE FROM revocations WHERE seq IN (
                    SELECT seq FROM revocations WHERE exp < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            )
            .bind(before)
            .bind(budget.limit())
            .execute(&self.pool)
            .await
            .map_err(map_err)?
            .rows_affected();
            budget.take(n);
        }
        if budget.any_left() {
            let n = sqlx::query(
                "DELETE FROM refresh_tokens WHERE hash IN (
                    SELECT hash FROM refresh_tokens WHERE exp < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            )
            .bind(before)
            .bind(budget.limit())
            .execute(&self.pool)
            .await
            .map_err(map_err)?
            .rows_affected();
            budget.take(n);
        }
        if budget.any_left() {
            let mut tx = self.begin().await?;
            let body = purge_sessions_in(&mut tx, before, &mut budget).await;
            finish(tx, body).await?;
        }
        Ok(budget.deleted())
    }

    async fn signing_keys(&self) -> Result<Vec<StoredKey>> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        all_keys_in(&mut conn).await
    }

    async fn rotate_signing_key(
        &self,
        key: StoredKey,
        old_keys_verify_until: Timestamp,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let body = rotate_signing_key_in(&mut tx, &key, old_keys_verify_until).await;
        finish(tx, body).await
    }

    async fn insert_first_signing_key(&self, key: StoredKey) -> Result<Vec<StoredKey>> {
        let mut tx = self.begin().await?;
        let body = insert_first_signing_key_in(&mut tx, &key).await;
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
