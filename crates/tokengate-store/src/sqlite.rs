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

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};
use tokengate_core::{Revocation, RevocationKind, Role, Timestamp};
use uuid::Uuid;

use crate::error::{Detail, Result, StoreError};
use crate::model::{
    LiveRevocations, NewSession, NewUser, RefreshOutcome, RefreshRotation, RefreshTokenInfo,
    Session, StoredKey, User,
};
use crate::sql::{self, key_columns, map_err, session_columns, user_columns, PurgeBudget, SqlRow};
use crate::store::Store;

/// How long a statement waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// SQLite serialises writers anyway; a few connections let reads run beside a write.
const POOL_SIZE: u32 = 4;
/// How long an operation waits for a free pooled connection before reporting the store
/// unavailable. Longer than the busy timeout, so a connection stuck behind a lock held by
/// the CLI is not mistaken for an outage.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Rows per multi-row `INSERT` when recording revocations: 5 bound values each keeps a
/// statement far below SQLite's 32 766-variable limit while amortising per-statement cost.
const REVOCATIONS_PER_INSERT: usize = 2_000;
/// Sequence numbers per page when loading the live set (see `load_live_revocations`):
/// large enough that per-query cost vanishes, small enough that a page stays near 1 MB.
const LOAD_PAGE_SEQS: i64 = 16_384;
/// How often applying the migrations is tried: two processes starting on a fresh file at
/// the same moment can race, and the loser succeeds on a retry (it then sees them applied).
const MIGRATION_ATTEMPTS: u32 = 3;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The SQLite [`Store`]: a small connection pool over one database file.
///
/// Cloning is cheap and shares the pool.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
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
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::unavailable(format!("cannot open {}", path.display()), e))?;
        migrate(&pool).await?;
        Ok(SqliteStore { pool })
    }

    /// Open the database a `sqlite://PATH` (or `sqlite:PATH`) URL names.
    ///
    /// `sqlite::memory:` (or `sqlite://:memory:`) gives a private in-memory database on a
    /// single connection that lives as long as the store; it is meant for tests. URL
    /// options (`?mode=...`) are refused rather than silently ignored: the store always
    /// opens read-write and creates the file itself.
    pub async fn connect(url: &str) -> Result<SqliteStore> {
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
            return Self::open_in_memory().await;
        }
        if path.is_empty() {
            return Err(StoreError::Unavailable(
                format!("SQLite URL without a path: {url:?}").into(),
            ));
        }
        Self::open(&PathBuf::from(path)).await
    }

    async fn open_in_memory() -> Result<SqliteStore> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(|e| StoreError::unavailable("cannot open in-memory database", e))?
            .foreign_keys(true);
        // The database lives only as long as its connection: exactly one, never closed
        // for idleness or age.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::unavailable("cannot open in-memory database", e))?;
        migrate(&pool).await?;
        Ok(SqliteStore { pool })
    }

    /// A write transaction that takes the write lock up front. A deferred transaction
    /// that reads and then writes can fail with `SQLITE_BUSY` without waiting when
    /// another connection wrote in between; taking the lock first lets the busy timeout
    /// queue writers instead.
    async fn begin_immediate(&self) -> Result<Transaction<'static, Sqlite>> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)
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

async fn migrate(pool: &SqlitePool) -> Result<()> {
    let mut attempt = 1;
    loop {
        match MIGRATOR.run(pool).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < MIGRATION_ATTEMPTS => {
                tracing::debug!(error = %e, attempt, "applying migrations failed; retrying");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                attempt += 1;
            }
            Err(e) => return Err(StoreError::Migration(Detail::caused_by("", e))),
        }
    }
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

// ---- statements shared by several operations ----

async fn session_in(conn: &mut SqliteConnection, id: Uuid) -> Result<Option<Session>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        session_columns!(),
        " FROM sessions WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
    .map_err(map_err)?;
    row.as_ref().map(|r| sql::session(r, 0)).transpose()
}

async fn user_in(conn: &mut SqliteConnection, id: Uuid) -> Result<Option<User>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        user_columns!(),
        " FROM users WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
    .map_err(map_err)?;
    row.as_ref().map(|r| sql::user(r, 0)).transpose()
}

