//! A consistent copy of a log (for backups): the files as of one moment, verified.

use crate::error::AuditError;
use crate::log::FlockGuard;
use crate::segments;
use crate::verify::{verify, VerifyReport};
use std::path::Path;

/// Copies the log in `dir` into `dest` (created; must not hold a log yet) while holding
/// the log's lock, so no record is half-copied and no append happens in between, then
/// verifies the copy. Returns the copy's report (check `is_intact`). Appenders wait
/// while the files are copied.
pub fn snapshot(dir: &Path, dest: &Path) -> Result<VerifyReport, AuditError> {
    std::fs::create_dir_all(dest).map_err(AuditError::io(dest, "creating the directory"))?;
    if !segments::list(dest)?.is_empty() {
        return Err(AuditError::Io {
            path: dest.to_path_buf(),
            what: "copying the audit trail",
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the destination already holds an audit trail; use an empty directory",
            ),
        });
    }
    let lock_path = dir.join(".lock");
    let lock = std::fs::File::open(&lock_path).ok();
    {
        // Shared: appenders (exclusive) wait; readers and other snapshots do not.
        let _guard = match &lock {
            Some(f) => Some(FlockGuard::shared(f).map_err(AuditError::io(&lock_path, "locking"))?),
            None => None,
        };
        for p in segments::list(dir)? {
            let Some(name) = p.file_name() else { continue };
            let to = dest.join(name);
            std::fs::copy(&p, &to).map_err(AuditError::io(&p, "copying"))?;
            std::fs::File::open(&to)
                .and_then(|f| f.sync_all())
                .map_err(AuditError::io(&to, "syncing the copy"))?;
        }
    }
    verify(dest)
}
