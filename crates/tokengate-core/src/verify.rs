//! PLACEHOLDER: replaced by the verifier implementation.
pub struct Verifier;
pub struct VerifierConfig;
pub struct VerifyError;
pub const MAX_TOKEN_BYTES: usize = 8192;
