//! Gate mode: tokengate verifies and revokes tokens it did not mint.
//!
//! An app that already has an issuer (an identity provider, or its own code signing HS256
//! tokens) keeps it; each issuer is configured as an [`IssuerConfig`] (`[[issuers]]`).
//! [`Issuers`] routes a token to its issuer by `iss`, verifies it with that issuer's keys
//! (fetched from its JWK Set, or its shared secret) with the same JOSE strictness as
//! tokengate's own tokens, reads its claims through the issuer's claim mapping, and checks
//! it against the same [`RevocationIndex`](tokengate_core::RevocationIndex) as own tokens,
//! under 16-byte ids scoped by issuer ([`ids`]).
//!
//! An issuer's own logout signals ([`signals`]: OpenID Connect back-channel logout tokens,
//! Shared Signals security events) are checked here too and become revocations of the
//! same kinds.
//!
//! Nothing here serves HTTP or writes to a store: the server records the
//! [`Revocation`](tokengate_core::Revocation)s that [`Issuer`] builds durably, then applies
//! them, like every other revocation.

pub mod config;
pub mod duration;
pub mod gate;
pub mod ids;
pub mod keyset;
pub mod service;
pub mod signals;
#[cfg(feature = "testing")]
pub mod testing;
pub mod token;

pub use config::{
    BackchannelLogout, ClaimNames, IssuerConfig, KeySource, RevokeClient, SharedSignals,
};
pub use gate::{GateError, Issuer, Issuers};
pub use keyset::{FetchError, KeyStatus};
pub use service::{AuthenticateError, GateRevocation, GateRevokeError, GateService, SignalRefusal};
pub use signals::{Signal, SignalChannel, SignalError, SignalEvent};
pub use token::{ClaimsError, GateToken};
