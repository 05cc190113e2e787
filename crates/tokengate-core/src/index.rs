//! PLACEHOLDER: replaced by the index implementation.
pub struct RevocationIndex;
