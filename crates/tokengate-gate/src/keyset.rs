//! An issuer's verifying keys: fetched from its JWK Set (directly or through its discovery
//! document), kept while fetches fail, refreshed by `Cache-Control`, and refetched on an
//! unknown `kid` at most once per [`UNKNOWN_KID_INTERVAL`].

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Deserialize;
use tokengate_core::{Algorithm, Jwk, Timestamp, VerifyingKey};

/// Largest discovery document or JWK Set read.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Most keys one set may hold; a larger set is refused whole (the last good one is kept).
pub const MAX_KEYS: usize = 100;
/// Time one fetch (connect, headers and body) may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A set is fetched again after its `Cache-Control: max-age`, bounded to this ...
pub const MIN_REFRESH: Duration = Duration::from_secs(5 * 60);
/// ... and this.
pub const MAX_REFRESH: Duration = Duration::from_secs(24 * 3600);
/// After a failed fetch, the next try comes this much later.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);
/// A token naming a `kid` the set lacks triggers a fetch at most this often.
pub const UNKNOWN_KID_INTERVAL: Duration = Duration::from_secs(30);

/// Why a fetch gave no usable key set. The text names no secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// Connecting, a timeout, a redirect, or a status other than 200.
    #[error("{0}")]
    Http(String),
    /// Longer than [`MAX_DOCUMENT_BYTES`].
    #[error("response is larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    /// Not the expected JSON.
    #[error("{0}")]
    Malformed(String),
    /// More than [`MAX_KEYS`] keys.
    #[error("key set holds more than {MAX_KEYS} keys")]
    TooManyKeys,
    /// Not one key usable for the allowed algorithms.
    #[error("key set holds no usable signing key")]
    NoUsableKey,
}

/// Where an issuer's keys stand, for `/readyz` and `tokengate issuers list`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyStatus {
    /// Keys held now.
    pub keys: usize,
    /// When a fetch last succeeded.
    pub fetched_at: Option<Timestamp>,
    /// When the keys are fetched again.
    pub next_fetch: Option<Timestamp>,
    /// What went wrong with the last fetch, if it failed.
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Schedule {
    status: KeyStatus,
    unknown_kid_fetch: Option<Timestamp>,
}

/// The keys of one issuer, read without locks on every verification.
pub struct KeySet {
    keys: ArcSwap<Vec<VerifyingKey>>,
    ready: std::sync::atomic::AtomicBool,
    /// Bumped whenever a fetch brings keys that differ from the ones held.
    generation: std::sync::atomic::AtomicU64,
    schedule: Mutex<Schedule>,
}

impl KeySet {
    /// No keys yet: the issuer is not ready until [`set`](Self::set) is called.
    pub fn empty() -> Self {
        KeySet {
            keys: ArcSwap::from_pointee(Vec::new()),
            ready: std::sync::atomic::AtomicBool::new(false),
            generation: std::sync::atomic::AtomicU64::new(0),
            schedule: Mutex::new(Schedule::default()),
        }
    }

    /// Ready at once with fixed keys (an HS256 secret).
    pub fn fixed(keys: Vec<VerifyingKey>) -> Self {
        let set = KeySet::empty();
        set.keys.store(Arc::new(keys));
        set.ready.store(true, std::sync::atomic::Ordering::Release);
        set
    }

    /// The keys held now.
    pub fn keys(&self) -> arc_swap::Guard<Arc<Vec<VerifyingKey>>> {
        self.keys.load()
    }

