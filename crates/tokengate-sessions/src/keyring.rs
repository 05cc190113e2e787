//! The signing key and the verifying keys, kept in the store so that every process on
//! the same data (the server, the admin CLI, other cluster nodes) agrees on them.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokengate_core::{Algorithm, KeyError, SigningKey, Timestamp, Verifier, VerifyingKey};
use tokengate_store::{Store, StoreError, StoredKey};

use crate::config::SessionConfig;

/// Why the keys could not be loaded, made or rotated.
#[derive(Debug, thiserror::Error)]
pub enum KeyRingError {
    /// The store could not be read or written.
    #[error("signing keys: {0}")]
    Store(#[from] StoreError),
    /// A key could not be generated, encoded or decoded (a stored key of an unknown
    /// algorithm included).
    #[error("signing key: {0}")]
    Key(#[from] KeyError),
    /// The store holds no key that may still sign.
    #[error("the store has no current signing key")]
    NoCurrentKey,
    /// HS256 keys come from the configured secret, never from a rotation.
    #[error("HS256 keys come from hs256_secret; change the secret in the configuration to rotate")]
    Hs256NotRotated,
}

/// The current signing key and, through the [`Verifier`], every key still accepted.
pub struct KeyRing {
    signing: ArcSwap<Signing>,
    verifier: Arc<Verifier>,
    /// The configured HS256 secret, if any; it is never stored in the database.
    hs256_secret: Option<Vec<u8>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("kids", &self.signing.load().kids().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A new key verifies at once but signs only this long after it was made, so that every
/// node (each reloads keys every second) and every JWKS cache that refetches on an unknown
/// `kid` knows it before the first token signed with it arrives.
pub const KEY_ACTIVATION_DELAY: Duration = Duration::from_secs(3);

/// How long a replaced key keeps verifying: until every token it signed has expired (it
/// keeps signing for [`KEY_ACTIVATION_DELAY`] after the rotation).
pub fn retire_after(config: &SessionConfig) -> Duration {
    KEY_ACTIVATION_DELAY + config.access_ttl + config.leeway
}

impl KeyRing {
    /// Load the keys, creating the first one (or rotating to the configured algorithm)
    /// when needed.
    pub async fn load(
        store: &dyn Store,
        config: &SessionConfig,
        verifier: Arc<Verifier>,
        now: Timestamp,
    ) -> Result<Self, KeyRingError> {
        let hs256_secret = match (config.signing_alg, &config.hs256_secret) {
            (Algorithm::HS256, Some(secret)) => Some(secret.as_bytes().to_vec()),
            _ => None,
        };
        let mut stored = store.signing_keys().await?;
        if hs256_secret.is_none() {
            let current_alg = stored.last().map(|k| k.alg.as_str());
            if stored.is_empty() {
                stored = store
                    .insert_first_signing_key(new_stored_key(config.signing_alg, now)?)
                    .await?;
            } else if current_alg != Some(config.signing_alg.as_str()) {
                tracing::info!(alg = %config.signing_alg.as_str(), "signing_alg changed; rotating to a new key");
                rotate(store, config, now).await?;
                stored = store.signing_keys().await?;
            }
        }
        let (signing, keys) = build(&stored, hs256_secret.as_deref(), now)?;
        verifier.set_keys(keys);
        Ok(KeyRing {
            signing: ArcSwap::from_pointee(signing),
            verifier,
            hs256_secret,
        })
    }

    /// The key that signs new tokens at `now`: the newest key every node has had time to
    /// learn and that has not been retired. Chosen per call from the keys last loaded, so a
    /// node whose reload is late (the store unreachable for a while) still switches to the
    /// rotated key on time and never signs with a key the others have dropped.
    pub fn signer(&self, now: Timestamp) -> Arc<SigningKey> {
        self.signing.load().at(now)
    }

    /// [`signer`](Self::signer), but when every loaded key is retired at `now` (say the
    /// clock jumped past a rotation this node has not reloaded yet), reload from the store
    /// first rather than sign with a key the others may have dropped.
    pub async fn signer_reloading(&self, store: &dyn Store, now: Timestamp) -> Arc<SigningKey> {
        if let Some(key) = self.signing.load().active(now) {
            return key;
        }
        if let Err(error) = self.reload(store, now).await {
            tracing::warn!(%error, "reloading signing keys before signing failed");
        }
        self.signer(now)
    }

    /// The verifier whose key set this ring maintains.
    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }

    /// Re-read the keys from the store (another process may have rotated them) and drop
    /// keys whose `verify_until` has passed.
    pub async fn reload(&self, store: &dyn Store, now: Timestamp) -> Result<(), KeyRingError> {
        let stored = store.signing_keys().await?;
        let (signing, keys) = build(&stored, self.hs256_secret.as_deref(), now)?;
        let current = self.signing.load();
        let changed = signing.at(now).kid() != current.at(now).kid()
            || signing.kids().ne(current.kids())
            || keys.iter().map(VerifyingKey::kid).ne(self
                .verifier
                .keys()
                .iter()
                .map(VerifyingKey::kid));
        if changed {
            tracing::info!(
                current_kid = signing.at(now).kid(),
                accepted = keys.len(),
                "signing keys changed"
            );
            self.verifier.set_keys(keys);
            self.signing.store(Arc::new(signing));
        }
        Ok(())
    }
}

/// Make a new key of the configured algorithm the signing key; the old ones keep
/// verifying until the tokens they signed have expired.
pub async fn rotate(
    store: &dyn Store,
    config: &SessionConfig,
    now: Timestamp,
) -> Result<String, KeyRingError> {
    if config.signing_alg == Algorithm::HS256 {
        return Err(KeyRingError::Hs256NotRotated);
    }
    let key = new_stored_key(config.signing_alg, now)?;
    let kid = key.kid.clone();
    store
        .rotate_signing_key(key, now.plus(retire_after(config)))
        .await?;
    Ok(kid)
}

fn new_stored_key(alg: Algorithm, now: Timestamp) -> Result<StoredKey, KeyRingError> {
    let key = SigningKey::generate(alg)?;
    Ok(StoredKey {
        kid: key.kid().to_owned(),
        alg: alg.as_str().to_owned(),
        private_der: key.to_pkcs8_der()?,
        created_at: now,
        verify_until: None,
    })
}

/// What a stored key does at a given time (`tokengate keys list`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// The key new tokens are signed with.
    Current,
    /// Made less than [`KEY_ACTIVATION_DELAY`] ago: verifies now, signs within seconds.
    Next,
    /// Replaced, and still verifying the tokens it signed.
    Verifying,
    /// Past its `verify_until`: no longer accepted.
    Retired,
}

/// A stored key's public facts (never its private half) and its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key id (`kid`).
    pub kid: String,
    /// The JOSE algorithm name.
    pub alg: String,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it stops verifying, once replaced.
    pub verify_until: Option<Timestamp>,
    /// What it does at the time asked about.
    pub state: KeyState,
}

/// The stored keys, oldest first, each with what it does at `now`: the current one is the
/// newest that has had [`KEY_ACTIVATION_DELAY`] to reach every node (or the newest of all
/// when none has).
pub async fn list(store: &dyn Store, now: Timestamp) -> Result<Vec<KeyInfo>, StoreError> {
    let keys = store.signing_keys().await?;
    let activated = |k: &StoredKey| k.created_at.plus(KEY_ACTIVATION_DELAY) <= now;
    let current = keys
        .iter()
        .rev()
        .find(|k| activated(k))
        .or(keys.last())
        .map(|k| k.kid.clone());
    Ok(keys
        .into_iter()
        .map(|key| {
            let state = if Some(&key.kid) == current.as_ref() {
                KeyState::Current
            } else if key.verify_until.is_some_and(|t| t < now) {
                KeyState::Retired
            } else if !activated(&key) {
                KeyState::Next
            } else {
                KeyState::Verifying
            };
            KeyInfo {
                kid: key.kid,
                alg: key.alg,
                created_at: key.created_at,
                verify_until: key.verify_until,
                state,
            }
        })
        .collect())
}

/// A key that may sign, and the span of time in which it may.
struct Candidate {
    key: Arc<SigningKey>,
    /// When every node has had time to learn it ([`KEY_ACTIVATION_DELAY`] after creation).
    signs_from: Timestamp,
    /// When the others drop it, if it has been replaced.
    verify_until: Option<Timestamp>,
}

/// The keys that may sign, oldest first, and the one to fall back on.
struct Signing {
    candidates: Vec<Candidate>,
    /// What signs when no candidate qualifies at `now`: the configured HS256 secret, or
    /// the newest stored key (every key retired and the reload failed).
    fallback: Arc<SigningKey>,
}

impl Signing {
    /// [`active`](Self::active), else the fallback.
    fn at(&self, now: Timestamp) -> Arc<SigningKey> {
        self.active(now)
            .unwrap_or_else(|| Arc::clone(&self.fallback))
    }

