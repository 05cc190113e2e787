//! Passwords: the strength policy for new ones, and argon2id hashing (OWASP parameters) off
//! the async runtime in a fixed pool of memory.
//!
//! Each argon2id call needs 19 MiB. Left to `argon2`'s own allocation, every blocking
//! thread that ever hashed keeps its 19 MiB in the allocator's per-thread heap: a burst of
//! failed sign-ins took a server from 13 MB to 715 MB and never gave it back. Here at most
//! [`MAX_WORKERS`] hashes run at once, each in one of as many buffers that are allocated on
//! first use and then reused for the life of the process, so hashing never holds more than
//! `MAX_WORKERS` × 19 MiB, however many requests wait.

use std::sync::{Arc, Mutex};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version, ARGON2ID_IDENT};
use rand::rngs::OsRng;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

/// OWASP's argon2id recommendation: 19 MiB of memory, 2 passes, 1 lane.
const MEMORY_KIB: u32 = 19 * 1024;
const PASSES: u32 = 2;
const LANES: u32 = 1;
/// Length of the hash in the PHC string.
const OUTPUT_LEN: usize = 32;

/// Most hashes computed at once, whatever the core count: hashing is CPU-bound, so more
/// workers than cores only adds memory. At 19 MiB each this bounds hashing at 76 MiB.
pub const MAX_WORKERS: usize = 4;

/// Why a password was not accepted as a new password (422).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WeakPassword {
    /// Shorter than [`MIN_LEN`] characters.
    #[error("password must be at least 8 characters")]
    TooShort,
    /// Longer than [`MAX_LEN`] bytes.
    #[error("password must be at most 256 bytes")]
    TooLong,
    /// Holds a control character (NUL, escape, line breaks...), which no keyboard types and
    /// which some systems truncate at.
    #[error("password must not contain control characters")]
    ControlCharacter,
    /// Common, a keyboard pattern, a dictionary word with substitutions, or the email.
    #[error("password is too easy to guess; {0}")]
    Guessable(String),
}

/// Shortest password accepted, in characters (NIST SP 800-63B).
pub const MIN_LEN: usize = 8;
/// Longest password accepted, in bytes; bounds the hashing work an attacker can ask for.
pub const MAX_LEN: usize = 256;
/// The least zxcvbn score accepted (0-4): 3 means "safely unguessable: moderate protection
/// from offline slow-hash scenario", at least 10^8 guesses.
const MIN_SCORE: zxcvbn::Score = zxcvbn::Score::Three;

/// Check a new password against the policy: length, no control characters, and an
/// estimated 10^8 guesses or more (zxcvbn, with the email's parts as known words).
pub fn check_strength(password: &str, email: &str) -> Result<(), WeakPassword> {
    if password.chars().count() < MIN_LEN {
        return Err(WeakPassword::TooShort);
    }
    if password.len() > MAX_LEN {
        return Err(WeakPassword::TooLong);
    }
    if password.chars().any(char::is_control) {
        return Err(WeakPassword::ControlCharacter);
    }
    let (local, domain) = email.split_once('@').unwrap_or((email, ""));
    let mut words: Vec<&str> = vec![email, local];
    words.extend(local.split(['.', '_', '-', '+']).filter(|w| w.len() >= 3));
    words.extend(domain.split('.').filter(|w| w.len() >= 3));
    let estimate = zxcvbn::zxcvbn(password, &words);
    if estimate.score() < MIN_SCORE {
        let hint = estimate
            .feedback()
            .and_then(|f| f.warning().map(|w| w.to_string()))
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "add another word or two".to_owned());
        return Err(WeakPassword::Guessable(hint));
    }
    Ok(())
}

/// Hashing failed (cannot happen with valid parameters; reported, never panicked on).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// Hashes and verifies passwords on the blocking pool, in a bounded, reused set of argon2
/// memory buffers (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct Passwords {
    inner: Arc<Inner>,
}

struct Inner {
    params: Params,
    /// One permit per buffer: a hash runs only with a buffer of its own.
    permits: Semaphore,
    /// The idle buffers; at most `workers` ever exist.
    buffers: Mutex<Vec<Vec<Block>>>,
    /// A real hash of a random password: verified against when the email is unknown, so
    /// that an unknown email costs the same time as a wrong password.
    decoy: String,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords").finish_non_exhaustive()
    }
}

impl Passwords {
    /// argon2id with OWASP parameters, with as many workers as cores, at most
    /// [`MAX_WORKERS`].
    pub fn new() -> Result<Self, HashError> {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self::with_workers(workers.clamp(1, MAX_WORKERS))
    }

    /// At most `workers` hashes at once (and so `workers` × 19 MiB of hashing memory).
    pub fn with_workers(workers: usize) -> Result<Self, HashError> {
        let params =
            Params::new(MEMORY_KIB, PASSES, LANES, Some(OUTPUT_LEN)).map_err(to_hash_error)?;
        let mut decoy_blocks = vec![Block::new(); params.block_count()];
        let decoy_password = SaltString::generate(&mut OsRng);
        let decoy = hash_in(&params, decoy_password.as_str(), &mut decoy_blocks)?;
        let workers = workers.max(1);
        Ok(Passwords {
            inner: Arc::new(Inner {
                params,
                permits: Semaphore::new(workers),
                // The decoy's buffer is the first worker's.
                buffers: Mutex::new(vec![decoy_blocks]),
                decoy,
            }),
        })
    }

