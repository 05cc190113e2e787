//! Signing and verifying keys (EdDSA, ES256, RS256, HS256) and their JWKS form.
//!
//! Every key carries its algorithm: a [`VerifyingKey`] only ever checks signatures of
//! the one algorithm it was made for, which is what lets the [`Verifier`](crate::Verifier)
//! pin the algorithm per `kid` (RFC 8725) instead of trusting the token's `alg`.
//!
//! ```
//! use tokengate_core::{Algorithm, SigningKey, VerifyingKey};
//! let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
//! let public = key.verifying_key();
//! let jwk = public.to_jwk().unwrap();
//! assert_eq!(VerifyingKey::from_jwk(&jwk).unwrap().kid(), key.kid());
//! ```

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use rsa::traits::PublicKeyParts;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::claims::Claims;

/// RSA modulus size for generated keys, and the smallest accepted from PKCS#8 or a JWK
/// (RFC 7518 §3.3).
const RSA_BITS: usize = 2048;

/// Shortest HS256 secret accepted: the output size of SHA-256 (RFC 7518 §3.2).
const MIN_HS256_SECRET: usize = 32;

/// The `typ` written into every access token header (RFC 9068).
pub(crate) const ACCESS_TOKEN_TYP: &str = "at+jwt";

type HmacSha256 = Hmac<Sha256>;

/// A JWS signature algorithm supported by tokengate.
///
/// Serde, [`Display`](fmt::Display) and [`FromStr`] all use exactly the JOSE names
/// (`EdDSA`, `ES256`, `RS256`, `HS256`), case-sensitively.
///
/// ```
/// use tokengate_core::Algorithm;
/// assert_eq!("ES256".parse::<Algorithm>().unwrap(), Algorithm::ES256);
/// assert!("none".parse::<Algorithm>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// Ed25519 (RFC 8037). The default.
    EdDSA,
    /// ECDSA on P-256 with SHA-256; signatures are JOSE `r || s`, 64 bytes.
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048-bit keys.
    RS256,
    /// HMAC-SHA-256 with a shared secret of at least 32 bytes.
    HS256,
}

impl Algorithm {
    /// The JOSE name of the algorithm, as in a token's `alg` header.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::EdDSA => "EdDSA",
            Algorithm::ES256 => "ES256",
            Algorithm::RS256 => "RS256",
            Algorithm::HS256 => "HS256",
        }
    }

    /// The algorithm with exactly this JOSE name; anything else, `none` included, is `None`.
    pub(crate) fn from_jose_name(name: &str) -> Option<Self> {
        match name {
            "EdDSA" => Some(Algorithm::EdDSA),
            "ES256" => Some(Algorithm::ES256),
            "RS256" => Some(Algorithm::RS256),
            "HS256" => Some(Algorithm::HS256),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::from_jose_name(s).ok_or_else(|| KeyError::UnknownAlgorithm(s.to_owned()))
    }
}

/// Why a key could not be made, loaded, exported or used to sign.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// An HS256 secret shorter than 32 bytes.
    #[error("an HS256 secret must be at least 32 bytes")]
    WeakSecret,
    /// Key material that does not decode, or decodes to an unacceptable key.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The name is not one of `EdDSA`, `ES256`, `RS256`, `HS256`.
    #[error("unknown signing algorithm {0:?}; expected EdDSA, ES256, RS256 or HS256")]
    UnknownAlgorithm(String),
    /// The operation does not exist for this algorithm (e.g. PKCS#8 export of an HS256 secret).
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// The signature could not be computed.
    #[error("signing failed: {0}")]
    Signing(String),
}

/// The private half of a key, for minting tokens.
///
/// Its [`Debug`](fmt::Debug) output shows only the algorithm and `kid`, never key material.
pub struct SigningKey {
    kid: String,
    inner: SigningInner,
}

