//! Online backup of the SQLite database: [`backup_sqlite`].
//!
//! `VACUUM INTO` writes a consistent snapshot of the database into a new file from one read
//! transaction. In WAL mode a reader blocks no writer, so a server running on the database
//! keeps signing users out while the copy is made (checkpoints wait for the copy, the WAL
//! grows meanwhile). sqlx does not expose SQLite's online backup API, and it would need
//! `unsafe`; `VACUUM INTO` needs neither and also compacts the copy.
//!
//! The copy is written to a temporary file beside the destination (created 0600 before
//! SQLite opens it: the database holds the signing keys), checked with `PRAGMA
//! quick_check`, fsync'd, and only then given its name: an interrupted backup never leaves
//! a file under the destination's name. Without `replace`, the name is taken with a hard
//! link, which fails if the destination exists, so an existing file is never overwritten,
//! even one created while the copy ran.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection, Row};

/// How long the backup waits for a writer's lock before giving up (as the store does).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a backup was not made. No partial file is left behind in any case.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The destination exists and replacing it was not asked for.
    #[error("{0} already exists; choose another file or pass --force to replace it")]
    Exists(PathBuf),
    /// The database to back up does not exist.
    #[error("there is no database at {0}")]
    NoDatabase(PathBuf),
    /// Creating, syncing or naming the copy failed.
    #[error("cannot {what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file it was done to.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// SQLite failed to read the database or write the copy.
    #[error("backup of {path} failed: {source}")]
    Sqlite {
        /// The database being backed up.
        path: PathBuf,
        /// SQLite's error.
        source: sqlx::Error,
    },
    /// The copy did not pass `PRAGMA quick_check`.
    #[error("the copy failed SQLite's quick_check: {0}")]
    Check(String),
}

/// What a backup wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupFile {
    /// The destination.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
}

/// Copy the SQLite database at `db` into `to` while other processes keep using it; see the
/// module documentation. With `replace`, an existing `to` is replaced atomically.
pub async fn backup_sqlite(db: &Path, to: &Path, replace: bool) -> Result<BackupFile, BackupError> {
    if !db.is_file() {
        return Err(BackupError::NoDatabase(db.to_owned()));
    }
    if !replace && to.exists() {
        return Err(BackupError::Exists(to.to_owned()));
    }
    let temp = temp_path(to);
    let io = |what: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| BackupError::Io { what, path, source }
    };
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(io("create", &temp))?;
    let written = write_copy(db, &temp, to, replace).await;
    if written.is_err() {
        // Best effort: the error that matters is the one being returned.
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// `VACUUM INTO` the empty file `temp`, check it, sync it, and give it the name `to`.
async fn write_copy(
    db: &Path,
    temp: &Path,
    to: &Path,
    replace: bool,
) -> Result<BackupFile, BackupError> {
    let sqlite = |path: &Path| {
        let path = path.to_owned();
        move |source| BackupError::Sqlite { path, source }
    };
    let io = |what: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| BackupError::Io { what, path, source }
    };
    let temp_name = temp
        .to_str()
        .ok_or_else(|| BackupError::Io {
            what: "name",
            path: temp.to_owned(),
            source: std::io::Error::other("the path is not UTF-8"),
        })?
        .to_owned();
    let mut source = SqliteConnectOptions::new()
        .filename(db)
        .create_if_missing(false)
        .busy_timeout(BUSY_TIMEOUT)
        .disable_statement_logging()
        .connect()
        .await
        .map_err(sqlite(db))?;
    let vacuumed = sqlx::query("VACUUM INTO ?")
        .bind(temp_name)
        .execute(&mut source)
        .await
        .map_err(sqlite(db));
    let _ = source.close().await;
    vacuumed?;

    let mut copy: SqliteConnection = SqliteConnectOptions::new()
        .filename(temp)
        .create_if_missing(false)
        .read_only(true)
        .disable_statement_logging()
        .connect()
        .await
        .map_err(sqlite(temp))?;
    let verdict: String = sqlx::query("PRAGMA quick_check")
        .fetch_one(&mut copy)
        .await
        .and_then(|row| row.try_get(0))
        .map_err(sqlite(temp))?;
    let _ = copy.close().await;
    if verdict != "ok" {
        return Err(BackupError::Check(verdict));
    }

    let file = File::open(temp).map_err(io("open", temp))?;
    file.sync_all().map_err(io("sync", temp))?;
    let bytes = file.metadata().map_err(io("inspect", temp))?.len();
    if replace {
        std::fs::rename(temp, to).map_err(io("rename the copy to", to))?;
    } else {
        std::fs::hard_link(temp, to).map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => BackupError::Exists(to.to_owned()),
            _ => BackupError::Io {
                what: "name the copy",
                path: to.to_owned(),
                source,
            },
        })?;
        std::fs::remove_file(temp).map_err(io("remove", temp))?;
    }
    sync_parent(to)?;
    Ok(BackupFile {
        path: to.to_owned(),
        bytes,
    })
}