    /// Whether a set was ever fetched (or the keys are fixed).
    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Where the keys stand.
    pub fn status(&self) -> KeyStatus {
        let mut status = self.lock().status.clone();
        status.keys = self.keys.load().len();
        status
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Which keys are held: bumped whenever [`set`](Self::set) brings different ones.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Take a fetched set, fetched at `now`, valid for `max_age`. Returns whether the keys
    /// differ from the ones held (the [`generation`](Self::generation) was bumped).
    pub fn set(&self, keys: Vec<VerifyingKey>, max_age: Duration, now: Timestamp) -> bool {
        let fingerprint = |keys: &[VerifyingKey]| -> Vec<(Algorithm, Option<Jwk>)> {
            keys.iter().map(|key| (key.alg(), key.to_jwk())).collect()
        };
        let changed = fingerprint(&self.keys.load()) != fingerprint(&keys);
        self.keys.store(Arc::new(keys));
        if changed {
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        self.ready.store(true, std::sync::atomic::Ordering::Release);
        let mut schedule = self.lock();
        schedule.status.fetched_at = Some(now);
        schedule.status.next_fetch = Some(now.plus(max_age.clamp(MIN_REFRESH, MAX_REFRESH)));
        schedule.status.last_error = None;
        changed
    }

    /// Note a failed fetch at `now`: the keys held stay in use.
    pub fn failed(&self, error: &FetchError, now: Timestamp) {
        let mut schedule = self.lock();
        schedule.status.last_error = Some(error.to_string());
        schedule.status.next_fetch = Some(now.plus(RETRY_AFTER_FAILURE));
    }

    /// Whether the scheduled fetch is due at `now` (never for fixed keys).
    pub fn due(&self, now: Timestamp) -> bool {
        let schedule = self.lock();
        match schedule.status.next_fetch {
            Some(next) => now >= next,
            None => !self.is_ready(),
        }
    }

    /// Whether a token naming an unknown `kid` at `now` may trigger a fetch: at most once
    /// per [`UNKNOWN_KID_INTERVAL`]. Claims the slot when it answers yes.
    pub fn claim_unknown_kid_fetch(&self, now: Timestamp) -> bool {
        let mut schedule = self.lock();
        match schedule.unknown_kid_fetch {
            Some(last) if now < last.plus(UNKNOWN_KID_INTERVAL) => false,
            _ => {
                schedule.unknown_kid_fetch = Some(now);
                true
            }
        }
    }
}

/// Fetches key sets over HTTP(S): no redirects, bounded time and size.
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
}

impl Fetcher {
    /// A fetcher with the bounds of this module.
    pub fn new() -> Result<Self, FetchError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .user_agent(concat!("tokengate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError::Http(format!("cannot build the HTTP client: {e}")))?;
        Ok(Fetcher { client })
    }

    /// The `jwks_uri` of a discovery document, which must name `issuer` (OpenID Connect
    /// Discovery 1.0 §4.3).
    pub async fn discover(&self, url: &str, issuer: &str) -> Result<String, FetchError> {
        #[derive(Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let (body, _) = self.get(url).await?;
        let doc: Discovery = serde_json::from_slice(&body)
            .map_err(|e| FetchError::Malformed(format!("discovery document: {e}")))?;
        if doc.issuer != issuer {
            return Err(FetchError::Malformed(
                "discovery document names another issuer".into(),
            ));
        }
        let parsed = reqwest::Url::parse(&doc.jwks_uri)
            .map_err(|_| FetchError::Malformed("discovery `jwks_uri` is not a URL".into()))?;
        if parsed.scheme() != "https"
            && !(parsed.scheme() == "http" && crate::config::is_loopback(&parsed))
        {
            return Err(FetchError::Malformed(
                "discovery `jwks_uri` is not HTTPS".into(),
            ));
        }
        Ok(doc.jwks_uri)
    }

    /// The keys of the JWK Set at `url` usable for `allowed`, and how long they may be
    /// kept (`Cache-Control: max-age`, else [`MIN_REFRESH`]).
    pub async fn jwks(
        &self,
        url: &str,
        allowed: &[Algorithm],
    ) -> Result<(Vec<VerifyingKey>, Duration), FetchError> {
        let (body, max_age) = self.get(url).await?;
        Ok((parse_jwks(&body, allowed)?, max_age.unwrap_or(MIN_REFRESH)))
    }

    async fn get(&self, url: &str) -> Result<(Vec<u8>, Option<Duration>), FetchError> {
        let mut response = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| FetchError::Http(describe(&e)))?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(FetchError::Http(format!(
                "{url} answered {}",
                response.status()
            )));
        }
        if response
            .content_length()
            .is_some_and(|len| len > MAX_DOCUMENT_BYTES as u64)
        {
            return Err(FetchError::TooLarge);
        }
        let max_age = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| FetchError::Http(describe(&e)))?
        {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, max_age))
    }
}

