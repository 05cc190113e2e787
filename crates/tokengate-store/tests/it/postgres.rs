//! The shared store behaviours against [`PostgresStore`], plus what only a database shared by
//! several nodes has: concurrent sign-ups, rotations and recorders on separate connections,
//! and the tail cursor never skipping a record.
//!
//! Each test gets a fresh schema on the database `TOKENGATE_TEST_POSTGRES_URL` names
//! (default `postgres://postgres@127.0.0.1:5432/test`) and drops it at the end, also when it
//! fails. Without Postgres a test prints `skipped: <reason>` and passes, unless
//! `TOKENGATE_REQUIRE_SERVICES=1` makes it fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{Connection, PgConnection};
use tokengate_core::{Revocation, Role};
use tokengate_store::{
    BoundedStore, NewSession, NewUser, PostgresStore, RefreshRotation, Store, StoreError,
};
use uuid::Uuid;

use super::common::{self, at, mixed_revocations, token_revocations, FreezableProxy};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub(crate) fn url() -> String {
    std::env::var("TOKENGATE_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

fn services_required() -> bool {
    std::env::var("TOKENGATE_REQUIRE_SERVICES").as_deref() == Ok("1")
}

/// A schema of its own on the shared test database, dropped (best effort) with this.
pub(crate) struct Schema(pub(crate) String);

impl Schema {
    pub(crate) fn new() -> Self {
        Schema(format!("tokengate_test_{}", Uuid::new_v4().simple()))
    }

    /// Another node: a second store (own pool, own connections) on the same schema.
    async fn connect(&self) -> PostgresStore {
        PostgresStore::connect_with_schema(&url(), &self.0)
            .await
            .unwrap()
    }

    /// A raw connection into the schema: what a broken or foreign writer could do.
    async fn raw(&self) -> PgConnection {
        let mut conn = PgConnection::connect(&url()).await.unwrap();
        sqlx::query(&format!("SET search_path TO {}", self.0))
            .execute(&mut conn)
            .await
            .unwrap();
        conn
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked on; a thread with a
        // runtime of its own does the async work.
        let name = self.0.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&url()).await.ok()?;
                // A connection of the store left holding a lock would make the drop wait
                // forever (its runtime is the one blocked here): give up instead.
                sqlx::query("SET lock_timeout = '10s'")
                    .execute(&mut conn)
                    .await
                    .ok()?;
                sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .execute(&mut conn)
                    .await
                    .ok()?;
                conn.close().await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("could not drop test schema {}", self.0);
        }
    }
}

/// Whether Postgres answers, found out with one connection attempt (a pool would keep
/// retrying a refused connection for its whole acquire timeout).
async fn reachable() -> Result<(), String> {
    match tokio::time::timeout(Duration::from_secs(3), PgConnection::connect(&url())).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(e)) => Err(format!("Postgres at {} is not available: {e}", url())),
        Err(_) => Err(format!("Postgres at {} did not answer in 3 s", url())),
    }
}

/// A fresh, empty store in a schema of its own, or `None` when Postgres is unreachable.
async fn fresh_or_none() -> Option<(PostgresStore, Schema)> {
    reachable().await.ok()?;
    let schema = Schema::new();
    let store = schema.connect().await;
    Some((store, schema))
}

/// Like [`fresh_or_none`] for the tests below: prints `skipped: ...` (or fails under
/// `TOKENGATE_REQUIRE_SERVICES=1`) when Postgres is unreachable.
async fn fresh() -> Option<(PostgresStore, Schema)> {
    if !available().await {
        return None;
    }
    fresh_or_none().await
}

/// Whether Postgres answers; prints `skipped: ...` (or fails under
/// `TOKENGATE_REQUIRE_SERVICES=1`) when it does not.
pub(crate) async fn available() -> bool {
    match reachable().await {
        Ok(()) => true,
        Err(reason) if services_required() => panic!("TOKENGATE_REQUIRE_SERVICES=1 but {reason}"),
        Err(reason) => {
            println!("skipped: {reason}");
            false
        }
    }
}

/// `host:port` of the Postgres `url` names.
fn host_port(url: &str) -> String {
    let after_at = url.rsplit('@').next().unwrap_or(url);
    after_at
        .trim_start_matches("postgres://")
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:5432")
        .to_owned()
}

