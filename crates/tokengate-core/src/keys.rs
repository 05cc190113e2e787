//! Signing and verifying keys (EdDSA, ES256, ES384, RS256, PS256, HS256) and their JWKS form.
//!
//! Every key carries its algorithm: a [`VerifyingKey`] only ever checks signatures of
//! the one algorithm it was made for, which is what lets the [`Verifier`](crate::Verifier)
//! pin the algorithm per (`kid`, `alg`) (RFC 8725) instead of trusting the token's `alg`.
//!
//! RSA and ECDSA run on AWS-LC (`aws-lc-rs`); Ed25519 on `ed25519-dalek` (strict
//! verification, weak keys refused); HS256 on `hmac`/`sha2`.
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

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    EcdsaKeyPair, EcdsaSigningAlgorithm, EcdsaVerificationAlgorithm, KeyPair as _, ParsedPublicKey,
    RsaEncoding, RsaKeyPair, RsaParameters, RsaPublicKeyComponents,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::claims::Claims;

/// RSA modulus size for generated keys, and the smallest accepted from PKCS#8 or a JWK
/// (RFC 7518 §3.3, §3.5).
const RSA_BITS: usize = 2048;

/// The largest RSA modulus accepted: its signatures (512 bytes) are the longest the
/// [`Verifier`](crate::Verifier) decodes.
const RSA_MAX_BITS: usize = 4096;

/// Shortest HS256 secret accepted: the output size of SHA-256 (RFC 7518 §3.2).
const MIN_HS256_SECRET: usize = 32;

/// The `typ` written into every access token header (RFC 9068).
pub(crate) const ACCESS_TOKEN_TYP: &str = "at+jwt";

type HmacSha256 = Hmac<Sha256>;

/// A JWS signature algorithm supported by tokengate.
///
/// Serde, [`Display`](fmt::Display) and [`FromStr`] all use exactly the JOSE names
/// (`EdDSA`, `ES256`, `ES384`, `RS256`, `PS256`, `HS256`), case-sensitively.
///
/// ```
/// use tokengate_core::Algorithm;
/// assert_eq!("ES256".parse::<Algorithm>().unwrap(), Algorithm::ES256);
/// assert_eq!("PS256".parse::<Algorithm>().unwrap(), Algorithm::PS256);
/// assert!("none".parse::<Algorithm>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// Ed25519 (RFC 8037). The default.
    EdDSA,
    /// ECDSA on P-256 with SHA-256; signatures are JOSE `r || s`, 64 bytes.
    ES256,
    /// ECDSA on P-384 with SHA-384; signatures are JOSE `r || s`, 96 bytes.
    ES384,
    /// RSASSA-PKCS1-v1_5 with SHA-256, keys of 2048 to 4096 bits.
    RS256,
    /// RSASSA-PSS with SHA-256, MGF1 with SHA-256 and a 32-byte salt (RFC 7518 §3.5),
    /// keys of 2048 to 4096 bits.
    PS256,
    /// HMAC-SHA-256 with a shared secret of at least 32 bytes.
    HS256,
}

impl Algorithm {
    /// The JOSE name of the algorithm, as in a token's `alg` header.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::EdDSA => "EdDSA",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::RS256 => "RS256",
            Algorithm::PS256 => "PS256",
            Algorithm::HS256 => "HS256",
        }
    }

    /// The algorithm with exactly this JOSE name; anything else, `none` included, is `None`.
    pub(crate) fn from_jose_name(name: &str) -> Option<Self> {
        match name {
            "EdDSA" => Some(Algorithm::EdDSA),
            "ES256" => Some(Algorithm::ES256),
            "ES384" => Some(Algorithm::ES384),
            "RS256" => Some(Algorithm::RS256),
            "PS256" => Some(Algorithm::PS256),
            "HS256" => Some(Algorithm::HS256),
            _ => None,
        }
    }

    /// The ECDSA curve of ES256 / ES384.
    fn ecdsa(self) -> Option<EcdsaCurve> {
        match self {
            Algorithm::ES256 => Some(EcdsaCurve {
                signing: &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                verifying: &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
                coordinate_bytes: 32,
                crv: "P-256",
            }),
            Algorithm::ES384 => Some(EcdsaCurve {
                signing: &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                verifying: &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED,
                coordinate_bytes: 48,
                crv: "P-384",
            }),
            _ => None,
        }
    }

    /// The RSA padding of RS256 / PS256: (signing encoding, verification parameters).
    fn rsa(self) -> Option<(&'static dyn RsaEncoding, &'static RsaParameters)> {
        match self {
            Algorithm::RS256 => Some((
                &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            )),
            Algorithm::PS256 => Some((
                &aws_lc_rs::signature::RSA_PSS_SHA256,
                &aws_lc_rs::signature::RSA_PSS_2048_8192_SHA256,
            )),
            _ => None,
        }
    }
}

