//! [`Verifier`]: checks a compact JWS access token and yields its [`Claims`].
//!
//! The checks run cheapest first and refuse as early as they can: size, shape, base64,
//! the header (forbidden parameters, algorithm, `kid`, the key pinned to that `kid` and
//! `alg`, `typ`), the signature, and only then the payload and its claims. For
//! tokengate's own tokens the only allocations are the [`Claims`] strings; nothing here
//! logs or performs I/O.
//!
//! The JOSE part (everything up to and including the signature) is [`verify_jws`], which
//! a verifier of other issuers' tokens, whose claims are not tokengate's, reuses.
//!
//! ```
//! use std::time::Duration;
//! use tokengate_core::{Algorithm, SigningKey, Timestamp, Verifier, VerifierConfig};
//! # use tokengate_core::{Claims, Role};
//! let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
//! let config = VerifierConfig {
//!     issuer: "https://auth.example".into(),
//!     audience: "api".into(),
//!     leeway: Duration::from_secs(30),
//! };
//! let verifier = Verifier::new(config, vec![key.verifying_key()]);
//! # let claims = Claims {
//! #     iss: "https://auth.example".into(), sub: uuid::Uuid::new_v4(), aud: "api".into(),
//! #     iat: Timestamp::from_secs(1_000), nbf: Timestamp::from_secs(1_000),
//! #     exp: Timestamp::from_secs(1_900), jti: uuid::Uuid::new_v4(),
//! #     sid: uuid::Uuid::new_v4(), email: "a@example.com".into(), role: Role::User,
//! # };
//! let token = key.sign(&claims).unwrap();
//! assert_eq!(verifier.verify(&token, Timestamp::from_secs(1_200)).unwrap(), claims);
//! assert!(verifier.verify(&token, Timestamp::from_secs(5_000)).is_err());
//! ```

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use uuid::Uuid;

use crate::cache::{CacheLimits, VerifiedCache};
use crate::claims::{Claims, Role};
use crate::keys::{Algorithm, Jwks, VerifyingKey, ACCESS_TOKEN_TYP};
use crate::time::Timestamp;

/// Tokens longer than this many bytes are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Decoded header and payload up to this size are kept on the stack; real tokengate
/// headers are under 100 bytes and payloads under 400.
const STACK_PART_BYTES: usize = 1024;

/// A 4096-bit RSA signature, the largest any accepted key makes.
const MAX_SIGNATURE_BYTES: usize = 512;

/// Room for [`MAX_SIGNATURE_BYTES`] plus the slack base64's length estimate needs
/// (it rounds up to whole 3-byte groups).
const SIGNATURE_BUFFER_BYTES: usize = MAX_SIGNATURE_BYTES + 3;

/// What a [`Verifier`] accepts besides a valid signature.
#[derive(Clone, Debug)]
pub struct VerifierConfig {
    /// The only accepted `iss`.
    pub issuer: String,
    /// The only accepted `aud`.
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
}

/// Why a token was refused.
///
/// The [`Display`](fmt::Display) text is sent to clients as the RFC 6750
/// `error_description`: short and fixed, it never repeats attacker input (at most a
/// claim or header name) and never contains `"` or `\`, so it can sit inside a quoted
/// header value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error("token is too large")]
    TooLarge,
    /// Not a compact JWS, or its parts do not decode; says which part.
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    /// The header carries a parameter that could point verification at attacker keys
    /// (`jku`, `x5u`, `jwk`, `x5c`, `x5t`, `x5t#S256`) or demand extensions (`crit`).
    #[error("header parameter `{0}` is not allowed")]
    ForbiddenHeader(&'static str),
    /// `alg` is `none` or not one of `EdDSA`, `ES256`, `ES384`, `RS256`, `PS256`, `HS256`.
    #[error("token algorithm is not supported")]
    UnsupportedAlgorithm,
    /// No `kid`, or a `kid` naming no configured key.
    #[error("unknown signing key")]
    UnknownKey,
    /// The `kid` names keys, but none of them is pinned to the token's `alg`.
    #[error("token algorithm does not match its signing key")]
    AlgorithmMismatch,
    /// `typ` is missing or is not the expected type: `at+jwt` (RFC 9068) for tokengate's
    /// own tokens, see [`TypCheck`].
    #[error("token type is not accepted")]
    WrongType,
    /// The signature does not verify.
    #[error("token signature is invalid")]
    BadSignature,
    /// A claim is missing, repeated or of the wrong type; the text names the claim.
    #[error("{0}")]
    InvalidClaims(String),
    /// `exp` plus the leeway is in the past.
    #[error("token is expired")]
    Expired,
    /// `nbf` minus the leeway is in the future.
    #[error("token is not valid yet")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("token issuer is not accepted")]
    WrongIssuer,
    /// `aud` is not the configured audience.
    #[error("token audience is not accepted")]
    WrongAudience,
}

