//! The claims of a tokengate access token (RFC 9068 profile).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::time::Timestamp;

/// What a user may do. The first user of a fresh server is an `Admin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An ordinary user.
    User,
    /// May call the admin endpoints and introspect tokens.
    Admin,
}

impl Role {
    /// The role as it appears in tokens and JSON (`"user"` or `"admin"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(Role::User),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role {other:?}")),
        }
    }
}

/// The claims every access token carries. All are required when verifying.
///
/// Unknown claims are ignored; a claim that appears twice makes the token malformed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// The user id.
    pub sub: Uuid,
    /// Audience.
    pub aud: String,
    /// Issued at.
    pub iat: Timestamp,
    /// Not valid before.
    pub nbf: Timestamp,
    /// Expires at.
    pub exp: Timestamp,
    /// Unique id of this token.
    pub jti: Uuid,
    /// Id of the session the token was minted for.
    pub sid: Uuid,
    /// The user's email address at the time of issue.
    pub email: String,
    /// The user's role at the time of issue.
    pub role: Role,
}
