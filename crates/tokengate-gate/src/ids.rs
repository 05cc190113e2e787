//! The 16-byte ids under which the revocation index keeps other issuers' tokens.
//!
//! An external identifier (a `sub`, a `sid`, a `jti`, a signature) becomes the first 16
//! bytes of SHA-256 over a domain tag, the issuer's configured name, the kind of id and the
//! value, each separated by a zero byte. So the same `sub` at two issuers is two users, a
//! session id can never collide with a user id, and no external id can be made to land on
//! one of tokengate's own (random) ids other than by a SHA-256 second preimage.
//!
//! The issuer's `name` is part of the digest: renaming an issuer in the configuration
//! forgets its revocations.

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// What an id names, so that equal strings of different kinds never share a digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdKind {
    /// A user (the mapped subject claim).
    Subject,
    /// A session (the mapped session claim).
    Session,
    /// One token by its token-id claim.
    TokenId,
    /// One token without a token id, by its signature.
    Signature,
    /// The whole issuer: the user-cutoff slot that acts as "everything issued before".
    Issuer,
    /// A user known by email (in ASCII lower case): the user-cutoff slot of Shared
    /// Signals events about an `email` subject.
    Email,
    /// A logout token or Security Event Token, by its `jti`: the replay record.
    Signal,
}

impl IdKind {
    fn tag(self) -> &'static [u8] {
        match self {
            IdKind::Subject => b"sub",
            IdKind::Session => b"sid",
            IdKind::TokenId => b"jti",
            IdKind::Signature => b"sig",
            IdKind::Issuer => b"iss",
            IdKind::Email => b"email",
            IdKind::Signal => b"signal",
        }
    }
}

/// The index id of `value`, of kind `kind`, at the issuer named `issuer`.
pub fn digest(issuer: &str, kind: IdKind, value: &[u8]) -> Uuid {
    let hash = Sha256::new()
        .chain_update(b"tokengate-gate-id-v1\0")
        .chain_update(issuer.as_bytes())
        .chain_update(b"\0")
        .chain_update(kind.tag())
        .chain_update(b"\0")
        .chain_update(value)
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash[..16]);
    Uuid::from_bytes(bytes)
}

/// The index id of the user with `email` at the issuer named `issuer`: the email in ASCII
/// lower case, as providers and users write the same address in different cases.
pub fn email_id(issuer: &str, email: &str) -> Uuid {
    digest(issuer, IdKind::Email, email.to_ascii_lowercase().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_scoped_by_issuer_and_kind() {
        let a = digest("sso", IdKind::Subject, b"alice");
        assert_eq!(a, digest("sso", IdKind::Subject, b"alice"));
        assert_ne!(a, digest("other", IdKind::Subject, b"alice"));
        assert_ne!(a, digest("sso", IdKind::Session, b"alice"));
        assert_ne!(a, digest("sso", IdKind::Email, b"alice"));
        assert_eq!(
            email_id("sso", "Alice@Example.COM"),
            email_id("sso", "alice@example.com")
        );
        assert_ne!(a, digest("sso", IdKind::Subject, b"alice2"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(
            digest("ab", IdKind::Subject, b"c"),
            digest("a", IdKind::Subject, b"bc")
        );
    }
}