/// Checks access tokens against a set of keys that can be swapped at run time.
///
/// Readers never block: the keys live in an [`ArcSwap`], so [`Verifier::set_keys`]
/// (key rotation) publishes a new set while in-flight verifications finish on the old.
///
/// A token verified once is remembered by its exact bytes until it expires
/// ([`VerifiedCache`]), so presenting it again costs a lookup instead of a signature check;
/// [`Verifier::set_keys`] forgets every remembered token.
pub struct Verifier {
    config: VerifierConfig,
    keys: ArcSwap<Vec<VerifyingKey>>,
    cache: VerifiedCache<Claims>,
    /// Bumped by every [`Verifier::set_keys`]: the `key_id` of the cache's entries.
    generation: AtomicU64,
}

/// The verified-token cache of a [`Verifier`] by default: half of
/// [`CacheLimits::DEFAULT`], the other half being gate mode's.
pub const VERIFIER_CACHE_LIMITS: CacheLimits = CacheLimits {
    max_entries: CacheLimits::DEFAULT.max_entries / 2,
    max_bytes: CacheLimits::DEFAULT.max_bytes / 2,
};

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("config", &self.config)
            .field("keys", &**self.keys.load())
            .finish()
    }
}

impl Verifier {
    /// A verifier accepting tokens signed by any of `keys`, each for its own algorithm.
    /// Keys are looked up by (`kid`, `alg`): several keys may share a `kid` if their
    /// algorithms differ; for the same `kid` and algorithm the first one is used.
    pub fn new(config: VerifierConfig, keys: Vec<VerifyingKey>) -> Self {
        Verifier::with_cache(config, keys, VERIFIER_CACHE_LIMITS)
    }

    /// Like [`Verifier::new`], with the verified-token cache bounded by `limits`
    /// (`max_entries: 0` turns it off).
    pub fn with_cache(
        config: VerifierConfig,
        keys: Vec<VerifyingKey>,
        limits: CacheLimits,
    ) -> Self {
        Verifier {
            config,
            keys: ArcSwap::from_pointee(keys),
            cache: VerifiedCache::for_claims(limits),
            generation: AtomicU64::new(0),
        }
    }

    /// Replace the accepted keys (rotation). Tokens naming a removed `kid` are refused
    /// from the next verification on, cached or not: every cached token is forgotten.
    pub fn set_keys(&self, keys: Vec<VerifyingKey>) {
        self.keys.store(Arc::new(keys));
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.cache.retain_keys(|id| id == generation);
    }

    /// The verified-token cache (for its size in metrics and benchmarks).
    pub fn cache(&self) -> &VerifiedCache<Claims> {
        &self.cache
    }

    /// The keys accepted now.
    pub fn keys(&self) -> Arc<Vec<VerifyingKey>> {
        self.keys.load_full()
    }