enum SigningInner {
    Ed(ed25519_dalek::SigningKey),
    Es(p256::ecdsa::SigningKey),
    // Boxed: an RSA key is several times larger than the other variants.
    Rs(Box<rsa::pkcs1v15::SigningKey<Sha256>>),
    // The keyed HMAC state (inner and outer pads already absorbed), cloned per signature
    // so the secret is not re-hashed each time.
    Hs(HmacSha256),
}

impl SigningKey {
    /// A fresh random key for `alg`, with a random `kid` (16 random bytes, base64url).
    ///
    /// HS256 secrets are shared between nodes and come from configuration, so they
    /// cannot be generated here: use [`SigningKey::hs256`].
    pub fn generate(alg: Algorithm) -> Result<Self, KeyError> {
        let inner = match alg {
            Algorithm::EdDSA => SigningInner::Ed(ed25519_dalek::SigningKey::generate(&mut OsRng)),
            Algorithm::ES256 => SigningInner::Es(p256::ecdsa::SigningKey::random(&mut OsRng)),
            Algorithm::RS256 => {
                let key = rsa::RsaPrivateKey::new(&mut OsRng, RSA_BITS)
                    .map_err(|e| KeyError::InvalidKey(e.to_string()))?;
                SigningInner::Rs(Box::new(rsa::pkcs1v15::SigningKey::new(key)))
            }
            Algorithm::HS256 => {
                return Err(KeyError::Unsupported(
                    "HS256 keys are shared secrets; use SigningKey::hs256",
                ))
            }
        };
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        Ok(SigningKey {
            kid: URL_SAFE_NO_PAD.encode(id),
            inner,
        })
    }

    /// An HS256 key from a shared secret of at least 32 bytes.
    ///
    /// The `kid` is `hs-` followed by the base64url of the first 9 bytes of the
    /// secret's SHA-256, so every node configured with the same secret agrees on it.
    /// It reveals nothing a token's own HMAC does not already allow to test offline.
    pub fn hs256(secret: &[u8]) -> Result<Self, KeyError> {
        let mac = hs256_mac(secret)?;
        Ok(SigningKey {
            kid: hs256_kid(secret),
            inner: SigningInner::Hs(mac),
        })
    }

    /// An asymmetric key from its PKCS#8 DER encoding, as written by
    /// [`SigningKey::to_pkcs8_der`]. The `kid` is stored alongside the key by the caller.
    pub fn from_pkcs8_der(alg: Algorithm, kid: String, der: &[u8]) -> Result<Self, KeyError> {
        if kid.is_empty() {
            return Err(KeyError::InvalidKey("the kid is empty".into()));
        }
        let invalid = |e: &dyn fmt::Display| KeyError::InvalidKey(format!("{alg} PKCS#8: {e}"));
        let inner = match alg {
            Algorithm::EdDSA => {
                use ed25519_dalek::pkcs8::DecodePrivateKey;
                SigningInner::Ed(
                    ed25519_dalek::SigningKey::from_pkcs8_der(der).map_err(|e| invalid(&e))?,
                )
            }
            Algorithm::ES256 => {
                use p256::pkcs8::DecodePrivateKey;
                SigningInner::Es(
                    p256::ecdsa::SigningKey::from_pkcs8_der(der).map_err(|e| invalid(&e))?,
                )
            }
            Algorithm::RS256 => {
                use rsa::pkcs8::DecodePrivateKey;
                let key = rsa::RsaPrivateKey::from_pkcs8_der(der).map_err(|e| invalid(&e))?;
                key.validate().map_err(|e| invalid(&e))?;
                check_rsa_size(key.n())?;
                SigningInner::Rs(Box::new(rsa::pkcs1v15::SigningKey::new(key)))
            }
            Algorithm::HS256 => {
                return Err(KeyError::Unsupported(
                    "HS256 secrets have no PKCS#8 form; use SigningKey::hs256",
                ))
            }
        };
        Ok(SigningKey { kid, inner })
    }

