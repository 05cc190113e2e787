//! Durable state for tokengate, and the channel that carries revocations between nodes.
//!
//! The per-request path never touches a store: it checks the in-memory
//! [`RevocationIndex`](tokengate_core::RevocationIndex). A store is where a revocation is made
//! durable *before* it is acknowledged, and from which the index is rebuilt at start and
//! after every reconnect.
//!
//! - [`Store`] is the one trait, with two implementations: [`SqliteStore`], the single-node
//!   default (one file; WAL, `synchronous = FULL`, so a commit is on disk when it returns),
//!   and [`PostgresStore`], one database shared by every node of a cluster.
//! - [`RedisBus`] pushes each revocation to every node of a cluster within milliseconds; it
//!   keeps no state in Redis, the store stays the source of truth.
//! - [`IndexSync`] keeps a node's index current from the store (and the bus, in a cluster);
//!   [`RevocationPublisher`] publishes what a node revokes on the bus before the node
//!   acknowledges it.
//! - [`BoundedStore`] bounds every call of a store in time, so a database that does not
//!   answer costs a request a clear error after a second or two, not a hang.
//! - [`model`] holds the records: users, sessions, refresh rotations, signing keys.
//! - [`Store::record_revocations_once`] records the revocations a gate issuer's logout
//!   signal asks for together with the signal's id, so that a replay is refused on every
//!   node (the `seen_signals` table, purged like the rest).
//! - [`backup`]: an online copy of the SQLite database that a running server does not
//!   notice (`tokengate backup`).
//! - With the `testsuite` feature, `testsuite` is the behaviour every implementation must
//!   pass; each backend's tests run all of it.

pub mod backup;
mod bounded;
pub mod error;
pub mod model;
mod postgres;
pub mod redis_bus;
mod sql;
mod sqlite;
mod store;
pub mod sync;
#[cfg(feature = "testsuite")]
#[doc(hidden)]
pub mod testsuite;

pub use bounded::BoundedStore;
pub use error::{BoxError, Detail, Result, StoreError};
pub use model::{
    LiveRevocations, NewSession, NewUser, RefreshOutcome, RefreshRotation, RefreshTokenInfo,
    Session, StoredKey, User, UserChange,
};
pub use postgres::PostgresStore;
pub use redis_bus::{BusEvent, BusSubscription, RedisBus};
pub use sqlite::SqliteStore;
pub use store::Store;
pub use sync::{IndexSync, RevocationPublisher, PUBLISH_TIMEOUT};
