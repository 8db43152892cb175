//! Errors of the store.

use std::path::PathBuf;

/// What went wrong in the store. Variants carry the path or the input concerned.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store data in {path} is corrupt at byte {offset}: {reason}")]
    Corrupt { path: PathBuf, offset: u64, reason: String },
    #[error("store directory {path} is locked by another gpuwarden process (pid in the lock file); stop it or use another --data-dir")]
    Locked { path: PathBuf },
    #[error("store encoding of {what}: {reason}")]
    Encoding { what: String, reason: String },
    /// The database (PostgreSQL store) refused or failed a statement, or could not be
    /// reached. `what` names the operation and its input.
    #[error("PostgreSQL store, {what}: {reason}")]
    Database { what: String, reason: String },
    /// The database's schema is not one this build can use (newer, or not ours).
    #[error("PostgreSQL store schema: {0}")]
    Schema(String),
    /// The store's settings are wrong (a URL that does not parse, a password in the URL).
    #[error("store configuration: {0}")]
    Config(String),
}
