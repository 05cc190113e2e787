//! [`Issuers`]: every configured gate issuer, routing a token to its issuer by `iss`,
//! verifying it with that issuer's keys, and keeping the keys fresh.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::IgnoredAny;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokengate_core::cache::{CacheLimits, VerifiedCache};
use tokengate_core::verify::{verify_jws, JwsBuffers, TypCheck, VerifiedJws};
use tokengate_core::{
    Algorithm, Revocation, RevocationIndex, RevocationKind, SigningKey, Timestamp, TokenIds,
    VerifyError,
};

use crate::config::{IssuerConfig, KeySource};
use crate::ids::{digest, email_id, IdKind};
use crate::keyset::{FetchError, Fetcher, KeySet, KeyStatus};
use crate::token::{ClaimRules, ClaimsError, GateToken};

/// Why a gate token is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    /// `iss` names no configured issuer (and the token is not tokengate's own).
    #[error("token issuer is not accepted")]
    UnknownIssuer,
    /// The issuer's keys were never fetched: the answer is 503, not 401.
    #[error("the keys of issuer {0} are not available yet")]
    NotReady(String),
    /// The JOSE layer (size, header, algorithm, key, signature).
    #[error(transparent)]
    Jose(#[from] VerifyError),
    /// The claims.
    #[error(transparent)]
    Claims(#[from] ClaimsError),
    /// Revoked; says by what.
    #[error("token has been revoked")]
    Revoked(RevocationKind),
}

/// One configured issuer, ready to verify.
pub struct Issuer {
    /// Its place in [`Issuers`]: the high half of its cache entries' `key_id`.
    position: u64,
    config: IssuerConfig,
    source: KeySource,
    allowed: Vec<Algorithm>,
    keys: KeySet,
}

impl Issuer {
    /// Its configuration.
    pub fn config(&self) -> &IssuerConfig {
        &self.config
    }

    /// The cache `key_id` of tokens verified with key-set generation `generation`.
    fn key_id(&self, generation: u64) -> u64 {
        (self.position << 32) | (generation & 0xffff_ffff)
    }

    /// Its configured `issuer` (`iss`), if any.
    pub fn iss(&self) -> Option<&str> {
        self.config.issuer.as_deref()
    }

    /// Its configured `name`.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The algorithms its keys may verify.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.allowed
    }

    /// Where its keys stand.
    pub fn key_status(&self) -> KeyStatus {
        self.keys.status()
    }

    /// Whether its keys were ever fetched.
    pub fn is_ready(&self) -> bool {
        self.keys.is_ready()
    }

    /// The id whose user cutoff is this issuer's "everything issued before".
    pub fn scope_id(&self) -> uuid::Uuid {
        digest(&self.config.name, IdKind::Issuer, b"")
    }

    /// The revocation that refuses every token of this issuer issued before `cutoff`.
    pub fn revoke_issued_before(&self, cutoff: Timestamp) -> Revocation {
        Revocation::User {
            sub: self.scope_id(),
            issued_before: cutoff,
            exp: cutoff.plus(self.config.max_token_age),
        }
    }

    /// The revocation that refuses every token of `subject` issued before `now`.
    pub fn revoke_subject(&self, subject: &str, now: Timestamp) -> Revocation {
        Revocation::User {
            sub: digest(&self.config.name, IdKind::Subject, subject.as_bytes()),
            issued_before: now,
            exp: now.plus(self.config.max_token_age),
        }
    }

    /// The revocation that refuses every token of session `session`, from `now` on.
    pub fn revoke_session(&self, session: &str, now: Timestamp) -> Revocation {
        Revocation::Session {
            sid: digest(&self.config.name, IdKind::Session, session.as_bytes()),
            exp: now.plus(self.config.max_token_age),
        }
    }

    /// The revocation of the token with id `token_id`, which expires by `exp` (at most
    /// `max_token_age` from `now` is kept).
    pub fn revoke_token_id(
        &self,
        token_id: &str,
        exp: Option<Timestamp>,
        now: Timestamp,
    ) -> Revocation {
        let longest = now.plus(self.config.max_token_age);
        Revocation::Token {
            jti: digest(&self.config.name, IdKind::TokenId, token_id.as_bytes()),
            exp: exp.map_or(longest, |exp| exp.min(longest)),
        }
    }

    /// Whether `id` and `secret` are one of this issuer's revoke clients (constant time in
    /// the secret).
    pub fn client_matches(&self, id: &str, secret: &str) -> bool {
        let hash = hex(&Sha256::digest(secret.as_bytes()));
        self.config.clients.iter().fold(false, |found, client| {
            let same: bool = client
                .secret_sha256
                .as_bytes()
                .ct_eq(hash.as_bytes())
                .into();
            found | (client.id == id && same)
        })
    }

    /// Check the JOSE layer of `token` with this issuer's keys and allowed algorithms, `typ`
    /// as `typ` says, then hand the verified JWS to `read`.
    pub(crate) fn with_verified<T, E: From<GateError>>(
        &self,
        token: &str,
        typ: TypCheck<'_>,
        read: impl FnOnce(VerifiedJws<'_, '_>) -> Result<T, E>,
    ) -> Result<T, E> {
        if !self.keys.is_ready() {
            return Err(GateError::NotReady(self.config.name.clone()).into());
        }
        let keys = self.keys.keys();
        let mut buffers = JwsBuffers::new();
        let jws = verify_jws(token, &keys, typ, &mut buffers).map_err(GateError::Jose)?;
        if !self.allowed.contains(&jws.alg) {
            return Err(GateError::Jose(VerifyError::UnsupportedAlgorithm).into());
        }
        read(jws)
    }

    fn verify(
        &self,
        token: &str,
        leeway: Duration,
        now: Timestamp,
    ) -> Result<GateToken, GateError> {
        let typ = match &self.config.typ {
            Some(typ) => TypCheck::Exactly(typ),
            None => TypCheck::Unchecked,
        };
        self.with_verified(token, typ, |jws| {
            let rules = ClaimRules {
                issuer_name: &self.config.name,
                names: &self.config.claims,
                audiences: &self.config.audiences,
                audience_optional: self.config.audience_optional,
                max_token_age: self.config.max_token_age,
                leeway,
                email_revocable: self.email_revocable(),
            };
            Ok(rules.read(jws.payload, jws.signature, now)?)
        })
    }

    /// Whether a signal may revoke this issuer's tokens by email: it takes Shared Signals
    /// events and maps an email claim. Only then does the token path look the email up.
    pub fn email_revocable(&self) -> bool {
        self.config.ssf.is_some() && !self.config.claims.email.is_empty()
    }

    /// The revocation that refuses every token carrying `email` (compared in ASCII lower
    /// case) issued before `cutoff`: a Shared Signals event about an `email` subject.
    pub fn revoke_email(&self, email: &str, cutoff: Timestamp) -> Revocation {
        Revocation::User {
            sub: email_id(&self.config.name, email),
            issued_before: cutoff,
            exp: cutoff.plus(self.config.max_token_age),
        }
    }
}