/// A fresh store in a schema of its own, reached through a [`FreezableProxy`], or `None`
/// (after `skipped: ...`) when Postgres is unreachable.
pub(crate) async fn proxied() -> Option<(PostgresStore, FreezableProxy, Schema)> {
    if !available().await {
        return None;
    }
    let url = url();
    let proxy = FreezableProxy::start(&host_port(&url)).await;
    let proxied = url.replacen(&host_port(&url), &proxy.addr(), 1);
    let schema = Schema::new();
    let store = PostgresStore::connect_with_schema(&proxied, &schema.0)
        .await
        .unwrap();
    Some((store, proxy, schema))
}

#[tokio::test]
async fn a_bounded_store_gives_up_on_a_database_that_hangs_and_works_after_the_heal() {
    let Some((store, proxy, _schema)) = proxied().await else {
        return;
    };
    let limit = Duration::from_millis(500);
    let store = BoundedStore::new(Arc::new(store), limit);
    store.ping().await.unwrap();

    proxy.freeze();
    let started = std::time::Instant::now();
    let err = store.end_session(Uuid::new_v4(), at(0)).await.unwrap_err();
    let waited = started.elapsed();
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.to_string().contains("did not answer ending a session within 500ms")),
        "{err:?}"
    );
    // Given up at the bound, not after the pool's timeout or the kernel's retransmissions
    // (which take minutes); 2 s of margin for a busy machine.
    assert!(waited < limit + Duration::from_secs(2), "{waited:?}");

    proxy.thaw();
    let recovered = async {
        while store.ping().await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(10), recovered)
            .await
            .is_ok(),
        "the store answers again after the heal"
    );
}

mod suite {
    tokengate_store::store_testsuite!(optional: super::fresh_or_none());
}

fn new_user(email: &str) -> NewUser {
    NewUser {
        id: Uuid::new_v4(),
        email: email.to_owned(),
        password_hash: "h".into(),
        role: Role::User,
        created_at: at(0),
    }
}

fn new_session(user_id: Uuid, refresh_hash: [u8; 32]) -> NewSession {
    NewSession {
        id: Uuid::new_v4(),
        user_id,
        created_at: at(0),
        password_hash: "h".into(),
        user_agent: None,
        ip: None,
        access_exp: at(900),
        refresh_hash,
        refresh_exp: at(86_400),
    }
}

#[tokio::test]
async fn connect_refuses_other_urls_and_unsafe_schema_names() {
    for bad in ["sqlite://x.db", "mysql://localhost/db", "localhost:5432"] {
        assert!(
            matches!(
                PostgresStore::connect(bad).await,
                Err(StoreError::Unavailable(_))
            ),
            "{bad} must be refused"
        );
    }
    let long = "a".repeat(64);
    for bad in [
        "",
        "Upper",
        "1digit",
        "with space",
        "quote\"d",
        "semi;colon",
        "pg_catalog",
        &long,
    ] {
        assert!(
            matches!(
                PostgresStore::connect_with_schema(DEFAULT_URL, bad).await,
                Err(StoreError::Unavailable(_))
            ),
            "schema {bad:?} must be refused"
        );
    }
    // A password in the URL never shows up in an error. (`connect_with_schema` makes one
    // connection attempt first, so a refused port fails at once.)
    let err = PostgresStore::connect_with_schema("postgres://u:s3cret-pw@127.0.0.1:1/db", "s")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(!err.to_string().contains("s3cret-pw"), "{err}");
}

/// Two nodes start on a fresh schema at the same moment: both come up (sqlx applies the
/// migrations under an advisory lock), and they share one store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_once() {
    if !available().await {
        return;
    }
    let schema = Schema::new();
    let url = url();
    let (a, b) = tokio::join!(
        PostgresStore::connect_with_schema(&url, &schema.0),
        PostgresStore::connect_with_schema(&url, &schema.0)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let user = a.create_user(new_user("alice@example.com")).await.unwrap();
    assert_eq!(b.user_by_id(user.id).await.unwrap(), Some(user));
}