/// `.NAME.tmp-RANDOM` beside `to`: on the same file system, so the final rename is atomic.
fn temp_path(to: &Path) -> PathBuf {
    let name = to
        .file_name()
        .map_or_else(|| "backup".into(), |n| n.to_string_lossy().into_owned());
    to.with_file_name(format!(".{name}.tmp-{}", uuid::Uuid::new_v4().simple()))
}

/// Make the new directory entry durable.
fn sync_parent(path: &Path) -> Result<(), BackupError> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(|source| BackupError::Io {
            what: "sync the directory",
            path: parent.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::{SqliteStore, Store};
    use std::os::unix::fs::PermissionsExt;
    use tokengate_core::{Revocation, Timestamp};
    use uuid::Uuid;

    const NOW: Timestamp = Timestamp::from_secs(1_800_000_000);

    fn token(exp: i64) -> Revocation {
        Revocation::Token {
            jti: Uuid::new_v4(),
            exp: Timestamp::from_secs(exp),
        }
    }

    async fn live(store: &SqliteStore) -> Vec<Revocation> {
        let mut live = store
            .load_live_revocations(NOW, Duration::ZERO)
            .await
            .unwrap()
            .revocations;
        live.sort_by_key(|r| r.subject_id());
        live
    }

    #[tokio::test]
    async fn the_copy_holds_what_was_recorded_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("tokengate.db");
        let store = SqliteStore::open(&db).await.unwrap();
        let recorded = [token(NOW.as_secs() + 60), token(NOW.as_secs() + 120)];
        store.record_revocations(&recorded, NOW).await.unwrap();

        let to = dir.path().join("backup.db");
        let file = backup_sqlite(&db, &to, false).await.unwrap();
        assert_eq!(file.path, to);
        assert_eq!(file.bytes, std::fs::metadata(&to).unwrap().len());
        let mode = std::fs::metadata(&to).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Nothing but the database, the store's WAL files and the copy.
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.starts_with("tokengate.db"))
            .collect();
        names.sort();
        assert_eq!(names, ["backup.db"]);

        // Recorded after the backup: not in it.
        store
            .record_revocations(&[token(NOW.as_secs() + 180)], NOW)
            .await
            .unwrap();
        let restored = SqliteStore::open(&to).await.unwrap();
        let mut expected = recorded.to_vec();
        expected.sort_by_key(|r| r.subject_id());
        assert_eq!(live(&restored).await, expected);
        assert_eq!(live(&store).await.len(), 3);
    }

    #[tokio::test]
    async fn an_existing_file_is_kept_unless_replacing_is_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("tokengate.db");
        let store = SqliteStore::open(&db).await.unwrap();
        store
            .record_revocations(&[token(NOW.as_secs() + 60)], NOW)
            .await
            .unwrap();
        let to = dir.path().join("backup.db");
        std::fs::write(&to, b"precious").unwrap();

        let error = backup_sqlite(&db, &to, false).await.unwrap_err();
        assert!(matches!(error, BackupError::Exists(_)), "{error}");
        assert!(error.to_string().contains("--force"), "{error}");
        assert_eq!(std::fs::read(&to).unwrap(), b"precious");

        backup_sqlite(&db, &to, true).await.unwrap();
        assert_eq!(live(&SqliteStore::open(&to).await.unwrap()).await.len(), 1);
    }

    #[tokio::test]
    async fn a_missing_database_or_directory_fails_without_leaving_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nothing.db");
        let to = dir.path().join("backup.db");
        let error = backup_sqlite(&missing, &to, false).await.unwrap_err();
        assert!(matches!(error, BackupError::NoDatabase(_)), "{error}");
        assert!(!missing.exists() && !to.exists());

        let db = dir.path().join("tokengate.db");
        SqliteStore::open(&db).await.unwrap();
        let nowhere = dir.path().join("no-such-dir").join("backup.db");
        let error = backup_sqlite(&db, &nowhere, false).await.unwrap_err();
        assert!(error.to_string().contains("no-such-dir"), "{error}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.starts_with("tokengate.db"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
