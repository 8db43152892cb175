//! The directory lock: one process per data directory.
//!
//! An advisory `flock` on `LOCK` in the data directory, held for the life of the store.
//! The kernel releases it when the process dies (even by `kill -9`), so there is no stale
//! lock to clean up by hand; the file also carries the holder's pid for the operator.

use crate::StoreError;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

pub const LOCK_FILE: &str = "LOCK";

/// Holds the lock until dropped.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<DirLock, StoreError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => return Err(StoreError::Locked { path }),
            Err(e) => return Err(io(e.into())),
        }
        // Informational only: the flock is the lock.
        file.set_len(0)
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(io)?;
        Ok(DirLock { _file: file })
    }
}

impl Drop for DirLock {
    /// Unlocks explicitly rather than only closing the file: a child process forked
    /// meanwhile (a test spawning a command, a collector running `nvidia-smi`) shares
    /// the open file description until it execs, and closing our descriptor alone would
    /// leave the lock held by it for that moment, so a store closed and reopened at once
    /// in this process could find itself `Locked`.
    fn drop(&mut self) {
        let _ = rustix::fs::flock(&self._file, rustix::fs::FlockOperation::Unlock);
    }
}