/// Every gate issuer of this node.
pub struct Issuers {
    issuers: Vec<Issuer>,
    fetcher: Fetcher,
    leeway: Duration,
    /// Gate tokens verified before, by their exact bytes; `key_id` is the issuer's position
    /// (high 32 bits) and its key set's generation (low 32 bits).
    cache: VerifiedCache<GateToken>,
}

/// The verified-token cache of gate mode: half of [`CacheLimits::DEFAULT`], the other half
/// being own tokens' (`tokengate_core::verify::VERIFIER_CACHE_LIMITS`).
pub const GATE_CACHE_LIMITS: CacheLimits = CacheLimits {
    max_entries: CacheLimits::DEFAULT.max_entries / 2,
    max_bytes: CacheLimits::DEFAULT.max_bytes / 2,
};

impl Issuers {
    /// The issuers of `configs` (checked with [`crate::config::check_all`] first). HS256
    /// issuers are ready at once; the others once [`refresh_due`](Self::refresh_due) has
    /// fetched their keys.
    pub fn new(configs: &[IssuerConfig], leeway: Duration) -> Result<Self, String> {
        crate::config::check_all(configs).map_err(|e| e.to_string())?;
        let fetcher = Fetcher::new().map_err(|e| e.to_string())?;
        let mut issuers = Vec::with_capacity(configs.len());
        for (position, config) in (0u64..).zip(configs) {
            let source = config.key_source().map_err(|e| e.to_string())?;
            let allowed = config.allowed_algorithms(&source);
            let keys = match source {
                KeySource::Hs256 => KeySet::fixed(vec![hs256_key(config)?]),
                _ => KeySet::empty(),
            };
            issuers.push(Issuer {
                position,
                config: config.clone(),
                source,
                allowed,
                keys,
            });
        }
        Ok(Issuers {
            issuers,
            fetcher,
            leeway,
            cache: VerifiedCache::new(GATE_CACHE_LIMITS, GateToken::heap_bytes),
        })
    }

