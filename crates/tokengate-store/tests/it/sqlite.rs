//! The shared store behaviours against [`SqliteStore`] (on a file and in memory), plus what
//! only SQLite has: a file's mode, reopening it, two processes on one file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use sqlx::{Connection, SqliteConnection};
use tempfile::TempDir;
use tokengate_core::{Revocation, Role};
use tokengate_store::{NewSession, NewUser, RefreshRotation, SqliteStore, Store, StoreError};
use uuid::Uuid;

use super::common::{self, at, mixed_revocations, token_revocations};

/// A fresh database file in its own temporary directory, which lives as long as the store.
async fn fresh() -> (SqliteStore, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("tokengate.db"))
        .await
        .unwrap();
    (store, dir)
}

mod file {
    tokengate_store::store_testsuite!(super::fresh());
}

mod in_memory {
    tokengate_store::store_testsuite!(async {
        tokengate_store::SqliteStore::connect("sqlite::memory:")
            .await
            .unwrap()
    });
}

/// A new plain user, alice@example.com, created at 0.
fn alice() -> NewUser {
    NewUser {
        id: Uuid::new_v4(),
        email: "alice@example.com".into(),
        password_hash: "h".into(),
        role: Role::User,
        created_at: at(0),
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A second, raw connection to the file: what a broken or foreign writer could do.
async fn raw(path: &Path) -> SqliteConnection {
    SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap()
}

#[tokio::test]
async fn database_file_and_its_wal_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("data").join("tokengate.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store
        .record_revocations(&token_revocations(1, at(100)), at(0))
        .await
        .unwrap();

    assert_eq!(mode(&path), 0o600);
    let wal = path.with_file_name("tokengate.db-wal");
    assert!(wal.exists(), "WAL journal in use");
    assert_eq!(
        mode(&wal),
        0o600,
        "SQLite gives the WAL the database file's mode"
    );
    assert_eq!(
        mode(path.parent().unwrap()),
        0o700,
        "a created data directory is private"
    );
}

#[tokio::test]
async fn an_existing_world_readable_file_is_restricted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokengate.db");
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    SqliteStore::open(&path).await.unwrap();
    assert_eq!(mode(&path), 0o600);
}

#[tokio::test]
async fn data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokengate.db");
    let rev = Revocation::User {
        sub: Uuid::new_v4(),
        issued_before: at(10),
        exp: at(1_000),
    };
    {
        let store = SqliteStore::open(&path).await.unwrap();
        store.record_revocations(&[rev], at(10)).await.unwrap();
        store.create_user(alice()).await.unwrap();
    }
    let store = SqliteStore::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let live = store
        .load_live_revocations(at(500), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(live.revocations, vec![rev]);
    assert_eq!(live.cursor, 1);
    assert!(store
        .user_by_email("alice@example.com")
        .await
        .unwrap()
        .is_some());
}

/// The server and the admin CLI each open the file; the server tails what the CLI records.
#[tokio::test]
async fn two_handles_on_one_file_see_each_others_writes() {
    let (server, dir) = fresh().await;
    let cli = SqliteStore::open(&dir.path().join("tokengate.db"))
        .await
        .unwrap();

    let cursor = server
        .load_live_revocations(at(0), Duration::ZERO)
        .await
        .unwrap()
        .cursor;
    let revs = token_revocations(3, at(100));
    cli.record_revocations(&revs, at(1)).await.unwrap();
    let tail = server.revocations_after(cursor, 100).await.unwrap();
    assert_eq!(tail.iter().map(|(_, r)| *r).collect::<Vec<_>>(), revs);

    let more = token_revocations(1, at(100));
    server.record_revocations(&more, at(2)).await.unwrap();
    let tail = cli.revocations_after(tail[2].0, 100).await.unwrap();
    assert_eq!(tail.iter().map(|(_, r)| *r).collect::<Vec<_>>(), more);
}

/// Writers from two handles interleave without `SQLITE_BUSY` (busy timeout plus
/// `BEGIN IMMEDIATE`), and a refresh token raced from both is rotated exactly once.
#[tokio::test]
async fn concurrent_writers_on_one_file_queue_up() {
    let (a, dir) = fresh().await;
    let b = SqliteStore::open(&dir.path().join("tokengate.db"))
        .await
        .unwrap();

    let write = |store: SqliteStore| async move {
        for i in 0..50 {
            store
                .record_revocations(&token_revocations(20, at(100 + i)), at(0))
                .await
                .unwrap();
        }
    };
    let (ra, rb) = tokio::join!(
        tokio::spawn(write(a.clone())),
        tokio::spawn(write(b.clone()))
    );
    ra.unwrap();
    rb.unwrap();
    assert_eq!(a.revocations_after(0, u32::MAX).await.unwrap().len(), 2_000);

    let user = a.create_user(alice()).await.unwrap();
    let sid = Uuid::new_v4();
    a.create_session(NewSession {
        id: sid,
        user_id: user.id,
        created_at: at(0),
        password_hash: "h".into(),
        user_agent: None,
        ip: None,
        access_exp: at(900),
        refresh_hash: [1; 32],
        refresh_exp: at(86_400),
    })
    .await
    .unwrap();
    let rotation = |new: u8| RefreshRotation {
        presented_hash: [1; 32],
        new_hash: [new; 32],
        new_refresh_exp: at(90_000),
        new_access_exp: at(1_000),
        now: at(100),
        grace: Duration::ZERO,
    };
    let (x, y) = tokio::join!(a.rotate_refresh(rotation(2)), b.rotate_refresh(rotation(3)));
    let outcomes = [x.unwrap(), y.unwrap()];
    common::assert_one_rotated_one_reused(&outcomes, "one rotation");
}

/// A batch that fails part-way (a trigger refuses its last row, several insert
/// statements in) leaves nothing behind.
#[tokio::test]
async fn a_failing_batch_records_nothing() {
    let (store, dir) = fresh().await;
    let mut conn = raw(&dir.path().join("tokengate.db")).await;
    common::exec(
        &mut conn,
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON revocations WHEN NEW.exp = 4242
         BEGIN SELECT RAISE(ABORT, 'poisoned revocation'); END",
    )
    .await;

    common::a_failing_batch_records_nothing(&store, 10_000).await;
}

/// A row that does not decode is reported as `Corrupt`, not a panic or an outage.
#[tokio::test]
async fn undecodable_rows_are_corrupt() {
    let (store, dir) = fresh().await;
    let mut conn = raw(&dir.path().join("tokengate.db")).await;
    // The schema's CHECKs refuse such rows; a foreign writer could still switch them off.
    common::exec(&mut conn, "PRAGMA ignore_check_constraints = ON").await;
    common::undecodable_rows_are_corrupt(
        &store,
        &mut conn,
        &[
            ("INSERT INTO revocations (kind, id, issued_before, exp, created_at) VALUES ('token', x'0102', NULL, 9999999999, 0)", false),
            ("INSERT INTO revocations (kind, id, issued_before, exp, created_at) VALUES ('bogus', zeroblob(16), NULL, 9999999999, 0)", true),
            // A token revocation with a stray cutoff must not shift cutoffs onto other rows.
            ("INSERT INTO revocations (kind, id, issued_before, exp, created_at) VALUES ('token', zeroblob(16), 5, 9999999999, 0)", false),
        ],
        "INSERT INTO users (id, email, password_hash, role, disabled, created_at) VALUES (randomblob(16), 'corrupt@example.com', 'h', 'root', 0, 0)",
    )
    .await;
}

#[tokio::test]
async fn connect_understands_sqlite_urls_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("via-url.db");
    SqliteStore::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert_eq!(mode(&path), 0o600);
    for url in [
        format!("sqlite:{}", path.display()),
        "sqlite::memory:".into(),
        "sqlite://:memory:".into(),
    ] {
        SqliteStore::connect(&url)
            .await
            .unwrap()
            .ping()
            .await
            .unwrap();
    }

    for bad in [
        "postgres://localhost/db",
        "sqlite://",
        &format!("sqlite://{}?mode=ro", path.display()),
    ] {
        assert!(
            matches!(
                SqliteStore::connect(bad).await,
                Err(StoreError::Unavailable(_))
            ),
            "{bad} must be refused"
        );
    }
}