    /// The PKCS#8 DER encoding of an asymmetric private key, for storing on disk.
    /// HS256 secrets come from configuration and are never exported.
    pub fn to_pkcs8_der(&self) -> Result<Vec<u8>, KeyError> {
        let failed = |e: &dyn fmt::Display| KeyError::InvalidKey(format!("PKCS#8 encoding: {e}"));
        let doc = match &self.inner {
            SigningInner::Ed(key) => {
                use ed25519_dalek::pkcs8::EncodePrivateKey;
                key.to_pkcs8_der().map_err(|e| failed(&e))?
            }
            SigningInner::Es(key) => {
                use p256::pkcs8::EncodePrivateKey;
                p256::SecretKey::from(*key.as_nonzero_scalar())
                    .to_pkcs8_der()
                    .map_err(|e| failed(&e))?
            }
            SigningInner::Rs(key) => {
                use rsa::pkcs8::EncodePrivateKey;
                key.to_pkcs8_der().map_err(|e| failed(&e))?
            }
            SigningInner::Hs(_) => {
                return Err(KeyError::Unsupported(
                    "HS256 secrets are never exported as PKCS#8",
                ))
            }
        };
        Ok(doc.as_bytes().to_vec())
    }

    /// The key id written into the `kid` header of every token this key signs.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm this key signs with.
    pub fn alg(&self) -> Algorithm {
        match self.inner {
            SigningInner::Ed(_) => Algorithm::EdDSA,
            SigningInner::Es(_) => Algorithm::ES256,
            SigningInner::Rs(_) => Algorithm::RS256,
            SigningInner::Hs(_) => Algorithm::HS256,
        }
    }

    /// The key that checks this key's signatures, with the same `kid`.
    /// For HS256 it holds the shared secret and therefore has no JWK form.
    pub fn verifying_key(&self) -> VerifyingKey {
        let inner = match &self.inner {
            SigningInner::Ed(key) => VerifyingInner::Ed(key.verifying_key()),
            SigningInner::Es(key) => VerifyingInner::Es(*key.verifying_key()),
            SigningInner::Rs(key) => VerifyingInner::Rs(Box::new(
                rsa::pkcs1v15::VerifyingKey::new(key.as_ref().as_ref().to_public_key()),
            )),
            SigningInner::Hs(mac) => VerifyingInner::Hs(mac.clone()),
        };
        VerifyingKey {
            kid: self.kid.clone(),
            inner,
        }
    }