/// A reqwest error in words, without the URL's query (which may hold a secret).
fn describe(error: &reqwest::Error) -> String {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else if error.is_redirect() {
        "redirects are not followed"
    } else {
        "request failed"
    };
    match error.url() {
        Some(url) => format!(
            "{}{}: {what}",
            url.origin().ascii_serialization(),
            url.path()
        ),
        None => what.to_owned(),
    }
}

/// The `max-age` of a `Cache-Control` value; `no-store`/`no-cache` count as 0.
fn max_age(value: &str) -> Option<Duration> {
    let mut age = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(secs) = lower.strip_prefix("max-age=") {
            age = secs.trim_matches('"').parse().ok().map(Duration::from_secs);
        }
    }
    age
}

/// The usable keys of a JWK Set document: `use: enc` keys and key types tokengate does
/// not verify with are skipped; a key that is broken is skipped with a warning.
pub fn parse_jwks(body: &[u8], allowed: &[Algorithm]) -> Result<Vec<VerifyingKey>, FetchError> {
    #[derive(Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set =
        serde_json::from_slice(body).map_err(|e| FetchError::Malformed(format!("JWK Set: {e}")))?;
    if set.keys.len() > MAX_KEYS {
        return Err(FetchError::TooManyKeys);
    }
    let mut keys = Vec::new();
    for raw in set.keys {
        let jwk: Jwk = match serde_json::from_value(raw) {
            Ok(jwk) => jwk,
            Err(e) => {
                tracing::debug!(error = %e, "skipping a JWK that does not parse");
                continue;
            }
        };
        match VerifyingKey::from_provider_jwk(&jwk, allowed) {
            Ok(found) => keys.extend(found),
            Err(e) => tracing::debug!(kid = %jwk.kid, error = %e, "skipping a JWK"),
        }
    }
    if keys.is_empty() {
        return Err(FetchError::NoUsableKey);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            max_age("public, max-age=3600"),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            max_age("max-age=\"60\", must-revalidate"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
    }

    #[test]
    fn the_schedule_is_bounded_and_unknown_kids_are_rate_limited() {
        let set = KeySet::empty();
        let t0 = Timestamp::from_secs(1_000_000);
        assert!(!set.is_ready());
        assert!(set.due(t0));
        set.set(Vec::new(), Duration::from_secs(1), t0);
        assert!(set.is_ready());
        assert!(!set.due(t0.plus(MIN_REFRESH - Duration::from_secs(1))));
        assert!(set.due(t0.plus(MIN_REFRESH)));
        set.set(Vec::new(), Duration::from_secs(365 * 86_400), t0);
        assert!(!set.due(t0.plus(MAX_REFRESH - Duration::from_secs(1))));
        assert!(set.due(t0.plus(MAX_REFRESH)));
        set.failed(&FetchError::TooLarge, t0);
        assert!(set.due(t0.plus(RETRY_AFTER_FAILURE)));
        assert_eq!(
            set.status().last_error.as_deref(),
            Some(FetchError::TooLarge.to_string().as_str())
        );

        assert!(set.claim_unknown_kid_fetch(t0));
        assert!(!set.claim_unknown_kid_fetch(t0.plus(Duration::from_secs(29))));
        assert!(set.claim_unknown_kid_fetch(t0.plus(UNKNOWN_KID_INTERVAL)));
    }
}
