//! The seam through which tests make store file writes fail (ENOSPC, EIO) without root
//! tricks: the WAL writer and the incident log call a [`FaultInjector`] before each
//! write and sync of data. Production stores have none.

use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

/// Decides whether a store file write or sync fails. Install it with
/// [`EmbeddedStore::open_with_faults`](super::EmbeddedStore::open_with_faults).
pub trait FaultInjector: Send + Sync {
    /// Called before `len` bytes are appended to `path`. `Ok(())` lets the write through;
    /// `Err((n, e))` writes only the first `n` bytes (a partial write, like a disk that
    /// fills mid-record) and then fails with `e`.
    fn on_write(&self, path: &Path, len: usize) -> Result<(), (usize, io::Error)>;

    /// Called before `path` is synced; an error fails the sync.
    fn on_sync(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }
}

/// The optional injector every writer holds.
pub(crate) type Faults = Option<Arc<dyn FaultInjector>>;

/// Writes `buf` to `file` unless the injector fails it (after a partial write).
pub(crate) fn write_all(faults: &Faults, file: &mut std::fs::File, path: &Path, buf: &[u8]) -> io::Result<()> {
    if let Some(f) = faults {
        if let Err((n, e)) = f.on_write(path, buf.len()) {
            file.write_all(&buf[..n.min(buf.len())])?;
            return Err(e);
        }
    }
    file.write_all(buf)
}

/// `sync_data` unless the injector fails it.
pub(crate) fn sync_data(faults: &Faults, file: &std::fs::File, path: &Path) -> io::Result<()> {
    if let Some(f) = faults {
        f.on_sync(path)?;
    }
    file.sync_data()
}
