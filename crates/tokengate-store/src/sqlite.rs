//! PLACEHOLDER
pub struct SqliteStore;
