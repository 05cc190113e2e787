//! PLACEHOLDER: replaced by the keys implementation.
pub struct Algorithm;
pub struct Jwk;
pub struct Jwks;
pub struct KeyError;
pub struct SigningKey;
pub struct VerifyingKey;
