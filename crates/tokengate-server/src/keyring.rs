//! The signing key and the verifying keys, kept in the store so that every process on
//! the same data (the server, the admin CLI, other cluster nodes) agrees on them.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokengate_core::{Algorithm, SigningKey, Timestamp, Verifier, VerifyingKey};
use tokengate_store::{Store, StoredKey};

use crate::config::Config;

/// The current signing key and, through the [`Verifier`], every key still accepted.
pub struct KeyRing {
    signer: ArcSwap<SigningKey>,
    verifier: Arc<Verifier>,
    /// The configured HS256 secret, if any; it is never stored in the database.
    hs256_secret: Option<Vec<u8>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("current_kid", &self.signer.load().kid())
            .finish_non_exhaustive()
    }
}

/// A new key verifies at once but signs only this long after it was made, so that every
/// node (each reloads keys every second) and every JWKS cache that refetches on an unknown
/// `kid` knows it before the first token signed with it arrives.
pub const KEY_ACTIVATION_DELAY: Duration = Duration::from_secs(3);

/// How long a replaced key keeps verifying: until every token it signed has expired (it
/// keeps signing for [`KEY_ACTIVATION_DELAY`] after the rotation).
pub fn retire_after(config: &Config) -> Duration {
    KEY_ACTIVATION_DELAY + config.access_ttl + config.leeway
}

impl KeyRing {
    /// Load the keys, creating the first one (or rotating to the configured algorithm)
    /// when needed.
    pub async fn load(
        store: &dyn Store,
        config: &Config,
        verifier: Arc<Verifier>,
        now: Timestamp,
    ) -> anyhow::Result<Self> {
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
        let (signer, keys) = build(&stored, hs256_secret.as_deref(), now)?;
        verifier.set_keys(keys);
        Ok(KeyRing {
            signer: ArcSwap::from_pointee(signer),
            verifier,
            hs256_secret,
        })
    }

    /// The key that signs new tokens.
    pub fn signer(&self) -> Arc<SigningKey> {
        self.signer.load_full()
    }

    /// The verifier whose key set this ring maintains.
    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }

    /// Re-read the keys from the store (another process may have rotated them) and drop
    /// keys whose `verify_until` has passed.
    pub async fn reload(&self, store: &dyn Store, now: Timestamp) -> anyhow::Result<()> {
        let stored = store.signing_keys().await?;
        let (signer, keys) = build(&stored, self.hs256_secret.as_deref(), now)?;
        let changed = signer.kid() != self.signer.load().kid()
            || keys.iter().map(VerifyingKey::kid).ne(self
                .verifier
                .keys()
                .iter()
                .map(VerifyingKey::kid));
        if changed {
            tracing::info!(
                current_kid = signer.kid(),
                accepted = keys.len(),
                "signing keys changed"
            );
            self.verifier.set_keys(keys);
            self.signer.store(Arc::new(signer));
        }
        Ok(())
    }
}

/// Make a new key of the configured algorithm the signing key; the old ones keep
/// verifying until the tokens they signed have expired.
pub async fn rotate(store: &dyn Store, config: &Config, now: Timestamp) -> anyhow::Result<String> {
    if config.signing_alg == Algorithm::HS256 {
        anyhow::bail!(
            "HS256 keys come from hs256_secret; change the secret in the configuration to rotate"
        );
    }
    let key = new_stored_key(config.signing_alg, now)?;
    let kid = key.kid.clone();
    store
        .rotate_signing_key(key, now.plus(retire_after(config)))
        .await?;
    Ok(kid)
}

fn new_stored_key(alg: Algorithm, now: Timestamp) -> anyhow::Result<StoredKey> {
    let key = SigningKey::generate(alg)?;
    Ok(StoredKey {
        kid: key.kid().to_owned(),
        alg: alg.as_str().to_owned(),
        private_der: key.to_pkcs8_der()?,
        created_at: now,
        verify_until: None,
    })
}

/// The signing key and the accepted keys from the stored ones.
fn build(
    stored: &[StoredKey],
    hs256_secret: Option<&[u8]>,
    now: Timestamp,
) -> anyhow::Result<(SigningKey, Vec<VerifyingKey>)> {
    let mut live = Vec::with_capacity(stored.len() + 1);
    // The newest key that every node has had time to learn signs; a newer one only verifies.
    let mut signer_at = None;
    for key in stored {
        if key.verify_until.is_some_and(|until| until < now) {
            continue;
        }
        let alg: Algorithm = key
            .alg
            .parse()
            .map_err(|e| anyhow::anyhow!("stored key {}: {e}", key.kid))?;
        if key.created_at.plus(KEY_ACTIVATION_DELAY) <= now {
            signer_at = Some(live.len());
        }
        live.push(SigningKey::from_pkcs8_der(
            alg,
            key.kid.clone(),
            &key.private_der,
        )?);
    }
    let mut verifying: Vec<VerifyingKey> = live.iter().map(SigningKey::verifying_key).collect();
    let signer = match hs256_secret {
        Some(secret) => {
            let key = SigningKey::hs256(secret)?;
            verifying.push(key.verifying_key());
            key
        }
        None => {
            // On a fresh store the only key is brand new: it signs at once.
            let at = signer_at.unwrap_or(live.len().saturating_sub(1));
            if at >= live.len() {
                anyhow::bail!("the store has no current signing key");
            }
            live.swap_remove(at)
        }
    };
    Ok((signer, verifying))
}
