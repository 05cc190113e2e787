//! The app's signing key, kept in the store so that it survives a restart and every process
//! on the same database agrees on it.
//!
//! At first start an EdDSA key is generated and offered to the store with
//! [`Store::insert_first_signing_key`], which keeps it only if the store has no key yet (two
//! copies starting at once end up with the same key). Every later start loads the stored
//! keys back with [`SigningKey::from_pkcs8_der`]. A `tokengate keys rotate` run on this
//! database is picked up at the next start.

use anyhow::Context as _;
use tokengate_core::{Algorithm, SigningKey, Timestamp, VerifyingKey};
use tokengate_store::{Store, StoredKey};

/// The key that signs new tokens and every key whose tokens still verify.
pub struct Keys {
    /// The newest stored key.
    pub signer: SigningKey,
    /// The public halves of every key not yet retired, the signer's included.
    pub verifying: Vec<VerifyingKey>,
}

/// Load the stored keys, creating the first one if the store has none.
pub async fn load_or_create(store: &dyn Store, now: Timestamp) -> anyhow::Result<Keys> {
    let mut stored = store.signing_keys().await?;
    if stored.is_empty() {
        let key = SigningKey::generate(Algorithm::EdDSA)?;
        stored = store
            .insert_first_signing_key(StoredKey {
                kid: key.kid().to_owned(),
                alg: key.alg().as_str().to_owned(),
                private_der: key.to_pkcs8_der()?,
                created_at: now,
                verify_until: None,
            })
            .await?;
        tracing::info!("first signing key created");
    }
    // Oldest first; a rotated-out key verifies until its `verify_until`.
    let mut live = Vec::with_capacity(stored.len());
    for key in stored
        .iter()
        .filter(|k| k.verify_until.is_none_or(|until| until >= now))
    {
        let alg: Algorithm = key
            .alg
            .parse()
            .with_context(|| format!("stored key {}", key.kid))?;
        live.push(SigningKey::from_pkcs8_der(
            alg,
            key.kid.clone(),
            &key.private_der,
        )?);
    }
    let verifying = live.iter().map(SigningKey::verifying_key).collect();
    let signer = live.pop().context("the store has no current signing key")?;
    Ok(Keys { signer, verifying })
}
