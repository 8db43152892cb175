//! A durable, bounded spool of batches waiting for the server.
//!
//! One file per batch (`<seq>.batch`, JSON of [`Batch`]) in one directory. A batch is
//! written to `<seq>.tmp`, fsynced, renamed, and the directory fsynced before
//! [`Spool::put`] returns, so a batch the agent has accepted survives a crash or a power
//! cut. Files are pushed oldest first and deleted only after the server acknowledged
//! them (stored or duplicate).
//!
//! Bounds: at most `max_batches` files and `max_bytes` bytes. When a new batch would
//! exceed either, the **oldest** batches are dropped (their data is the least useful for
//! health: it is already stale) and counted in [`Spool::dropped_total`], with a warning.
//! A file that cannot be read back (truncated by a crash of the disk, hand-edited) is
//! moved aside as `<seq>.bad`, counted, and skipped, so one bad file never blocks the
//! spool; at most [`MAX_BAD_FILES`] are kept.

use crate::wire::{Batch, BatchLimits};
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Quarantined files kept for inspection; older ones are deleted.
pub const MAX_BAD_FILES: usize = 16;

/// Spool errors carry the path they concern.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("batch of {size} bytes is larger than the whole spool ({max} bytes)")]
    TooLarge { size: u64, max: u64 },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How much the spool may hold.
#[derive(Debug, Clone, Copy)]
pub struct SpoolLimits {
    pub max_batches: usize,
    pub max_bytes: u64,
}

impl Default for SpoolLimits {
    fn default() -> Self {
        // A day of 10-second batches of an 8-GPU host (~20 KiB each) is ~170 MiB; 256 MiB
        // and 20,000 batches cover that with room, without filling a small root disk.
        SpoolLimits {
            max_batches: 20_000,
            max_bytes: 256 * 1024 * 1024,
        }
    }
}

/// A spooled batch's handle: its sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SpoolEntry {
    pub seq: u64,
    pub bytes: u64,
}

/// What [`Spool::put`] had to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PutReport {
    /// Oldest batches dropped to make room.
    pub dropped: usize,
}

struct State {
    entries: VecDeque<SpoolEntry>,
    bytes: u64,
    next_seq: u64,
    dropped_total: u64,
    bad_total: u64,
}

/// The spool directory. Methods do blocking file I/O: call them off the async runtime.
pub struct Spool {
    dir: PathBuf,
    limits: SpoolLimits,
    state: Mutex<State>,
}

impl Spool {
    /// Opens (creating) the spool in `dir`, recovering the batches left by a previous run.
    pub fn open(dir: impl Into<PathBuf>, limits: SpoolLimits) -> Result<Spool, SpoolError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut entries = Vec::new();
        for item in fs::read_dir(&dir).map_err(io(&dir))? {
            let item = item.map_err(io(&dir))?;
            let path = item.path();
            let name = item.file_name();
            let name = name.to_string_lossy();
            if let Some(stem) = name.strip_suffix(".tmp") {
                // A write that never completed: the batch was never acknowledged to the
                // collector, so removing it loses nothing that was promised.
                tracing::debug!(file = %stem, "removing an incomplete spool file");
                let _ = fs::remove_file(&path);
            } else if let Some(seq) = name.strip_suffix(".batch").and_then(|s| s.parse::<u64>().ok()) {
                let bytes = item.metadata().map_err(io(&path))?.len();
                entries.push(SpoolEntry { seq, bytes });
            }
        }
        entries.sort();
        let next_seq = entries.last().map_or(0, |e| e.seq + 1);
        let bytes = entries.iter().map(|e| e.bytes).sum();
        if !entries.is_empty() {
            tracing::info!(batches = entries.len(), bytes, dir = %dir.display(), "spool holds batches from a previous run");
        }
        Ok(Spool {
            dir,
            limits,
            state: Mutex::new(State {
                entries: entries.into(),
                bytes,
                next_seq,
                dropped_total: 0,
                bad_total: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated in a way
        // that matters (the files are the truth), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, seq: u64, ext: &str) -> PathBuf {
        self.dir.join(format!("{seq:020}.{ext}"))
    }

    /// Stores a batch durably, dropping the oldest batches if the spool is full.
    pub fn put(&self, batch: &Batch) -> Result<PutReport, SpoolError> {
        let body = batch.encode();
        let size = body.len() as u64;
        if size > self.limits.max_bytes {
            return Err(SpoolError::TooLarge {
                size,
                max: self.limits.max_bytes,
            });
        }
        let mut st = self.lock();
        let mut report = PutReport::default();
        while !st.entries.is_empty()
            && (st.entries.len() + 1 > self.limits.max_batches || st.bytes + size > self.limits.max_bytes)
        {
            if let Some(old) = st.entries.pop_front() {
                let path = self.path(old.seq, "batch");
                if let Err(e) = fs::remove_file(&path) {
                    tracing::warn!("removing {}: {e}", path.display());
                }
                st.bytes = st.bytes.saturating_sub(old.bytes);
                st.dropped_total += 1;
                report.dropped += 1;
            }
        }
        if report.dropped > 0 {
            tracing::warn!(
                dropped = report.dropped,
                dropped_total = st.dropped_total,
                "spool full (server unreachable for long): dropped the oldest batches"
            );
        }
        let seq = st.next_seq;
        let tmp = self.path(seq, "tmp");
        let dest = self.path(seq, "batch");
        write_durably(&tmp, &dest, &self.dir, &body)?;
        st.next_seq += 1;
        st.entries.push_back(SpoolEntry { seq, bytes: size });
        st.bytes += size;
        Ok(report)
    }

    /// The oldest batch, read back. Unreadable files are quarantined and skipped.
    pub fn oldest(&self) -> Result<Option<(SpoolEntry, Batch)>, SpoolError> {
        loop {
            let entry = match self.lock().entries.front() {
                Some(e) => *e,
                None => return Ok(None),
            };
            let path = self.path(entry.seq, "batch");
            let parsed = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| Batch::decode(&b, &BatchLimits::default()).map_err(|e| e.to_string()));
            match parsed {
                Ok(batch) => return Ok(Some((entry, batch))),
                Err(e) => {
                    tracing::error!("spool file {} is unreadable ({e}); moving it aside", path.display());
                    let _ = fs::rename(&path, self.path(entry.seq, "bad"));
                    self.forget(entry);
                    let mut st = self.lock();
                    st.bad_total += 1;
                    drop(st);
                    self.prune_bad();
                }
            }
        }
    }

    /// Deletes a batch the server acknowledged (or will never accept).
    pub fn remove(&self, entry: SpoolEntry) -> Result<(), SpoolError> {
        let path = self.path(entry.seq, "batch");
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
        self.forget(entry);
        Ok(())
    }

    fn forget(&self, entry: SpoolEntry) {
        let mut st = self.lock();
        if let Some(pos) = st.entries.iter().position(|e| e.seq == entry.seq) {
            st.entries.remove(pos);
            st.bytes = st.bytes.saturating_sub(entry.bytes);
        }
    }

    fn prune_bad(&self) {
        let Ok(items) = fs::read_dir(&self.dir) else { return };
        let mut bad: Vec<PathBuf> = items
            .filter_map(|i| i.ok().map(|i| i.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "bad"))
            .collect();
        bad.sort();
        let excess = bad.len().saturating_sub(MAX_BAD_FILES);
        for p in bad.into_iter().take(excess) {
            let _ = fs::remove_file(p);
        }
    }

    /// Batches waiting.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Batches dropped because the spool was full, since this process started.
    pub fn dropped_total(&self) -> u64 {
        self.lock().dropped_total
    }

    /// Unreadable batch files moved aside, since this process started.
    pub fn bad_total(&self) -> u64 {
        self.lock().bad_total
    }
}

/// Write to `tmp`, fsync, rename to `dest`, fsync the directory: after this returns the
/// file is either complete under its final name or absent.
fn write_durably(tmp: &Path, dest: &Path, dir: &Path, body: &[u8]) -> Result<(), SpoolError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .map_err(io(tmp))?;
    f.write_all(body).map_err(io(tmp))?;
    f.sync_all().map_err(io(tmp))?;
    drop(f);
    fs::rename(tmp, dest).map_err(io(dest))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: i64) -> Batch {
        Batch::new("host", n)
    }