    /// The public keys accepted now, as served at `/.well-known/jwks.json`.
    /// HS256 keys are left out: they are shared secrets.
    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: self
                .keys
                .load()
                .iter()
                .filter_map(VerifyingKey::to_jwk)
                .collect(),
        }
    }

    /// What this verifier accepts.
    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    /// Check `token` at instant `now` and return its claims.
    ///
    /// This verifies the token only; whether it was revoked is the
    /// [`RevocationIndex`](crate::RevocationIndex)'s question.
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<Claims, VerifyError> {
        if let Some(claims) = self.cache.get(token, now) {
            return Ok(claims);
        }
        let generation = self.generation.load(Ordering::Acquire);
        let claims = self.verify_uncached(token, now)?;
        // Only successes are cached, until the instant the checks above would refuse.
        let until = claims.exp.plus(self.config.leeway);
        if self
            .cache
            .insert(token, claims.clone(), until, generation, now)
            && self.generation.load(Ordering::Acquire) != generation
        {
            // The keys changed while this token was being verified: `set_keys` may have
            // swept before the insert, so sweep the old generation again.
            self.cache.retain_keys(|id| id != generation);
        }
        Ok(claims)
    }

    /// [`Verifier::verify`] without the cache: every check, every time.
    pub fn verify_uncached(&self, token: &str, now: Timestamp) -> Result<Claims, VerifyError> {
        let keys = self.keys.load();
        let mut buffers = JwsBuffers::new();
        let VerifiedJws { payload, .. } =
            verify_jws(token, &keys, TypCheck::AccessToken, &mut buffers)?;
        // Release the key-set guard early: arc-swap has few fast-path slots per thread.
        drop(keys);
        let claims = parse_claims(payload)?;

        if now > claims.exp.plus(self.config.leeway) {
            return Err(VerifyError::Expired);
        }
        if claims.nbf > now.plus(self.config.leeway) {
            return Err(VerifyError::NotYetValid);
        }
        if claims.iss != self.config.issuer {
            return Err(VerifyError::WrongIssuer);
        }
        if claims.aud != self.config.audience {
            return Err(VerifyError::WrongAudience);
        }
        Ok(claims)
    }
}

/// How [`verify_jws`] checks the header's `typ`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TypCheck<'a> {
    /// Required, `at+jwt` or `application/at+jwt` in any case (RFC 9068): tokengate's
    /// own access tokens.
    AccessToken,
    /// Not looked at: most identity providers' tokens say `JWT` or nothing.
    Unchecked,
    /// Required and equal to this media type, compared as RFC 7515 §4.1.9 says: ASCII
    /// case-insensitively, with or without the `application/` prefix.
    Exactly(&'a str),
    /// Optional, and one of these media types (compared as for `Exactly`) when present:
    /// logout tokens (`logout+jwt`) and Security Event Tokens (`secevent+jwt`), whose
    /// specifications recommend `typ` without requiring it.
    IfPresent(&'a [&'a str]),
}

/// Scratch space for [`verify_jws`], on the caller's stack: decoded header and payload
/// up to 1 KiB each stay in it (larger ones go to its vectors, which allocate only then),
/// and the signature always does.
pub struct JwsBuffers {
    header: [u8; STACK_PART_BYTES],
    header_heap: Vec<u8>,
    payload: [u8; STACK_PART_BYTES],
    payload_heap: Vec<u8>,
    signature: [u8; SIGNATURE_BUFFER_BYTES],
}

impl JwsBuffers {
    /// Empty buffers; nothing is allocated.
    pub const fn new() -> Self {
        JwsBuffers {
            header: [0; STACK_PART_BYTES],
            header_heap: Vec::new(),
            payload: [0; STACK_PART_BYTES],
            payload_heap: Vec::new(),
            signature: [0; SIGNATURE_BUFFER_BYTES],
        }
    }
}

impl Default for JwsBuffers {
    fn default() -> Self {
        JwsBuffers::new()
    }
}

impl fmt::Debug for JwsBuffers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwsBuffers").finish_non_exhaustive()
    }
}

/// A compact JWS whose signature [`verify_jws`] checked. Nothing of the payload is
/// checked: its claims are the caller's business.
#[derive(Debug, PartialEq, Eq)]
pub struct VerifiedJws<'k, 'b> {
    /// The algorithm of the key that verified the signature, which is the header's `alg`.
    pub alg: Algorithm,
    /// The `kid` of that key, which is the header's `kid`.
    pub kid: &'k str,
    /// The decoded payload: exactly the bytes that were signed, not parsed.
    pub payload: &'b [u8],
    /// The decoded signature, for revoking a token that has no token id by a digest of
    /// its signature. An ECDSA signature `r || s` also verifies as `r || (n - s)`, so for
    /// ES256 and ES384 `s` is given as `min(s, n - s)`: both forms of one signature give
    /// the same bytes. The other algorithms' signatures have one valid form only
    /// (Ed25519 is verified strictly, RSA signatures are unique, base64url is canonical).
    pub signature: &'b [u8],
}

