//! The service's errors: one enum per operation, naming what the caller can act on. None
//! is an HTTP type; the server maps each variant to a status and an error code.

use tokengate_core::KeyError;
use tokengate_store::StoreError;

use crate::email::InvalidEmail;
use crate::keyring::KeyRingError;
use crate::password::{HashError, WeakPassword};

/// Nothing was done because something the service depends on failed; retrying may work.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// The store could not be read or written.
    #[error("the store is unavailable")]
    Store(#[source] StoreError),
    /// Password hashing failed.
    #[error("password hashing is unavailable")]
    Hashing(#[source] HashError),
    /// A token could not be signed.
    #[error("token signing is unavailable")]
    Signing(#[source] KeyError),
}

impl From<StoreError> for Unavailable {
    fn from(error: StoreError) -> Self {
        Unavailable::Store(error)
    }
}

impl From<HashError> for Unavailable {
    fn from(error: HashError) -> Self {
        Unavailable::Hashing(error)
    }
}

/// Implement `From<StoreError>` and `From<HashError>` for an error with an
/// `Unavailable(Unavailable)` variant, so `?` works on store and hashing calls.
macro_rules! unavailable_from {
    ($($error:ty),+) => {$(
        impl From<StoreError> for $error {
            fn from(error: StoreError) -> Self {
                <$error>::Unavailable(Unavailable::Store(error))
            }
        }
        impl From<HashError> for $error {
            fn from(error: HashError) -> Self {
                <$error>::Unavailable(Unavailable::Hashing(error))
            }
        }
    )+};
}

/// Why a sign-up (or creating a user) failed.
#[derive(Debug, thiserror::Error)]
pub enum SignupError {
    /// Sign-up is switched off on this server.
    #[error("sign-up is disabled")]
    Closed,
    /// The email cannot be an address.
    #[error(transparent)]
    InvalidEmail(#[from] InvalidEmail),
    /// The password fails the policy.
    #[error(transparent)]
    WeakPassword(#[from] WeakPassword),
    /// An account with this email exists.
    #[error("an account with this email already exists")]
    Exists,
    /// Too many sign-ups from this client's network: checked before any work.
    #[error("too many sign-ups from this network; retry after {retry_after} seconds")]
    Throttled {
        /// Seconds until the window lets the client try again.
        retry_after: u64,
    },
    /// Nothing was created.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// Why a sign-in failed.
#[derive(Debug, thiserror::Error)]
pub enum SigninError {
    /// Unknown email or wrong password: one answer for both, after the same work.
    #[error("invalid email or password")]
    Invalid,
    /// The password was right but the account is disabled (only its owner learns this).
    #[error("this account is disabled")]
    Disabled,
    /// Too many failed attempts: checked before any password work.
    #[error("too many failed attempts; retry after {retry_after} seconds")]
    Throttled {
        /// Seconds until the failure window lets the client try again.
        retry_after: u64,
    },
    /// Nothing was started.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// Why a refresh failed.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// Not of the form of a refresh token; not looked up.
    #[error("malformed refresh token")]
    Malformed,
    /// No such refresh token.
    #[error("unknown refresh token")]
    Unknown,
    /// The refresh token has expired.
    #[error("refresh token has expired")]
    Expired,
    /// The token was used before (outside the grace period): taken as stolen, and its
    /// whole session is now revoked.
    #[error("refresh token was already used; the session has been revoked")]
    Reused,
    /// Its session was signed out or revoked.
    #[error("the session of this refresh token has ended")]
    SessionEnded,
    /// The account is disabled.
    #[error("this account is disabled")]
    Disabled,
    /// Nothing was rotated.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// Why a password change failed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordChangeError {
    /// The user of the session no longer exists.
    #[error("the user of this token no longer exists")]
    UnknownUser,
    /// The current password given is wrong.
    #[error("current password is incorrect")]
    WrongPassword,
    /// Too many wrong current passwords: the sign-in throttle, checked before any password
    /// work (a stolen access token must not buy unlimited guesses).
    #[error("too many failed attempts; retry after {retry_after} seconds")]
    Throttled {
        /// Seconds until the failure window lets the client try again.
        retry_after: u64,
    },
    /// The new password fails the policy.
    #[error(transparent)]
    WeakPassword(#[from] WeakPassword),
    /// Nothing was changed.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// Why ending one of the caller's own sessions failed.
#[derive(Debug, thiserror::Error)]
pub enum EndSessionError {
    /// No live session of the caller's has this id (another user's included): nothing
    /// was revoked, and nothing tells whether the id exists.
    #[error("no such session")]
    NotFound,
    /// Nothing was revoked.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// Why an administrative operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The email given cannot be an address.
    #[error(transparent)]
    InvalidEmail(#[from] InvalidEmail),
    /// No such user (or session).
    #[error("no such user")]
    NotFound,
    /// An admin cannot disable their own account.
    #[error("you cannot disable your own account")]
    SelfDisable,
    /// Nothing was changed.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The signing keys could not be loaded or made.
    #[error(transparent)]
    Keys(#[from] KeyRingError),
    /// The store could not be read.
    #[error("cannot load the revocations: {0}")]
    Store(#[from] StoreError),
    /// The password hasher could not be set up.
    #[error(transparent)]
    Hashing(#[from] HashError),
}

unavailable_from!(
    SignupError,
    SigninError,
    RefreshError,
    PasswordChangeError,
    EndSessionError,
    AdminError
);
