//! The store's typed errors: what went wrong, and whether the caller's request or the store
//! is at fault.

use std::path::PathBuf;

/// A store operation that failed. Nothing was changed unless the operation succeeded: every
/// change runs in one transaction, and artifacts are written before the rows that name them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The thing asked for does not exist.
    #[error("{0} does not exist")]
    NotFound(String),
    /// The change conflicts with what is stored (it exists already, or is not in a state
    /// that allows it).
    #[error("{0}")]
    Conflict(String),
    /// The request is not acceptable (a rule the store itself enforces).
    #[error("{0}")]
    Invalid(String),
    /// A stored artifact does not match its digest, or a row contradicts the schema.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The data directory cannot be used.
    #[error("cannot use the data directory {path}: {error}")]
    DataDir {
        path: PathBuf,
        error: std::io::Error,
    },
    /// An artifact could not be written or read.
    #[error("artifact {digest}: {error}")]
    Artifact {
        digest: String,
        error: std::io::Error,
    },
    /// The database refused or failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// Sealed state could not be opened or sealed (tampered, moved, or the key is gone).
    #[error("tenant state: {0}")]
    Crypto(String),
    /// The key-encryption key is not the one the data directory's state was sealed with.
    #[error("{0}")]
    WrongKek(String),
    /// The randomness source failed (tokens cannot be minted).
    #[error("the system random number generator failed: {0}")]
    Random(String),
}

impl StoreError {
    /// Whether a unique or primary key already held the value being inserted.
    pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
        matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
    }
}
