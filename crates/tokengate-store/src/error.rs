//! The store's error type.

use std::error::Error;
use std::fmt;

/// Any error a [`StoreError`] was caused by (a database driver's, Redis's, an I/O error).
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// Why a store operation failed.
#[derive(Debug)]
pub enum StoreError {
    /// A unique value (such as an email address) is taken.
    Conflict(String),
    /// The database cannot be reached or written; retry later (maps to 503).
    Unavailable(Detail),
    /// A stored row could not be decoded.
    Corrupt(Detail),
    /// The migrations could not be applied.
    Migration(Detail),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Conflict(what) => write!(f, "conflict: {what}"),
            StoreError::Unavailable(detail) => write!(f, "store unavailable: {detail}"),
            StoreError::Corrupt(detail) => write!(f, "corrupt record: {detail}"),
            StoreError::Migration(detail) => write!(f, "migration failed: {detail}"),
        }
    }
}

impl Error for StoreError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            StoreError::Conflict(_) => None,
            StoreError::Unavailable(detail)
            | StoreError::Corrupt(detail)
            | StoreError::Migration(detail) => detail.source(),
        }
    }
}

impl StoreError {
    /// [`StoreError::Unavailable`] saying what failed, caused by `source`.
    pub fn unavailable(what: impl Into<String>, source: impl Into<BoxError>) -> StoreError {
        StoreError::Unavailable(Detail::caused_by(what, source))
    }

    /// [`StoreError::Corrupt`] saying what failed, caused by `source`.
    pub fn corrupt(what: impl Into<String>, source: impl Into<BoxError>) -> StoreError {
        StoreError::Corrupt(Detail::caused_by(what, source))
    }
}

/// What went wrong, and the error that caused it if there was one.
///
/// It displays as `what: cause` so that a log line holding only the [`StoreError`] still
/// says everything; the cause is also kept as the [`Error::source`] of the `StoreError`,
/// for callers that inspect or walk the chain. No message ever holds a database or Redis
/// URL: it may carry a password.
#[derive(Debug)]
pub struct Detail {
    what: String,
    source: Option<BoxError>,
}

impl Detail {
    /// `what` failed because of `source`.
    pub fn caused_by(what: impl Into<String>, source: impl Into<BoxError>) -> Detail {
        Detail {
            what: what.into(),
            source: Some(source.into()),
        }
    }

    /// What failed, without the cause.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The error that caused it, if any.
    pub fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.source, self.what.is_empty()) {
            (Some(source), true) => write!(f, "{source}"),
            (Some(source), false) => write!(f, "{}: {source}", self.what),
            (None, _) => f.write_str(&self.what),
        }
    }
}

impl From<String> for Detail {
    fn from(what: String) -> Detail {
        Detail { what, source: None }
    }
}

impl From<&str> for Detail {
    fn from(what: &str) -> Detail {
        Detail::from(what.to_owned())
    }
}

/// Result alias for store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_is_displayed_and_kept_as_the_source() {
        let io = std::io::Error::other("disk I/O error");
        let error = StoreError::unavailable("cannot open /data/tokengate.db", io);
        assert_eq!(
            error.to_string(),
            "store unavailable: cannot open /data/tokengate.db: disk I/O error"
        );
        let source = error.source().map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("disk I/O error"));

        let plain = StoreError::Unavailable("disk full (injected)".into());
        assert_eq!(plain.to_string(), "store unavailable: disk full (injected)");
        assert!(plain.source().is_none());
        let conflict = StoreError::Conflict("email taken".into());
        assert_eq!(conflict.to_string(), "conflict: email taken");
        assert!(conflict.source().is_none());
    }
}