/// One ECDSA curve as JOSE uses it: fixed-size `r || s` signatures only, never DER.
struct EcdsaCurve {
    signing: &'static EcdsaSigningAlgorithm,
    verifying: &'static EcdsaVerificationAlgorithm,
    /// Size of one coordinate, of `r` and of `s`.
    coordinate_bytes: usize,
    crv: &'static str,
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
    /// The name is not one of `EdDSA`, `ES256`, `ES384`, `RS256`, `PS256`, `HS256`.
    #[error(
        "unknown signing algorithm {0:?}; expected EdDSA, ES256, ES384, RS256, PS256 or HS256"
    )]
    UnknownAlgorithm(String),
    /// A JWK whose `use` is `enc`: an encryption key, which a JWKS may legitimately carry
    /// next to the signing keys. Callers loading a provider's JWKS skip it quietly.
    #[error("JWK {0:?} is an encryption key (`use` is `enc`)")]
    NotForSignature(String),
    /// A provider JWK whose `alg` is not in the allowlist, or, without `alg`, a key that
    /// none of the allowed algorithms can use.
    #[error("JWK {kid:?}: {why}")]
    NotAllowed {
        /// The JWK's `kid`.
        kid: String,
        /// Which algorithm was refused, or that none fits.
        why: String,
    },
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
    alg: Algorithm,
    inner: SigningInner,
    /// The public half, made once: building an AWS-LC public key can fail, and
    /// [`SigningKey::verifying_key`] cannot.
    public: VerifyingInner,
}

enum SigningInner {
    Ed(ed25519_dalek::SigningKey),
    /// ES256 or ES384, as `alg` says.
    Ec(EcdsaKeyPair),
    /// RS256 or PS256, as `alg` says.
    Rsa(RsaKeyPair),
    // The keyed HMAC state (inner and outer pads already absorbed), cloned per signature
    // so the secret is not re-hashed each time.
    Hs(HmacSha256),
}

impl SigningKey {
    /// A fresh random key for `alg`, with a random `kid` (16 random bytes, base64url).
    /// RSA keys (RS256, PS256) are 2048 bits.
    ///
    /// HS256 secrets are shared between nodes and come from configuration, so they
    /// cannot be generated here: use [`SigningKey::hs256`].
    pub fn generate(alg: Algorithm) -> Result<Self, KeyError> {
        let failed = |_| KeyError::InvalidKey(format!("{alg} key generation failed"));
        let inner = match alg {
            Algorithm::EdDSA => SigningInner::Ed(ed25519_dalek::SigningKey::generate(&mut OsRng)),
            Algorithm::ES256 | Algorithm::ES384 => {
                let curve = ecdsa_curve(alg)?;
                SigningInner::Ec(EcdsaKeyPair::generate(curve.signing).map_err(failed)?)
            }
            Algorithm::RS256 | Algorithm::PS256 => {
                SigningInner::Rsa(RsaKeyPair::generate(KeySize::Rsa2048).map_err(failed)?)
            }
            Algorithm::HS256 => {
                return Err(KeyError::Unsupported(
                    "HS256 keys are shared secrets; use SigningKey::hs256",
                ))
            }
        };
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        SigningKey::new(URL_SAFE_NO_PAD.encode(id), alg, inner)
    }

