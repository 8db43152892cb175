//! The write-ahead log: what makes an acknowledged append survive `kill -9`.
//!
//! A WAL file is `wal-<seq>.log`: an 8-byte magic, then records framed as
//! `[payload length: u32 LE][CRC-32 of payload: u32 LE][payload]`. An append returns only
//! after its record is written and `sync_data` has returned.
//!
//! **Group commit.** Appenders put their framed record in a shared buffer and take a
//! ticket. One of them (the leader) takes the whole buffer, writes it and syncs it once
//! while the others wait on a condition variable; when the sync returns, every ticket up
//! to the leader's is durable. Under concurrency many batches share one fsync; alone, an
//! appender pays one fsync per call, which is the price of the durability contract.
//!
//! **Failure.** If a write or sync fails, the file's state is unknown (a partial record
//! may be on disk), so the writer is poisoned: every later append fails until the store is
//! reopened, which replays and truncates the log cleanly.
//!
//! **Replay.** Records are read in order until the end of the file. In the newest file a
//! short or CRC-failing record is a torn write from a crash: the file is truncated there
//! with a warning; only unacknowledged data can be in it, because acknowledged records
//! were synced whole before anything after them was written. In an older file (one that
//! was complete when the next one was created) a bad record is real corruption and
//! replay stops with [`StoreError::Corrupt`] rather than silently dropping acknowledged
//! data.

use crate::StoreError;
use parking_lot::{Condvar, Mutex};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"GWWAL\x00\x00\x01";
pub const FRAME: usize = 8;
/// Refuse to allocate for a record claiming more than this: it is garbage.
const MAX_RECORD: u32 = 1 << 30;

pub fn file_name(seq: u64) -> String {
    format!("wal-{seq:020}.log")
}

/// The sequence number in a WAL file name, if it is one.
pub fn parse_name(name: &str) -> Option<u64> {
    name.strip_prefix("wal-")?.strip_suffix(".log")?.parse().ok()
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Appends `[len][crc][payload]` to `out`.
pub fn frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// One frame read from a buffer of frames.
pub enum Frame<'a> {
    /// A whole record with a matching CRC; the next frame starts at `next`.
    Record { payload: &'a [u8], next: usize },
    /// No valid record starts here: why.
    Bad(&'static str),
}

/// Reads the frame starting at `pos` of `buf` (shared by the WAL and the incident log).
pub fn read_frame(buf: &[u8], pos: usize) -> Frame<'_> {
    let Some(h) = buf.get(pos..pos.saturating_add(FRAME)) else {
        return Frame::Bad("record header cut short");
    };
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    if len > MAX_RECORD {
        return Frame::Bad("record length implausible");
    }
    let start = pos + FRAME;
    match buf.get(start..start.saturating_add(len as usize)) {
        None => Frame::Bad("record payload cut short"),
        Some(p) if crc32fast::hash(p) != crc => Frame::Bad("record CRC mismatch"),
        Some(p) => Frame::Record {
            payload: p,
            next: start + len as usize,
        },
    }
}

struct State {
    /// The open file; `None` while the leader is writing to it outside the lock.
    file: Option<File>,
    path: PathBuf,
    seq: u64,
    /// Framed records waiting for the next leader.
    pending: Vec<u8>,
    /// Tickets handed out so far, and the highest ticket known durable.
    issued: u64,
    durable: u64,
    leader_active: bool,
    /// Set after a failed write or sync; the message is repeated to later callers.
    poisoned: Option<String>,
}

/// The group-committing WAL writer.
pub struct WalWriter {
    state: Mutex<State>,
    done: Condvar,
    dir: PathBuf,
    sync: bool,
}

impl WalWriter {
    /// Creates `wal-<seq>.log` (which must not exist) and makes it durable.
    pub fn create(dir: &Path, seq: u64, sync: bool) -> Result<Self, StoreError> {
        let (file, path) = create_file(dir, seq, sync)?;
        Ok(WalWriter {
            state: Mutex::new(State {
                file: Some(file),
                path,
                seq,
                pending: Vec::new(),
                issued: 0,
                durable: 0,
                leader_active: false,
                poisoned: None,
            }),
            done: Condvar::new(),
            dir: dir.to_path_buf(),
            sync,
        })
    }

    /// Appends one record and returns once it is durable.
    pub fn append(&self, payload: &[u8]) -> Result<(), StoreError> {
        if payload.len() > MAX_RECORD as usize {
            // Replay would reject it as garbage; refuse it before acknowledging anything.
            return Err(StoreError::Encoding {
                what: "WAL record".into(),
                reason: format!(
                    "{} bytes is above the {MAX_RECORD}-byte record limit; append smaller batches",
                    payload.len()
                ),
            });
        }
        let mut st = self.state.lock();
        if let Some(msg) = &st.poisoned {
            return Err(poisoned(&st.path, msg));
        }
        frame(payload, &mut st.pending);
        st.issued += 1;
        let ticket = st.issued;
        loop {
            if st.durable >= ticket {
                return Ok(());
            }
            if let Some(msg) = &st.poisoned {
                return Err(poisoned(&st.path, msg));
            }
            if st.leader_active {
                self.done.wait(&mut st);
                continue;
            }
            // Become the leader for everything pending now.
            st.leader_active = true;
            let buf = std::mem::take(&mut st.pending);
            let upto = st.issued;
            let Some(mut file) = st.file.take() else {
                // Unreachable by construction (the file is only taken by a leader), but
                // a poisoned writer is better than a panic.
                st.poisoned = Some("WAL file handle missing".into());
                st.leader_active = false;
                self.done.notify_all();
                continue;
            };
            let path = st.path.clone();
            drop(st);
            let result = file
                .write_all(&buf)
                .and_then(|()| if self.sync { file.sync_data() } else { Ok(()) });
            st = self.state.lock();
            st.file = Some(file);
            st.leader_active = false;
            // Hand the (now empty) allocation back for reuse if nobody refilled it.
            if st.pending.is_empty() {
                let mut buf = buf;
                buf.clear();
                st.pending = buf;
            }
            match result {
                Ok(()) => st.durable = upto,
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "WAL write failed; store refuses writes until reopened");
                    st.poisoned = Some(e.to_string());
                    self.done.notify_all();
                    return Err(StoreError::Io { path, source: e });
                }
            }
            self.done.notify_all();
        }
    }

    /// Switches to a new file `wal-<seq+1>.log` and returns the sequence number of the
    /// file that was closed. The caller guarantees no append is in flight.
    pub fn rotate(&self) -> Result<u64, StoreError> {
        let mut st = self.state.lock();
        if let Some(msg) = &st.poisoned {
            return Err(poisoned(&st.path, msg));
        }
        let old = st.seq;
        let (file, path) = create_file(&self.dir, old + 1, self.sync)?;
        st.file = Some(file);
        st.path = path;
        st.seq = old + 1;
        Ok(old)
    }
}

