//! Password hashing with argon2id (OWASP parameters: 19 MiB, 2 passes, 1 lane), on the
//! blocking pool so a sign-in never stalls the async runtime.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::rngs::OsRng;
use tokio::sync::Semaphore;

/// At most this many hashes at once: each holds 19 MiB.
const CONCURRENT_HASHES: usize = 4;

/// Hashes and verifies passwords.
#[derive(Clone)]
pub struct Passwords {
    hasher: Argon2<'static>,
    permits: Arc<Semaphore>,
    /// A real hash of a random password, verified against when the email is unknown so that
    /// an unknown email and a wrong password cost the same time.
    decoy: Arc<str>,
}

impl Passwords {
    /// argon2id with OWASP parameters.
    pub fn new() -> anyhow::Result<Self> {
        let params = Params::new(19 * 1024, 2, 1, None).map_err(anyhow::Error::msg)?;
        let hasher = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let decoy_password = SaltString::generate(&mut OsRng);
        let decoy = hash_with(&hasher, decoy_password.as_str())?;
        Ok(Passwords {
            hasher,
            permits: Arc::new(Semaphore::new(CONCURRENT_HASHES)),
            decoy: decoy.into(),
        })
    }

    /// The PHC string of a new password's hash.
    pub async fn hash(&self, password: String) -> anyhow::Result<String> {
        let _permit = self.permits.acquire().await?;
        let hasher = self.hasher.clone();
        tokio::task::spawn_blocking(move || hash_with(&hasher, &password)).await?
    }

    /// Whether `password` matches `hash`. With `None` (no such user) it verifies against the
    /// decoy and answers `false` after the same work.
    pub async fn verify(&self, password: String, hash: Option<String>) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let hasher = self.hasher.clone();
        let known = hash.is_some();
        let phc = hash.unwrap_or_else(|| self.decoy.to_string());
        let matched = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&phc)
                .is_ok_and(|parsed| hasher.verify_password(password.as_bytes(), &parsed).is_ok())
        })
        .await
        .unwrap_or(false);
        known && matched
    }
}

fn hash_with(hasher: &Argon2<'_>, password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    let hash = hasher
        .hash_password(password.as_bytes(), &salt)
        .map_err(anyhow::Error::msg)?;
    Ok(hash.to_string())
}