    /// Whether any issuer is configured.
    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// Every issuer.
    pub fn iter(&self) -> impl Iterator<Item = &Issuer> {
        self.issuers.iter()
    }

    /// The issuer named `name`.
    pub fn by_name(&self, name: &str) -> Option<&Issuer> {
        self.issuers.iter().find(|i| i.config.name == name)
    }

    /// How many verified gate tokens the cache holds.
    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }

    /// The names of issuers whose keys were never fetched.
    pub fn not_ready(&self) -> Vec<&str> {
        self.issuers
            .iter()
            .filter(|i| !i.is_ready())
            .map(Issuer::name)
            .collect()
    }

    /// The issuer a token is addressed to, by the `iss` of its (not yet verified) payload:
    /// `Ok(None)` when `iss` is `own` (tokengate's own token), the entry without `issuer`
    /// for a token without `iss`.
    pub fn route(&self, token: &str, own: &str) -> Result<Option<&Issuer>, GateError> {
        let iss = peek_issuer(token)?;
        if iss.as_deref() == Some(own) {
            return Ok(None);
        }
        self.issuers
            .iter()
            .find(|i| i.config.issuer == iss)
            .map(Some)
            .ok_or(GateError::UnknownIssuer)
    }

    /// Verify `token` of `issuer` at `now` and check the index.
    ///
    /// A token verified before is found by its exact bytes in the verified-token cache
    /// until it expires or its issuer's keys change; its revocation is checked every time.
    pub fn verify(
        &self,
        issuer: &Issuer,
        token: &str,
        index: &RevocationIndex,
        now: Timestamp,
    ) -> Result<GateToken, GateError> {
        let verified = match self.cache.get(token, now) {
            Some(hit) if hit.issuer == issuer.config.name => hit,
            _ => self.verify_and_cache(issuer, token, now)?,
        };
        index
            .check_ids(&verified.ids, now)
            .map_err(GateError::Revoked)?;
        if let Some(email) = verified.email_id {
            // A user cutoff recorded under the email's id (a Shared Signals event about an
            // `email` subject). The token and session slots get the email's id too, which
            // no token or session revocation ever carries: one more lookup per slot.
            let by_email = TokenIds {
                jti: email,
                sid: email,
                sub: email,
                ..verified.ids
            };
            index
                .check_ids(&by_email, now)
                .map_err(|_| GateError::Revoked(RevocationKind::User))?;
        }
        Ok(verified)
    }

    fn verify_and_cache(
        &self,
        issuer: &Issuer,
        token: &str,
        now: Timestamp,
    ) -> Result<GateToken, GateError> {
        let generation = issuer.keys.generation();
        let verified = issuer.verify(token, self.leeway, now)?;
        let key_id = issuer.key_id(generation);
        let until = verified.expires.plus(self.leeway);
        if self
            .cache
            .insert(token, verified.clone(), until, key_id, now)
            && issuer.keys.generation() != generation
        {
            // The keys changed during the verification: the sweep may have run before the
            // insert, so drop this generation's entries again.
            self.cache.retain_keys(|id| id != key_id);
        }
        Ok(verified)
    }

    /// After a token of `issuer` named a `kid` its set lacks: fetch the set now, unless
    /// one was fetched for that reason in the last 30 s (or the keys are a fixed secret).
    /// Returns whether the set changed, so that verifying again could succeed.
    pub async fn fetch_for_unknown_kid(&self, issuer: &Issuer, now: Timestamp) -> bool {
        if issuer.source == KeySource::Hs256 || !issuer.keys.claim_unknown_kid_fetch(now) {
            return false;
        }
        let before = issuer.keys.generation();
        self.fetch(issuer, now).await && issuer.keys.generation() != before
    }

    /// Fetch the keys of every issuer whose fetch is due at `now`; returns how many
    /// fetches failed. The maintenance loop calls it every second.
    pub async fn refresh_due(&self, now: Timestamp) -> usize {
        let mut failed = 0;
        for issuer in &self.issuers {
            if issuer.source != KeySource::Hs256
                && issuer.keys.due(now)
                && !self.fetch(issuer, now).await
            {
                failed += 1;
            }
        }
        failed
    }

    /// Fetch one issuer's keys now; false (and the old keys kept) on failure.
    async fn fetch(&self, issuer: &Issuer, now: Timestamp) -> bool {
        let result = async {
            let url = match &issuer.source {
                KeySource::Discovery(url) => {
                    let iss = issuer.config.issuer.as_deref().unwrap_or_default();
                    self.fetcher.discover(url, iss).await?
                }
                KeySource::Jwks(url) => url.clone(),
                KeySource::Hs256 => return Err(FetchError::NoUsableKey),
            };
            self.fetcher.jwks(&url, &issuer.allowed).await
        }
        .await;
        match result {
            Ok((keys, max_age)) => {
                let count = keys.len();
                if issuer.keys.set(keys, max_age, now) {
                    tracing::info!(issuer = %issuer.name(), keys = count, "issuer keys changed");
                    // Tokens verified by the keys held before are verified again.
                    let current = issuer.key_id(issuer.keys.generation());
                    self.cache
                        .retain_keys(|id| id >> 32 != issuer.position || id == current);
                }
                true
            }
            Err(error) => {
                tracing::warn!(issuer = %issuer.name(), %error, kept = issuer.keys.keys().len(), "fetching issuer keys failed");
                issuer.keys.failed(&error, now);
                false
            }
        }
    }
}

