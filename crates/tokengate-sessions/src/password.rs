//! Password hashing with argon2id (OWASP parameters), always off the async runtime.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::rngs::OsRng;
use tokio::sync::Semaphore;

/// OWASP's argon2id recommendation: 19 MiB of memory, 2 passes, 1 lane.
const MEMORY_KIB: u32 = 19 * 1024;
const PASSES: u32 = 2;
const LANES: u32 = 1;

/// Why a password was not accepted as a new password (422).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WeakPassword {
    /// Shorter than [`MIN_LEN`] characters.
    #[error("password must be at least 8 characters")]
    TooShort,
    /// Longer than [`MAX_LEN`] bytes.
    #[error("password must be at most 256 bytes")]
    TooLong,
    /// Among the most common passwords, or the email itself.
    #[error("password is too easy to guess")]
    Guessable,
}

/// Shortest password accepted, in characters (NIST SP 800-63B).
pub const MIN_LEN: usize = 8;
/// Longest password accepted, in bytes; bounds the hashing work an attacker can ask for.
pub const MAX_LEN: usize = 256;

const COMMON: &[&str] = &[
    "password",
    "password1",
    "password123",
    "12345678",
    "123456789",
    "1234567890",
    "qwertyui",
    "qwerty123",
    "iloveyou",
    "11111111",
    "00000000",
    "abc12345",
    "letmein1",
    "welcome1",
    "sunshine",
    "football",
    "baseball",
    "princess",
    "admin123",
    "passw0rd",
    "trustno1",
];

/// Check a new password against the policy.
pub fn check_strength(password: &str, email: &str) -> Result<(), WeakPassword> {
    if password.chars().count() < MIN_LEN {
        return Err(WeakPassword::TooShort);
    }
    if password.len() > MAX_LEN {
        return Err(WeakPassword::TooLong);
    }
    let lower = password.to_lowercase();
    let local_part = email.split('@').next().unwrap_or(email);
    let first = lower.chars().next();
    let one_char = lower.chars().all(|c| Some(c) == first);
    if COMMON.contains(&lower.as_str()) || lower == email || lower == local_part || one_char {
        return Err(WeakPassword::Guessable);
    }
    Ok(())
}

/// Hashes and verifies passwords on the blocking pool, at most a few at a time so a burst
/// of sign-ins cannot take all memory (each hash holds 19 MiB).
#[derive(Clone)]
pub struct Passwords {
    hasher: Argon2<'static>,
    permits: Arc<Semaphore>,
    /// A real hash of a random password: verified against when the email is unknown, so
    /// that an unknown email costs the same time as a wrong password.
    decoy: Arc<String>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords").finish_non_exhaustive()
    }
}

/// Hashing failed (cannot happen with valid parameters; reported, never panicked on).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

impl Passwords {
    /// argon2id with OWASP parameters.
    pub fn new() -> Result<Self, HashError> {
        let params =
            Params::new(MEMORY_KIB, PASSES, LANES, None).map_err(|e| HashError(e.to_string()))?;
        let hasher = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let decoy_password = SaltString::generate(&mut OsRng);
        let decoy = hash_with(&hasher, decoy_password.as_str())?;
        let permits = std::thread::available_parallelism().map_or(2, |n| n.get() * 2);
        Ok(Passwords {
            hasher,
            permits: Arc::new(Semaphore::new(permits)),
            decoy: Arc::new(decoy),
        })
    }

    /// Hash a new password (PHC string).
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| HashError(e.to_string()))?;
        let hasher = self.hasher.clone();
        tokio::task::spawn_blocking(move || hash_with(&hasher, &password))
            .await
            .map_err(|e| HashError(e.to_string()))?
    }

    /// Whether `password` matches `hash`; with `hash = None` (unknown user) it checks the
    /// decoy instead and returns false, taking the same time.
    pub async fn verify(&self, password: String, hash: Option<String>) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let hasher = self.hasher.clone();
        let known = hash.is_some();
        let phc = hash.unwrap_or_else(|| self.decoy.as_str().to_owned());
        let matched = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&phc)
                .map(|parsed| hasher.verify_password(password.as_bytes(), &parsed).is_ok())
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        known && matched
    }
}

fn hash_with(hasher: &Argon2<'_>, password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    hasher
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn weak_passwords_are_refused() {
        assert_eq!(
            check_strength("short", "a@b.c"),
            Err(WeakPassword::TooShort)
        );
        assert_eq!(
            check_strength(&"x".repeat(300), "a@b.c"),
            Err(WeakPassword::TooLong)
        );
        assert_eq!(
            check_strength("Password1", "a@b.c"),
            Err(WeakPassword::Guessable)
        );
        assert_eq!(
            check_strength("aaaaaaaaaa", "a@b.c"),
            Err(WeakPassword::Guessable)
        );
        assert_eq!(
            check_strength("alice.smith", "alice.smith@example.com"),
            Err(WeakPassword::Guessable)
        );
        assert!(check_strength("correct horse battery", "a@b.c").is_ok());
    }

    #[tokio::test]
    async fn hashes_are_argon2id_with_owasp_parameters_and_verify() {
        let p = Passwords::new().unwrap();
        let hash = p.hash("correct horse battery".into()).await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(
            p.verify("correct horse battery".into(), Some(hash.clone()))
                .await
        );
        assert!(!p.verify("wrong horse battery".into(), Some(hash)).await);
        assert!(!p.verify("anything".into(), None).await);
    }
}