    /// The key to sign with at `now`, if any is not retired: the newest one that is active,
    /// else (every key younger than [`KEY_ACTIVATION_DELAY`], as on a fresh store or right
    /// after a rotation that followed it) the oldest, which the other nodes have known
    /// longest. The HS256 secret always qualifies.
    fn active(&self, now: Timestamp) -> Option<Arc<SigningKey>> {
        if self.candidates.is_empty() {
            return Some(Arc::clone(&self.fallback));
        }
        let live = |c: &&Candidate| c.verify_until.is_none_or(|until| until >= now);
        let oldest = self.candidates.iter().find(live)?;
        let chosen = (self.candidates.iter().rev())
            .filter(live)
            .find(|c| c.signs_from <= now)
            .unwrap_or(oldest);
        Some(Arc::clone(&chosen.key))
    }

    fn kids(&self) -> impl Iterator<Item = &str> {
        self.candidates.iter().map(|c| c.key.kid())
    }
}

/// The signing keys and the accepted keys from the stored ones.
fn build(
    stored: &[StoredKey],
    hs256_secret: Option<&[u8]>,
    now: Timestamp,
) -> Result<(Signing, Vec<VerifyingKey>), KeyRingError> {
    let mut candidates = Vec::with_capacity(stored.len());
    for key in stored {
        if key.verify_until.is_some_and(|until| until < now) {
            continue;
        }
        let alg: Algorithm = key.alg.parse()?;
        candidates.push(Candidate {
            key: Arc::new(SigningKey::from_pkcs8_der(
                alg,
                key.kid.clone(),
                &key.private_der,
            )?),
            signs_from: key.created_at.plus(KEY_ACTIVATION_DELAY),
            verify_until: key.verify_until,
        });
    }
    let mut verifying: Vec<VerifyingKey> =
        candidates.iter().map(|c| c.key.verifying_key()).collect();
    let signing = match hs256_secret {
        Some(secret) => {
            let key = SigningKey::hs256(secret)?;
            verifying.push(key.verifying_key());
            // The secret is the only signer: stored keys (from an earlier asymmetric
            // configuration) only verify.
            Signing {
                candidates: Vec::new(),
                fallback: Arc::new(key),
            }
        }
        None => {
            let Some(newest) = candidates.last() else {
                return Err(KeyRingError::NoCurrentKey);
            };
            let fallback = Arc::clone(&newest.key);
            Signing {
                candidates,
                fallback,
            }
        }
    };
    Ok((signing, verifying))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_secs(1_700_000_000 + secs)
    }

