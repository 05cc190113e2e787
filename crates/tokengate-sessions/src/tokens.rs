//! Refresh tokens (random secrets, stored only as hashes) and what a sign-in or refresh
//! hands out.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokengate_core::Timestamp;
use uuid::Uuid;

/// A new refresh token: the text for the client and the hash for the store.
pub struct RefreshToken {
    /// `tgr_` + 256 random bits, base64url. The prefix lets secret scanners find leaks.
    pub text: String,
    /// SHA-256 of `text`; the only form stored.
    pub hash: [u8; 32],
}

impl RefreshToken {
    /// A fresh random refresh token.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let text = format!("tgr_{}", URL_SAFE_NO_PAD.encode(bytes));
        let hash = hash_refresh_token(&text);
        RefreshToken { text, hash }
    }
}

// Never shows the token.
impl std::fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshToken").finish_non_exhaustive()
    }
}

/// The stored form of a refresh token. A 256-bit random secret needs no salt or
/// stretching: a plain SHA-256 cannot be reversed or guessed.
pub fn hash_refresh_token(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Whether `text` has the form of a refresh token: `tgr_` + 43 base64url characters. What
/// fails this is never looked up (and is taken for an access token where either may come).
pub fn looks_like_refresh_token(text: &str) -> bool {
    text.strip_prefix("tgr_").is_some_and(|rest| {
        rest.len() == 43
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// A freshly minted access token.
#[derive(Debug)]
pub struct AccessToken {
    /// The compact JWS.
    pub token: String,
    /// Its `exp`.
    pub exp: Timestamp,
}

/// What a sign-in or a refresh hands the client: both tokens of one session.
pub struct Issued {
    /// The access token (a JWS, `typ: at+jwt`).
    pub access_token: String,
    /// Its `exp`.
    pub access_exp: Timestamp,
    /// The refresh token (single use).
    pub refresh_token: String,
    /// Its expiry.
    pub refresh_exp: Timestamp,
    /// The session both belong to.
    pub session_id: Uuid,
    /// The user it was issued to.
    pub user_id: Uuid,
    /// When it was issued.
    pub issued_at: Timestamp,
}

impl Issued {
    /// Seconds from issue until the access token expires (`expires_in`).
    pub fn expires_in(&self) -> i64 {
        self.access_exp
            .as_secs()
            .saturating_sub(self.issued_at.as_secs())
    }
}

// Never shows the tokens.
impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("session_id", &self.session_id)
            .field("user_id", &self.user_id)
            .field("access_exp", &self.access_exp)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_are_prefixed_random_and_stored_hashed() {
        let a = RefreshToken::generate();
        let b = RefreshToken::generate();
        assert!(looks_like_refresh_token(&a.text), "{}", a.text);
        assert_ne!(a.text, b.text);
        assert_eq!(a.hash, hash_refresh_token(&a.text));
        assert!(!looks_like_refresh_token("tgr_short"));
        assert!(!looks_like_refresh_token(&a.text.replace("tgr_", "tgx_")));
        assert!(!looks_like_refresh_token(&format!(
            "{}!",
            &a.text[..a.text.len() - 1]
        )));
    }
}