    fn new(kid: String, alg: Algorithm, inner: SigningInner) -> Result<Self, KeyError> {
        let public = match &inner {
            SigningInner::Ed(key) => VerifyingInner::Ed(key.verifying_key()),
            SigningInner::Ec(key) => VerifyingInner::Ec(ec_public(alg, key.public_key().as_ref())?),
            SigningInner::Rsa(key) => {
                let public = key.public_key();
                rsa_public(
                    alg,
                    public.modulus().big_endian_without_leading_zero(),
                    public.exponent().big_endian_without_leading_zero(),
                )?
            }
            SigningInner::Hs(mac) => VerifyingInner::Hs(mac.clone()),
        };
        Ok(SigningKey {
            kid,
            alg,
            inner,
            public,
        })
    }

    /// An HS256 key from a shared secret of at least 32 bytes.
    ///
    /// The `kid` is `hs-` followed by the base64url of the first 9 bytes of the
    /// secret's SHA-256, so every node configured with the same secret agrees on it.
    /// It reveals nothing a token's own HMAC does not already allow to test offline.
    pub fn hs256(secret: &[u8]) -> Result<Self, KeyError> {
        let mac = hs256_mac(secret)?;
        SigningKey::new(hs256_kid(secret), Algorithm::HS256, SigningInner::Hs(mac))
    }

