//! The records a [`Store`](crate::Store) keeps.

use std::time::Duration;

use tokengate_core::{Revocation, Role, Timestamp};
use uuid::Uuid;

/// A user account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Stable id, the `sub` of the user's tokens.
    pub id: Uuid,
    /// Normalised (trimmed, lower-case) email address; unique.
    pub email: String,
    /// PHC string of the password hash (argon2id).
    pub password_hash: String,
    /// Admin or ordinary user.
    pub role: Role,
    /// A disabled user cannot sign in or refresh.
    pub disabled: bool,
    /// When the account was created.
    pub created_at: Timestamp,
}

/// What [`Store::create_user`](crate::Store::create_user) needs.
#[derive(Clone, Debug)]
pub struct NewUser {
    /// The new user's id.
    pub id: Uuid,
    /// Normalised email address.
    pub email: String,
    /// PHC string of the password hash.
    pub password_hash: String,
    /// The role to give; the very first user of a store is always made `Admin`.
    pub role: Role,
    /// Creation time.
    pub created_at: Timestamp,
}

/// A change to a user's row, made by [`Store::update_user`](crate::Store::update_user)
/// in one transaction with the sessions it ends.
#[derive(Clone, Copy)]
pub enum UserChange<'a> {
    /// A new password hash (PHC string); every live session except `keep` ends, so no
    /// session outlives the old password.
    Password {
        /// The new hash.
        hash: &'a str,
        /// The session that changed the password, which stays signed in.
        keep: Option<Uuid>,
    },
    /// Disable (`true`: every live session ends) or re-enable the user.
    Disabled(bool),
}

/// A sign-in session: the family of every access and refresh token minted from one sign-in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The session id, the `sid` claim.
    pub id: Uuid,
    /// Whose session it is.
    pub user_id: Uuid,
    /// When the user signed in.
    pub created_at: Timestamp,
    /// The last request seen with one of the session's tokens (flushed in batches).
    pub last_seen_at: Timestamp,
    /// The client's `User-Agent` at sign-in, if any.
    pub user_agent: Option<String>,
    /// The client's IP address at sign-in, if known.
    pub ip: Option<String>,
    /// The latest `exp` of any access token minted for this session.
    pub access_exp: Timestamp,
    /// When the current refresh token expires.
    pub refresh_exp: Timestamp,
    /// When the session was signed out or revoked; `None` while live.
    pub ended_at: Option<Timestamp>,
}

impl Session {
    /// Whether the session can still be used at `now`: not ended, and a token of it unexpired.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.ended_at.is_none() && (self.refresh_exp >= now || self.access_exp >= now)
    }
}

/// What [`Store::create_session`](crate::Store::create_session) needs.
#[derive(Clone, Debug)]
pub struct NewSession {
    /// The new session id.
    pub id: Uuid,
    /// Whose session.
    pub user_id: Uuid,
    /// Sign-in time.
    pub created_at: Timestamp,
    /// The client's `User-Agent`.
    pub user_agent: Option<String>,
    /// The client's IP address.
    pub ip: Option<String>,
    /// The password hash the sign-in was checked against; the session is only created if
    /// it is still the user's (see [`Store::create_session`](crate::Store::create_session)).
    pub password_hash: String,
    /// `exp` of the first access token.
    pub access_exp: Timestamp,
    /// SHA-256 of the first refresh token; the token itself is never stored.
    pub refresh_hash: [u8; 32],
    /// When the first refresh token expires.
    pub refresh_exp: Timestamp,
}

/// A refresh token as stored, with its session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshTokenInfo {
    /// The session the token belongs to.
    pub session: Session,
    /// When the token expires.
    pub exp: Timestamp,
    /// When it was used (rotated), if it was.
    pub used_at: Option<Timestamp>,
}

impl RefreshTokenInfo {
    /// Whether the token would be accepted by a refresh at `now` (ignoring any grace).
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.used_at.is_none() && self.exp >= now && self.session.ended_at.is_none()
    }
}

/// The replacement tokens of a refresh, handed to [`Store::rotate_refresh`](crate::Store::rotate_refresh).
#[derive(Clone, Debug)]
pub struct RefreshRotation {
    /// SHA-256 of the refresh token that was presented.
    pub presented_hash: [u8; 32],
    /// SHA-256 of the new refresh token.
    pub new_hash: [u8; 32],
    /// When the new refresh token expires.
    pub new_refresh_exp: Timestamp,
    /// `exp` of the new access token.
    pub new_access_exp: Timestamp,
    /// The time of the request.
    pub now: Timestamp,
    /// A refresh token used again within this long after its first use is accepted once more
    /// (a client that lost the response); zero disables the grace.
    pub grace: Duration,
}

/// What became of a refresh token presented to [`Store::rotate_refresh`](crate::Store::rotate_refresh).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The token was valid; it is now used and the new one is stored.
    Rotated {
        /// The session, with its new `access_exp` and `refresh_exp`.
        session: Session,
        /// The session's user.
        user: User,
    },
    /// The token had already been used: the whole session has been ended and this
    /// revocation recorded durably; the caller must apply it to its index.
    Reused {
        /// The session revocation now recorded.
        revocation: Revocation,
    },
    /// No such refresh token (never issued, or purged long ago).
    Unknown,
    /// The refresh token has expired.
    Expired,
    /// The session was signed out or revoked.
    SessionEnded,
    /// The user has been disabled.
    UserDisabled,
}

/// A signing key as kept in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredKey {
    /// Key id, the `kid` header.
    pub kid: String,
    /// The JWS algorithm name (`EdDSA`, `ES256`, `RS256`).
    pub alg: String,
    /// PKCS#8 DER of the private key.
    pub private_der: Vec<u8>,
    /// When the key was made; the newest key signs.
    pub created_at: Timestamp,
    /// After rotation: tokens signed by this key verify until then. `None` for the current key.
    pub verify_until: Option<Timestamp>,
}

/// The live revocations and the cursor to tail new ones from.
#[derive(Clone, Debug, Default)]
pub struct LiveRevocations {
    /// Every revocation whose `exp` is not yet past.
    pub revocations: Vec<Revocation>,
    /// The sequence number of the newest revocation record; pass it to
    /// [`Store::revocations_after`](crate::Store::revocations_after).
    pub cursor: i64,
}