/// Check the JOSE layer of a compact JWS: everything but the claims.
///
/// In this order, cheapest first: size ([`MAX_TOKEN_BYTES`]), three non-empty parts,
/// canonical base64url header, a JSON object header without duplicate members and
/// without `jku`, `x5u`, `jwk`, `x5c`, `x5t`, `x5t#S256` or `crit`, a supported `alg`
/// (never `none`), a key in `keys` with the header's `kid` (the empty `kid` when the header
/// has none) pinned to that `alg`
/// ([`VerifyError::UnknownKey`] when the `kid` names no key,
/// [`VerifyError::AlgorithmMismatch`] when it names keys of other algorithms only),
/// `typ` as `typ_check` says, the signature (at most 512 bytes), and only then the
/// payload's base64url. The key decides the algorithm, never the token (RFC 8725 §3.1):
/// a key verifies only signatures of the one algorithm it was made for.
///
/// Allocates nothing while header and payload each decode to at most 1 KiB.
///
/// ```
/// use tokengate_core::{Algorithm, SigningKey};
/// use tokengate_core::verify::{verify_jws, JwsBuffers, TypCheck};
/// let key = SigningKey::generate(Algorithm::ES256).unwrap();
/// let header = format!(r#"{{"alg":"ES256","typ":"JWT","kid":"{}"}}"#, key.kid());
/// let token = key.sign_compact(header.as_bytes(), br#"{"sub":"alice"}"#).unwrap();
/// let keys = [key.verifying_key()];
/// let mut buffers = JwsBuffers::new();
/// let jws = verify_jws(&token, &keys, TypCheck::Unchecked, &mut buffers).unwrap();
/// assert_eq!((jws.alg, jws.kid), (Algorithm::ES256, key.kid()));
/// assert_eq!(jws.payload, br#"{"sub":"alice"}"#);
/// assert_eq!(jws.signature.len(), 64);
/// ```
pub fn verify_jws<'k, 'b>(
    token: &str,
    keys: &'k [VerifyingKey],
    typ_check: TypCheck<'_>,
    buffers: &'b mut JwsBuffers,
) -> Result<VerifiedJws<'k, 'b>, VerifyError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(VerifyError::TooLarge);
    }
    const PARTS: VerifyError = VerifyError::Malformed("expected three dot-separated parts");
    let (header_b64, rest) = token.split_once('.').ok_or(PARTS)?;
    let (payload_b64, signature_b64) = rest.split_once('.').ok_or(PARTS)?;
    if header_b64.is_empty()
        || payload_b64.is_empty()
        || signature_b64.is_empty()
        || signature_b64.contains('.')
    {
        return Err(PARTS);
    }

    let header_json = decode_part(header_b64, &mut buffers.header, &mut buffers.header_heap)
        .map_err(|()| VerifyError::Malformed("header is not base64url"))?;
    let header = parse_header(header_json)?;

    let alg = Algorithm::from_jose_name(&header.alg.0).ok_or(VerifyError::UnsupportedAlgorithm)?;
    // A token without `kid` is looked up under the empty `kid`, which only keys made so
    // with `VerifyingKey::with_kid` carry (an app's own HS256 secret in gate mode): a
    // generated, stored or JWK key always has a non-empty `kid`.
    let kid = header.kid.as_ref().map_or("", |kid| &kid.0);
    // The key decides the algorithm, not the token (RFC 8725 §3.1): a key is found only
    // under its own (kid, alg), which is what stops an HS256 token "signed" with a
    // public key from being accepted.
    let mut kid_known = false;
    let key = keys
        .iter()
        .find(|key| {
            let same_kid = key.kid() == kid;
            kid_known |= same_kid;
            same_kid && key.alg() == alg
        })
        .ok_or(if kid_known {
            VerifyError::AlgorithmMismatch
        } else {
            VerifyError::UnknownKey
        })?;
    let typ_ok = match typ_check {
        TypCheck::AccessToken => header
            .typ
            .as_ref()
            .is_some_and(|typ| media_type_is(&typ.0, ACCESS_TOKEN_TYP)),
        TypCheck::Unchecked => true,
        TypCheck::Exactly(expected) => header
            .typ
            .as_ref()
            .is_some_and(|typ| media_type_is(&typ.0, expected)),
        TypCheck::IfPresent(allowed) => header.typ.as_ref().is_none_or(|typ| {
            allowed
                .iter()
                .any(|expected| media_type_is(&typ.0, expected))
        }),
    };
    if !typ_ok {
        return Err(VerifyError::WrongType);
    }

    let signature = decode_signature(signature_b64, &mut buffers.signature)?;
    let signing_input = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
    if !key.verify_signature(signing_input, signature) {
        return Err(VerifyError::BadSignature);
    }
    ecdsa_low_s(alg, signature);
    let signature: &'b [u8] = signature;

    let payload = decode_part(payload_b64, &mut buffers.payload, &mut buffers.payload_heap)
        .map_err(|()| VerifyError::Malformed("payload is not base64url"))?;
    Ok(VerifiedJws {
        alg,
        kid: key.kid(),
        payload,
        signature,
    })
}