/// The HS256 key of a shared-secret issuer, under the empty `kid`: an app signing with a
/// shared secret (Open WebUI, PyJWT's defaults) puts no `kid` in its tokens.
fn hs256_key(config: &IssuerConfig) -> Result<tokengate_core::VerifyingKey, String> {
    let secret = match (&config.hs256_secret, &config.hs256_secret_file) {
        (Some(secret), _) => secret.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| {
                format!(
                    "issuer {:?}: cannot read {}: {e}",
                    config.name,
                    path.display()
                )
            })?
            .trim_end_matches(['\r', '\n'])
            .to_owned(),
        (None, None) => return Err(format!("issuer {:?}: no HS256 secret", config.name)),
    };
    SigningKey::hs256(secret.as_bytes())
        .map(|key| key.verifying_key().with_kid(""))
        .map_err(|e| format!("issuer {:?}: {e}", config.name))
}

/// The `iss` of a compact JWS's payload, read before any verification only to choose the
/// keys; nothing else of it is trusted.
fn peek_issuer(token: &str) -> Result<Option<String>, GateError> {
    #[derive(Deserialize)]
    struct Iss {
        iss: Option<String>,
        #[serde(flatten)]
        _rest: IgnoredAny,
    }
    if token.len() > tokengate_core::MAX_TOKEN_BYTES {
        return Err(VerifyError::TooLarge.into());
    }
    let payload = token
        .split('.')
        .nth(1)
        .ok_or(VerifyError::Malformed("expected three dot-separated parts"))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| VerifyError::Malformed("payload is not base64url"))?;
    let parsed: Iss = serde_json::from_slice(&bytes).map_err(|_| ClaimsError::NotAnObject)?;
    Ok(parsed.iss)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