fn poisoned(path: &Path, msg: &str) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(format!("an earlier WAL write failed ({msg}); reopen the store")),
    }
}

fn create_file(dir: &Path, seq: u64, sync: bool) -> Result<(File, PathBuf), StoreError> {
    let path = dir.join(file_name(seq));
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(io_err(&path))?;
    file.write_all(MAGIC).map_err(io_err(&path))?;
    if sync {
        file.sync_all().map_err(io_err(&path))?;
        super::sync_dir(dir)?;
    }
    Ok((file, path))
}

/// Replays one WAL file, calling `apply(payload, offset)` for each good record.
///
/// `is_newest`: whether a bad tail may be a torn write (truncate) or is corruption (error).
pub fn replay(
    path: &Path,
    is_newest: bool,
    mut apply: impl FnMut(&[u8], u64) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut buf = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut buf))
        .map_err(io_err(path))?;
    let corrupt = |offset: usize, reason: &str| StoreError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason: reason.to_string(),
    };
    if buf.len() < MAGIC.len() {
        // A crash between creating the file and syncing its magic: nothing was ever
        // acknowledged in it.
        if is_newest {
            tracing::warn!(path = %path.display(), "WAL file without header (crash at creation); ignoring it");
            return Ok(());
        }
        return Err(corrupt(0, "WAL file shorter than its header"));
    }
    if &buf[..MAGIC.len()] != MAGIC {
        return Err(corrupt(0, "not a gpuwarden WAL file (bad magic)"));
    }
    let mut pos = MAGIC.len();
    while pos < buf.len() {
        let bad = match read_frame(&buf, pos) {
            Frame::Record { payload, next } => {
                apply(payload, pos as u64)?;
                pos = next;
                None
            }
            Frame::Bad(reason) => Some(reason),
        };
        if let Some(reason) = bad {
            if !is_newest {
                return Err(corrupt(pos, reason));
            }
            tracing::warn!(
                path = %path.display(), offset = pos, dropped_bytes = buf.len() - pos, reason,
                "truncating torn tail of the WAL (data that was never acknowledged)"
            );
            let f = OpenOptions::new().write(true).open(path).map_err(io_err(path))?;
            f.set_len(pos as u64).map_err(io_err(path))?;
            f.sync_all().map_err(io_err(path))?;
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(path: &Path, newest: bool) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        replay(path, newest, |p, _| {
            out.push(p.to_vec());
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn torn_tail_is_truncated_and_earlier_records_kept() {
        let dir = tempfile::tempdir().unwrap();
        let w = WalWriter::create(dir.path(), 1, true).unwrap();
        w.append(b"one").unwrap();
        w.append(b"two").unwrap();
        let path = dir.path().join(file_name(1));
        let full = std::fs::metadata(&path).unwrap().len();
        // Cut the last record in half.
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(full - 2)
            .unwrap();
        assert_eq!(records(&path, true).unwrap(), vec![b"one".to_vec()]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), (8 + 8 + 3) as u64);
    }

    #[test]
    fn corruption_in_an_older_file_is_an_error_with_offset() {
        let dir = tempfile::tempdir().unwrap();
        let w = WalWriter::create(dir.path(), 1, true).unwrap();
        w.append(b"one").unwrap();
        w.append(b"two").unwrap();
        let path = dir.path().join(file_name(1));
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 0xFF;
        std::fs::write(&path, &bytes).unwrap();
        match records(&path, false) {
            Err(StoreError::Corrupt { offset, .. }) => assert_eq!(offset, 8 + 8 + 3),
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    #[test]
    fn concurrent_appends_all_become_durable() {
        let dir = tempfile::tempdir().unwrap();
        let w = std::sync::Arc::new(WalWriter::create(dir.path(), 1, true).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..50u32 {
                        w.append(&[t, i as u8]).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let recs = records(&dir.path().join(file_name(1)), true).unwrap();
        assert_eq!(recs.len(), 200);
    }
}
