//! What the SQLite and Postgres tests share: fixtures, and the bodies of the tests each
//! backend runs after preparing its database its own way (a foreign writer's trigger, a
//! corrupt row).

use std::fmt::Debug;
use std::time::{Duration, Instant};

use tokengate_core::{Revocation, Timestamp};
use tokengate_store::{RefreshOutcome, Store, StoreError};
use uuid::Uuid;

/// `secs` after the instant the tests start at.
pub fn at(secs: i64) -> Timestamp {
    Timestamp::from_secs(1_700_000_000 + secs)
}

/// `n` token revocations expiring at `exp`.
pub fn token_revocations(n: usize, exp: Timestamp) -> Vec<Revocation> {
    (0..n)
        .map(|_| Revocation::Token {
            jti: Uuid::new_v4(),
            exp,
        })
        .collect()
}

/// Every kind in turn: a mixed batch of `n`.
pub fn mixed_revocations(n: usize) -> Vec<Revocation> {
    (0..n)
        .map(|i| {
            let exp = at(1_000 + i64::try_from(i % 7).unwrap());
            match i % 4 {
                0 => Revocation::Token {
                    jti: Uuid::new_v4(),
                    exp,
                },
                1 => Revocation::Session {
                    sid: Uuid::new_v4(),
                    exp,
                },
                2 => Revocation::User {
                    sub: Uuid::new_v4(),
                    issued_before: at(-5),
                    exp,
                },
                _ => Revocation::IssuedBefore {
                    issued_before: at(-7),
                    exp,
                },
            }
        })
        .collect()
}

/// The result must be [`StoreError::Corrupt`]: a row that does not decode is neither a
/// panic nor an outage.
pub fn assert_corrupt<T: Debug>(result: Result<T, StoreError>) {
    assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");
}

/// With a trigger in place that refuses a revocation expiring at 4242, a batch of `n`
/// ending in such a revocation records nothing; without it, the batch records whole, with
/// consecutive sequence numbers.
pub async fn a_failing_batch_records_nothing(store: &dyn Store, n: usize) {
    let mut batch = token_revocations(n - 1, at(100));
    batch.push(Revocation::Token {
        jti: Uuid::new_v4(),
        exp: Timestamp::from_secs(4242),
    });
    let err = store.record_revocations(&batch, at(0)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable(ref m) if m.to_string().contains("poisoned")),
        "{err:?}"
    );
    assert!(store
        .revocations_after(0, u32::MAX)
        .await
        .unwrap()
        .is_empty());

    batch.pop();
    store.record_revocations(&batch, at(0)).await.unwrap();
    let all = store.revocations_after(0, u32::MAX).await.unwrap();
    assert_eq!(all.len(), n - 1);
    assert!(
        all.windows(2).all(|w| w[1].0 == w[0].0 + 1),
        "one batch gets consecutive sequence numbers across statements"
    );
}

/// A large batch of every kind records and loads whole (in no particular order: the live
/// set is a set); the records themselves keep the batch's order.
pub async fn a_batch_of_100_000_revocations_records_and_loads(store: &dyn Store) {
    let batch = mixed_revocations(100_000);
    let started = Instant::now();
    store.record_revocations(&batch, at(0)).await.unwrap();
    let recorded = started.elapsed();
    let started = Instant::now();
    let live = store
        .load_live_revocations(at(0), Duration::ZERO)
        .await
        .unwrap();
    let loaded = started.elapsed();
    println!("100 000 revocations: recorded in {recorded:?}, loaded in {loaded:?}");
    assert_eq!(live.revocations.len(), batch.len());
    let mut loaded = live.revocations;
    let mut expected = batch.clone();
    let order = |r: &Revocation| (r.subject_id(), r.kind().as_str(), r.exp());
    loaded.sort_by_key(order);
    expected.sort_by_key(order);
    assert_eq!(loaded, expected);
    let records = store.revocations_after(0, u32::MAX).await.unwrap();
    assert_eq!(live.cursor, records.last().unwrap().0);
    let recorded: Vec<Revocation> = records.into_iter().map(|(_, r)| r).collect();
    assert_eq!(recorded, batch, "records keep the batch's order");
}

