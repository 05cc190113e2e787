//! The integration tests of `tokengate-store`, one binary: the shared behaviour suite and
//! what only each backend has, against a real SQLite file, Postgres and Redis.
//!
//! Postgres and Redis tests print `skipped: <reason>` and pass when the service is absent,
//! unless `TOKENGATE_REQUIRE_SERVICES=1` makes them fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod postgres;
mod redis_bus;
mod sqlite;
mod sync;

/// Every behaviour of the shared suite runs for every backend: `store_testsuite!` lists each
/// `pub async fn` of `testsuite.rs` (one test each), and each backend's module invokes it.
#[test]
fn every_backend_runs_every_behaviour_of_the_shared_suite() {
    let suite = include_str!("../../src/testsuite.rs");
    let mut defined: Vec<&str> = suite
        .lines()
        .filter_map(|line| line.strip_prefix("pub async fn "))
        .filter_map(|rest| rest.split('(').next())
        .collect();
    let mut listed = tokengate_store::testsuite::BEHAVIOURS.to_vec();
    defined.sort_unstable();
    listed.sort_unstable();
    assert!(!defined.is_empty());
    assert_eq!(
        defined, listed,
        "every behaviour of testsuite.rs must be listed in store_testsuite!"
    );

    let backends = [
        ("sqlite", include_str!("sqlite.rs")),
        ("postgres", include_str!("postgres.rs")),
    ];
    for (backend, source) in backends {
        assert!(
            source.contains("tokengate_store::store_testsuite!("),
            "the {backend} tests do not run the shared suite"
        );
    }
}
