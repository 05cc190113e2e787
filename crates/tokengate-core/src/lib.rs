//! The no-I/O heart of tokengate: what a token says, how it is checked, and the
//! in-memory record of what has been revoked.
//!
//! A request is authenticated in two steps, both here and both without I/O:
//!
//! 1. [`Verifier::verify`] checks the compact JWS (size, header, pinned algorithm per
//!    `kid`, signature, then `exp`/`nbf`/`iss`/`aud`/`typ`) and yields [`Claims`].
//! 2. [`RevocationIndex::check`] looks the token's `jti`, `sid` and `sub` up in lock-free
//!    tables (tens of nanoseconds while they fit the CPU caches) and refuses the token if
//!    any of them was revoked.
//!
//! Modules:
//! - [`time`]: [`Timestamp`], [`Millis`] and [`Clock`]; every validity decision takes `now`.
//! - [`claims`]: [`Claims`] and [`Role`].
//! - [`keys`]: signing and verifying keys (EdDSA, ES256, RS256, HS256) and their JWKS form.
//! - [`verify`]: [`Verifier`] and [`VerifyError`].
//! - [`revocation`]: the four kinds of [`Revocation`].
//! - [`index`]: [`RevocationIndex`], bounded by live tokens and purged incrementally.
//! - [`freshness`]: [`Freshness`], whether the index is known to be current, and the
//!   [`StalenessPolicy`] for when it is not.
//! - [`cache`]: [`VerifiedCache`], the tokens already verified, so that a token presented
//!   again skips step 1 (never step 2).
//!
//! Durable storage and the cluster bus live in `tokengate-store`; the HTTP extractor in
//! `tokengate-axum`.

// The unit tests share fixtures with the benches (`benches/common/fixtures.rs`, included by
// path), which name this crate `tokengate_core`.
#[cfg(test)]
extern crate self as tokengate_core;

pub mod cache;
pub mod claims;
pub mod freshness;
pub mod index;
pub mod keys;
pub mod revocation;
mod sync;
pub mod time;
pub mod verify;

// Private, except in the model-check build (`--cfg loom`), whose checks in `tests/loom.rs`
// drive the lock-free table and the user-slot sequence lock directly.
#[cfg(not(loom))]
mod table;
#[cfg(loom)]
#[doc(hidden)]
pub mod table;
#[cfg(not(loom))]
mod user_slot;
#[cfg(loom)]
#[doc(hidden)]
pub mod user_slot;

pub use cache::{CacheLimits, VerifiedCache};
pub use claims::{Claims, Role};
pub use freshness::{Freshness, Proof, StalenessPolicy, Transition};
pub use index::{RevocationIndex, TokenIds};
pub use keys::{Algorithm, Jwk, Jwks, KeyError, SigningKey, VerifyingKey};
pub use revocation::{Revocation, RevocationKind};
pub use time::{Clock, ManualClock, Millis, SystemClock, Timestamp};
pub use verify::{Verifier, VerifierConfig, VerifyError, MAX_TOKEN_BYTES};
