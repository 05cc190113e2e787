//! [`SqliteStore`]: the single-node default backend, one SQLite file in the data directory.
//!
//! The file holds signing keys, so it is created 0600 before SQLite ever opens it. It runs
//! in WAL mode with `synchronous = FULL`: a commit has been fsync'd when it returns, which
//! is what lets the server acknowledge a sign-out right after recording it. The admin CLI
//! writes the same file while a server runs; the 5 s busy timeout and `BEGIN IMMEDIATE`
//! for every write transaction make the two queue up instead of failing with
//! `SQLITE_BUSY`.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqliteQueryResult,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};
use tokengate_core::{Revocation, RevocationKind, Timestamp};
use uuid::Uuid;

use crate::error::{Result, StoreError};
use crate::model::LiveRevocations;
use crate::sql::{finish, map_err, migrated, Dialect, End, SqlRow, SqlStore, Tx};

/// How long a statement waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Sequence numbers per page when loading the live set (see `load_live_revocations`):
/// large enough that per-query cost vanishes, small enough that a page stays near 1 MB.
const LOAD_PAGE_SEQS: i64 = 16_384;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// The SQLite [`Store`](crate::Store): a small connection pool over one database file.
///
/// Cloning is cheap and shares the pool.
pub type SqliteStore = SqlStore<Sqlite>;

impl SqlStore<Sqlite> {
    /// Open (creating if needed) the database at `path` and bring its schema up to date.
    ///
    /// A missing parent directory is created (0700), and a missing file is created with
    /// mode 0600 *before* SQLite opens it, so it never exists readable by others; an
    /// existing file readable by others is restricted to 0600 with a warning. SQLite gives
    /// its `-wal` and `-shm` files the database file's mode.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        prepare_file(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            // The file exists now; if it vanished in between, failing beats recreating it
            // with SQLite's default mode.
            .create_if_missing(false)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = Sqlite::pool_options()
            .connect_with(options)
            .await
            .map_err(|e| StoreError::unavailable(format!("cannot open {}", path.display()), e))?;
        migrated(pool, &MIGRATOR).await
    }

    /// Open the database a `sqlite://PATH` (or `sqlite:PATH`) URL names.
    ///
    /// `sqlite::memory:` (or `sqlite://:memory:`) gives a private in-memory database on a
    /// single connection that lives as long as the store; it is meant for tests. URL
    /// options (`?mode=...`) are refused rather than silently ignored: the store always
    /// opens read-write and creates the file itself.
    pub async fn connect(url: &str) -> Result<SqliteStore> {
        match Self::file_of_url(url)? {
            Some(path) => Self::open(&path).await,
            None => Self::open_in_memory().await,
        }
    }

    /// The database file a `sqlite://PATH` (or `sqlite:PATH`) URL names; `None` for the
    /// in-memory `sqlite::memory:`. Refused: other schemes, URL options, an empty path.
    pub fn file_of_url(url: &str) -> Result<Option<PathBuf>> {
        let rest = url
            .strip_prefix("sqlite:")
            .ok_or_else(|| StoreError::Unavailable(format!("not a SQLite URL: {url:?}").into()))?;
        if rest.contains('?') {
            return Err(StoreError::Unavailable(
                format!("options in SQLite URLs are not supported: {url:?}").into(),
            ));
        }
        let path = rest.strip_prefix("//").unwrap_or(rest);
        if path == ":memory:" {
            return Ok(None);
        }
        if path.is_empty() {
            return Err(StoreError::Unavailable(
                format!("SQLite URL without a path: {url:?}").into(),
            ));
        }
        Ok(Some(PathBuf::from(path)))
    }

    async fn open_in_memory() -> Result<SqliteStore> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(|e| StoreError::unavailable("cannot open in-memory database", e))?
            .foreign_keys(true);
        // The database lives only as long as its connection: exactly one, never closed
        // for idleness or age.
        let pool = Sqlite::pool_options()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::unavailable("cannot open in-memory database", e))?;
        migrated(pool, &MIGRATOR).await
    }
}

/// Create the parent directory and the database file with owner-only permissions.
fn prepare_file(path: &Path) -> Result<()> {
    let io_err = |what: &str, e: std::io::Error| {
        StoreError::unavailable(format!("cannot {what} {}", path.display()), e)
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| io_err("create the directory of", e))?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        // An existing database must never be emptied.
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_err("create", e))?;
    let mode = file
        .metadata()
        .map_err(|e| io_err("inspect", e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        // The file holds signing keys. Tightening is best effort: a deliberately shared
        // file owned by someone else cannot be changed, and that must not stop the server.
        match file.set_permissions(Permissions::from_mode(0o600)) {
            Ok(()) => tracing::warn!(
                path = %path.display(),
                mode = format_args!("{:o}", mode & 0o777),
                "database file was accessible to others; restricted it to 0600"
            ),
            Err(e) => tracing::warn!(
                path = %path.display(),
                mode = format_args!("{:o}", mode & 0o777),
                error = %e,
                "database file is accessible to others and could not be restricted"
            ),
        }
    }
    Ok(())
}