/// Sign-ups racing on several nodes of a fresh store: exactly one becomes admin.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_sign_ups_make_exactly_one_admin() {
    for round in 0..5 {
        let Some((a, schema)) = fresh().await else {
            return;
        };
        let b = schema.connect().await;
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let node = if i % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(async move {
                    node.create_user(new_user(&format!("user{i}@example.com")))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut admins = 0;
        for task in tasks {
            if task.await.unwrap().role == Role::Admin {
                admins += 1;
            }
        }
        assert_eq!(admins, 1, "round {round}: admins returned");
        let mut stored = 0;
        for i in 0..16 {
            let user = a
                .user_by_email(&format!("user{i}@example.com"))
                .await
                .unwrap()
                .unwrap();
            if user.role == Role::Admin {
                stored += 1;
            }
        }
        assert_eq!(stored, 1, "round {round}: admins stored");
    }
}

/// One refresh token presented on two nodes at once: exactly one rotation, and the other
/// is reuse (which ends the session), never two new token families.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_rotations_of_one_refresh_token_rotate_once() {
    let Some((a, schema)) = fresh().await else {
        return;
    };
    let b = schema.connect().await;
    let user = a.create_user(new_user("alice@example.com")).await.unwrap();
    for round in 0..20_u8 {
        let presented = [round; 32];
        let session = new_session(user.id, presented);
        let sid = session.id;
        assert!(a.create_session(session).await.unwrap());
        let rotation = |new: u8| RefreshRotation {
            presented_hash: presented,
            new_hash: [new; 32],
            new_refresh_exp: at(90_000),
            new_access_exp: at(1_000),
            now: at(100),
            grace: Duration::ZERO,
        };
        let (x, y) = tokio::join!(
            tokio::spawn({
                let a = a.clone();
                let rotation = rotation(100 + round);
                async move { a.rotate_refresh(rotation).await }
            }),
            tokio::spawn({
                let b = b.clone();
                let rotation = rotation(200 + round);
                async move { b.rotate_refresh(rotation).await }
            })
        );
        let outcomes = [x.unwrap().unwrap(), y.unwrap().unwrap()];
        common::assert_one_rotated_one_reused(&outcomes, &format!("round {round}"));
        let ended = a.session(sid).await.unwrap().unwrap();
        assert_eq!(ended.ended_at, Some(at(100)), "reuse ended the session");
        assert_eq!(
            ended.access_exp,
            at(1_000),
            "the revocation covers the rotated access token"
        );
    }
}

/// Many recorders commit concurrently on separate connections while a reader tails with
/// `revocations_after`: the reader sees every record exactly once, in increasing `seq`.
/// Without the revocation order lock a transaction holding a lower `seq` can commit after
/// one holding a higher `seq`, and the reader's cursor would skip it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tailing_reader_sees_every_concurrent_record_once() {
    let Some((reader, schema)) = fresh().await else {
        return;
    };
    const NODES: usize = 3;
    const RECORDERS_PER_NODE: usize = 6;
    const ROUNDS: usize = 60;

    let mut nodes = Vec::new();
    for _ in 0..NODES {
        nodes.push(schema.connect().await);
    }
    // Sessions to end, so the session paths (which insert revocations inside a larger
    // transaction) race the plain recorders too.
    let user = reader
        .create_user(new_user("alice@example.com"))
        .await
        .unwrap();
    let mut sessions = Vec::new();
    for i in 0..ROUNDS {
        let mut hash = [0_u8; 32];
        hash[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let session = new_session(user.id, hash);
        sessions.push(session.id);
        assert!(reader.create_session(session).await.unwrap());
    }

    let mut recorders = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for r in 0..RECORDERS_PER_NODE {
            let node = node.clone();
            let sessions = sessions.clone();
            recorders.push(tokio::spawn(async move {
                let mut written = Vec::new();
                for (round, sid) in sessions.into_iter().enumerate() {
                    if n == 0 && r == 0 {
                        let rev = node.end_session(sid, at(10)).await.unwrap().unwrap();
                        written.push(rev);
                    } else {
                        let batch = token_revocations(1 + (round + r) % 3, at(5_000));
                        node.record_revocations(&batch, at(10)).await.unwrap();
                        written.extend(batch);
                    }
                }
                written
            }));
        }
    }

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tail = tokio::spawn({
        let reader = reader.clone();
        let done = done.clone();
        async move {
            let mut cursor = 0;
            let mut seen = Vec::new();
            loop {
                // Read `done` before the query: once every recorder has finished, one more
                // empty answer means there is nothing left to see.
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let page = reader.revocations_after(cursor, 37).await.unwrap();
                if page.is_empty() && finished {
                    return seen;
                }
                for (seq, rev) in page {
                    assert!(seq > cursor, "seq {seq} at or below cursor {cursor}");
                    cursor = seq;
                    seen.push(rev);
                }
            }
        }
    });

    let mut written = Vec::new();
    for recorder in recorders {
        written.extend(recorder.await.unwrap());
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = tail.await.unwrap();

    let unique: HashSet<Revocation> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "a record was seen twice");
    let written: HashSet<Revocation> = written.into_iter().collect();
    let missed = written.difference(&unique).count();
    assert_eq!(
        missed,
        0,
        "the tailing reader missed {missed} of {} records",
        written.len()
    );
    assert_eq!(unique, written);
}