    /// Mint an access token: a compact JWS whose header is exactly
    /// `{"alg":…,"typ":"at+jwt","kid":…}` and whose payload is `claims`.
    ///
    /// ```
    /// use tokengate_core::{Algorithm, SigningKey};
    /// # use tokengate_core::{Claims, Role, Timestamp};
    /// # let claims = Claims {
    /// #     iss: "https://auth.example".into(), sub: uuid::Uuid::new_v4(), aud: "api".into(),
    /// #     iat: Timestamp::from_secs(0), nbf: Timestamp::from_secs(0),
    /// #     exp: Timestamp::from_secs(900), jti: uuid::Uuid::new_v4(),
    /// #     sid: uuid::Uuid::new_v4(), email: "a@example.com".into(), role: Role::User,
    /// # };
    /// let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
    /// let token = key.sign(&claims).unwrap();
    /// assert_eq!(token.split('.').count(), 3);
    /// ```
    pub fn sign(&self, claims: &Claims) -> Result<String, KeyError> {
        // Field order fixed by the struct: alg, typ, kid.
        #[derive(Serialize)]
        struct Header<'a> {
            alg: &'static str,
            typ: &'static str,
            kid: &'a str,
        }
        let header = serde_json::to_vec(&Header {
            alg: self.alg().as_str(),
            typ: ACCESS_TOKEN_TYP,
            kid: &self.kid,
        })
        .map_err(|e| KeyError::Signing(e.to_string()))?;
        let payload = serde_json::to_vec(claims).map_err(|e| KeyError::Signing(e.to_string()))?;
        self.sign_compact(&header, &payload)
    }

    /// Sign arbitrary header and payload bytes exactly as given and return the compact
    /// JWS `b64(header).b64(payload).b64(signature)`.
    ///
    /// Nothing is checked: this exists so tests can forge tokens with hostile headers
    /// or payloads that still carry a valid signature. Use [`SigningKey::sign`] to mint.
    pub fn sign_compact(
        &self,
        header_json: &[u8],
        payload_json: &[u8],
    ) -> Result<String, KeyError> {
        let b64_len = |n: usize| (n * 4).div_ceil(3);
        let mut token = String::with_capacity(
            b64_len(header_json.len()) + b64_len(payload_json.len()) + b64_len(512) + 2,
        );
        URL_SAFE_NO_PAD.encode_string(header_json, &mut token);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(payload_json, &mut token);
        let signature = self.sign_bytes(token.as_bytes())?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
        Ok(token)
    }

    fn sign_bytes(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};
        let signing = |e: &dyn fmt::Display| KeyError::Signing(e.to_string());
        Ok(match &self.inner {
            SigningInner::Ed(key) => key.try_sign(message).map_err(|e| signing(&e))?.to_vec(),
            SigningInner::Es(key) => {
                // `to_bytes` is the fixed-size `r || s` form JOSE requires (RFC 7518 §3.4).
                let sig: p256::ecdsa::Signature = key.try_sign(message).map_err(|e| signing(&e))?;
                sig.to_bytes().to_vec()
            }
            SigningInner::Rs(key) => {
                // The randomized path blinds the private-key operation against timing attacks.
                key.try_sign_with_rng(&mut OsRng, message)
                    .map_err(|e| signing(&e))?
                    .to_vec()
            }
            SigningInner::Hs(mac) => mac
                .clone()
                .chain_update(message)
                .finalize()
                .into_bytes()
                .to_vec(),
        })
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg())
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// A key that checks signatures of one algorithm, selected by its `kid`.
///
/// For HS256 it holds the shared secret: its [`Debug`](fmt::Debug) output shows only the
/// algorithm and `kid`, and [`VerifyingKey::to_jwk`] refuses to publish it.
#[derive(Clone)]
pub struct VerifyingKey {
    kid: String,
    inner: VerifyingInner,
}

#[derive(Clone)]
enum VerifyingInner {
    Ed(ed25519_dalek::VerifyingKey),
    Es(p256::ecdsa::VerifyingKey),
    Rs(Box<rsa::pkcs1v15::VerifyingKey<Sha256>>),
    Hs(HmacSha256),
}

impl VerifyingKey {
    /// The key id tokens name in their `kid` header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The one algorithm this key accepts.
    pub fn alg(&self) -> Algorithm {
        match self.inner {
            VerifyingInner::Ed(_) => Algorithm::EdDSA,
            VerifyingInner::Es(_) => Algorithm::ES256,
            VerifyingInner::Rs(_) => Algorithm::RS256,
            VerifyingInner::Hs(_) => Algorithm::HS256,
        }
    }

    /// The public JWK of this key, or `None` for HS256: a JWKS never contains
    /// symmetric or private material.
    pub fn to_jwk(&self) -> Option<Jwk> {
        let jwk = |kty: &str, crv: Option<&str>| Jwk {
            kty: kty.to_owned(),
            kid: self.kid.clone(),
            alg: self.alg().as_str().to_owned(),
            use_: "sig".to_owned(),
            crv: crv.map(str::to_owned),
            x: None,
            y: None,
            n: None,
            e: None,
        };
        match &self.inner {
            VerifyingInner::Ed(key) => Some(Jwk {
                x: Some(URL_SAFE_NO_PAD.encode(key.as_bytes())),
                ..jwk("OKP", Some("Ed25519"))
            }),
            VerifyingInner::Es(key) => {
                let point = key.to_encoded_point(false);
                Some(Jwk {
                    x: point.x().map(|x| URL_SAFE_NO_PAD.encode(x)),
                    y: point.y().map(|y| URL_SAFE_NO_PAD.encode(y)),
                    ..jwk("EC", Some("P-256"))
                })
            }
            VerifyingInner::Rs(key) => {
                let public: &rsa::RsaPublicKey = key.as_ref().as_ref();
                Some(Jwk {
                    n: Some(URL_SAFE_NO_PAD.encode(public.n().to_bytes_be())),
                    e: Some(URL_SAFE_NO_PAD.encode(public.e().to_bytes_be())),
                    ..jwk("RSA", None)
                })
            }
            VerifyingInner::Hs(_) => None,
        }
    }