/// Whether a JOSE `typ` names the media type `expected` (RFC 7515 §4.1.9): ASCII
/// case-insensitive, the `application/` prefix optional on either side.
fn media_type_is(typ: &str, expected: &str) -> bool {
    fn short(media_type: &str) -> &str {
        const PREFIX: &str = "application/";
        match media_type.get(..PREFIX.len()) {
            Some(prefix) if prefix.eq_ignore_ascii_case(PREFIX) => &media_type[PREFIX.len()..],
            _ => media_type,
        }
    }
    short(typ).eq_ignore_ascii_case(short(expected))
}

/// The order n of P-256's base point, big-endian.
const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// The order n of P-384's base point, big-endian.
const P384_ORDER: [u8; 48] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc7, 0x63, 0x4d, 0x81, 0xf4, 0x37, 0x2d, 0xdf,
    0x58, 0x1a, 0x0d, 0xb2, 0x48, 0xb0, 0xa7, 0x7a, 0xec, 0xec, 0x19, 0x6a, 0xcc, 0xc5, 0x29, 0x73,
];

/// Replace the `s` of a verified ES256 / ES384 signature `r || s` by `min(s, n - s)`.
/// Other algorithms' signatures are left alone.
fn ecdsa_low_s(alg: Algorithm, signature: &mut [u8]) {
    let order: &[u8] = match alg {
        Algorithm::ES256 => &P256_ORDER,
        Algorithm::ES384 => &P384_ORDER,
        _ => return,
    };
    if signature.len() != 2 * order.len() {
        return;
    }
    let s = &mut signature[order.len()..];
    let mut negated = [0u8; 48];
    let negated = &mut negated[..order.len()];
    // n - s, big-endian with borrow; a verified s is in 1..n, so no final borrow.
    let mut borrow = 0u16;
    for ((out, &n), &digit) in negated.iter_mut().zip(order).zip(s.iter()).rev() {
        let difference = 0x100 + u16::from(n) - u16::from(digit) - borrow;
        *out = difference.to_le_bytes()[0];
        borrow = u16::from(difference < 0x100);
    }
    if *negated < *s {
        s.copy_from_slice(negated);
    }
}

/// Decode one base64url part (canonical, unpadded) into `stack` when it fits, else
/// into `heap`.
fn decode_part<'b>(
    part: &str,
    stack: &'b mut [u8; STACK_PART_BYTES],
    heap: &'b mut Vec<u8>,
) -> Result<&'b [u8], ()> {
    if base64::decoded_len_estimate(part.len()) <= STACK_PART_BYTES {
        let len = URL_SAFE_NO_PAD.decode_slice(part, stack).map_err(|_| ())?;
        Ok(&stack[..len])
    } else {
        URL_SAFE_NO_PAD.decode_vec(part, heap).map_err(|_| ())?;
        Ok(heap)
    }
}