/// Start-up cost with a million live revocations, loaded `loads` times. Meaningful in
/// release builds only:
/// `cargo test --release -p tokengate-store --test it -- --ignored --nocapture`.
pub async fn a_million_revocations_load_quickly(store: &dyn Store, loads: usize) {
    let started = Instant::now();
    for _ in 0..10 {
        store
            .record_revocations(&token_revocations(100_000, at(1_000)), at(0))
            .await
            .unwrap();
    }
    let recorded = started.elapsed();
    let mut times = Vec::new();
    for _ in 0..loads {
        let started = Instant::now();
        let live = store
            .load_live_revocations(at(0), Duration::ZERO)
            .await
            .unwrap();
        times.push(started.elapsed());
        assert_eq!(live.revocations.len(), 1_000_000);
    }
    println!("1 000 000 revocations: recorded in {recorded:?}, loaded in {times:?}");
}

/// A row a foreign writer left that does not decode is reported as `Corrupt`, not a panic
/// or an outage: each of `revocation_rows` alone in `revocations` (with whether reading the
/// tail fails too, beside loading the live set), then `user_row`, a user
/// `corrupt@example.com` whose role is unknown. `conn` has the schema's CHECKs switched off.
pub async fn undecodable_rows_are_corrupt<C>(
    store: &dyn Store,
    conn: &mut C,
    revocation_rows: &[(&str, bool)],
    user_row: &str,
) where
    for<'c> &'c mut C: sqlx::Executor<'c>,
{
    for (row, tail_fails) in revocation_rows {
        exec(&mut *conn, "DELETE FROM revocations").await;
        exec(&mut *conn, row).await;
        assert_corrupt(store.load_live_revocations(at(0), Duration::ZERO).await);
        if *tail_fails {
            assert_corrupt(store.revocations_after(0, 10).await);
        }
    }
    exec(&mut *conn, user_row).await;
    assert_corrupt(store.user_by_email("corrupt@example.com").await);
}

/// Of two racing rotations of one refresh token, exactly one rotated and the other was
/// seen as a reuse.
pub fn assert_one_rotated_one_reused(outcomes: &[RefreshOutcome], context: &str) {
    let count = |pick: fn(&RefreshOutcome) -> bool| outcomes.iter().filter(|o| pick(o)).count();
    let rotated = count(|o| matches!(o, RefreshOutcome::Rotated { .. }));
    let reused = count(|o| matches!(o, RefreshOutcome::Reused { .. }));
    assert_eq!((rotated, reused), (1, 1), "{context}: {outcomes:?}");
}

/// Run `sql` (no parameters) on a raw connection, as a foreign writer would.
pub async fn exec<'c, E: sqlx::Executor<'c>>(conn: E, sql: &'c str) {
    conn.execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A TCP proxy in front of `upstream` that can stop forwarding bytes, as a hung server (a
/// SIGSTOPped Redis) or a link that silently drops everything does: connections stay open
/// and new ones are accepted, but nothing passes until [`thaw`](Self::thaw), when what was
/// held is delivered. Dropping it closes every connection.
pub struct FreezableProxy {
    addr: std::net::SocketAddr,
    frozen: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl FreezableProxy {
    /// Listen on a free loopback port and forward each connection to `upstream`.
    pub async fn start(upstream: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (frozen, watch) = tokio::sync::watch::channel(false);
        let upstream = upstream.to_owned();
        let task = tokio::spawn(async move {
            // Owned here: aborting the accept loop drops every connection with it.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                connections.spawn(pipe(client_read, server_write, watch.clone()));
                connections.spawn(pipe(server_read, client_write, watch.clone()));
            }
        });
        FreezableProxy { addr, frozen, task }
    }

    /// `host:port` to connect to instead of the upstream.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Stop forwarding (at most one read of each direction is in flight, then held).
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Forward again, held bytes first.
    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0_u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.wait_for(|frozen| !*frozen).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