fn uuid_from(bytes: &[u8], what: &str) -> Result<Uuid> {
    Uuid::from_slice(bytes).map_err(|_| {
        StoreError::Corrupt(format!("{what} of {} bytes, expected 16", bytes.len()).into())
    })
}

/// Split one page of `load_live_revocations`: column 0 is the row count, column 1 every id
/// back to back, columns 2 to 4 the kinds, the cutoffs and the expiries, comma-separated,
/// all in the same row order. `group_concat` skips NULLs, so column 3 holds cutoffs only
/// for the kinds that have one; the schema's CHECK constraints guarantee the pairing and
/// the 16-byte ids, and any mismatch is still reported as corrupt, never misread.
fn decode_page(page: &SqliteRow, out: &mut Vec<Revocation>) -> Result<()> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("revocation page: {what}").into());
    let count: i64 = page.try_get(0).map_err(map_err)?;
    if count == 0 {
        return Ok(());
    }
    let count = usize::try_from(count).map_err(|_| corrupt("negative count"))?;
    let ids: &[u8] = page.try_get(1).map_err(map_err)?;
    let kinds: &str = page.try_get(2).map_err(map_err)?;
    let cutoffs: Option<&str> = page.try_get(3).map_err(map_err)?;
    let exps: &str = page.try_get(4).map_err(map_err)?;
    if ids.len() != count * 16 {
        return Err(corrupt("an id is not 16 bytes"));
    }
    out.reserve(count);
    let mut kinds = kinds.split(',');
    let mut cutoffs = cutoffs.map(|c| c.split(','));
    let mut exps = exps.split(',');
    let int = |s: &str| {
        s.parse::<i64>()
            .map(Timestamp::from_secs)
            .map_err(|_| corrupt("a time is not an integer"))
    };
    for id in ids.chunks_exact(16) {
        let (Some(kind), Some(exp)) = (kinds.next(), exps.next()) else {
            return Err(corrupt("columns do not match the row count"));
        };
        let kind = RevocationKind::from_str(kind).map_err(|e| StoreError::Corrupt(e.into()))?;
        let issued_before = match kind {
            RevocationKind::Token | RevocationKind::Session => None,
            RevocationKind::User | RevocationKind::IssuedBefore => {
                let cutoff = cutoffs.as_mut().and_then(Iterator::next);
                Some(int(cutoff.ok_or_else(|| corrupt("a cutoff is missing"))?)?)
            }
        };
        let id = uuid_from(id, "revocation id")?;
        out.push(
            Revocation::from_parts(kind, id, issued_before, int(exp)?)
                .map_err(|e| StoreError::Corrupt(e.into()))?,
        );
    }
    if kinds.next().is_some()
        || exps.next().is_some()
        || cutoffs.as_mut().and_then(Iterator::next).is_some()
    {
        return Err(corrupt("columns do not match the row count"));
    }
    Ok(())
}

