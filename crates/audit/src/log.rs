//! [`AuditLog`]: appends records durably, one chain across files and processes.
//!
//! - **Durable**: [`AuditLog::append`] returns only after the record is written and
//!   `fsync`ed, so a change is acknowledged only once its record would survive a crash.
//! - **Serialized**: appends from many threads take one mutex, and appends from several
//!   processes (`gpuwarden run` and a CLI command such as `gpuwarden auth token create`)
//!   take an exclusive `flock` on `.lock` in the directory. Under the lock the log checks
//!   whether the newest file is still as it left it; if another process appended, it
//!   re-reads that file's last record, so the chain continues from whoever wrote last.
//! - **Restart**: the chain continues from the last record on disk.
//! - **Torn tail**: a crash during a write can leave an unfinished last line (no newline).
//!   That record was never acknowledged (the fsync did not return), so the log cuts it
//!   off, keeps its bytes in `torn-<ms>.bin` beside the log, warns, and writes an
//!   `audit.torn_tail` record saying how many bytes were removed where. Anything else
//!   that does not read back — a complete last line that does not parse or whose hash is
//!   wrong — is not a crash artifact: the log refuses to open (run `gpuwarden audit
//!   verify`), rather than chain new records onto a tampered file.

use crate::denials::{Aggregator, DenialLimits};
use crate::error::AuditError;
use crate::record::{now_ms, Entry, Outcome, Record, GENESIS};
use crate::segments;
use parking_lot::{Mutex, RwLock};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

/// Settings of one log.
#[derive(Debug, Clone)]
pub struct Options {
    /// A new file is started once the current one reaches this size. Default 64 MiB.
    pub max_segment_bytes: u64,
    /// Aggregation of denied requests (see [`crate::denials`]).
    pub denials: DenialLimits,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_segment_bytes: 64 << 20,
            denials: DenialLimits::default(),
        }
    }
}

/// Called with every record once it is durable (e.g. to forward it to a SIEM).
pub type Observer = Arc<dyn Fn(&Record) + Send + Sync>;

/// The audit directory inside a data directory: `<data_dir>/audit`.
pub fn audit_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("audit")
}

/// The end of the chain as this process last saw it.
struct Tail {
    /// The newest file and its length; `None` before the first record.
    segment: Option<(PathBuf, u64)>,
    seq: u64,
    hash: String,
    file: Option<File>,
}

