//! The services cluster tests run on: a fresh PostgreSQL database per test, the shared
//! Redis, and private `redis-server`s that a test may pause, kill or restart.
//!
//! Tests that need them call [`services`] first: without PostgreSQL (127.0.0.1:5432, trust
//! auth) or the shared Redis (127.0.0.1:6379) it prints `skipped: ...` and the test returns,
//! unless `TOKENGATE_REQUIRE_SERVICES=1`, which turns a skip into a failure. The shared
//! services are never stopped or flushed: a test that breaks Redis starts its own.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Where the shared PostgreSQL listens.
pub const POSTGRES_ADDR: ([u8; 4], u16) = ([127, 0, 0, 1], 5432);
/// The Redis every node of the ordinary cluster tests shares (each in its own namespace).
pub const SHARED_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Skip (or, under `TOKENGATE_REQUIRE_SERVICES=1`, fail) when a service is missing.
pub fn skip(reason: &str) -> bool {
    if std::env::var("TOKENGATE_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("{reason}, and TOKENGATE_REQUIRE_SERVICES=1");
    }
    eprintln!("skipped: {reason}");
    true
}

fn psql(sql: &str) -> bool {
    Command::new("psql")
        .args([PG_ADMIN_URL, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A fresh Postgres database, dropped at the end of the test.
pub struct Database {
    name: String,
}

impl Database {
    /// Create one, or `None` when PostgreSQL does not answer.
    pub fn create() -> Option<Database> {
        let name = format!("tg_{}", uuid::Uuid::new_v4().simple());
        psql(&format!("CREATE DATABASE {name}")).then_some(Database { name })
    }

    /// Its URL on the shared PostgreSQL.
    pub fn url(&self) -> String {
        self.url_via(SocketAddr::from(POSTGRES_ADDR))
    }

    /// Its URL through `addr` (a proxy in front of [`POSTGRES_ADDR`]).
    pub fn url_via(&self, addr: SocketAddr) -> String {
        format!("postgres://postgres@{addr}/{}", self.name)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        psql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

fn shared_redis_up() -> bool {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "6379", "ping"])
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("PONG"))
}

/// Postgres and the shared Redis, or `None` after printing why the test is skipped.
pub fn services() -> Option<Database> {
    if !shared_redis_up() {
        skip("Redis is not reachable on 127.0.0.1:6379");
        return None;
    }
    match Database::create() {
        Some(db) => Some(db),
        None => {
            skip("PostgreSQL is not reachable on 127.0.0.1:5432");
            None
        }
    }
}

/// The environment of a cluster node on this database, Redis and key namespace.
pub fn node_env<'a>(db: &'a str, redis: &'a str, namespace: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("TOKENGATE_DATABASE_URL", db),
        ("TOKENGATE_REDIS_URL", redis),
        ("TOKENGATE_REDIS_NAMESPACE", namespace),
    ]
}

/// A fresh Redis key namespace, so that clusters sharing one Redis never see each other.
pub fn namespace() -> String {
    format!("tgtest{}", uuid::Uuid::new_v4().simple())
}

/// A private `redis-server` on a free port, for outage tests. Dropping it kills it.
pub struct OwnRedis {
    port: u16,
    child: Option<Child>,
    extra: Vec<String>,
}

impl OwnRedis {
    /// Start one with `extra` arguments; `None` when it cannot be started.
    pub fn start(extra: &[&str]) -> Option<OwnRedis> {
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let mut redis = OwnRedis {
            port,
            child: None,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        redis.spawn().then_some(redis)
    }

    /// Start the server (again, empty) on its port and wait until it answers `PING`.
    pub fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else { return false };
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if self.cli(&["ping"]).contains("PONG") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// SIGKILL the server (a paused one too) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freeze the server (SIGSTOP): its connections stay open and nothing answers, as
    /// when a host hangs.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Thaw a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the redis-server runs");
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} redis-server failed");
    }

    /// What `redis-cli -p PORT ARGS...` prints (empty when it cannot run). It waits for
    /// the answer: not while the server is paused.
    pub fn cli(&self, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr())
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
