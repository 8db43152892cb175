//! Errors of the audit log. Messages name the file and say what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error(
        "audit log {path}, line {line}: {problem}; the log was changed outside gpuwarden. \
         Run `gpuwarden audit verify` to see every problem, keep the directory as evidence, \
         and move it aside to start a new trail"
    )]
    Corrupt {
        path: PathBuf,
        line: usize,
        problem: String,
    },
}

impl AuditError {
    pub(crate) fn io(path: impl Into<PathBuf>, what: &'static str) -> impl FnOnce(std::io::Error) -> AuditError {
        let path = path.into();
        move |source| AuditError::Io { path, what, source }
    }
}