    /// A verifying key from a public JWK: `OKP`/`Ed25519`, `EC`/`P-256` or `RSA`
    /// (at least 2048 bits).
    ///
    /// Refused: `kty` `oct` (a shared secret does not belong in a JWKS), `use` other than
    /// `sig`, an `alg` that does not match the key type, members that do not belong to the
    /// key type, and keys that do not decode to a valid public key. [`Jwk`] has no private
    /// members at all, so a private JWK can never be carried into a `VerifyingKey`.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, KeyError> {
        let invalid = |why: &str| KeyError::InvalidKey(format!("JWK {:?}: {why}", jwk.kid));
        if jwk.kid.is_empty() {
            return Err(KeyError::InvalidKey("JWK without a kid".into()));
        }
        if jwk.use_ != "sig" {
            return Err(invalid("`use` must be `sig`"));
        }
        if jwk.kty == "oct" {
            return Err(invalid(
                "symmetric (`oct`) keys are never accepted from a JWK",
            ));
        }
        let alg = Algorithm::from_jose_name(&jwk.alg).ok_or_else(|| invalid("unknown `alg`"))?;
        let decode = |name: &str, member: &Option<String>| -> Result<Vec<u8>, KeyError> {
            let text = member
                .as_deref()
                .ok_or_else(|| invalid(&format!("missing `{name}`")))?;
            URL_SAFE_NO_PAD
                .decode(text)
                .map_err(|_| invalid(&format!("`{name}` is not base64url")))
        };
        let unexpected = |members: &[(&str, &Option<String>)]| -> Result<(), KeyError> {
            match members.iter().find(|(_, value)| value.is_some()) {
                Some((name, _)) => Err(invalid(&format!("unexpected member `{name}`"))),
                None => Ok(()),
            }
        };
        let inner = match (alg, jwk.kty.as_str(), jwk.crv.as_deref()) {
            (Algorithm::EdDSA, "OKP", Some("Ed25519")) => {
                unexpected(&[("y", &jwk.y), ("n", &jwk.n), ("e", &jwk.e)])?;
                let x: [u8; 32] = decode("x", &jwk.x)?
                    .try_into()
                    .map_err(|_| invalid("`x` must be 32 bytes"))?;
                let key = ed25519_dalek::VerifyingKey::from_bytes(&x)
                    .map_err(|_| invalid("`x` is not an Ed25519 point"))?;
                // A small-order key would accept forged signatures for many messages.
                if key.is_weak() {
                    return Err(invalid("weak Ed25519 key"));
                }
                VerifyingInner::Ed(key)
            }
            (Algorithm::ES256, "EC", Some("P-256")) => {
                unexpected(&[("n", &jwk.n), ("e", &jwk.e)])?;
                let coordinate = |name: &str, member: &Option<String>| {
                    <[u8; 32]>::try_from(decode(name, member)?)
                        .map(p256::FieldBytes::from)
                        .map_err(|_| invalid(&format!("`{name}` must be 32 bytes")))
                };
                let point = p256::EncodedPoint::from_affine_coordinates(
                    &coordinate("x", &jwk.x)?,
                    &coordinate("y", &jwk.y)?,
                    false,
                );
                VerifyingInner::Es(
                    p256::ecdsa::VerifyingKey::from_encoded_point(&point)
                        .map_err(|_| invalid("not a point on P-256"))?,
                )
            }
            (Algorithm::RS256, "RSA", None) => {
                unexpected(&[("x", &jwk.x), ("y", &jwk.y)])?;
                let n = rsa::BigUint::from_bytes_be(&decode("n", &jwk.n)?);
                let e = rsa::BigUint::from_bytes_be(&decode("e", &jwk.e)?);
                check_rsa_size(&n)?;
                let public = rsa::RsaPublicKey::new(n, e)
                    .map_err(|e| invalid(&format!("bad RSA key: {e}")))?;
                VerifyingInner::Rs(Box::new(rsa::pkcs1v15::VerifyingKey::new(public)))
            }
            _ => return Err(invalid("`kty`, `crv` and `alg` do not match")),
        };
        Ok(VerifyingKey {
            kid: jwk.kid.clone(),
            inner,
        })
    }

    /// Whether `signature` is this key's signature over `message`.
    ///
    /// Ed25519 uses strict verification (no malleable or small-order signatures); the
    /// HS256 tag is compared in constant time.
    pub(crate) fn verify_signature(&self, message: &[u8], signature: &[u8]) -> bool {
        use rsa::signature::Verifier as _;
        match &self.inner {
            VerifyingInner::Ed(key) => match <&[u8; 64]>::try_from(signature) {
                Ok(bytes) => key
                    .verify_strict(message, &ed25519_dalek::Signature::from_bytes(bytes))
                    .is_ok(),
                Err(_) => false,
            },
            VerifyingInner::Es(key) => {
                // `from_slice` accepts only the 64-byte JOSE form, never DER.
                signature.len() == 64
                    && p256::ecdsa::Signature::from_slice(signature)
                        .is_ok_and(|sig| key.verify(message, &sig).is_ok())
            }
            VerifyingInner::Rs(key) => rsa::pkcs1v15::Signature::try_from(signature)
                .is_ok_and(|sig| key.verify(message, &sig).is_ok()),
            // `verify_slice` compares the tags in constant time.
            VerifyingInner::Hs(mac) => mac
                .clone()
                .chain_update(message)
                .verify_slice(signature)
                .is_ok(),
        }
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("alg", &self.alg())
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// A public JSON Web Key (RFC 7517) as served in `/.well-known/jwks.json`.
///
/// It has no private members (`d`, `p`, `q`, `k`…): deserializing a private JWK keeps
/// only its public part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type: `OKP`, `EC` or `RSA`.
    pub kty: String,
    /// Key id, matched against a token's `kid` header.
    pub kid: String,
    /// The one algorithm the key is for.
    pub alg: String,
    /// Public key use; always `sig`.
    #[serde(rename = "use")]
    pub use_: String,
    /// Curve: `Ed25519` (OKP) or `P-256` (EC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// Public point x coordinate (OKP, EC), base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// Public point y coordinate (EC), base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// RSA modulus, base64url big-endian.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA public exponent, base64url big-endian.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
}

/// A JWK Set (RFC 7517 §5): the public keys a verifier accepts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys, current and previous.
    pub keys: Vec<Jwk>,
}

fn hs256_mac(secret: &[u8]) -> Result<HmacSha256, KeyError> {
    if secret.len() < MIN_HS256_SECRET {
        return Err(KeyError::WeakSecret);
    }
    HmacSha256::new_from_slice(secret).map_err(|e| KeyError::InvalidKey(e.to_string()))
}

fn hs256_kid(secret: &[u8]) -> String {
    let digest = Sha256::digest(secret);
    let mut kid = String::with_capacity(15);
    kid.push_str("hs-");
    URL_SAFE_NO_PAD.encode_string(&digest[..9], &mut kid);
    kid
}

fn check_rsa_size(n: &rsa::BigUint) -> Result<(), KeyError> {
    if n.bits() < RSA_BITS {
        return Err(KeyError::InvalidKey(format!(
            "RSA keys must have at least {RSA_BITS} bits"
        )));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