    #[test]
    fn batches_come_back_oldest_first_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), SpoolLimits::default()).unwrap();
        let (a, b) = (batch(1), batch(2));
        spool.put(&a).unwrap();
        spool.put(&b).unwrap();
        drop(spool);
        let spool = Spool::open(dir.path(), SpoolLimits::default()).unwrap();
        assert_eq!(spool.len(), 2);
        let (entry, got) = spool.oldest().unwrap().unwrap();
        assert_eq!(got.id, a.id);
        spool.remove(entry).unwrap();
        let (_, got) = spool.oldest().unwrap().unwrap();
        assert_eq!(got.id, b.id);
        // New batches after a reopen sort after the recovered ones.
        spool.put(&batch(3)).unwrap();
        assert_eq!(spool.len(), 2);
        assert_eq!(spool.oldest().unwrap().unwrap().1.id, b.id);
    }

    #[test]
    fn full_spool_drops_the_oldest_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let limits = SpoolLimits {
            max_batches: 3,
            max_bytes: 1 << 20,
        };
        let spool = Spool::open(dir.path(), limits).unwrap();
        let batches: Vec<_> = (0..5).map(batch).collect();
        let dropped: usize = batches.iter().map(|b| spool.put(b).unwrap().dropped).sum();
        assert_eq!(dropped, 2);
        assert_eq!(spool.dropped_total(), 2);
        assert_eq!(spool.len(), 3);
        assert_eq!(spool.oldest().unwrap().unwrap().1.id, batches[2].id);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 3);
    }

    #[test]
    fn byte_bound_is_respected() {
        let dir = tempfile::tempdir().unwrap();
        let one = batch(0).encode().len() as u64;
        let limits = SpoolLimits {
            max_batches: 100,
            max_bytes: one * 2 + one / 2,
        };
        let spool = Spool::open(dir.path(), limits).unwrap();
        for i in 0..10 {
            spool.put(&batch(i)).unwrap();
            assert!(spool.bytes() <= limits.max_bytes);
        }
        assert_eq!(spool.len(), 2);
    }

    #[test]
    fn corrupt_file_is_moved_aside_not_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), SpoolLimits::default()).unwrap();
        spool.put(&batch(1)).unwrap();
        let good = batch(2);
        spool.put(&good).unwrap();
        fs::write(dir.path().join(format!("{:020}.batch", 0)), b"{\"trunc").unwrap();
        assert_eq!(spool.oldest().unwrap().unwrap().1.id, good.id);
        assert_eq!(spool.bad_total(), 1);
        assert!(dir.path().join(format!("{:020}.bad", 0)).exists());
    }

    #[test]
    fn incomplete_writes_are_discarded_on_open() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("00000000000000000007.tmp"), b"half").unwrap();
        let spool = Spool::open(dir.path(), SpoolLimits::default()).unwrap();
        assert!(spool.is_empty());
        assert!(!dir.path().join("00000000000000000007.tmp").exists());
    }
}