    /// Hash a new password (PHC string).
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        self.with_buffer(move |params, blocks| hash_in(params, &password, blocks))
            .await?
    }

    /// Whether `password` matches `hash`; with `hash = None` (unknown user) it checks the
    /// decoy instead and returns false, taking the same time.
    pub async fn verify(&self, password: String, hash: Option<String>) -> bool {
        let known = hash.is_some();
        let phc = hash.unwrap_or_else(|| self.inner.decoy.clone());
        let matched = self
            .with_buffer(move |_, blocks| verify_in(&password, &phc, blocks))
            .await
            .unwrap_or(false);
        known && matched
    }

    /// Run `work` on the blocking pool with a buffer of its own, waiting for one if all
    /// are in use.
    async fn with_buffer<R, F>(&self, work: F) -> Result<R, HashError>
    where
        F: FnOnce(&Params, &mut Vec<Block>) -> R + Send + 'static,
        R: Send + 'static,
    {
        let _permit = self.inner.permits.acquire().await.map_err(to_hash_error)?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            // A permit guarantees a buffer is idle or not yet allocated.
            let mut blocks = inner
                .lock_buffers()
                .pop()
                .unwrap_or_else(|| vec![Block::new(); inner.params.block_count()]);
            let result = work(&inner.params, &mut blocks);
            inner.lock_buffers().push(blocks);
            result
        })
        .await
        .map_err(to_hash_error)
    }
}

impl Inner {
    fn lock_buffers(&self) -> std::sync::MutexGuard<'_, Vec<Vec<Block>>> {
        // The lock guards a plain list; a panic elsewhere cannot leave it inconsistent.
        self.buffers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn to_hash_error(error: impl std::fmt::Display) -> HashError {
    HashError(error.to_string())
}

/// argon2id of `password` with a new random salt, in `blocks`, as a PHC string.
fn hash_in(params: &Params, password: &str, blocks: &mut [Block]) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 16];
    let salt_bytes = salt.decode_b64(&mut salt_bytes).map_err(to_hash_error)?;
    let mut out = [0u8; OUTPUT_LEN];
    argon2(params.clone())
        .hash_password_into_with_memory(password.as_bytes(), salt_bytes, &mut out, blocks)
        .map_err(to_hash_error)?;
    let phc = PasswordHash {
        algorithm: ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(to_hash_error)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(to_hash_error)?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the argon2id PHC string `phc`, computed in `blocks` (grown
/// once if a stored hash asks for more memory than ours, as a hash made with older
/// parameters may).
fn verify_in(password: &str, phc: &str, blocks: &mut Vec<Block>) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    if parsed.algorithm != ARGON2ID_IDENT {
        return false;
    }
    let (Ok(params), Some(salt), Some(expected)) =
        (Params::try_from(&parsed), parsed.salt, parsed.hash)
    else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let needed = params.block_count();
    if blocks.len() < needed {
        blocks.resize(needed, Block::new());
    }
    let mut out = vec![0u8; expected.len()];
    let computed = argon2(params).hash_password_into_with_memory(
        password.as_bytes(),
        salt_bytes,
        &mut out,
        &mut blocks[..needed],
    );
    computed.is_ok() && bool::from(out.as_slice().ct_eq(expected.as_bytes()))
}

fn argon2(params: Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn guessable(password: &str, email: &str) -> bool {
        matches!(
            check_strength(password, email),
            Err(WeakPassword::Guessable(_))
        )
    }

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
        for common in [
            "Password1",
            "aaaaaaaaaa",
            "P@ssw0rd",
            "Password!",
            "12345678a",
            "qwertyuiop",
            "iloveyou2",
        ] {
            assert!(guessable(common, "a@b.c"), "{common} was accepted");
        }
        assert!(guessable("alice.smith", "alice.smith@example.com"));
        assert!(guessable("alicesmith1", "alice.smith@example.com"));
        assert!(check_strength("correct horse battery", "a@b.c").is_ok());
        assert!(check_strength("tangerine-orbit-57-lamp", "a@b.c").is_ok());
    }

    #[test]
    fn control_characters_are_refused() {
        assert_eq!(
            check_strength("\0\0\0\0\0\0\0a", "a@b.c"),
            Err(WeakPassword::ControlCharacter)
        );
        assert_eq!(
            check_strength("correct horse\nbattery", "a@b.c"),
            Err(WeakPassword::ControlCharacter)
        );
    }

    #[tokio::test]
    async fn hashes_are_argon2id_with_owasp_parameters_and_verify() {
        let p = Passwords::with_workers(2).unwrap();
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
        assert!(!p.verify("anything".into(), Some("not a hash".into())).await);
    }

    #[tokio::test]
    async fn hashes_made_by_the_argon2_crate_itself_verify() {
        // Hashes stored before the memory pool (argon2's own PasswordHasher) still verify,
        // and ours verify with the argon2 crate: the PHC strings are the same format.
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let params = Params::new(MEMORY_KIB, PASSES, LANES, None).unwrap();
        let theirs = argon2(params)
            .hash_password(b"correct horse battery", &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string();
        let p = Passwords::with_workers(1).unwrap();
        assert!(
            p.verify("correct horse battery".into(), Some(theirs.clone()))
                .await
        );
        assert!(!p.verify("wrong".into(), Some(theirs)).await);
        let ours = p.hash("correct horse battery".into()).await.unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse battery", &parsed)
            .is_ok());
    }

    #[tokio::test]
    async fn no_more_buffers_exist_than_workers_however_many_hash_at_once() {
        let p = Passwords::with_workers(2).unwrap();
        let hashes = (0..6).map(|i| {
            let p = p.clone();
            tokio::spawn(async move { p.hash(format!("correct horse {i}")).await })
        });
        for hash in hashes {
            hash.await.unwrap().unwrap();
        }
        assert!(p.inner.lock_buffers().len() <= 2);
        assert!(!p.inner.lock_buffers().is_empty());
    }
}
