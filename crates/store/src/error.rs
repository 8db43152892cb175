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
}