    /// Found by the model test: a node that loaded the keys just after a rotation (the new
    /// key not active yet) and then saw the clock pass the old key's retirement before its
    /// next reload signed with the retired key, and its own tokens were refused once the
    /// reload dropped that key.
    #[test]
    fn the_signer_follows_the_clock_between_reloads() {
        let mut old = new_stored_key(Algorithm::EdDSA, at(0)).unwrap();
        let new = new_stored_key(Algorithm::EdDSA, at(400)).unwrap();
        old.verify_until = Some(at(400 + 933));
        // Loaded one second after the rotation.
        let (signing, verifying) = build(&[old.clone(), new.clone()], None, at(401)).unwrap();
        assert_eq!(verifying.len(), 2);
        assert_eq!(
            signing.at(at(401)).kid(),
            old.kid,
            "the new key is not active yet"
        );
        assert_eq!(
            signing.at(at(403)).kid(),
            new.kid,
            "active 3 s after its creation"
        );
        assert_eq!(
            signing.at(at(2_000)).kid(),
            new.kid,
            "never the retired key"
        );
        assert!(signing.active(at(2_000)).is_some());

        // Only retired keys loaded: nothing qualifies, so minting reloads first.
        let (stale, _) = build(&[old.clone()], None, at(401)).unwrap();
        assert!(stale.active(at(2_000)).is_none());
        assert_eq!(
            stale.at(at(2_000)).kid(),
            old.kid,
            "the fallback, after a failed reload"
        );
    }

    /// Found by the cluster test on a fast machine: a rotation within 3 s of the store's
    /// first key left no key active, and a node signed with the brand-new one before the
    /// other node had loaded it.
    #[test]
    fn with_no_key_active_yet_the_oldest_signs() {
        let first = new_stored_key(Algorithm::EdDSA, at(0)).unwrap();
        let mut first_retired = first.clone();
        first_retired.verify_until = Some(at(1 + 933));
        let rotated = new_stored_key(Algorithm::EdDSA, at(1)).unwrap();
        let (signing, _) = build(&[first_retired, rotated.clone()], None, at(1)).unwrap();
        assert_eq!(signing.at(at(1)).kid(), first.kid);
        assert_eq!(signing.at(at(3)).kid(), first.kid);
        assert_eq!(signing.at(at(4)).kid(), rotated.kid);

        // Made in the same second: once both are active, the newer one signs.
        let same_second = new_stored_key(Algorithm::EdDSA, at(0)).unwrap();
        let (signing, _) = build(&[first.clone(), same_second.clone()], None, at(0)).unwrap();
        assert_eq!(signing.at(at(0)).kid(), first.kid);
        assert_eq!(signing.at(at(3)).kid(), same_second.kid);
    }

    #[test]
    fn a_fresh_store_signs_with_its_only_key_at_once_and_hs256_with_the_secret() {
        let only = new_stored_key(Algorithm::EdDSA, at(0)).unwrap();
        let (signing, _) = build(std::slice::from_ref(&only), None, at(0)).unwrap();
        assert_eq!(signing.at(at(0)).kid(), only.kid);

        let secret = [7u8; 32];
        let (signing, verifying) = build(&[only], Some(&secret), at(0)).unwrap();
        let hs = SigningKey::hs256(&secret).unwrap();
        assert_eq!(signing.at(at(0)).kid(), hs.kid());
        assert!(signing.active(at(10_000)).is_some());
        assert_eq!(verifying.len(), 2, "the stored key still verifies");
    }
}
