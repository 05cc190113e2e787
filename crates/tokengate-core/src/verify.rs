//! [`Verifier`]: checks a compact JWS access token and yields its [`Claims`].
//!
//! The checks run cheapest first and refuse as early as they can: size, shape, base64,
//! the header (forbidden parameters, algorithm, `kid`, pinned algorithm, `typ`), the
//! signature, and only then the payload and its claims. For tokengate's own tokens the
//! only allocations are the [`Claims`] strings; nothing here logs or performs I/O.
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
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use uuid::Uuid;

use crate::claims::{Claims, Role};
use crate::keys::{Algorithm, Jwks, VerifyingKey};
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
    /// `alg` is `none` or not one of `EdDSA`, `ES256`, `RS256`, `HS256`.
    #[error("token algorithm is not supported")]
    UnsupportedAlgorithm,
    /// No `kid`, or a `kid` naming no configured key.
    #[error("unknown signing key")]
    UnknownKey,
    /// `alg` differs from the algorithm pinned to the key named by `kid`.
    #[error("token algorithm does not match its signing key")]
    AlgorithmMismatch,
    /// `typ` is missing or is not `at+jwt` (RFC 9068).
    #[error("token type is not at+jwt")]
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
pub struct Verifier {
    config: VerifierConfig,
    keys: ArcSwap<Vec<VerifyingKey>>,
}

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
    /// If two keys share a `kid`, the first one is used.
    pub fn new(config: VerifierConfig, keys: Vec<VerifyingKey>) -> Self {
        Verifier {
            config,
            keys: ArcSwap::from_pointee(keys),
        }
    }

    /// Replace the accepted keys (rotation). Tokens naming a removed `kid` are refused
    /// from the next verification on.
    pub fn set_keys(&self, keys: Vec<VerifyingKey>) {
        self.keys.store(Arc::new(keys));
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

        let mut header_stack = [0u8; STACK_PART_BYTES];
        let mut header_heap = Vec::new();
        let header_json = decode_part(header_b64, &mut header_stack, &mut header_heap)
            .map_err(|()| VerifyError::Malformed("header is not base64url"))?;
        let header = parse_header(header_json)?;

        let alg =
            Algorithm::from_jose_name(&header.alg.0).ok_or(VerifyError::UnsupportedAlgorithm)?;
        let kid = header.kid.as_ref().ok_or(VerifyError::UnknownKey)?;
        let keys = self.keys.load();
        let key = keys
            .iter()
            .find(|key| key.kid() == kid.0)
            .ok_or(VerifyError::UnknownKey)?;
        // The key decides the algorithm, not the token (RFC 8725 §3.1): this is what
        // stops an HS256 token "signed" with a public key from being accepted.
        if alg != key.alg() {
            return Err(VerifyError::AlgorithmMismatch);
        }
        match &header.typ {
            Some(typ)
                if typ.0.eq_ignore_ascii_case("at+jwt")
                    || typ.0.eq_ignore_ascii_case("application/at+jwt") => {}
            _ => return Err(VerifyError::WrongType),
        }

        let mut signature_buffer = [0u8; SIGNATURE_BUFFER_BYTES];
        let signature = decode_signature(signature_b64, &mut signature_buffer)?;
        let signing_input = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
        if !key.verify_signature(signing_input, signature) {
            return Err(VerifyError::BadSignature);
        }
        // Release the key-set guard early: arc-swap has few fast-path slots per thread.
        drop(keys);

        let mut payload_stack = [0u8; STACK_PART_BYTES];
        let mut payload_heap = Vec::new();
        let payload = decode_part(payload_b64, &mut payload_stack, &mut payload_heap)
            .map_err(|()| VerifyError::Malformed("payload is not base64url"))?;
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
) -> Result<&'b [u8], VerifyError> {
    // Longer than any accepted signature: it cannot verify, whatever it decodes to.
    if base64::decoded_len_estimate(part.len()) > buffer.len() {
        return Err(VerifyError::BadSignature);
    }
    let len = URL_SAFE_NO_PAD
        .decode_slice(part, buffer)
        .map_err(|_| VerifyError::Malformed("signature is not base64url"))?;
    Ok(&buffer[..len])
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
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::sync::OnceLock;

    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::*;
    use crate::keys::tests::{test_key, ALL};
    use crate::keys::SigningKey;

    const ISSUER: &str = "https://auth.test";
    const AUDIENCE: &str = "api";
    const LEEWAY: u64 = 30;
    const NOW: i64 = 1_700_000_000;

    fn now() -> Timestamp {
        Timestamp::from_secs(NOW)
    }

    fn claims() -> Claims {
        Claims {
            iss: ISSUER.into(),
            sub: Uuid::from_u128(1),
            aud: AUDIENCE.into(),
            iat: now(),
            nbf: now(),
            exp: Timestamp::from_secs(NOW + 900),
            jti: Uuid::from_u128(2),
            sid: Uuid::from_u128(3),
            email: "user@example.test".into(),
            role: Role::User,
        }
    }

    fn config() -> VerifierConfig {
        VerifierConfig {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            leeway: Duration::from_secs(LEEWAY),
        }
    }

    /// A verifier that knows every test key, so a refusal is never just "unknown key".
    fn verifier() -> Verifier {
        Verifier::new(
            config(),
            ALL.iter()
                .map(|&alg| test_key(alg).verifying_key())
                .collect(),
        )
    }

    fn ed() -> &'static SigningKey {
        test_key(Algorithm::EdDSA)
    }

    fn header(alg: &str, kid: &str) -> Value {
        json!({ "alg": alg, "typ": "at+jwt", "kid": kid })
    }

    fn payload() -> Value {
        serde_json::to_value(claims()).unwrap()
    }

    /// A token with a valid signature over exactly these header and payload values.
    fn forge(key: &SigningKey, header: &Value, payload: &Value) -> String {
        forge_raw(
            key,
            header.to_string().as_bytes(),
            payload.to_string().as_bytes(),
        )
    }

    fn forge_raw(key: &SigningKey, header: &[u8], payload: &[u8]) -> String {
        key.sign_compact(header, payload).unwrap()
    }

    fn ed_header() -> Value {
        header("EdDSA", ed().kid())
    }

    /// Asserts the refusal and that its text is fit for a quoted RFC 6750 header value.
    fn assert_refused(token: &str, expected: VerifyError) {
        assert_refused_by(&verifier(), token, now(), expected);
    }

    fn assert_refused_by(verifier: &Verifier, token: &str, at: Timestamp, expected: VerifyError) {
        let error = verifier.verify(token, at).unwrap_err();
        assert_fit_for_header(&error);
        assert_eq!(error, expected);
    }

    fn assert_fit_for_header(error: &VerifyError) {
        let text = error.to_string();
        assert!(
            !text.contains('"') && !text.contains('\\') && !text.is_empty(),
            "{text}"
        );
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn parts(token: &str) -> Vec<&str> {
        token.split('.').collect()
    }

    #[test]
    fn a_token_round_trips_with_each_algorithm() {
        let verifier = verifier();
        for alg in ALL {
            let token = test_key(alg).sign(&claims()).unwrap();
            assert_eq!(verifier.verify(&token, now()).unwrap(), claims(), "{alg}");
        }
    }

    #[test]
    fn signed_header_is_exactly_alg_typ_kid() {
        for alg in ALL {
            let key = test_key(alg);
            let token = key.sign(&claims()).unwrap();
            let header = URL_SAFE_NO_PAD.decode(parts(&token)[0]).unwrap();
            assert_eq!(
                String::from_utf8(header).unwrap(),
                format!(r#"{{"alg":"{alg}","typ":"at+jwt","kid":"{}"}}"#, key.kid())
            );
        }
    }

    #[test]
    fn a_key_rebuilt_from_its_jwk_verifies_the_same_token() {
        for alg in [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256] {
            let key = test_key(alg);
            let jwk = key.verifying_key().to_jwk().unwrap();
            let verifier = Verifier::new(config(), vec![VerifyingKey::from_jwk(&jwk).unwrap()]);
            let token = key.sign(&claims()).unwrap();
            assert_eq!(verifier.verify(&token, now()).unwrap(), claims(), "{alg}");
        }
    }

    #[test]
    fn a_key_reloaded_from_pkcs8_signs_tokens_the_old_public_key_accepts() {
        for alg in [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256] {
            let key = test_key(alg);
            let der = key.to_pkcs8_der().unwrap();
            let reloaded = SigningKey::from_pkcs8_der(alg, key.kid().into(), &der).unwrap();
            let token = reloaded.sign(&claims()).unwrap();
            assert_eq!(verifier().verify(&token, now()).unwrap(), claims(), "{alg}");
        }
    }

    #[test]
    fn jwks_holds_public_keys_only_and_omits_hs256() {
        let verifier = verifier();
        let jwks = serde_json::to_value(verifier.jwks()).unwrap();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 3);
        for key in keys {
            for private in ["d", "k", "p", "q", "dp", "dq", "qi", "oth"] {
                assert!(key.get(private).is_none(), "{private} in {key}");
            }
            assert_ne!(key["kty"], "oct");
            assert_ne!(key["alg"], "HS256");
            assert_ne!(key["kid"], test_key(Algorithm::HS256).kid());
        }
    }

    #[test]
    fn a_token_over_8_kib_is_refused_before_parsing() {
        let token = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_refused(&token, VerifyError::TooLarge);
        // At exactly the limit the size is fine and the shape is what fails.
        let token = "a".repeat(MAX_TOKEN_BYTES);
        assert!(matches!(
            verifier().verify(&token, now()),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn a_token_with_two_parts_is_malformed() {
        let token = ed().sign(&claims()).unwrap();
        let two = token.rsplit_once('.').unwrap().0;
        assert!(matches!(
            verifier().verify(two, now()),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn a_token_with_four_parts_is_malformed() {
        let token = format!("{}.AAAA", ed().sign(&claims()).unwrap());
        assert!(matches!(
            verifier().verify(&token, now()),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn a_token_with_an_empty_part_is_malformed() {
        let token = ed().sign(&claims()).unwrap();
        let p = parts(&token);
        for bad in [
            format!(".{}.{}", p[1], p[2]),
            format!("{}..{}", p[0], p[2]),
            format!("{}.{}.", p[0], p[1]),
            String::new(),
            "..".into(),
        ] {
            assert!(
                matches!(
                    verifier().verify(&bad, now()),
                    Err(VerifyError::Malformed(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_header_that_is_not_base64url_is_malformed() {
        let token = ed().sign(&claims()).unwrap();
        let p = parts(&token);
        for header in [
            format!("{}*", p[0]),
            format!("+{}", &p[0][1..]),
            format!("{} ", p[0]),
        ] {
            let bad = format!("{header}.{}.{}", p[1], p[2]);
            assert_refused(&bad, VerifyError::Malformed("header is not base64url"));
        }
    }

    #[test]
    fn a_padded_base64_header_is_malformed() {
        use base64::engine::general_purpose::URL_SAFE;
        // 10 bytes: padded base64 of it ends in "==".
        let header = br#"{"a":"bc"}"#;
        let padded = URL_SAFE.encode(header);
        assert!(padded.ends_with("=="));
        let token = forge_raw(ed(), header, payload().to_string().as_bytes());
        let p = parts(&token);
        let bad = format!("{padded}.{}.{}", p[1], p[2]);
        assert_refused(&bad, VerifyError::Malformed("header is not base64url"));
    }

    #[test]
    fn base64_with_nonzero_trailing_bits_is_malformed() {
        // "e30" is `{}`; "e31" decodes to the same bytes with a stray trailing bit.
        let token = ed().sign(&claims()).unwrap();
        let p = parts(&token);
        let bad = format!("e31.{}.{}", p[1], p[2]);
        assert_refused(&bad, VerifyError::Malformed("header is not base64url"));
    }

    #[test]
    fn a_header_that_is_not_json_is_malformed() {
        let token = forge_raw(ed(), b"not json", payload().to_string().as_bytes());
        assert_refused(&token, VerifyError::Malformed("header is not JSON"));
    }

    #[test]
    fn a_header_that_is_not_an_object_is_malformed() {
        for header in [r#"["EdDSA"]"#, r#""EdDSA""#, "42", "null"] {
            let token = forge_raw(ed(), header.as_bytes(), payload().to_string().as_bytes());
            assert!(
                matches!(
                    verifier().verify(&token, now()),
                    Err(VerifyError::Malformed(_))
                ),
                "{header}"
            );
        }
    }

    #[test]
    fn a_header_with_a_duplicate_alg_is_malformed() {
        let header = format!(
            r#"{{"alg":"EdDSA","alg":"EdDSA","typ":"at+jwt","kid":"{}"}}"#,
            ed().kid()
        );
        let token = forge_raw(ed(), header.as_bytes(), payload().to_string().as_bytes());
        assert!(matches!(
            verifier().verify(&token, now()),
            Err(VerifyError::Malformed(_))
        ));
        // The classic confusion: the second `alg` disagrees with the first.
        let header = format!(
            r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{}","alg":"none"}}"#,
            ed().kid()
        );
        let token = forge_raw(ed(), header.as_bytes(), payload().to_string().as_bytes());
        assert!(matches!(
            verifier().verify(&token, now()),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn a_header_with_a_duplicate_kid_or_typ_is_malformed() {
        let kid = ed().kid();
        for header in [
            format!(r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{kid}","kid":"{kid}"}}"#),
            format!(r#"{{"alg":"EdDSA","typ":"at+jwt","typ":"at+jwt","kid":"{kid}"}}"#),
        ] {
            let token = forge_raw(ed(), header.as_bytes(), payload().to_string().as_bytes());
            assert!(
                matches!(
                    verifier().verify(&token, now()),
                    Err(VerifyError::Malformed(_))
                ),
                "{header}"
            );
        }
    }

    #[test]
    fn a_payload_with_a_duplicate_claim_is_refused() {
        let body = payload().to_string();
        let duplicated = format!(
            r#"{},"jti":"{}"}}"#,
            body.strip_suffix('}').unwrap(),
            Uuid::from_u128(99)
        );
        let token = forge_raw(
            ed(),
            ed_header().to_string().as_bytes(),
            duplicated.as_bytes(),
        );
        assert_refused(
            &token,
            VerifyError::InvalidClaims("duplicate claim `jti`".into()),
        );
    }

    #[test]
    fn alg_none_is_refused_in_any_case() {
        for none in ["none", "None", "NONE", "nOnE"] {
            let token = forge(ed(), &header(none, ed().kid()), &payload());
            assert_refused(&token, VerifyError::UnsupportedAlgorithm);
            // The classic unsigned form, with an empty signature part.
            let (unsigned, _) = token.rsplit_once('.').unwrap();
            let unsigned = format!("{unsigned}.");
            assert!(matches!(
                verifier().verify(&unsigned, now()),
                Err(VerifyError::Malformed(_))
            ));
        }
    }

    #[test]
    fn an_unknown_algorithm_is_refused() {
        for alg in ["HS512", "RS384", "PS256", "ES256K", "eddsa", "hs256", ""] {
            let token = forge(ed(), &header(alg, ed().kid()), &payload());
            assert_refused(&token, VerifyError::UnsupportedAlgorithm);
        }
    }

    #[test]
    fn a_non_string_alg_or_a_missing_alg_is_malformed() {
        for header in [
            json!({ "alg": 1, "typ": "at+jwt", "kid": ed().kid() }),
            json!({ "alg": null, "typ": "at+jwt", "kid": ed().kid() }),
            json!({ "typ": "at+jwt", "kid": ed().kid() }),
        ] {
            let token = forge(ed(), &header, &payload());
            assert!(
                matches!(
                    verifier().verify(&token, now()),
                    Err(VerifyError::Malformed(_))
                ),
                "{header}"
            );
        }
    }

    #[test]
    fn each_forbidden_header_parameter_is_refused_by_name() {
        let names = ["jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256", "crit"];
        for name in names {
            for value in [
                json!("https://evil.test/keys"),
                json!(["exp"]),
                json!({}),
                Value::Null,
            ] {
                let mut header = ed_header();
                header[name] = value.clone();
                let token = forge(ed(), &header, &payload());
                assert_refused(&token, VerifyError::ForbiddenHeader(name));
                assert_eq!(
                    VerifyError::ForbiddenHeader(name).to_string(),
                    format!("header parameter `{name}` is not allowed")
                );
            }
        }
    }

    #[test]
    fn an_unknown_kid_is_refused() {
        let stranger = SigningKey::generate(Algorithm::EdDSA).unwrap();
        let token = stranger.sign(&claims()).unwrap();
        assert_refused(&token, VerifyError::UnknownKey);
    }

    #[test]
    fn a_missing_or_null_kid_is_refused() {
        let token = forge(
            ed(),
            &json!({ "alg": "EdDSA", "typ": "at+jwt" }),
            &payload(),
        );
        assert_refused(&token, VerifyError::UnknownKey);
        let token = forge(
            ed(),
            &json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": null }),
            &payload(),
        );
        assert_refused(&token, VerifyError::UnknownKey);
    }

    #[test]
    fn a_kid_that_looks_like_a_path_or_url_only_selects_among_known_keys() {
        for kid in [
            "../../etc/passwd",
            "/dev/null",
            "http://evil.test/key",
            "file:///etc/passwd",
            "' OR 1=1 --",
            "",
        ] {
            let token = forge(ed(), &header("EdDSA", kid), &payload());
            assert_refused(&token, VerifyError::UnknownKey);
        }
    }

    #[test]
    fn an_hs256_token_keyed_with_the_eddsa_public_key_is_an_algorithm_mismatch() {
        let public = ed().verifying_key().to_jwk().unwrap();
        let public_bytes = URL_SAFE_NO_PAD.decode(public.x.unwrap()).unwrap();
        let confused = SigningKey::hs256(&public_bytes).unwrap();
        let token = forge(&confused, &header("HS256", ed().kid()), &payload());
        assert_refused(&token, VerifyError::AlgorithmMismatch);
        // Also with the JWK text itself as the secret.
        let jwk_text = serde_json::to_vec(&ed().verifying_key().to_jwk()).unwrap();
        let confused = SigningKey::hs256(&jwk_text).unwrap();
        let token = forge(&confused, &header("HS256", ed().kid()), &payload());
        assert_refused(&token, VerifyError::AlgorithmMismatch);
    }

    #[test]
    fn a_token_claiming_another_asymmetric_algorithm_for_a_key_is_a_mismatch() {
        let token = forge(
            test_key(Algorithm::ES256),
            &header("ES256", test_key(Algorithm::RS256).kid()),
            &payload(),
        );
        assert_refused(&token, VerifyError::AlgorithmMismatch);
    }

    #[test]
    fn a_wrong_or_missing_typ_is_refused() {
        for typ in [
            json!("JWT"),
            json!("jwt"),
            json!("at+jwt "),
            json!(1),
            Value::Null,
        ] {
            let mut header = ed_header();
            header["typ"] = typ.clone();
            let token = forge(ed(), &header, &payload());
            let result = verifier().verify(&token, now());
            assert!(
                matches!(
                    result,
                    Err(VerifyError::WrongType | VerifyError::Malformed(_))
                ),
                "{typ}"
            );
        }
        let mut header = ed_header();
        header["typ"] = json!("JWT");
        assert_refused(&forge(ed(), &header, &payload()), VerifyError::WrongType);
        let token = forge(
            ed(),
            &json!({ "alg": "EdDSA", "kid": ed().kid() }),
            &payload(),
        );
        assert_refused(&token, VerifyError::WrongType);
    }

    #[test]
    fn typ_is_accepted_in_either_rfc_9068_form_and_any_case() {
        for typ in [
            "at+jwt",
            "AT+JWT",
            "application/at+jwt",
            "Application/AT+JWT",
        ] {
            let mut header = ed_header();
            header["typ"] = json!(typ);
            let token = forge(ed(), &header, &payload());
            assert_eq!(verifier().verify(&token, now()).unwrap(), claims(), "{typ}");
        }
    }

    #[test]
    fn header_strings_with_json_escapes_are_read_correctly() {
        let header = format!(
            r#"{{"alg":"Ed\u0044SA","typ":"at+jwt","kid":"{}"}}"#,
            ed().kid()
        );
        let token = forge_raw(ed(), header.as_bytes(), payload().to_string().as_bytes());
        assert_eq!(verifier().verify(&token, now()).unwrap(), claims());
        let header = format!(
            r#"{{"alg":"EdDSA","typ":"application\/at+jwt","kid":"{}"}}"#,
            ed().kid()
        );
        let token = forge_raw(ed(), header.as_bytes(), payload().to_string().as_bytes());
        assert_eq!(verifier().verify(&token, now()).unwrap(), claims());
    }

    #[test]
    fn unknown_header_parameters_and_claims_are_ignored() {
        let mut header = ed_header();
        header["cty"] = json!("JWT");
        let mut body = payload();
        body["scope"] = json!("read write");
        body["extra"] = json!({ "nested": [1, 2, 3] });
        let token = forge(ed(), &header, &body);
        assert_eq!(verifier().verify(&token, now()).unwrap(), claims());
    }

    #[test]
    fn an_altered_signature_is_refused() {
        for alg in ALL {
            let token = test_key(alg).sign(&claims()).unwrap();
            let p = parts(&token);
            let mut signature = URL_SAFE_NO_PAD.decode(p[2]).unwrap();
            signature[0] ^= 0x01;
            let bad = format!("{}.{}.{}", p[0], p[1], b64(&signature));
            assert_refused(&bad, VerifyError::BadSignature);
            // A truncated signature, and one taken from another token.
            signature.pop();
            let bad = format!("{}.{}.{}", p[0], p[1], b64(&signature));
            assert_refused(&bad, VerifyError::BadSignature);
        }
    }

    #[test]
    fn a_signature_longer_than_any_key_makes_is_refused() {
        let token = ed().sign(&claims()).unwrap();
        let p = parts(&token);
        let bad = format!("{}.{}.{}", p[0], p[1], b64(&[7u8; 2048]));
        assert_refused(&bad, VerifyError::BadSignature);
    }

    #[test]
    fn a_signature_as_long_as_a_4096_bit_rsa_key_makes_is_decoded_whole() {
        let mut buffer = [0u8; SIGNATURE_BUFFER_BYTES];
        let signature = [0xA5u8; MAX_SIGNATURE_BYTES];
        let decoded = decode_signature(&b64(&signature), &mut buffer).unwrap();
        assert_eq!(decoded, signature);
        let too_long = b64(&[0xA5u8; MAX_SIGNATURE_BYTES + 3]);
        assert_eq!(
            decode_signature(&too_long, &mut buffer),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn an_es256_signature_in_der_form_is_refused() {
        let key = test_key(Algorithm::ES256);
        let token = key.sign(&claims()).unwrap();
        let p = parts(&token);
        let raw = URL_SAFE_NO_PAD.decode(p[2]).unwrap();
        let der = p256::ecdsa::Signature::from_slice(&raw).unwrap().to_der();
        let bad = format!("{}.{}.{}", p[0], p[1], b64(der.as_bytes()));
        assert_refused(&bad, VerifyError::BadSignature);
    }

    #[test]
    fn an_altered_payload_is_refused() {
        for alg in ALL {
            let token = test_key(alg).sign(&claims()).unwrap();
            let p = parts(&token);
            let mut elevated = payload();
            elevated["role"] = json!("admin");
            let bad = format!("{}.{}.{}", p[0], b64(elevated.to_string().as_bytes()), p[2]);
            assert_refused(&bad, VerifyError::BadSignature);
        }
    }

    #[test]
    fn a_signature_from_another_token_is_refused() {
        let a = ed().sign(&claims()).unwrap();
        let mut other = claims();
        other.jti = Uuid::from_u128(42);
        let b = ed().sign(&other).unwrap();
        let (pa, pb) = (parts(&a), parts(&b));
        assert_refused(
            &format!("{}.{}.{}", pa[0], pa[1], pb[2]),
            VerifyError::BadSignature,
        );
    }

    fn without(claim: &str) -> String {
        let mut body = payload();
        body.as_object_mut().unwrap().remove(claim);
        forge(ed(), &ed_header(), &body)
    }

    #[test]
    fn a_token_without_jti_is_refused() {
        assert_refused(
            &without("jti"),
            VerifyError::InvalidClaims("missing claim `jti`".into()),
        );
    }

    #[test]
    fn a_token_without_sid_is_refused() {
        assert_refused(
            &without("sid"),
            VerifyError::InvalidClaims("missing claim `sid`".into()),
        );
    }

    #[test]
    fn a_token_without_exp_is_refused() {
        assert_refused(
            &without("exp"),
            VerifyError::InvalidClaims("missing claim `exp`".into()),
        );
    }

    #[test]
    fn every_claim_is_required() {
        for claim in [
            "iss", "sub", "aud", "iat", "nbf", "exp", "jti", "sid", "email", "role",
        ] {
            assert_refused(
                &without(claim),
                VerifyError::InvalidClaims(format!("missing claim `{claim}`")),
            );
        }
    }

    #[test]
    fn a_claim_of_the_wrong_type_is_named_without_echoing_its_value() {
        let cases = [
            ("exp", json!("soon\" evil=\"x")),
            ("jti", json!("not-a-uuid\\\"")),
            ("role", json!("root\"")),
            ("iss", json!(7)),
            ("nbf", json!(1.5)),
        ];
        for (claim, value) in cases {
            let mut body = payload();
            body[claim] = value;
            let token = forge(ed(), &ed_header(), &body);
            assert_refused(
                &token,
                VerifyError::InvalidClaims(format!("claim `{claim}` is invalid")),
            );
        }
    }

    #[test]
    fn a_payload_that_is_not_utf8_is_malformed() {
        let token = forge_raw(
            ed(),
            ed_header().to_string().as_bytes(),
            b"{\"iss\":\"\xff\xfe\"}",
        );
        assert_refused(&token, VerifyError::Malformed("payload is not UTF-8"));
    }

    #[test]
    fn a_payload_that_is_not_a_json_object_is_malformed() {
        let header = ed_header().to_string();
        let trailing = format!("{}{{}}", payload());
        for body in [
            &b"[1,2]"[..],
            b"\"claims\"",
            b"not json",
            b"",
            trailing.as_bytes(),
        ] {
            let token = forge_raw(ed(), header.as_bytes(), body);
            if body.is_empty() {
                // An empty payload encodes to an empty part.
                assert!(matches!(
                    verifier().verify(&token, now()),
                    Err(VerifyError::Malformed(_))
                ));
                continue;
            }
            let result = verifier().verify(&token, now());
            assert!(
                matches!(result, Err(VerifyError::Malformed(_))),
                "{:?} gave {result:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    fn at(secs_after_exp: i64) -> Timestamp {
        Timestamp::from_secs(claims().exp.as_secs() + secs_after_exp)
    }

    #[test]
    fn a_token_expired_within_the_leeway_is_accepted() {
        let token = ed().sign(&claims()).unwrap();
        assert!(verifier().verify(&token, at(0)).is_ok());
        assert!(verifier().verify(&token, at(LEEWAY as i64)).is_ok());
    }

    #[test]
    fn a_token_expired_beyond_the_leeway_is_refused() {
        let token = ed().sign(&claims()).unwrap();
        assert_refused_by(
            &verifier(),
            &token,
            at(LEEWAY as i64 + 1),
            VerifyError::Expired,
        );
    }

    #[test]
    fn a_token_whose_nbf_is_within_the_leeway_is_accepted() {
        let mut early = claims();
        early.nbf = Timestamp::from_secs(NOW + LEEWAY as i64);
        let token = ed().sign(&early).unwrap();
        assert_eq!(verifier().verify(&token, now()).unwrap(), early);
    }

    #[test]
    fn a_token_whose_nbf_is_beyond_the_leeway_is_not_yet_valid() {
        let mut early = claims();
        early.nbf = Timestamp::from_secs(NOW + LEEWAY as i64 + 1);
        let token = ed().sign(&early).unwrap();
        assert_refused(&token, VerifyError::NotYetValid);
    }

    #[test]
    fn extreme_timestamps_do_not_overflow() {
        let mut forever = claims();
        forever.exp = Timestamp::MAX;
        forever.nbf = Timestamp::MIN;
        let token = ed().sign(&forever).unwrap();
        assert!(verifier().verify(&token, Timestamp::MAX).is_ok());
        let mut never = claims();
        never.exp = Timestamp::MIN;
        let token = ed().sign(&never).unwrap();
        assert_refused(&token, VerifyError::Expired);
    }

    #[test]
    fn a_token_from_another_issuer_is_refused() {
        let mut foreign = claims();
        foreign.iss = "https://other.test".into();
        assert_refused(&ed().sign(&foreign).unwrap(), VerifyError::WrongIssuer);
    }

    #[test]
    fn a_token_for_another_audience_is_refused() {
        let mut foreign = claims();
        foreign.aud = "billing".into();
        assert_refused(&ed().sign(&foreign).unwrap(), VerifyError::WrongAudience);
    }

    #[test]
    fn rotation_accepts_both_keys_while_both_are_present_and_refuses_a_removed_one() {
        let old = SigningKey::generate(Algorithm::EdDSA).unwrap();
        let new = SigningKey::generate(Algorithm::ES256).unwrap();
        let verifier = Verifier::new(config(), vec![old.verifying_key()]);
        let old_token = old.sign(&claims()).unwrap();
        let new_token = new.sign(&claims()).unwrap();
        assert!(verifier.verify(&old_token, now()).is_ok());
        assert_refused_by(&verifier, &new_token, now(), VerifyError::UnknownKey);

        verifier.set_keys(vec![new.verifying_key(), old.verifying_key()]);
        assert!(verifier.verify(&old_token, now()).is_ok());
        assert!(verifier.verify(&new_token, now()).is_ok());
        assert_eq!(verifier.jwks().keys.len(), 2);

        verifier.set_keys(vec![new.verifying_key()]);
        assert_refused_by(&verifier, &old_token, now(), VerifyError::UnknownKey);
        assert!(verifier.verify(&new_token, now()).is_ok());
        let kids: Vec<String> = verifier.keys().iter().map(|k| k.kid().to_owned()).collect();
        assert_eq!(kids, [new.kid()]);
    }

    #[test]
    fn a_verifier_with_no_keys_refuses_everything_as_unknown_key() {
        let verifier = Verifier::new(config(), Vec::new());
        assert_refused_by(
            &verifier,
            &ed().sign(&claims()).unwrap(),
            now(),
            VerifyError::UnknownKey,
        );
        assert_eq!(verifier.jwks(), Jwks::default());
        assert_eq!(verifier.config().issuer, ISSUER);
    }

    #[test]
    fn every_error_description_is_short_fixed_text_fit_for_a_quoted_header() {
        let errors = [
            VerifyError::TooLarge,
            VerifyError::Malformed("expected three dot-separated parts"),
            VerifyError::ForbiddenHeader("x5t#S256"),
            VerifyError::UnsupportedAlgorithm,
            VerifyError::UnknownKey,
            VerifyError::AlgorithmMismatch,
            VerifyError::WrongType,
            VerifyError::BadSignature,
            VerifyError::InvalidClaims("missing claim `jti`".into()),
            VerifyError::Expired,
            VerifyError::NotYetValid,
            VerifyError::WrongIssuer,
            VerifyError::WrongAudience,
        ];
        for error in &errors {
            assert_fit_for_header(error);
            assert!(error.to_string().len() < 80, "{error}");
        }
        assert_eq!(VerifyError::Expired.to_string(), "token is expired");
        assert_eq!(VerifyError::UnknownKey.to_string(), "unknown signing key");
    }

    #[test]
    fn debug_of_a_verifier_shows_no_secret() {
        let verifier = verifier();
        let text = format!("{verifier:?}");
        assert!(text.contains(test_key(Algorithm::HS256).kid()));
        assert!(!text.contains("shared secret"));
    }

    #[test]
    #[ignore = "measurement; prints ns per verify, run with --release"]
    fn verify_latency_per_algorithm() {
        let verifier = verifier();
        for (alg, token) in ALL.iter().zip(valid_tokens()) {
            let rounds = 2_000;
            let start = std::time::Instant::now();
            for _ in 0..rounds {
                std::hint::black_box(verifier.verify(std::hint::black_box(token), now()).unwrap());
            }
            let ns = start.elapsed().as_nanos() / rounds;
            println!("{alg}: {ns} ns per verify");
        }
    }

    /// One valid token per algorithm, signed once.
    fn valid_tokens() -> &'static [String; 4] {
        static TOKENS: OnceLock<[String; 4]> = OnceLock::new();
        TOKENS.get_or_init(|| ALL.map(|alg| test_key(alg).sign(&claims()).unwrap()))
    }

    fn shared_verifier() -> &'static Verifier {
        static VERIFIER: OnceLock<Verifier> = OnceLock::new();
        VERIFIER.get_or_init(verifier)
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_and_never_verify(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let text = String::from_utf8_lossy(&bytes);
            let error = shared_verifier().verify(&text, now()).unwrap_err();
            assert_fit_for_header(&error);
        }

        #[test]
        fn random_three_part_base64_never_verifies(
            header in proptest::collection::vec(any::<u8>(), 1..80),
            body in proptest::collection::vec(any::<u8>(), 1..200),
            signature in proptest::collection::vec(any::<u8>(), 1..300),
        ) {
            let token = format!("{}.{}.{}", b64(&header), b64(&body), b64(&signature));
            let error = shared_verifier().verify(&token, now()).unwrap_err();
            assert_fit_for_header(&error);
        }

        #[test]
        fn a_valid_token_with_one_character_replaced_never_verifies(
            which in 0usize..4,
            position in any::<proptest::sample::Index>(),
            replacement in proptest::char::range(' ', '~'),
        ) {
            let token = &valid_tokens()[which];
            let position = position.index(token.len());
            let original = token.as_bytes()[position] as char;
            prop_assume!(replacement != original);
            let mut altered = token.clone();
            altered.replace_range(position..=position, replacement.encode_utf8(&mut [0; 4]));
            let result = shared_verifier().verify(&altered, now());
            prop_assert!(result.is_err(), "{altered} verified");
            assert_fit_for_header(&result.unwrap_err());
        }

        #[test]
        fn a_valid_token_with_one_character_removed_never_verifies(
            which in 0usize..4,
            position in any::<proptest::sample::Index>(),
        ) {
            let token = &valid_tokens()[which];
            let mut altered = token.clone();
            altered.remove(position.index(token.len()));
            let result = shared_verifier().verify(&altered, now());
            prop_assert!(result.is_err(), "{altered} verified");
            assert_fit_for_header(&result.unwrap_err());
        }
    }
}
