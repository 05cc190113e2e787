//! tokengate's session service: everything between "a request wants to sign in, out or
//! refresh" and the store, with no HTTP in it. The `tokengate` server is a thin HTTP shell
//! over it, and an app that embeds tokengate uses it instead of copying security code.
//!
//! Start one [`SessionService`] per process and run its [`Maintenance`]:
//!
//! ```no_run
//! # async fn run(
//! #     store: std::sync::Arc<dyn tokengate_store::Store>,
//! #     config: tokengate_sessions::SessionConfig,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use tokengate_core::SystemClock;
//! use tokengate_sessions::{Client, SessionService};
//!
//! let (service, maintenance) = SessionService::start(store, config, Arc::new(SystemClock), None).await?;
//! let handle = maintenance.spawn();
//! let issued = service
//!     .signin("ada@example.com", "correct horse battery".into(), &Client::default())
//!     .await?;
//! service.sign_out(issued.user_id, issued.session_id).await?;
//! handle.stop().await;
//! # Ok(()) }
//! ```
//!
//! A request gate (`tokengate_axum::Gate`) is built from [`SessionService::verifier`],
//! [`SessionService::index`], [`SessionService::clock`] and [`SessionService::freshness`];
//! its observer should feed [`SessionService::activity`].
//!
//! The modules, in the order a reader meets them:
//! - [`service`]: [`SessionService`], the operations: sign-up, sign-in (throttled password
//!   check, then a session and its tokens), refresh rotation with reuse detection,
//!   sign-out (one session, every session, one of one's own by id), password change,
//!   the live sessions list, admin revoke/disable/import, RFC 7009 revocation, key
//!   rotation. Every revocation goes to the store first (durable), then to this node's
//!   index, then to the other nodes of a cluster.
//! - [`admin`]: the same operations where they only touch the store, for the admin CLI,
//!   which runs against a database that servers read.
//! - [`error`]: one error enum per operation ([`SigninError`], [`RefreshError`], ...);
//!   outages are [`Unavailable`], which keeps the store, hashing or signing error as its
//!   source.
//! - [`maintenance`]: the one background task (index sync, purges, activity flush, key
//!   reload, cluster publishing).
//! - [`config`]: [`SessionConfig`], what the embedding program configures.
//! - [`password`]: argon2id hashing off the runtime in a fixed pool of reused memory, with
//!   a decoy hash so unknown emails cost the same; the password policy (zxcvbn).
//! - [`email`]: email normalisation (NFKC) and the refusal of look-alike addresses.
//! - [`keyring`]: the signing keys kept in the store, their activation delay and
//!   retirement.
//! - [`tokens`]: refresh tokens (random, stored hashed) and what sign-in hands out.
//! - [`throttle`]: failed sign-in counters and the sign-up limit, per client network.
//! - [`activity`]: sessions' `last_seen_at`, kept in memory and flushed in batches.

pub mod activity;
pub mod admin;
pub mod config;
pub mod email;
pub mod error;
pub mod keyring;
pub mod maintenance;
pub mod password;
pub mod service;
pub mod throttle;
pub mod tokens;

pub use activity::{SessionActivity, ACTIVITY_FLUSH_EVERY};
pub use admin::{Admin, ImportError, IssuedBeforeError};
pub use config::SessionConfig;
pub use email::{normalize_email, InvalidEmail};
pub use error::{
    AdminError, EndSessionError, PasswordChangeError, RefreshError, SigninError, SignupError,
    StartError, Unavailable,
};
pub use keyring::{KeyInfo, KeyRing, KeyRingError, KeyState, KEY_ACTIVATION_DELAY};
pub use maintenance::{Maintenance, MaintenanceEvents, MaintenanceHandle};
pub use password::{check_strength, HashError, Passwords, WeakPassword};
pub use service::{Client, IntrospectError, Introspection, LiveSession, SessionService};
pub use throttle::{RetryAfter, SigninThrottle, SignupLimits, SignupThrottle, ThrottleLimits};
pub use tokens::{hash_refresh_token, looks_like_refresh_token, AccessToken, Issued, RefreshToken};
