//! The recent batch ids the server has stored, so a retried push is not stored twice.
//!
//! An agent retries a batch until it sees an answer; when the answer of a successful push
//! is lost, the retry carries the same id and must be answered "duplicate". Retries come
//! within seconds to minutes (the agent's drain is sequential), so remembering the last
//! `capacity` ids (default 200,000: hours of pushes from a thousand agents) is enough.
//!
//! Persisted as one id per line in `ingest-batches.log`, appended and fsynced **after**
//! the batch's data was acknowledged by the store. A crash between the two makes the
//! retry store the batch again (a duplicate, never a loss); the file is rewritten with
//! only the kept ids when it holds twice the capacity, so it stays bounded.

use gpuwarden_agent::BatchId;
use std::collections::{HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

pub const DEFAULT_CAPACITY: usize = 200_000;

/// A failure to persist the ledger, with the path.
#[derive(Debug, thiserror::Error)]
#[error("batch ledger {path}: {source}")]
pub struct LedgerError {
    path: PathBuf,
    source: std::io::Error,
}

/// The seam between the push endpoint and where batch ids are remembered: the file
/// [`BatchLedger`] (one process), or [`SharedLedger`] (the PostgreSQL store's
/// `ingest_batches`, so that an agent whose retry reaches another instance is answered
/// "duplicate" there too).
pub trait BatchIds: Send {
    /// Whether `id` was stored already.
    fn contains(&self, id: &str) -> bool;
    /// Remembers `id` durably.
    fn record(&mut self, id: &str) -> Result<(), LedgerError>;
}

impl BatchIds for BatchLedger {
    fn contains(&self, id: &str) -> bool {
        BatchLedger::contains(self, id)
    }
    fn record(&mut self, id: &str) -> Result<(), LedgerError> {
        BatchLedger::record(self, id)
    }
}

/// Batch ids in the PostgreSQL store, shared by every instance on it. A lookup that
/// fails answers "not seen": the batch is stored again, which the store's idempotent
/// writes (by GPU, field and time) make harmless — never a refused or lost batch.
#[cfg(feature = "postgres")]
pub struct SharedLedger {
    db: gpuwarden_store::postgres::PgHandle,
    capacity: usize,
}

#[cfg(feature = "postgres")]
impl SharedLedger {
    pub fn new(db: gpuwarden_store::postgres::PgHandle, capacity: usize) -> SharedLedger {
        SharedLedger {
            db,
            capacity: capacity.max(1),
        }
    }
}

#[cfg(feature = "postgres")]
impl BatchIds for SharedLedger {
    fn contains(&self, id: &str) -> bool {
        self.db.batch_seen(id).unwrap_or_else(|e| {
            tracing::warn!("batch ledger in the database: {e}; storing the batch (idempotent) instead");
            false
        })
    }

    fn record(&mut self, id: &str) -> Result<(), LedgerError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.db.batch_record(id, now, self.capacity).map_err(|e| LedgerError {
            path: PathBuf::from(format!("ingest_batches in {}", self.db.target())),
            source: std::io::Error::other(e.to_string()),
        })
    }
}

/// Recent batch ids, in memory and on disk.
pub struct BatchLedger {
    path: PathBuf,
    capacity: usize,
    order: VecDeque<String>,
    set: HashSet<String>,
    file: File,
    lines_in_file: usize,
}

impl BatchLedger {
    /// Opens `path` (created if missing), keeping the newest `capacity` valid ids.
    pub fn open(path: impl Into<PathBuf>, capacity: usize) -> Result<BatchLedger, LedgerError> {
        let path = path.into();
        let capacity = capacity.max(1);
        let err = |source| LedgerError {
            path: path.clone(),
            source,
        };
        let mut order = VecDeque::new();
        let mut lines_in_file = 0;
        match File::open(&path) {
            Ok(f) => {
                for line in BufReader::new(f).lines() {
                    // A torn last line (crash mid-append) is not a valid id and is skipped.
                    let Ok(line) = line else { break };
                    lines_in_file += 1;
                    if BatchId::is_valid(&line) {
                        order.push_back(line);
                        if order.len() > capacity {
                            order.pop_front();
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(err)?;
        let set = order.iter().cloned().collect();
        Ok(BatchLedger {
            path,
            capacity,
            order,
            set,
            file,
            lines_in_file,
        })
    }

    pub fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Remembers `id` durably.
    pub fn record(&mut self, id: &str) -> Result<(), LedgerError> {
        if self.set.contains(id) {
            return Ok(());
        }
        let err = |source| LedgerError {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(format!("{id}\n").as_bytes()).map_err(err)?;
        self.file.sync_data().map_err(err)?;
        self.lines_in_file += 1;
        self.order.push_back(id.to_owned());
        self.set.insert(id.to_owned());
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        if self.lines_in_file >= self.capacity * 2 {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the file with only the kept ids (tmp, fsync, rename, fsync dir).
    fn compact(&mut self) -> Result<(), LedgerError> {
        let err = |source| LedgerError {
            path: self.path.clone(),
            source,
        };
        let tmp = self.path.with_extension("log.tmp");
        let mut body = String::with_capacity(self.order.len() * 33);
        for id in &self.order {
            body.push_str(id);
            body.push('\n');
        }
        let mut f = File::create(&tmp).map_err(err)?;
        f.write_all(body.as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
        fs::rename(&tmp, &self.path).map_err(err)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
        }
        self.file = OpenOptions::new().append(true).open(&self.path).map_err(err)?;
        self.lines_in_file = self.order.len();
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_persist_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ingest-batches.log");
        let mut l = BatchLedger::open(&path, 10).unwrap();
        l.record("a1").unwrap();
        l.record("b2").unwrap();
        drop(l);
        let l = BatchLedger::open(&path, 10).unwrap();
        assert!(l.contains("a1") && l.contains("b2") && !l.contains("c3"));
    }

    #[test]
    fn oldest_ids_are_forgotten_and_file_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.log");
        let mut l = BatchLedger::open(&path, 3).unwrap();
        for i in 0..20 {
            l.record(&format!("id{i}")).unwrap();
        }
        assert_eq!(l.len(), 3);
        assert!(!l.contains("id16") && l.contains("id19"));
        let lines = fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines < 6, "{lines} lines");
        drop(l);
        let l = BatchLedger::open(&path, 3).unwrap();
        assert!(l.contains("id17") && l.contains("id19"));
    }

    #[test]
    fn torn_or_garbage_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.log");
        fs::write(&path, b"good1\nbad id with spaces\n\xff\xfe\ngood2").unwrap();
        let l = BatchLedger::open(&path, 10).unwrap();
        assert!(l.contains("good1"));
    }
}
