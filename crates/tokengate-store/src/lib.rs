//! Durable state for tokengate.
//!
//! The per-request path never touches a store: it checks the in-memory
//! [`RevocationIndex`](tokengate_core::RevocationIndex). A store is where a revocation is made
//! durable *before* it is acknowledged, and from which the index is rebuilt at start and
//! after every reconnect.
//!
//! - [`Store`] is the one trait; [`SqliteStore`] is the single-node default
//!   (WAL, `synchronous = FULL`, so a commit is on disk when it returns).
//! - [`model`] holds the records: users, sessions, refresh rotations, signing keys.
//! - [`testsuite`] is the behaviour every implementation must pass; each backend's tests
//!   run it.

pub mod error;
pub mod model;
mod postgres;
pub mod redis_bus;
mod sql;
mod sqlite;
mod store;
pub mod sync;
#[doc(hidden)]
pub mod testsuite;

pub use error::{BoxError, Detail, Result, StoreError};
pub use model::{
    LiveRevocations, NewSession, NewUser, RefreshOutcome, RefreshRotation, RefreshTokenInfo,
    Session, StoredKey, User,
};
pub use postgres::PostgresStore;
pub use redis_bus::{BusEvent, BusSubscription, RedisBus};
pub use sqlite::SqliteStore;
pub use store::Store;
pub use sync::{IndexSync, RevocationPublisher};
