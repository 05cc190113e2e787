//! axum integration for tokengate: one extractor, [`Principal`], that every
//! authenticated route uses.
//!
//! It takes the token from `Authorization: Bearer` (or the `tokengate_session` cookie,
//! with a same-origin check on state-changing requests), verifies it with the
//! [`Verifier`](tokengate_core::Verifier), checks the in-memory
//! [`RevocationIndex`](tokengate_core::RevocationIndex) — no I/O on this path — and
//! refuses with RFC 6750 errors ([`AuthError`]).
//!
//! - [`gate`]: [`Gate`], the verifier + index + clock + [`Freshness`] bundle.
//! - [`extract`]: [`Principal`], [`Admin`] and [`Revoker`] extractors, credential lookup,
//!   CSRF check.
//! - [`error`]: the JSON error body and `WWW-Authenticate` challenge.
//! - [`forwarded`]: the client's address behind trusted reverse proxies (`Forwarded`,
//!   `X-Forwarded-For`).

pub mod error;
pub mod extract;
pub mod forwarded;
pub mod gate;

pub use error::{error_response, AuthError, ErrorBody, StaleRefusal};
pub use extract::{
    credential, Admin, Credential, CredentialSource, Principal, Revoker, SESSION_COOKIE,
};
pub use forwarded::TrustedProxies;
pub use gate::{AuthObserver, Gate, Staleness};
pub use tokengate_core::{Freshness, StalenessPolicy};
