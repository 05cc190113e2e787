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

use futures_util::TryStreamExt;
use sqlx::error::ErrorKind;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgQueryResult};
use sqlx::{Connection, Postgres};
use tokengate_core::{Revocation, Timestamp};
use uuid::Uuid;

use crate::error::{Result, StoreError};
use crate::model::LiveRevocations;
use crate::sql::{finish, map_err, migrated, Dialect, End, SqlRow, SqlStore, Tx};

mod copy;

use copy::CopyDecoder;

/// The advisory lock that orders inserts into `revocations` (see [`lock_revocation_order`]).
/// Any constant works as long as every writer uses the same one; this is "tokgrevo".
const REVOCATION_ORDER_LOCK: i64 = 0x746f_6b67_7265_766f;
/// Longest schema name Postgres keeps (NAMEDATALEN - 1).
const MAX_SCHEMA_NAME: usize = 63;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// The Postgres [`Store`](crate::Store): a connection pool over one database (and one schema in it).
///
/// Every node of a cluster connects its own `PostgresStore` to the same database; all the
/// cross-node coordination is done with locks inside Postgres. Cloning is cheap and shares
/// the pool.
pub type PostgresStore = SqlStore<Postgres>;

impl SqlStore<Postgres> {
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
        let pool = Postgres::pool_options()
            .connect_with(options)
            .await
            .map_err(|e| StoreError::unavailable("cannot connect to Postgres", e))?;
        migrated(pool, &MIGRATOR).await
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

impl Dialect for Postgres {
    const LOCK_FOR_UPDATE: &'static str = " FOR UPDATE";
    const LOCK_FOR_SHARE: &'static str = " FOR SHARE";
    const INSERTION_ORDER: &'static str = "ord";
    // Enough for the request handlers' writes beside a load or a purge.
    const POOL_SIZE: u32 = 8;
    const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
    // Each chunk is one statement of four arrays, so this only bounds the size of one
    // message (about 2 MB).
    const REVOCATIONS_PER_INSERT: usize = 50_000;
    // SKIP LOCKED: nodes purging at the same time split the work instead of queueing on
    // each other, and a purge never waits for a request (a row locked by a rotation is
    // left for the next round).
    const PURGE: [&'static str; 5] = [
        "DELETE FROM revocations WHERE seq IN (
            SELECT seq FROM revocations WHERE exp < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
        "DELETE FROM refresh_tokens WHERE hash IN (
            SELECT hash FROM refresh_tokens WHERE exp < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
        "DELETE FROM refresh_tokens WHERE hash IN (
            SELECT rt.hash FROM sessions s JOIN refresh_tokens rt ON rt.session_id = s.id
            WHERE GREATEST(s.access_exp, s.refresh_exp) < $1
            LIMIT $2 FOR UPDATE OF rt SKIP LOCKED)",
        "DELETE FROM sessions WHERE id IN (
            SELECT s.id FROM sessions s
            WHERE GREATEST(s.access_exp, s.refresh_exp) < $1
              AND NOT EXISTS (SELECT 1 FROM refresh_tokens rt WHERE rt.session_id = s.id)
            LIMIT $2 FOR UPDATE OF s SKIP LOCKED)",
        "DELETE FROM seen_signals WHERE id IN (
            SELECT id FROM seen_signals WHERE exp < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
    ];

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }

    const BEGIN_WRITE: Option<&'static str> = None;

    /// Lock a small table against every other writer until commit (readers are not blocked).
    /// SHARE ROW EXCLUSIVE conflicts with itself and with ordinary inserts and updates, so
    /// "is it empty?" or "which rows are current?" stays true until this transaction commits.
    async fn lock_table(conn: &mut PgConnection, table: &'static str) -> Result<()> {
        sqlx::query(&format!("LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE"))
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
        for chunk in revocations.chunks(Self::REVOCATIONS_PER_INSERT) {
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
        Self::insert_revocations(conn, &revocations, now).await?;
        Ok(revocations)
    }

    async fn touch_sessions(pool: &PgPool, seen: &[(Uuid, Timestamp)]) -> Result<()> {
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
        .execute(pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn load_live(pool: &PgPool, horizon: Timestamp) -> Result<LiveRevocations> {
        // REPEATABLE READ: rows and cursor come from one snapshot, so a record committed
        // meanwhile is either loaded or after the cursor, never lost between the two.
        // (Records commit in `seq` order, so no record below the cursor can appear later.)
        let mut tx = Tx::begin(
            pool,
            Some("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"),
        )
        .await?;
        let body = load_live_in(&mut tx, horizon).await;
        finish(tx, body).await
    }
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