async fn insert_revocation(
    conn: &mut SqliteConnection,
    rev: &Revocation,
    now: Timestamp,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO revocations (kind, id, issued_before, exp, created_at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(rev.kind().as_str())
    .bind(rev.subject_id())
    .bind(rev.issued_before().map(Timestamp::as_secs))
    .bind(rev.exp().as_secs())
    .bind(now.as_secs())
    .execute(conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

/// Mark a live session ended and record its revocation; the caller owns the transaction.
async fn end_session_in(
    conn: &mut SqliteConnection,
    sid: Uuid,
    access_exp: Timestamp,
    now: Timestamp,
) -> Result<Revocation> {
    sqlx::query("UPDATE sessions SET ended_at = ? WHERE id = ?")
        .bind(now.as_secs())
        .bind(sid)
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
    let rev = Revocation::Session {
        sid,
        exp: access_exp,
    };
    insert_revocation(conn, &rev, now).await?;
    Ok(rev)
}

/// End every live session of a user except `keep`; the caller owns the transaction.
async fn end_user_sessions_in(
    conn: &mut SqliteConnection,
    user_id: Uuid,
    keep: Option<Uuid>,
    now: Timestamp,
) -> Result<Vec<Revocation>> {
    // `id IS NOT NULL` holds for every row, so `keep = None` spares nothing.
    let rows = sqlx::query(
        "SELECT id, access_exp FROM sessions
         WHERE user_id = ? AND ended_at IS NULL AND (refresh_exp >= ? OR access_exp >= ?) AND id IS NOT ?
         ORDER BY created_at, rowid",
    )
    .bind(user_id)
    .bind(now.as_secs())
    .bind(now.as_secs())
    .bind(keep)
    .fetch_all(&mut *conn)
    .await
    .map_err(map_err)?;
    let mut revocations = Vec::with_capacity(rows.len());
    for row in &rows {
        let sid = row.uuid(0)?;
        let access_exp = row.ts(1)?;
        revocations.push(end_session_in(conn, sid, access_exp, now).await?);
    }
    Ok(revocations)
}

async fn all_keys_in(conn: &mut SqliteConnection) -> Result<Vec<StoredKey>> {
    // rowid breaks ties between keys made in the same second: insertion order.
    let rows = sqlx::query(concat!(
        "SELECT ",
        key_columns!(),
        " FROM signing_keys ORDER BY created_at, rowid"
    ))
    .fetch_all(conn)
    .await
    .map_err(map_err)?;
    rows.iter().map(|r| sql::key(r, 0)).collect()
}

async fn insert_key(conn: &mut SqliteConnection, key: &StoredKey) -> Result<()> {
    sqlx::query(concat!(
        "INSERT INTO signing_keys (",
        key_columns!(),
        ") VALUES (?, ?, ?, ?, ?)"
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

#[async_trait]
impl Store for SqliteStore {
    async fn create_user(&self, new: NewUser) -> Result<User> {
        // The "first user" decision and the insert share one write transaction, so two
        // concurrent sign-ups cannot both become admin.
        let mut tx = self.begin_immediate().await?;
        let any_user: i64 = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users)")
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
        let role = if any_user == 0 { Role::Admin } else { new.role };
        sqlx::query(concat!(
            "INSERT INTO users (",
            user_columns!(),
            ") VALUES (?, ?, ?, ?, 0, ?)"
        ))
        .bind(new.id)
        .bind(&new.email)
        .bind(&new.password_hash)
        .bind(role.as_str())
        .bind(new.created_at.as_secs())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
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
            " FROM users WHERE email = ?"
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
        let mut tx = self.begin_immediate().await?;
        let done = sqlx::query("UPDATE users SET password_hash = ? WHERE id = ?")
            .bind(password_hash)
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        let revocations = end_user_sessions_in(&mut tx, user_id, keep, now).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(Some(revocations))
    }

    async fn set_disabled(
        &self,
        user_id: Uuid,
        disabled: bool,
        now: Timestamp,
    ) -> Result<Option<Vec<Revocation>>> {
        let mut tx = self.begin_immediate().await?;
        let done = sqlx::query("UPDATE users SET disabled = ? WHERE id = ?")
            .bind(i64::from(disabled))
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        let revocations = if disabled {
            end_user_sessions_in(&mut tx, user_id, None, now).await?
        } else {
            Vec::new()
        };
        tx.commit().await.map_err(map_err)?;
        Ok(Some(revocations))
    }

    async fn create_session(&self, new: NewSession) -> Result<bool> {
        let mut tx = self.begin_immediate().await?;
        // Checked inside the write transaction: a password change or disable that
        // committed after the caller's password check makes this sign-in fail.
        let current = sqlx::query_scalar::<_, String>(
            "SELECT password_hash FROM users WHERE id = ? AND disabled = 0",
        )
        .bind(new.user_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
        if current.as_deref() != Some(new.password_hash.as_str()) {
            return Ok(false);
        }
        sqlx::query(concat!(
            "INSERT INTO sessions (",
            session_columns!(),
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)"
        ))
        .bind(new.id)
        .bind(new.user_id)
        .bind(new.created_at.as_secs())
        .bind(new.created_at.as_secs())
        .bind(&new.user_agent)
        .bind(&new.ip)
        .bind(new.access_exp.as_secs())
        .bind(new.refresh_exp.as_secs())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        sqlx::query(
            "INSERT INTO refresh_tokens (hash, session_id, exp, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(new.refresh_hash.as_slice())
        .bind(new.id)
        .bind(new.refresh_exp.as_secs())
        .bind(new.created_at.as_secs())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn session(&self, id: Uuid) -> Result<Option<Session>> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        session_in(&mut conn, id).await
    }

    async fn refresh_token(&self, hash: [u8; 32]) -> Result<Option<RefreshTokenInfo>> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        let row = sqlx::query("SELECT session_id, exp, used_at FROM refresh_tokens WHERE hash = ?")
            .bind(hash.as_slice())
            .fetch_optional(&mut *conn)
            .await
            .map_err(map_err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let sid = row.uuid(0)?;
        let exp = row.ts(1)?;
        let used_at = row.opt_ts(2)?;
        let session = session_in(&mut conn, sid).await?.ok_or_else(|| {
            StoreError::Corrupt(format!("refresh token of missing session {sid}").into())
        })?;
        Ok(Some(RefreshTokenInfo {
            session,
            exp,
            used_at,
        }))
    }

    async fn live_sessions(&self, user_id: Uuid, now: Timestamp) -> Result<Vec<Session>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions WHERE user_id = ? AND ended_at IS NULL AND (refresh_exp >= ? OR access_exp >= ?)",
            " ORDER BY created_at, rowid"
        ))
        .bind(user_id)
        .bind(now.as_secs())
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
        // One transaction: one fsync for the whole batch instead of one per session.
        let mut tx = self.begin_immediate().await?;
        for (id, at) in seen {
            sqlx::query("UPDATE sessions SET last_seen_at = max(last_seen_at, ?) WHERE id = ?")
                .bind(at.as_secs())
                .bind(*id)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)
    }

    async fn end_session(&self, sid: Uuid, now: Timestamp) -> Result<Option<Revocation>> {
        let mut tx = self.begin_immediate().await?;
        let Some(session) = session_in(&mut tx, sid).await? else {
            return Ok(None);
        };
        if session.ended_at.is_some() {
            // Idempotent: the revocation was recorded when it ended; hand it out again so
            // a retried sign-out still gets applied to the caller's index.
            return Ok(Some(Revocation::Session {
                sid,
                exp: session.access_exp,
            }));
        }
        let rev = end_session_in(&mut tx, sid, session.access_exp, now).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(Some(rev))
    }

    async fn end_user_sessions(
        &self,
        user_id: Uuid,
        keep: Option<Uuid>,
        now: Timestamp,
    ) -> Result<Vec<Revocation>> {
        let mut tx = self.begin_immediate().await?;
        let revocations = end_user_sessions_in(&mut tx, user_id, keep, now).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(revocations)
    }

    async fn rotate_refresh(&self, rotation: RefreshRotation) -> Result<RefreshOutcome> {
        let now = rotation.now;
        let mut tx = self.begin_immediate().await?;
        let token =
            sqlx::query("SELECT session_id, exp, used_at FROM refresh_tokens WHERE hash = ?")
                .bind(rotation.presented_hash.as_slice())
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?;
        let Some(token) = token else {
            return Ok(RefreshOutcome::Unknown);
        };
        let sid = token.uuid(0)?;
        let exp = token.ts(1)?;
        let used_at = token.opt_ts(2)?;

        let session = session_in(&mut tx, sid).await?.ok_or_else(|| {
            StoreError::Corrupt(format!("refresh token of missing session {sid}").into())
        })?;
        if session.ended_at.is_some() {
            return Ok(RefreshOutcome::SessionEnded);
        }
        let user = user_in(&mut tx, session.user_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("session {sid} of missing user").into()))?;
        if user.disabled {
            return Ok(RefreshOutcome::UserDisabled);
        }
        if let Some(used_at) = used_at {
            let within_grace = !rotation.grace.is_zero() && used_at.plus(rotation.grace) >= now;
            if !within_grace {
                // A used token presented again means two parties hold the family: end it.
                let revocation = end_session_in(&mut tx, sid, session.access_exp, now).await?;
                tx.commit().await.map_err(map_err)?;
                return Ok(RefreshOutcome::Reused { revocation });
            }
        }
        if exp < now {
            return Ok(RefreshOutcome::Expired);
        }

        // A grace retry keeps the first `used_at`, so retries cannot stretch the window.
        sqlx::query("UPDATE refresh_tokens SET used_at = ? WHERE hash = ? AND used_at IS NULL")
            .bind(now.as_secs())
            .bind(rotation.presented_hash.as_slice())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        sqlx::query(
            "INSERT INTO refresh_tokens (hash, session_id, exp, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(rotation.new_hash.as_slice())
        .bind(sid)
        .bind(rotation.new_refresh_exp.as_secs())
        .bind(now.as_secs())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        // access_exp only grows: it bounds every access token of the session ever minted,
        // which is what a later session revocation must cover.
        let access_exp = session.access_exp.max(rotation.new_access_exp);
        sqlx::query("UPDATE sessions SET access_exp = ?, refresh_exp = ? WHERE id = ?")
            .bind(access_exp.as_secs())
            .bind(rotation.new_refresh_exp.as_secs())
            .bind(sid)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(RefreshOutcome::Rotated {
            session: Session {
                access_exp,
                refresh_exp: rotation.new_refresh_exp,
                ..session
            },
            user,
        })
    }

    async fn record_revocations(&self, revocations: &[Revocation], now: Timestamp) -> Result<()> {
        if revocations.is_empty() {
            return Ok(());
        }
        // One transaction for all chunks: all or none, and a single fsync.
        let mut tx = self.begin_immediate().await?;
        for chunk in revocations.chunks(REVOCATIONS_PER_INSERT) {
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
            insert.build().execute(&mut *tx).await.map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)
    }

    async fn load_live_revocations(
        &self,
        now: Timestamp,
        leeway: Duration,
    ) -> Result<LiveRevocations> {
        let horizon = now.minus(leeway);
        // A read transaction: rows and cursor come from one snapshot, so a record committed
        // meanwhile is either loaded or after the cursor, never lost between the two.
        let mut tx = self.pool.begin().await.map_err(map_err)?;
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
        tx.commit().await.map_err(map_err)?;
        Ok(LiveRevocations {
            revocations,
            cursor,
        })
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
        // bounded rowid subquery, so no statement holds the write lock for long.
        let mut budget = PurgeBudget::new(limit);
        let before = before.as_secs();

        if budget.any_left() {
            let n = sqlx::query(
                "DELETE FROM revocations WHERE rowid IN (SELECT rowid FROM revocations WHERE exp < ? LIMIT ?)",
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
                "DELETE FROM refresh_tokens WHERE rowid IN (SELECT rowid FROM refresh_tokens WHERE exp < ? LIMIT ?)",
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
            // A dead session's remaining refresh tokens go first (foreign key), then the
            // sessions left without tokens; one transaction so none is orphaned halfway.
            let mut tx = self.begin_immediate().await?;
            let n = sqlx::query(
                "DELETE FROM refresh_tokens WHERE rowid IN (
                    SELECT rt.rowid FROM sessions s JOIN refresh_tokens rt ON rt.session_id = s.id
                    WHERE max(s.access_exp, s.refresh_exp) < ? LIMIT ?)",
            )
            .bind(before)
            .bind(budget.limit())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?
            .rows_affected();
            budget.take(n);
            if budget.any_left() {
                let n = sqlx::query(
                    "DELETE FROM sessions WHERE rowid IN (
                        SELECT s.rowid FROM sessions s
                        WHERE max(s.access_exp, s.refresh_exp) < ?
                          AND NOT EXISTS (SELECT 1 FROM refresh_tokens rt WHERE rt.session_id = s.id)
                        LIMIT ?)",
                )
                .bind(before)
                .bind(budget.limit())
                .execute(&mut *tx)
                .await
                .map_err(map_err)?
                .rows_affected();
                budget.take(n);
            }
            tx.commit().await.map_err(map_err)?;
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
        let mut tx = self.begin_immediate().await?;
        sqlx::query("UPDATE signing_keys SET verify_until = ? WHERE verify_until IS NULL")
            .bind(old_keys_verify_until.as_secs())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        insert_key(&mut tx, &key).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn insert_first_signing_key(&self, key: StoredKey) -> Result<Vec<StoredKey>> {
        // IMMEDIATE: of several nodes starting at once, exactly one sees the table empty.
        let mut tx = self.begin_immediate().await?;
        let any_key: i64 = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM signing_keys)")
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
        if any_key == 0 {
            insert_key(&mut tx, &key).await?;
        }
        let keys = all_keys_in(&mut tx).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(keys)
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }
}
