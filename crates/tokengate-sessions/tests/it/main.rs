#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The session service against a real SQLite store on a temporary directory, with a manual
//! clock: the flows the server and embedders call, and the maintenance task.

mod abuse;
mod flows;
mod maintenance;

use std::sync::Arc;
use std::time::Duration;

use tokengate_core::{Claims, ManualClock, Timestamp};
use tokengate_sessions::{Client, Issued, SessionConfig, SessionService, ThrottleLimits};
use tokengate_store::{RedisBus, SqliteStore, Store, User};

pub const PASSWORD: &str = "correct horse battery staple";

/// A started service, its clock, and the directory its database lives in.
pub struct Fixture {
    pub service: Arc<SessionService>,
    pub maintenance: Option<tokengate_sessions::Maintenance>,
    pub clock: Arc<ManualClock>,
    pub store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

pub fn config() -> SessionConfig {
    SessionConfig {
        issuer: "https://tokengate.test".into(),
        audience: "tokengate-test".into(),
        access_ttl: Duration::from_secs(900),
        throttle: ThrottleLimits {
            max_failures: 3,
            max_failures_per_ip: 100,
            window: Duration::from_secs(900),
            ipv6_prefix: 64,
        },
        ..SessionConfig::default()
    }
}

impl Fixture {
    pub async fn start() -> Fixture {
        Fixture::start_with(config()).await
    }

    pub async fn start_with(config: SessionConfig) -> Fixture {
        Fixture::start_on(config, None).await
    }

    /// A node of a cluster whose revocations go out on `bus`.
    pub async fn start_on(config: SessionConfig, bus: Option<RedisBus>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join("sessions.db"))
                .await
                .unwrap(),
        );
        let clock = Arc::new(ManualClock::new(Timestamp::from_secs(1_800_000_000)));
        let (service, maintenance) =
            SessionService::start(store.clone(), config, clock.clone(), bus)
                .await
                .unwrap();
        Fixture {
            service,
            maintenance: Some(maintenance),
            clock,
            store,
            _dir: dir,
        }
    }

    /// Sign `email` up with [`PASSWORD`] from `ip`; the test fails if that is refused.
    pub async fn signup(&self, email: &str, ip: &str) -> User {
        self.service
            .signup(email, PASSWORD.into(), &client(ip))
            .await
            .unwrap()
    }

    /// Sign `email` in with [`PASSWORD`] from `ip`; the test fails if that is refused.
    pub async fn signin(&self, email: &str, ip: &str) -> Issued {
        self.service
            .signin(email, PASSWORD.into(), &client(ip))
            .await
            .unwrap()
    }

    /// Sign `email` up, then in, both from `ip`: the user and their first session.
    pub async fn signed_in(&self, email: &str, ip: &str) -> (User, Issued) {
        let user = self.signup(email, ip).await;
        (user, self.signin(email, ip).await)
    }

    /// The claims of an access token if it verifies and is not revoked now.
    pub fn accepted(&self, token: &str) -> Option<Claims> {
        let now = self.service.now();
        let claims = self.service.verifier().verify(token, now).ok()?;
        self.service.index().check(&claims, now).ok()?;
        Some(claims)
    }
}

pub fn client(ip: &str) -> Client {
    Client {
        ip: Some(ip.parse().unwrap()),
        user_agent: Some("it".into()),
    }
}