impl Dialect for Sqlite {
    // A write transaction (`BEGIN IMMEDIATE`) holds the whole database.
    const LOCK_FOR_UPDATE: &'static str = "";
    const LOCK_FOR_SHARE: &'static str = "";
    const INSERTION_ORDER: &'static str = "rowid";
    // SQLite serialises writers anyway; a few connections let reads run beside a write.
    const POOL_SIZE: u32 = 4;
    // Longer than the busy timeout, so a connection stuck behind a lock held by the CLI is
    // not mistaken for an outage.
    const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
    // 5 bound values each keeps a statement far below SQLite's 32 766-variable limit while
    // amortising per-statement cost.
    const REVOCATIONS_PER_INSERT: usize = 2_000;
    // Each deletes through a bounded rowid subquery, so no statement holds the write lock
    // for long.
    const PURGE: [&'static str; 5] = [
        "DELETE FROM revocations WHERE rowid IN (SELECT rowid FROM revocations WHERE exp < $1 LIMIT $2)",
        "DELETE FROM refresh_tokens WHERE rowid IN (SELECT rowid FROM refresh_tokens WHERE exp < $1 LIMIT $2)",
        "DELETE FROM refresh_tokens WHERE rowid IN (
            SELECT rt.rowid FROM sessions s JOIN refresh_tokens rt ON rt.session_id = s.id
            WHERE max(s.access_exp, s.refresh_exp) < $1 LIMIT $2)",
        "DELETE FROM sessions WHERE rowid IN (
            SELECT s.rowid FROM sessions s
            WHERE max(s.access_exp, s.refresh_exp) < $1
              AND NOT EXISTS (SELECT 1 FROM refresh_tokens rt WHERE rt.session_id = s.id)
            LIMIT $2)",
        "DELETE FROM seen_signals WHERE rowid IN (SELECT rowid FROM seen_signals WHERE exp < $1 LIMIT $2)",
    ];

    /// A write transaction takes the write lock up front. A deferred transaction that
    /// reads and then writes can fail with `SQLITE_BUSY` without waiting when another
    /// connection wrote in between; taking the lock first lets the busy timeout queue
    /// writers instead (the admin CLI writes the same file).
    const BEGIN_WRITE: Option<&'static str> = Some("BEGIN IMMEDIATE");

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    async fn lock_table(_conn: &mut SqliteConnection, _table: &'static str) -> Result<()> {
        // `BEGIN IMMEDIATE` already keeps every other writer out.
        Ok(())
    }

    async fn insert_revocations(
        conn: &mut SqliteConnection,
        revocations: &[Revocation],
        now: Timestamp,
    ) -> Result<()> {
        for chunk in revocations.chunks(Self::REVOCATIONS_PER_INSERT) {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO revocations (kind, id, issued_before, exp, created_at) ",
            );
            insert.push_values(chunk, |mut row, rev| {
                row.push_bind(rev.kind().as_str())
                    .push_bind(rev.subject_id())
                    .push_bind(rev.issued_before().map(Timestamp::as_secs))
                    .push_bind(rev.exp().as_secs())
                    .push_bind(now.as_secs());
            });
            insert.build().execute(&mut *conn).await.map_err(map_err)?;
        }
        Ok(())
    }

    async fn end_user_sessions_in(
        conn: &mut SqliteConnection,
        user_id: Uuid,
        keep: Option<Uuid>,
        now: Timestamp,
    ) -> Result<Vec<Revocation>> {
        let rows = sqlx::query(
            "SELECT id, access_exp FROM sessions
             WHERE user_id = $1 AND ended_at IS NULL AND (refresh_exp >= $2 OR access_exp >= $2)
               AND id IS DISTINCT FROM $3
             ORDER BY created_at, rowid",
        )
        .bind(user_id)
        .bind(now.as_secs())
        .bind(keep)
        .fetch_all(&mut *conn)
        .await
        .map_err(map_err)?;
        let mut revocations = Vec::with_capacity(rows.len());
        for row in &rows {
            let (sid, access_exp) = (row.uuid(0)?, row.ts(1)?);
            revocations.push(Self::end_session_in(&mut *conn, sid, access_exp, now).await?);
        }
        Ok(revocations)
    }

    async fn touch_sessions(pool: &SqlitePool, seen: &[(Uuid, Timestamp)]) -> Result<()> {
        // One transaction: one fsync for the whole batch instead of one per session.
        let mut tx = Self::begin_write(pool).await?;
        let mut body = Ok(End::Commit(()));
        for (id, at) in seen {
            let touched = sqlx::query(
                "UPDATE sessions SET last_seen_at = max(last_seen_at, $1) WHERE id = $2",
            )
            .bind(at.as_secs())
            .bind(*id)
            .execute(&mut *tx)
            .await;
            if let Err(e) = touched {
                body = Err(map_err(e));
                break;
            }
        }
        finish(tx, body).await
    }

    async fn load_live(pool: &SqlitePool, horizon: Timestamp) -> Result<LiveRevocations> {
        // A read transaction: rows and cursor come from one snapshot, so a record committed
        // meanwhile is either loaded or after the cursor, never lost between the two.
        let mut tx = Tx::begin(pool, None).await?;
        let cursor: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM revocations")
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
        // sqlx hands rows over one at a time through a channel, over a microsecond each:
        // a million rows would take seconds. Instead SQLite aggregates each page of rows
        // column by column (ids back to back in one blob, the rest comma-separated text)
        // and the page is split here without per-row allocation. A page is a range of
        // `seq`, so it is a rowid range scan with no sorting and no subquery.
        let mut revocations = Vec::new();
        let mut after = 0_i64;
        while after < cursor {
            let upto = after.saturating_add(LOAD_PAGE_SEQS);
            let page = sqlx::query(
                "SELECT COUNT(*), CAST(group_concat(id, '') AS BLOB), group_concat(kind, ','),
                            group_concat(issued_before, ','), group_concat(exp, ',')
                     FROM revocations WHERE seq > ? AND seq <= ? AND +exp >= ?",
            )
            .bind(after)
            .bind(upto)
            .bind(horizon.as_secs())
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
            decode_page(&page, &mut revocations)?;
            after = upto;
            if after < cursor {
                // Jump over a stretch of purged sequence numbers instead of paging through it.
                let next: Option<i64> =
                    sqlx::query_scalar("SELECT MIN(seq) FROM revocations WHERE seq > ?")
                        .bind(after)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(map_err)?;
                match next {
                    Some(next) => after = after.max(next - 1),
                    None => break,
                }
            }
        }
        tx.commit().await?;
        Ok(LiveRevocations {
            revocations,
            cursor,
        })
    }
}
