//! What can be revoked, and for how long it matters.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::time::Timestamp;

/// One revocation. Each kind carries `exp`: the latest expiry of any token it can refuse.
/// After `exp` (plus the verifier's leeway) every such token is refused as expired anyway,
/// so the entry can be forgotten; that keeps memory bounded by live tokens, not history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Revocation {
    /// One access token, by its `jti`.
    Token {
        /// The token's `jti`.
        jti: Uuid,
        /// The token's `exp`.
        exp: Timestamp,
    },
    /// Every access token minted for one session, by `sid`.
    Session {
        /// The session id.
        sid: Uuid,
        /// The latest `exp` of any access token minted for the session.
        exp: Timestamp,
    },
    /// Every token of one user issued before an instant (`iat < issued_before`).
    User {
        /// The user id (`sub`).
        sub: Uuid,
        /// Tokens with `iat` strictly before this are refused.
        issued_before: Timestamp,
        /// The latest `exp` of any token issued before `issued_before`.
        exp: Timestamp,
    },
    /// Every token issued before an instant (`iat < issued_before`), e.g. after a key compromise.
    IssuedBefore {
        /// Tokens with `iat` strictly before this are refused.
        issued_before: Timestamp,
        /// The latest `exp` of any token issued before `issued_before`.
        exp: Timestamp,
    },
}

/// The kind of a [`Revocation`], for metrics, storage and events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationKind {
    /// [`Revocation::Token`]
    Token,
    /// [`Revocation::Session`]
    Session,
    /// [`Revocation::User`]
    User,
    /// [`Revocation::IssuedBefore`]
    IssuedBefore,
}

impl RevocationKind {
    /// The kind's name as stored and shown (`token`, `session`, `user`, `issued_before`).
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationKind::Token => "token",
            RevocationKind::Session => "session",
            RevocationKind::User => "user",
            RevocationKind::IssuedBefore => "issued_before",
        }
    }
}

impl std::str::FromStr for RevocationKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "token" => Ok(RevocationKind::Token),
            "session" => Ok(RevocationKind::Session),
            "user" => Ok(RevocationKind::User),
            "issued_before" => Ok(RevocationKind::IssuedBefore),
            other => Err(format!("unknown revocation kind {other:?}")),
        }
    }
}

impl Revocation {
    /// Which kind this is.
    pub fn kind(&self) -> RevocationKind {
        match self {
            Revocation::Token { .. } => RevocationKind::Token,
            Revocation::Session { .. } => RevocationKind::Session,
            Revocation::User { .. } => RevocationKind::User,
            Revocation::IssuedBefore { .. } => RevocationKind::IssuedBefore,
        }
    }

    /// The latest expiry of any token this revocation can refuse.
    pub fn exp(&self) -> Timestamp {
        match *self {
            Revocation::Token { exp, .. }
            | Revocation::Session { exp, .. }
            | Revocation::User { exp, .. }
            | Revocation::IssuedBefore { exp, .. } => exp,
        }
    }

    /// The id this revocation is about (`jti`, `sid` or `sub`); `Uuid::nil()` for `IssuedBefore`.
    pub fn subject_id(&self) -> Uuid {
        match *self {
            Revocation::Token { jti, .. } => jti,
            Revocation::Session { sid, .. } => sid,
            Revocation::User { sub, .. } => sub,
            Revocation::IssuedBefore { .. } => Uuid::nil(),
        }
    }

    /// The `issued_before` cutoff of the `User` and `IssuedBefore` kinds.
    pub fn issued_before(&self) -> Option<Timestamp> {
        match *self {
            Revocation::User { issued_before, .. }
            | Revocation::IssuedBefore { issued_before, .. } => Some(issued_before),
            _ => None,
        }
    }

    /// Whether this revocation refuses a token with these claims — the rule
    /// [`RevocationIndex::check`](crate::RevocationIndex::check) applies, for one
    /// revocation at a time (e.g. a websocket handler deciding whether the revocation it
    /// was just told about ends its connection).
    ///
    /// ```
    /// use tokengate_core::{Revocation, Timestamp};
    /// # let claims = tokengate_core::Claims {
    /// #     iss: "i".into(), sub: uuid::Uuid::new_v4(), aud: "a".into(), iat: Timestamp::from_secs(10),
    /// #     nbf: Timestamp::from_secs(10), exp: Timestamp::from_secs(100), jti: uuid::Uuid::new_v4(),
    /// #     sid: uuid::Uuid::new_v4(), email: "e@x".into(), role: tokengate_core::Role::User };
    /// let ended = Revocation::Session { sid: claims.sid, exp: claims.exp };
    /// assert!(ended.covers(&claims));
    /// let later = Revocation::User { sub: claims.sub, issued_before: claims.iat, exp: claims.exp };
    /// assert!(!later.covers(&claims), "a token issued at the cutoff is not refused");
    /// ```
    pub fn covers(&self, claims: &crate::Claims) -> bool {
        match *self {
            Revocation::Token { jti, .. } => jti == claims.jti,
            Revocation::Session { sid, .. } => sid == claims.sid,
            Revocation::User {
                sub, issued_before, ..
            } => sub == claims.sub && claims.iat < issued_before,
            Revocation::IssuedBefore { issued_before, .. } => claims.iat < issued_before,
        }
    }

    /// Rebuild a revocation from its stored parts (the inverse of `kind`, `subject_id`,
    /// `issued_before` and `exp`).
    pub fn from_parts(
        kind: RevocationKind,
        id: Uuid,
        issued_before: Option<Timestamp>,
        exp: Timestamp,
    ) -> Result<Self, String> {
        let cutoff =
            || issued_before.ok_or_else(|| format!("{} revocation without cutoff", kind.as_str()));
        Ok(match kind {
            RevocationKind::Token => Revocation::Token { jti: id, exp },
            RevocationKind::Session => Revocation::Session { sid: id, exp },
            RevocationKind::User => Revocation::User {
                sub: id,
                issued_before: cutoff()?,
                exp,
            },
            RevocationKind::IssuedBefore => Revocation::IssuedBefore {
                issued_before: cutoff()?,
                exp,
            },
        })
    }
}