/// A new store on the same schema (a restarted node) finds everything: migrations are not
/// reapplied, revocations load, users and the cursor are where they were.
#[tokio::test]
async fn data_survives_reconnecting() {
    let Some((store, schema)) = fresh().await else {
        return;
    };
    let revs = mixed_revocations(8);
    store.record_revocations(&revs, at(10)).await.unwrap();
    let user = store
        .create_user(new_user("alice@example.com"))
        .await
        .unwrap();
    let cursor = store
        .load_live_revocations(at(0), Duration::ZERO)
        .await
        .unwrap()
        .cursor;
    drop(store);

    let store = schema.connect().await;
    let live = store
        .load_live_revocations(at(500), Duration::ZERO)
        .await
        .unwrap();
    let loaded: HashSet<Revocation> = live.revocations.into_iter().collect();
    assert_eq!(loaded, revs.into_iter().collect());
    assert_eq!(live.cursor, cursor);
    assert_eq!(
        store.user_by_email("alice@example.com").await.unwrap(),
        Some(user)
    );
}

/// A batch that fails part-way (a trigger refuses its last row, several insert
/// statements in) leaves nothing behind.
#[tokio::test]
async fn a_failing_batch_records_nothing() {
    let Some((store, schema)) = fresh().await else {
        return;
    };
    let mut conn = schema.raw().await;
    common::exec(
        &mut conn,
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.exp = 4242 THEN RAISE EXCEPTION 'poisoned revocation'; END IF;
             RETURN NEW;
         END $$",
    )
    .await;
    common::exec(
        &mut conn,
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON revocations
         FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
    )
    .await;

    // More than one insert statement's worth of rows.
    common::a_failing_batch_records_nothing(&store, 60_000).await;
}

/// A row that does not decode is reported as `Corrupt`, not a panic or an outage.
#[tokio::test]
async fn undecodable_rows_are_corrupt() {
    let Some((store, schema)) = fresh().await else {
        return;
    };
    let mut conn = schema.raw().await;
    // The schema's CHECKs refuse such rows; a foreign writer could still drop them.
    common::exec(&mut conn, "ALTER TABLE revocations DROP CONSTRAINT revocations_kind, DROP CONSTRAINT revocations_cutoff").await;
    common::undecodable_rows_are_corrupt(
        &store,
        &mut conn,
        &[
            ("INSERT INTO revocations (kind, id, issued_before, exp, created_at) VALUES ('bogus', gen_random_uuid(), NULL, 9999999999, 0)", true),
            ("INSERT INTO revocations (kind, id, issued_before, exp, created_at) VALUES ('user', gen_random_uuid(), NULL, 9999999999, 0)", false),
        ],
        "INSERT INTO users (id, email, password_hash, role, disabled, created_at) VALUES (gen_random_uuid(), 'corrupt@example.com', 'h', 'root', FALSE, 0)",
    )
    .await;
}

/// See [`common::a_batch_of_100_000_revocations_records_and_loads`].
#[tokio::test]
async fn a_batch_of_100_000_revocations_records_and_loads() {
    let Some((store, _schema)) = fresh().await else {
        return;
    };
    common::a_batch_of_100_000_revocations_records_and_loads(&store).await;
}

/// See [`common::a_million_revocations_load_quickly`].
#[tokio::test]
#[ignore = "timing; run in release"]
async fn a_million_revocations_load_quickly() {
    let Some((store, _schema)) = fresh().await else {
        return;
    };
    common::a_million_revocations_load_quickly(&store, 3).await;
}
