//! The store's error type.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique value (such as an email address) is taken.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database cannot be reached or written; retry later (maps to 503).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored row could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The migrations could not be applied.
    #[error("migration failed: {0}")]
    Migration(String),
}

/// Result alias for store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