/// Two in-memory stores are separate databases.
#[tokio::test]
async fn in_memory_stores_are_private() {
    let a = SqliteStore::connect("sqlite::memory:").await.unwrap();
    let b = SqliteStore::connect("sqlite::memory:").await.unwrap();
    a.record_revocations(&token_revocations(1, at(100)), at(0))
        .await
        .unwrap();
    assert!(b.revocations_after(0, 10).await.unwrap().is_empty());
}

/// Loading pages through long stretches of purged and of expired records.
#[tokio::test]
async fn load_pages_across_purged_and_expired_stretches() {
    let (store, _dir) = fresh().await;
    let early = mixed_revocations(5);
    store.record_revocations(&early, at(0)).await.unwrap();
    store
        .record_revocations(&token_revocations(40_000, at(-100)), at(0))
        .await
        .unwrap();
    let middle = mixed_revocations(5);
    store.record_revocations(&middle, at(0)).await.unwrap();
    store
        .record_revocations(&token_revocations(40_000, at(-100)), at(0))
        .await
        .unwrap();
    let late = mixed_revocations(5);
    store.record_revocations(&late, at(0)).await.unwrap();
    let want: Vec<Revocation> = early.iter().chain(&middle).chain(&late).copied().collect();

    let live = store
        .load_live_revocations(at(0), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        live.revocations, want,
        "expired stretches are paged through"
    );
    assert_eq!(live.cursor, 80_015);

    while store.purge_expired(at(0), 10_000).await.unwrap() > 0 {}
    let live = store
        .load_live_revocations(at(0), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(live.revocations, want, "purged stretches are skipped");
    assert_eq!(live.cursor, 80_015);
}

/// See [`common::a_batch_of_100_000_revocations_records_and_loads`].
#[tokio::test]
async fn a_batch_of_100_000_revocations_records_and_loads() {
    let (store, _dir) = fresh().await;
    common::a_batch_of_100_000_revocations_records_and_loads(&store).await;
}

/// See [`common::a_million_revocations_load_quickly`].
#[tokio::test]
#[ignore = "timing; run in release"]
async fn a_million_revocations_load_quickly() {
    let (store, _dir) = fresh().await;
    common::a_million_revocations_load_quickly(&store, 1).await;
}

/// A small tmpfs mounted on a directory of its own (so the disk can really fill up), and
/// unmounted when dropped. Mounting needs root; `None` after printing why not.
struct TinyDisk {
    dir: TempDir,
}

impl TinyDisk {
    fn mount(size: &str) -> Option<TinyDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status();
        match mounted {
            Ok(status) if status.success() => Some(TinyDisk { dir }),
            _ => {
                println!("skipped: cannot mount a tmpfs (needs root) to fill a disk");
                None
            }
        }
    }

    /// Write a file until the disk is full; returns its path.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.dir.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0_u8; 4096];
        while file.write_all(&chunk).and_then(|()| file.flush()).is_ok() {}
        path
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test]
async fn a_commit_that_fails_on_a_full_disk_does_not_wedge_the_store() {
    // Before: after a failed COMMIT the pooled connection still counted a transaction as
    // open, and every later write on it failed with "attempted to call begin_with at
    // non-zero transaction depth" for about 30 minutes, disk space or not.
    let Some(disk) = TinyDisk::mount("2m") else {
        return;
    };
    let store = SqliteStore::open(&disk.dir.path().join("tokengate.db"))
        .await
        .unwrap();
    store
        .record_revocations(&token_revocations(1, at(100)), at(0))
        .await
        .unwrap();

    let filler = disk.fill();
    let failed = store
        .record_revocations(&token_revocations(1, at(100)), at(0))
        .await;
    assert!(
        matches!(failed, Err(StoreError::Unavailable(_))),
        "a full disk fails the write: {failed:?}"
    );

    std::fs::remove_file(filler).unwrap();
    for attempt in 0..8 {
        store
            .record_revocations(&token_revocations(1, at(100)), at(0))
            .await
            .unwrap_or_else(|e| panic!("write {attempt} after the disk has room again: {e}"));
    }
    let live = store
        .load_live_revocations(at(0), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(live.revocations.len(), 9);
}