/// Decode the signature part into `buffer`.
fn decode_signature<'b>(
    part: &str,
    buffer: &'b mut [u8; SIGNATURE_BUFFER_BYTES],
) -> Result<&'b mut [u8], VerifyError> {
    // Longer than any accepted signature: it cannot verify, whatever it decodes to.
    if base64::decoded_len_estimate(part.len()) > buffer.len() {
        return Err(VerifyError::BadSignature);
    }
    let len = URL_SAFE_NO_PAD
        .decode_slice(part, buffer)
        .map_err(|_| VerifyError::Malformed("signature is not base64url"))?;
    Ok(&mut buffer[..len])
}

/// A JSON string borrowed from the decoded header when it has no escapes, so the
/// common case does not allocate.
struct JsonStr<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for JsonStr<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = JsonStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(StrVisitor)
    }
}

/// The JOSE header. No `#[serde(flatten)]`: it would turn off serde's duplicate-field
/// error, and a header with two `alg` members must be refused, not read either way.
#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: JsonStr<'a>,
    #[serde(borrow, default)]
    kid: Option<JsonStr<'a>>,
    #[serde(borrow, default)]
    typ: Option<JsonStr<'a>>,
    // Forbidden members: `present` makes even `"jku": null` count as present.
    #[serde(default, deserialize_with = "present")]
    jku: Option<IgnoredAny>,
    #[serde(default, deserialize_with = "present")]
    x5u: Option<IgnoredAny>,
    #[serde(default, deserialize_with = "present")]
    jwk: Option<IgnoredAny>,
    #[serde(default, deserialize_with = "present")]
    x5c: Option<IgnoredAny>,
    #[serde(default, deserialize_with = "present")]
    x5t: Option<IgnoredAny>,
    #[serde(rename = "x5t#S256", default, deserialize_with = "present")]
    x5t_s256: Option<IgnoredAny>,
    #[serde(default, deserialize_with = "present")]
    crit: Option<IgnoredAny>,
}

/// Reads a derived struct from a JSON object only: on its own, serde_json also reads a
/// struct from an array (`["EdDSA"]` would be a header).
struct ObjectOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_map(ObjectVisitor(PhantomData))
            .map(ObjectOnly)
    }
}

fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<IgnoredAny>, D::Error> {
    IgnoredAny::deserialize(deserializer).map(Some)
}

fn parse_header(json: &[u8]) -> Result<Header<'_>, VerifyError> {
    let ObjectOnly::<Header<'_>>(header) = serde_json::from_slice(json).map_err(|e| {
        VerifyError::Malformed(if e.is_data() {
            "header is not a JSON object with a string `alg` and no duplicate members"
        } else {
            "header is not JSON"
        })
    })?;
    let forbidden = [
        ("jku", header.jku.is_some()),
        ("x5u", header.x5u.is_some()),
        ("jwk", header.jwk.is_some()),
        ("x5c", header.x5c.is_some()),
        ("x5t", header.x5t.is_some()),
        ("x5t#S256", header.x5t_s256.is_some()),
        ("crit", header.crit.is_some()),
    ];
    if let Some((name, _)) = forbidden.iter().find(|(_, present)| *present) {
        return Err(VerifyError::ForbiddenHeader(name));
    }
    Ok(header)
}

/// What is wrong with which claim, recorded by [`ClaimsVisitor`] because serde's error
/// type can only carry a message, and that message may quote attacker input.
#[derive(Clone, Copy)]
enum ClaimProblem {
    Missing(&'static str),
    Duplicate(&'static str),
    Invalid(&'static str),
}

impl ClaimProblem {
    fn into_error(self) -> VerifyError {
        VerifyError::InvalidClaims(match self {
            ClaimProblem::Missing(name) => format!("missing claim `{name}`"),
            ClaimProblem::Duplicate(name) => format!("duplicate claim `{name}`"),
            ClaimProblem::Invalid(name) => format!("claim `{name}` is invalid"),
        })
    }
}

fn parse_claims(payload: &[u8]) -> Result<Claims, VerifyError> {
    if std::str::from_utf8(payload).is_err() {
        return Err(VerifyError::Malformed("payload is not UTF-8"));
    }
    let problem = Cell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(payload);
    let parsed = ClaimsSeed(&problem)
        .deserialize(&mut deserializer)
        .and_then(|claims| deserializer.end().map(|()| claims));
    parsed.map_err(|e| match problem.get() {
        Some(problem) => problem.into_error(),
        None if e.is_data() => VerifyError::Malformed("payload is not a JSON object"),
        None => VerifyError::Malformed("payload is not JSON"),
    })
}

/// Field names as they appear in the payload; unknown claims are ignored.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum ClaimField {
    Iss,
    Sub,
    Aud,
    Iat,
    Nbf,
    Exp,
    Jti,
    Sid,
    Email,
    Role,
    #[serde(other)]
    Other,
}

struct ClaimsSeed<'p>(&'p Cell<Option<ClaimProblem>>);

impl<'de> DeserializeSeed<'de> for ClaimsSeed<'_> {
    type Value = Claims;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Claims, D::Error> {
        // `deserialize_map`, not `deserialize_struct`: serde_json would also accept a
        // JSON array for a struct.
        deserializer.deserialize_map(ClaimsVisitor(self.0))
    }
}