/// The append-only, hash-chained audit log in one directory.
pub struct AuditLog {
    dir: PathBuf,
    opts: Options,
    tail: Mutex<Option<Tail>>,
    lock_file: File,
    pub(crate) denials: Mutex<Aggregator>,
    pub(crate) queue: Mutex<Option<SyncSender<Entry>>>,
    pub(crate) dropped: AtomicU64,
    observer: RwLock<Option<Observer>>,
    records_written: AtomicU64,
    write_errors: AtomicU64,
    pub(crate) dropped_total: AtomicU64,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.dir)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Counters of one log since it was opened (for `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditStats {
    /// Records written (fsynced).
    pub records_written: u64,
    /// Appends that failed (each lost its records; for a change, its answer was 503).
    pub write_errors: u64,
    /// Best-effort records dropped because the writer's queue was full.
    pub dropped: u64,
}

impl AuditLog {
    /// Opens (creating it if needed) the log in `dir` — usually [`audit_dir`] of the data
    /// directory — with the default [`Options`]. Continues the chain from the last record
    /// (cutting off a torn last line, see the module doc); refuses a tampered end.
    pub fn open(dir: &Path) -> Result<AuditLog, AuditError> {
        AuditLog::open_with(dir, Options::default())
    }

    /// [`AuditLog::open`] with `opts`.
    pub fn open_with(dir: &Path, opts: Options) -> Result<AuditLog, AuditError> {
        std::fs::create_dir_all(dir).map_err(AuditError::io(dir, "creating the directory"))?;
        let lock_path = dir.join(".lock");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(AuditError::io(&lock_path, "opening the lock file"))?;
        let log = AuditLog {
            dir: dir.to_path_buf(),
            denials: Mutex::new(Aggregator::new(opts.denials.clone())),
            opts,
            tail: Mutex::new(None),
            lock_file,
            queue: Mutex::new(None),
            dropped: AtomicU64::new(0),
            observer: RwLock::new(None),
            records_written: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            dropped_total: AtomicU64::new(0),
        };
        // Reads (and repairs) the end now, so a tampered log fails at start, not at the
        // first change.
        let notes = {
            let mut tail = log.tail.lock();
            let _g = log.flock()?;
            let notes = log.sync_tail(&mut tail)?;
            if !notes.is_empty() {
                log.write_batch(&mut tail, notes)?
            } else {
                Vec::new()
            }
        };
        log.notify(&notes);
        Ok(log)
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Counters since the log was opened.
    pub fn stats(&self) -> AuditStats {
        AuditStats {
            records_written: self.records_written.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
            dropped: self.dropped_total.load(Ordering::Relaxed),
        }
    }

    /// The settings it was opened with.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Sets the function called with every record once it is durable.
    pub fn set_observer(&self, f: Observer) {
        *self.observer.write() = Some(f);
    }

    /// Appends one record and returns it once it is on disk (fsync). Blocking: call it
    /// from a blocking thread in async code.
    pub fn append(&self, entry: Entry) -> Result<Record, AuditError> {
        let mut v = self.append_all(vec![entry])?;
        // append_all returns at least the record for `entry`, last.
        v.pop().ok_or_else(|| AuditError::Corrupt {
            path: self.dir.clone(),
            line: 0,
            problem: "nothing was written".into(),
        })
    }

    /// Appends `entries` in order with one fsync; returns the records written (a
    /// repair note first, if the end of the log had to be repaired).
    pub fn append_all(&self, entries: Vec<Entry>) -> Result<Vec<Record>, AuditError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let written = {
            let mut tail = self.tail.lock();
            let _g = self.flock()?;
            let written = self.sync_tail(&mut tail).and_then(|mut batch| {
                batch.extend(entries);
                self.write_batch(&mut tail, batch)
            });
            match written {
                Ok(w) => w,
                Err(e) => {
                    // The file may hold part of a line now: read the end again next time.
                    *tail = None;
                    self.write_errors.fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
            }
        };
        self.records_written.fetch_add(written.len() as u64, Ordering::Relaxed);
        self.notify(&written);
        Ok(written)
    }

    fn notify(&self, records: &[Record]) {
        if records.is_empty() {
            return;
        }
        let observer = self.observer.read().clone();
        if let Some(f) = observer {
            for r in records {
                f(r);
            }
        }
    }

    /// Makes `tail` match the newest file on disk (another process may have written).
    /// Returns the notes to write first (a torn tail that was cut off).
    fn sync_tail(&self, tail: &mut Option<Tail>) -> Result<Vec<Entry>, AuditError> {
        let segs = segments::list(&self.dir)?;
        let newest = match segs.last() {
            Some(p) => {
                let len = std::fs::metadata(p)
                    .map_err(AuditError::io(p, "reading the file's size"))?
                    .len();
                Some((p.clone(), len))
            }
            None => None,
        };
        if let Some(t) = tail.as_ref() {
            if t.segment == newest {
                return Ok(Vec::new());
            }
        }
        let mut notes = Vec::new();
        let mut found: Option<(u64, String)> = None;
        // The newest file with a record holds the end of the chain; files emptied by a
        // cut-off torn line are skipped back over.
        for (i, p) in segs.iter().enumerate().rev() {
            if let Some(note) = self.cut_torn_tail(p)? {
                notes.push(note);
            }
            if let Some(last) = last_record(p)? {
                found = Some((last.seq, last.hash));
                break;
            }
            let first = segments::first_seq(p).unwrap_or(1);
            if i == 0 && first > 1 {
                return Err(AuditError::Corrupt {
                    path: p.clone(),
                    line: 1,
                    problem: format!(
                        "the oldest file starts at record {first} but is empty, so the chain's previous hash is unknown"
                    ),
                });
            }
        }
        let (seq, hash) = found.unwrap_or((0, GENESIS.to_string()));
        let segment = match segs.last() {
            Some(p) => Some((
                p.clone(),
                std::fs::metadata(p)
                    .map_err(AuditError::io(p, "reading the file's size"))?
                    .len(),
            )),
            None => None,
        };
        let file = match &segment {
            Some((p, _)) => Some(
                OpenOptions::new()
                    .append(true)
                    .open(p)
                    .map_err(AuditError::io(p, "opening for append"))?,
            ),
            None => None,
        };
        *tail = Some(Tail {
            segment,
            seq,
            hash,
            file,
        });
        Ok(notes)
    }

    /// Cuts an unterminated last line off `path` (keeping its bytes in `torn-<ms>.bin`).
    fn cut_torn_tail(&self, path: &Path) -> Result<Option<Entry>, AuditError> {
        let mut f = File::open(path).map_err(AuditError::io(path, "opening"))?;
        let len = f.metadata().map_err(AuditError::io(path, "reading the size"))?.len();
        if len == 0 {
            return Ok(None);
        }
        let from = len.saturating_sub(64 << 10);
        f.seek(SeekFrom::Start(from)).map_err(AuditError::io(path, "seeking"))?;
        let mut chunk = Vec::new();
        f.read_to_end(&mut chunk).map_err(AuditError::io(path, "reading"))?;
        if chunk.last() == Some(&b'\n') {
            return Ok(None);
        }
        let cut_at = match chunk.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None if from == 0 => 0,
            None => {
                return Err(AuditError::Corrupt {
                    path: path.to_path_buf(),
                    line: 0,
                    problem: "the last line is longer than any record gpuwarden writes".into(),
                })
            }
        };
        let rest = &chunk[cut_at..];
        let keep = from + cut_at as u64;
        let saved = self.dir.join(format!("torn-{}.bin", now_ms()));
        std::fs::write(&saved, rest).map_err(AuditError::io(&saved, "saving the torn tail"))?;
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(AuditError::io(path, "opening to cut the torn tail"))?;
        f.set_len(keep).map_err(AuditError::io(path, "cutting the torn tail"))?;
        f.sync_all().map_err(AuditError::io(path, "syncing"))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let saved_name = saved
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        tracing::warn!(
            "audit log {}: cut off an unfinished last record ({} bytes at offset {keep}, left by a crash during a write; \
             it was never acknowledged); its bytes are kept in {}",
            path.display(),
            rest.len(),
            saved.display()
        );
        Ok(Some(
            Entry::new("gpuwarden", "audit.torn_tail", Outcome::Ok)
                .role("system")
                .target(name)
                .detail(format!(
                    "cut off {} bytes of an unfinished record at offset {keep} (a crash during a write; never acknowledged); kept in {saved_name}",
                    rest.len()
                )),
        ))
    }

    /// Writes `batch` after the tail, starting new files at the size limit; one fsync.
    fn write_batch(&self, tail: &mut Option<Tail>, batch: Vec<Entry>) -> Result<Vec<Record>, AuditError> {
        let t = tail.as_mut().ok_or_else(|| AuditError::Corrupt {
            path: self.dir.clone(),
            line: 0,
            problem: "the end of the log was not read".into(),
        })?;
        let mut written = Vec::with_capacity(batch.len());
        for entry in batch {
            let seq = t.seq + 1;
            let full = t
                .segment
                .as_ref()
                .is_none_or(|(_, len)| *len >= self.opts.max_segment_bytes);
            if full {
                self.sync_current(t)?;
                let p = self.dir.join(segments::name(seq));
                let f = OpenOptions::new()
                    .create_new(true)
                    .append(true)
                    .open(&p)
                    .map_err(AuditError::io(&p, "creating a new file"))?;
                sync_dir(&self.dir)?;
                t.segment = Some((p, 0));
                t.file = Some(f);
            }
            let rec = Record::seal(entry.bounded(), seq, &t.hash);
            let mut line = rec.to_line();
            line.push('\n');
            let (path, len) = t.segment.as_mut().ok_or_else(|| AuditError::Corrupt {
                path: self.dir.clone(),
                line: 0,
                problem: "no current file".into(),
            })?;
            let f = t.file.as_mut().ok_or_else(|| AuditError::Corrupt {
                path: path.clone(),
                line: 0,
                problem: "the current file is not open".into(),
            })?;
            f.write_all(line.as_bytes())
                .map_err(AuditError::io(path.as_path(), "writing a record"))?;
            *len += line.len() as u64;
            t.seq = seq;
            t.hash = rec.hash.clone();
            written.push(rec);
        }
        self.sync_current(t)?;
        Ok(written)
    }

    fn sync_current(&self, t: &mut Tail) -> Result<(), AuditError> {
        if let (Some(f), Some((p, _))) = (&t.file, &t.segment) {
            f.sync_data().map_err(AuditError::io(p.as_path(), "syncing (fsync)"))?;
        }
        Ok(())
    }

    fn flock(&self) -> Result<FlockGuard<'_>, AuditError> {
        FlockGuard::exclusive(&self.lock_file).map_err(AuditError::io(self.dir.join(".lock"), "locking"))
    }
}

/// The last record of `path`, checked (its hash must match its content).
fn last_record(path: &Path) -> Result<Option<Record>, AuditError> {
    let mut f = File::open(path).map_err(AuditError::io(path, "opening"))?;
    let len = f.metadata().map_err(AuditError::io(path, "reading the size"))?.len();
    // A record is at most a few KiB (fields are cut): the last 64 KiB hold the last line.
    let from = len.saturating_sub(64 << 10);
    f.seek(SeekFrom::Start(from)).map_err(AuditError::io(path, "seeking"))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).map_err(AuditError::io(path, "reading"))?;
    let (lines, _) = segments::lines(&buf);
    let Some(last) = lines.iter().rev().find(|l| !l.is_empty()) else {
        return Ok(None);
    };
    let corrupt = |problem: String| AuditError::Corrupt {
        path: path.to_path_buf(),
        line: 0,
        problem,
    };
    let text = std::str::from_utf8(last).map_err(|_| corrupt("the last record is not UTF-8".into()))?;
    let rec = Record::from_line(text).map_err(|e| corrupt(format!("the last record does not parse ({e})")))?;
    if rec.computed_hash() != rec.hash {
        return Err(corrupt(format!(
            "the last record (seq {}) does not match its hash",
            rec.seq
        )));
    }
    Ok(Some(rec))
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(AuditError::io(dir, "syncing the directory"))
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), AuditError> {
    Ok(())
}

/// An `flock` held until dropped (other processes appending to the same log wait).
pub(crate) struct FlockGuard<'a> {
    #[cfg_attr(not(unix), allow(dead_code))]
    file: &'a File,
}

impl<'a> FlockGuard<'a> {
    #[cfg(unix)]
    pub(crate) fn exclusive(file: &'a File) -> std::io::Result<Self> {
        rustix::fs::flock(file, rustix::fs::FlockOperation::LockExclusive)?;
        Ok(FlockGuard { file })
    }

    #[cfg(unix)]
    pub(crate) fn shared(file: &'a File) -> std::io::Result<Self> {
        rustix::fs::flock(file, rustix::fs::FlockOperation::LockShared)?;
        Ok(FlockGuard { file })
    }

    #[cfg(not(unix))]
    pub(crate) fn exclusive(file: &'a File) -> std::io::Result<Self> {
        Ok(FlockGuard { file })
    }

    #[cfg(not(unix))]
    pub(crate) fn shared(file: &'a File) -> std::io::Result<Self> {
        Ok(FlockGuard { file })
    }
}

impl Drop for FlockGuard<'_> {
    fn drop(&mut self) {
        #[cfg(unix)]
        let _ = rustix::fs::flock(self.file, rustix::fs::FlockOperation::Unlock);
    }
}