    /// An asymmetric key from its PKCS#8 DER encoding, as written by
    /// [`SigningKey::to_pkcs8_der`]. The `kid` is stored alongside the key by the caller.
    /// RSA keys must have 2048 to 4096 bits and pass AWS-LC's consistency check.
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
            Algorithm::ES256 | Algorithm::ES384 => {
                let curve = ecdsa_curve(alg)?;
                SigningInner::Ec(
                    EcdsaKeyPair::from_pkcs8(curve.signing, der).map_err(|e| invalid(&e))?,
                )
            }
            Algorithm::RS256 | Algorithm::PS256 => {
                // Checks the key's consistency and refuses moduli under 2048 bits.
                let key = RsaKeyPair::from_pkcs8(der).map_err(|e| invalid(&e))?;
                check_rsa_size(key.public_key().modulus().big_endian_without_leading_zero())?;
                SigningInner::Rsa(key)
            }
            Algorithm::HS256 => {
                return Err(KeyError::Unsupported(
                    "HS256 secrets have no PKCS#8 form; use SigningKey::hs256",
                ))
            }
        };
        SigningKey::new(kid, alg, inner)
    }

    /// The PKCS#8 DER encoding of an asymmetric private key, for storing on disk.
    /// HS256 secrets come from configuration and are never exported.
    pub fn to_pkcs8_der(&self) -> Result<Vec<u8>, KeyError> {
        let failed = |e: &dyn fmt::Display| KeyError::InvalidKey(format!("PKCS#8 encoding: {e}"));
        Ok(match &self.inner {
            SigningInner::Ed(key) => {
                use ed25519_dalek::pkcs8::EncodePrivateKey;
                key.to_pkcs8_der()
                    .map_err(|e| failed(&e))?
                    .as_bytes()
                    .to_vec()
            }
            SigningInner::Ec(key) => key.to_pkcs8v1().map_err(|e| failed(&e))?.as_ref().to_vec(),
            SigningInner::Rsa(key) => AsDer::<Pkcs8V1Der<'static>>::as_der(key)
                .map_err(|e| failed(&e))?
                .as_ref()
                .to_vec(),
            SigningInner::Hs(_) => {
                return Err(KeyError::Unsupported(
                    "HS256 secrets are never exported as PKCS#8",
                ))
            }
        })
    }

    /// The key id written into the `kid` header of every token this key signs.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm this key signs with.
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// The key that checks this key's signatures, with the same `kid`.
    /// For HS256 it holds the shared secret and therefore has no JWK form.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey {
            kid: self.kid.clone(),
            alg: self.alg,
            inner: self.public.clone(),
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
        use ed25519_dalek::Signer as _;
        let failed = || KeyError::Signing(format!("{} signature failed", self.alg));
        Ok(match &self.inner {
            SigningInner::Ed(key) => key.try_sign(message).map_err(|_| failed())?.to_vec(),
            // A `*_FIXED_SIGNING` key pair makes the fixed-size `r || s` form JOSE
            // requires (RFC 7518 §3.4), never DER.
            SigningInner::Ec(key) => key
                .sign(&SystemRandom::new(), message)
                .map_err(|_| failed())?
                .as_ref()
                .to_vec(),
            SigningInner::Rsa(key) => {
                let (encoding, _) = rsa_padding(self.alg)?;
                let mut signature = vec![0u8; key.public_modulus_len()];
                // AWS-LC blinds the private-key operation against timing attacks.
                key.sign(encoding, &SystemRandom::new(), message, &mut signature)
                    .map_err(|_| failed())?;
                signature
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

/// A key that checks signatures of one algorithm, selected by its `kid` and the token's
/// `alg`.
///
/// For HS256 it holds the shared secret: its [`Debug`](fmt::Debug) output shows only the
/// algorithm and `kid`, and [`VerifyingKey::to_jwk`] refuses to publish it.
#[derive(Clone)]
pub struct VerifyingKey {
    kid: String,
    alg: Algorithm,
    inner: VerifyingInner,
}

#[derive(Clone)]
enum VerifyingInner {
    Ed(ed25519_dalek::VerifyingKey),
    /// ES256 / ES384; parsed from the uncompressed point `04 || x || y`, which
    /// `ParsedPublicKey::as_ref` gives back for the JWK.
    Ec(ParsedPublicKey),
    /// RS256 / PS256, with `n` and `e` (big-endian, no leading zeros) for the JWK.
    Rsa(Box<RsaPublic>),
    Hs(HmacSha256),
}

#[derive(Clone)]
struct RsaPublic {
    key: ParsedPublicKey,
    n: Box<[u8]>,
    e: Box<[u8]>,
}

impl VerifyingKey {
    /// The key id tokens name in their `kid` header.
    /// The same key under another `kid`. With the empty `kid` it verifies tokens whose
    /// header has no `kid` at all (an app's own HS256 tokens in gate mode).
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = kid.into();
        self
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The one algorithm this key accepts.
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// The public JWK of this key, with `alg` and `use` (`sig`) always set, or `None`
    /// for HS256: a JWKS never contains symmetric or private material.
    pub fn to_jwk(&self) -> Option<Jwk> {
        let jwk = |kty: &str, crv: Option<&str>| Jwk {
            kty: kty.to_owned(),
            kid: self.kid.clone(),
            alg: Some(self.alg.as_str().to_owned()),
            use_: Some("sig".to_owned()),
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
            VerifyingInner::Ec(key) => {
                let curve = self.alg.ecdsa()?;
                let point = key.as_ref();
                let size = curve.coordinate_bytes;
                // Always the uncompressed form: see `ec_public`.
                if point.len() != 1 + 2 * size || point[0] != 4 {
                    return None;
                }
                Some(Jwk {
                    x: Some(URL_SAFE_NO_PAD.encode(&point[1..=size])),
                    y: Some(URL_SAFE_NO_PAD.encode(&point[1 + size..])),
                    ..jwk("EC", Some(curve.crv))
                })
            }
            VerifyingInner::Rsa(public) => Some(Jwk {
                n: Some(URL_SAFE_NO_PAD.encode(&public.n)),
                e: Some(URL_SAFE_NO_PAD.encode(&public.e)),
                ..jwk("RSA", None)
            }),
            VerifyingInner::Hs(_) => None,
        }
    }

    /// A verifying key from one of tokengate's own public JWKs: `OKP`/`Ed25519`,
    /// `EC`/`P-256` or `P-384`, or `RSA` (2048 to 4096 bits), with `alg` and `use` set.
    ///
    /// Refused: `kty` `oct` (a shared secret does not belong in a JWKS), `use` other than
    /// `sig` or missing, a missing `alg` or one that does not match the key type, members
    /// that do not belong to the key type, and keys that do not decode to a valid public
    /// key. [`Jwk`] has no private members at all, so a private JWK can never be carried
    /// into a `VerifyingKey`. For identity providers' keys see
    /// [`VerifyingKey::from_provider_jwk`].
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, KeyError> {
        let invalid = |why: &str| invalid_jwk(jwk, why);
        check_jwk_basics(jwk)?;
        if jwk.use_.as_deref() != Some("sig") {
            return Err(invalid("`use` must be `sig`"));
        }
        let alg = jwk
            .alg
            .as_deref()
            .and_then(Algorithm::from_jose_name)
            .ok_or_else(|| invalid("unknown or missing `alg`"))?;
        if !jwk_algorithms(jwk).contains(&alg) {
            return Err(invalid("`kty`, `crv` and `alg` do not match"));
        }
        Ok(VerifyingKey {
            kid: jwk.kid.clone(),
            alg,
            inner: jwk_public_key(jwk, alg)?,
        })
    }

    /// The verifying keys an identity provider's JWK stands for, given the algorithms
    /// accepted from that provider.
    ///
    /// Lenient where providers' JWKS legitimately differ from tokengate's own, strict
    /// everywhere else:
    /// - `use` may be absent or `sig`; `enc` gives [`KeyError::NotForSignature`] (skip the
    ///   key quietly), anything else [`KeyError::InvalidKey`];
    /// - members this type does not know (`x5c`, `x5t`, `key_ops`, …) are ignored when
    ///   the JWK is deserialized;
    /// - an `alg` that is present must be in `allowed` ([`KeyError::NotAllowed`]
    ///   otherwise) and match the key type ([`KeyError::InvalidKey`] otherwise);
    /// - without `alg`, one key per allowed algorithm the key type can serve: `RSA` →
    ///   RS256 and/or PS256, `EC` `P-256` → ES256, `EC` `P-384` → ES384, `OKP`
    ///   `Ed25519` → EdDSA, in the order of `allowed`; none allowed is
    ///   [`KeyError::NotAllowed`].
    ///
    /// Never accepted: `kty` `oct` and HS256 (a shared secret never comes from a JWK),
    /// RSA keys under 2048 bits, small-order Ed25519 keys, points off the curve.
    pub fn from_provider_jwk(jwk: &Jwk, allowed: &[Algorithm]) -> Result<Vec<Self>, KeyError> {
        let invalid = |why: &str| invalid_jwk(jwk, why);
        let not_allowed = |why: String| KeyError::NotAllowed {
            kid: jwk.kid.clone(),
            why,
        };
        match jwk.use_.as_deref() {
            None | Some("sig") => {}
            Some("enc") => return Err(KeyError::NotForSignature(jwk.kid.clone())),
            Some(_) => return Err(invalid("`use` must be `sig` or absent")),
        }
        check_jwk_basics(jwk)?;
        let fits = jwk_algorithms(jwk);
        if fits.is_empty() {
            return Err(invalid("unsupported `kty` and `crv`"));
        }
        let algorithms: Vec<Algorithm> = match jwk.alg.as_deref() {
            Some(name) => {
                let alg = Algorithm::from_jose_name(name)
                    .ok_or_else(|| not_allowed(format!("`alg` {name:?} is not supported")))?;
                if alg == Algorithm::HS256 || !fits.contains(&alg) {
                    return Err(invalid("`kty`, `crv` and `alg` do not match"));
                }
                if !allowed.contains(&alg) {
                    return Err(not_allowed(format!("`alg` {alg} is not allowed")));
                }
                vec![alg]
            }
            None => {
                let mut algorithms = Vec::with_capacity(fits.len());
                for &alg in allowed {
                    if fits.contains(&alg) && !algorithms.contains(&alg) {
                        algorithms.push(alg);
                    }
                }
                if algorithms.is_empty() {
                    return Err(not_allowed(format!(
                        "no allowed algorithm fits a `{}` key",
                        jwk.kty
                    )));
                }
                algorithms
            }
        };
        algorithms
            .into_iter()
            .map(|alg| {
                Ok(VerifyingKey {
                    kid: jwk.kid.clone(),
                    alg,
                    inner: jwk_public_key(jwk, alg)?,
                })
            })
            .collect()
    }

    /// Whether `signature` is this key's signature over `message`.
    ///
    /// Ed25519 uses strict verification (no malleable or small-order signatures); ECDSA
    /// accepts only the fixed-size JOSE `r || s` form, never DER; the HS256 tag is
    /// compared in constant time.
    pub(crate) fn verify_signature(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.inner {
            VerifyingInner::Ed(key) => match <&[u8; 64]>::try_from(signature) {
                Ok(bytes) => key
                    .verify_strict(message, &ed25519_dalek::Signature::from_bytes(bytes))
                    .is_ok(),
                Err(_) => false,
            },
            VerifyingInner::Ec(key) => {
                // The `*_FIXED` algorithms read exactly `r || s`; the length check makes
                // the refusal of DER (70 to 104 bytes) explicit.
                let expected = match self.alg {
                    Algorithm::ES256 => 64,
                    _ => 96,
                };
                signature.len() == expected && key.verify_sig(message, signature).is_ok()
            }
            VerifyingInner::Rsa(public) => public.key.verify_sig(message, signature).is_ok(),
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

/// A public JSON Web Key (RFC 7517), as served in `/.well-known/jwks.json` and as read
/// from identity providers' JWKS.
///
/// It has no private members (`d`, `p`, `q`, `k`…): deserializing a private JWK keeps
/// only its public part. Other members (`x5c`, `x5t`, `key_ops`, …) are ignored. `alg`
/// and `use` are optional on input; tokengate's own keys always set both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type: `OKP`, `EC` or `RSA`.
    pub kty: String,
    /// Key id, matched against a token's `kid` header. Empty when the JWK has none
    /// (such a key is refused).
    #[serde(default)]
    pub kid: String,
    /// The one algorithm the key is for; providers may leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Public key use: `sig` for tokengate's keys; providers may leave it out.
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// Curve: `Ed25519` (OKP), `P-256` or `P-384` (EC).
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

fn invalid_jwk(jwk: &Jwk, why: &str) -> KeyError {
    KeyError::InvalidKey(format!("JWK {:?}: {why}", jwk.kid))
}

/// What every JWK needs, own or a provider's: a `kid`, and no symmetric key.
fn check_jwk_basics(jwk: &Jwk) -> Result<(), KeyError> {
    if jwk.kid.is_empty() {
        return Err(KeyError::InvalidKey("JWK without a kid".into()));
    }
    if jwk.kty == "oct" {
        return Err(invalid_jwk(
            jwk,
            "symmetric (`oct`) keys are never accepted from a JWK",
        ));
    }
    Ok(())
}

/// The algorithms a JWK's key type can serve; empty for anything unsupported.
fn jwk_algorithms(jwk: &Jwk) -> &'static [Algorithm] {
    match (jwk.kty.as_str(), jwk.crv.as_deref()) {
        ("OKP", Some("Ed25519")) => &[Algorithm::EdDSA],
        ("EC", Some("P-256")) => &[Algorithm::ES256],
        ("EC", Some("P-384")) => &[Algorithm::ES384],
        ("RSA", None) => &[Algorithm::RS256, Algorithm::PS256],
        _ => &[],
    }
}

/// The public key of `jwk` for `alg`, which the caller checked fits its key type.
fn jwk_public_key(jwk: &Jwk, alg: Algorithm) -> Result<VerifyingInner, KeyError> {
    let invalid = |why: &str| invalid_jwk(jwk, why);
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
    match alg {
        Algorithm::EdDSA => {
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
            Ok(VerifyingInner::Ed(key))
        }
        Algorithm::ES256 | Algorithm::ES384 => {
            unexpected(&[("n", &jwk.n), ("e", &jwk.e)])?;
            let curve = ecdsa_curve(alg)?;
            let size = curve.coordinate_bytes;
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(4);
            for (name, member) in [("x", &jwk.x), ("y", &jwk.y)] {
                let coordinate = decode(name, member)?;
                if coordinate.len() != size {
                    return Err(invalid(&format!("`{name}` must be {size} bytes")));
                }
                point.extend_from_slice(&coordinate);
            }
            ec_public(alg, &point)
                .map(VerifyingInner::Ec)
                .map_err(|_| invalid(&format!("not a point on {}", curve.crv)))
        }
        Algorithm::RS256 | Algorithm::PS256 => {
            unexpected(&[("x", &jwk.x), ("y", &jwk.y)])?;
            let n = decode("n", &jwk.n)?;
            let e = decode("e", &jwk.e)?;
            rsa_public(alg, &n, &e)
        }
        Algorithm::HS256 => Err(invalid(
            "HS256 keys are shared secrets and never come from a JWK",
        )),
    }
}

fn ecdsa_curve(alg: Algorithm) -> Result<EcdsaCurve, KeyError> {
    alg.ecdsa()
        .ok_or(KeyError::Unsupported("not an ECDSA algorithm"))
}

fn rsa_padding(
    alg: Algorithm,
) -> Result<(&'static dyn RsaEncoding, &'static RsaParameters), KeyError> {
    alg.rsa()
        .ok_or(KeyError::Unsupported("not an RSA algorithm"))
}

/// An ECDSA public key from its uncompressed SEC1 point; AWS-LC checks it is on the curve.
fn ec_public(alg: Algorithm, point: &[u8]) -> Result<ParsedPublicKey, KeyError> {
    let curve = ecdsa_curve(alg)?;
    if point.len() != 1 + 2 * curve.coordinate_bytes || point.first() != Some(&4) {
        return Err(KeyError::InvalidKey(format!(
            "{alg} public key is not an uncompressed {} point",
            curve.crv
        )));
    }
    ParsedPublicKey::new(curve.verifying, point)
        .map_err(|e| KeyError::InvalidKey(format!("{alg} public key: {e}")))
}

/// An RSA public key from its big-endian modulus and exponent (leading zeros tolerated).
fn rsa_public(alg: Algorithm, n: &[u8], e: &[u8]) -> Result<VerifyingInner, KeyError> {
    let (_, parameters) = rsa_padding(alg)?;
    let n = without_leading_zeros(n);
    let e = without_leading_zeros(e);
    check_rsa_size(n)?;
    let invalid = |why: &str| KeyError::InvalidKey(format!("bad RSA key: {why}"));
    if n.last().is_some_and(|byte| byte & 1 == 0) {
        return Err(invalid("the modulus is even"));
    }
    // What AWS-LC accepts at verification: odd, at least 3, at most 33 bits.
    let e_bits = bit_length(e);
    if !(2..=33).contains(&e_bits) || e.last().is_some_and(|byte| byte & 1 == 0) {
        return Err(invalid("the public exponent must be odd, 3 to 33 bits"));
    }
    let key = RsaPublicKeyComponents { n, e }
        .to_parsed_public_key(parameters)
        .map_err(|e| invalid(&e.to_string()))?;
    Ok(VerifyingInner::Rsa(Box::new(RsaPublic {
        key,
        n: n.into(),
        e: e.into(),
    })))
}

fn without_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// Bits in a big-endian unsigned integer without leading zero bytes.
fn bit_length(bytes: &[u8]) -> usize {
    match bytes.first() {
        Some(&first) => bytes.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

fn check_rsa_size(n: &[u8]) -> Result<(), KeyError> {
    let bits = bit_length(without_leading_zeros(n));
    if bits < RSA_BITS {
        return Err(KeyError::InvalidKey(format!(
            "RSA keys must have at least {RSA_BITS} bits"
        )));
    }
    if bits > RSA_MAX_BITS {
        return Err(KeyError::InvalidKey(format!(
            "RSA keys must have at most {RSA_MAX_BITS} bits"
        )));
    }
    Ok(())
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

#[cfg(test)]
pub(crate) mod tests;