struct ClaimsVisitor<'p>(&'p Cell<Option<ClaimProblem>>);

impl ClaimsVisitor<'_> {
    /// Read the value of claim `name` into `slot`, recording a duplicate or a bad value.
    fn field<'de, A, T>(
        &self,
        map: &mut A,
        name: &'static str,
        slot: &mut Option<T>,
    ) -> Result<(), A::Error>
    where
        A: MapAccess<'de>,
        T: Deserialize<'de>,
    {
        if slot.is_some() {
            return Err(self.fail(ClaimProblem::Duplicate(name)));
        }
        match map.next_value() {
            Ok(value) => {
                *slot = Some(value);
                Ok(())
            }
            Err(e) => {
                self.0.set(Some(ClaimProblem::Invalid(name)));
                Err(e)
            }
        }
    }

    fn fail<E: de::Error>(&self, problem: ClaimProblem) -> E {
        self.0.set(Some(problem));
        E::custom("invalid claims")
    }
}

fn required<T>(slot: Option<T>, name: &'static str) -> Result<T, ClaimProblem> {
    slot.ok_or(ClaimProblem::Missing(name))
}

impl<'de> Visitor<'de> for ClaimsVisitor<'_> {
    type Value = Claims;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object of claims")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Claims, A::Error> {
        let mut iss: Option<String> = None;
        let mut sub: Option<Uuid> = None;
        let mut aud: Option<String> = None;
        let mut iat: Option<Timestamp> = None;
        let mut nbf: Option<Timestamp> = None;
        let mut exp: Option<Timestamp> = None;
        let mut jti: Option<Uuid> = None;
        let mut sid: Option<Uuid> = None;
        let mut email: Option<String> = None;
        let mut role: Option<Role> = None;
        while let Some(key) = map.next_key::<ClaimField>()? {
            match key {
                ClaimField::Iss => self.field(&mut map, "iss", &mut iss)?,
                ClaimField::Sub => self.field(&mut map, "sub", &mut sub)?,
                ClaimField::Aud => self.field(&mut map, "aud", &mut aud)?,
                ClaimField::Iat => self.field(&mut map, "iat", &mut iat)?,
                ClaimField::Nbf => self.field(&mut map, "nbf", &mut nbf)?,
                ClaimField::Exp => self.field(&mut map, "exp", &mut exp)?,
                ClaimField::Jti => self.field(&mut map, "jti", &mut jti)?,
                ClaimField::Sid => self.field(&mut map, "sid", &mut sid)?,
                ClaimField::Email => self.field(&mut map, "email", &mut email)?,
                ClaimField::Role => self.field(&mut map, "role", &mut role)?,
                ClaimField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let claims = (|| {
            Ok(Claims {
                iss: required(iss, "iss")?,
                sub: required(sub, "sub")?,
                aud: required(aud, "aud")?,
                iat: required(iat, "iat")?,
                nbf: required(nbf, "nbf")?,
                exp: required(exp, "exp")?,
                jti: required(jti, "jti")?,
                sid: required(sid, "sid")?,
                email: required(email, "email")?,
                role: required(role, "role")?,
            })
        })();
        claims.map_err(|problem| self.fail(problem))
    }
}

#[cfg(test)]
mod tests;
