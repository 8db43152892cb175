//! The write-ahead log: what makes an acknowledged append survive `kill -9`.
//!
//! A WAL file is `wal-<seq>.log`: an 8-byte magic, then records framed as
//! `[payload length: u32 LE][CRC-32 of payload: u32 LE][payload]`. An append returns only
//! after its record is written and `sync_data` has returned.
//!
//! **Group commit.** Appenders put their framed record in a shared buffer and join the
//! open batch. One of them (the leader) takes the whole buffer, writes it and syncs it
//! once while the others wait on a condition variable; when the sync returns, every
//! record of the batch is durable (or, on failure, every appender of it gets the error). Under concurrency many batches share one fsync; alone, an
//! appender pays one fsync per call, which is the price of the durability contract.
//!
//! **Failure.** If a write or sync fails (ENOSPC, EIO), every append in that batch gets
//! the error and nothing of it is acknowledged. A partial record may be on disk, so the
//! file is cut back to its last good length (the magic plus whole, synced records)
//! before anything else is written; then the next append simply tries again. A disk that
//! was full and is freed brings writes back without a restart.
//!
//! **Replay.** Records are read in order until the end of the file. An incomplete last
//! record of the newest file is a torn write from a crash: the file is truncated there
//! with a warning; only unacknowledged data can be in it, because acknowledged records
//! were synced whole before anything after them was written. Any other bad record is
//! damage: the reader resyncs on the next valid record, so damage costs only the
//! damaged records; the file is kept as `*.corrupt` and rewritten clean, and the loss is
//! counted (see [`replay`]).

use super::fault::{self, Faults};
use crate::StoreError;
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
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
    if len == 0 {
        // Never written (every payload has at least a tag or a `[`), and zeros — a file
        // whose size reached the disk before its data — would otherwise pass the CRC.
        return Frame::Bad("empty record (zeros)");
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
    /// The batch that appenders are joining now (its records are in `pending`), and how
    /// many appenders joined it.
    open_batch: u64,
    open_count: u64,
    /// Batches up to this one are written (or failed). One leader at a time, so batches
    /// complete in order.
    completed: u64,
    /// Failed batches whose waiters have not all seen the failure yet: why, and how many
    /// waiters still have to. A per-batch record (not a watermark) so that a waiter that
    /// wakes late never mistakes a later batch's success for its own.
    failed: HashMap<u64, (String, u64)>,
    /// Length of the file's prefix made of the magic and whole, synced records.
    good_len: u64,
    /// A failed write may have left part of a record after `good_len`: it is cut off
    /// before anything else is written, so no later record follows a half one.
    dirty: bool,
    leader_active: bool,
}

/// The group-committing WAL writer.
pub struct WalWriter {
    state: Mutex<State>,
    done: Condvar,
    dir: PathBuf,
    sync: bool,
    faults: Faults,
}

impl WalWriter {
    /// Creates `wal-<seq>.log` (which must not exist) and makes it durable.
    pub fn create(dir: &Path, seq: u64, sync: bool, faults: Faults) -> Result<Self, StoreError> {
        let (file, path) = create_file(dir, seq, sync)?;
        Ok(WalWriter {
            state: Mutex::new(State {
                file: Some(file),
                path,
                seq,
                pending: Vec::new(),
                open_batch: 1,
                open_count: 0,
                completed: 0,
                failed: HashMap::new(),
                good_len: MAGIC.len() as u64,
                dirty: false,
                leader_active: false,
            }),
            done: Condvar::new(),
            dir: dir.to_path_buf(),
            sync,
            faults,
        })
    }

    /// Appends one record and returns once it is durable. On a write or sync failure it
    /// returns the error, and the next append first cuts the file back to its last good
    /// length and tries again: a full disk that is freed brings writes back.
    pub fn append(&self, payload: &[u8]) -> Result<(), StoreError> {
        if payload.is_empty() {
            // Replay reads a zero-length frame as zeros left by a crash, not as a record.
            return Err(StoreError::Encoding {
                what: "WAL record".into(),
                reason: "an empty record cannot be told from zeros on disk; this is a bug in the caller".into(),
            });
        }
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
        frame(payload, &mut st.pending);
        let mine = st.open_batch;
        st.open_count += 1;
        loop {
            if st.completed >= mine {
                let st = &mut *st;
                let Some((msg, left)) = st.failed.get_mut(&mine) else {
                    return Ok(());
                };
                let err = batch_failed(&st.path, msg);
                *left -= 1;
                if *left == 0 {
                    st.failed.remove(&mine);
                }
                return Err(err);
            }
            if st.leader_active {
                self.done.wait(&mut st);
                continue;
            }
            // Become the leader for the open batch. Every earlier batch is complete (each
            // leader completes its batch before another can start), so it is `mine`.
            st.leader_active = true;
            let batch = st.open_batch;
            let others = st.open_count.saturating_sub(1);
            st.open_batch += 1;
            st.open_count = 0;
            let buf = std::mem::take(&mut st.pending);
            let Some(mut file) = st.file.take() else {
                // Unreachable by construction (the file is only taken by a leader), but
                // failing the batch is better than a panic.
                let msg = "WAL file handle missing".to_string();
                let err = batch_failed(&st.path, &msg);
                if others > 0 {
                    st.failed.insert(batch, (msg, others));
                }
                st.completed = batch;
                st.leader_active = false;
                self.done.notify_all();
                return Err(err);
            };
            let (path, good_len, dirty) = (st.path.clone(), st.good_len, st.dirty);
            drop(st);
            let result = (if dirty { self.cut_back(&file, good_len) } else { Ok(()) })
                .and_then(|()| fault::write_all(&self.faults, &mut file, &path, &buf))
                .and_then(|()| {
                    if self.sync {
                        fault::sync_data(&self.faults, &file, &path)
                    } else {
                        Ok(())
                    }
                });
            // On failure, cut the partial record off right away (best effort: if it
            // fails too, the next leader tries again before writing).
            let still_dirty = result.is_err() && self.cut_back(&file, good_len).is_err();
            st = self.state.lock();
            st.file = Some(file);
            st.leader_active = false;
            st.completed = batch;
            self.done.notify_all();
            match result {
                Ok(()) => {
                    st.good_len = good_len + buf.len() as u64;
                    st.dirty = false;
                    // Hand the (now empty) allocation back for reuse if nobody refilled it.
                    if st.pending.is_empty() {
                        let mut buf = buf;
                        buf.clear();
                        st.pending = buf;
                    }
                    return Ok(());
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, bytes = buf.len(), "WAL write failed; the batch is refused and the next write retries");
                    if others > 0 {
                        st.failed.insert(batch, (e.to_string(), others));
                    }
                    st.dirty = still_dirty;
                    return Err(StoreError::Io { path, source: e });
                }
            }
        }
    }

    /// Truncates the file to `len` (dropping a partial record) and makes that durable.
    fn cut_back(&self, file: &File, len: u64) -> std::io::Result<()> {
        file.set_len(len)?;
        if self.sync {
            file.sync_all()?;
        }
        Ok(())
    }

    /// Switches to a new file `wal-<seq+1>.log` and returns the sequence number of the
    /// file that was closed. The caller guarantees no append is in flight.
    pub fn rotate(&self) -> Result<u64, StoreError> {
        let mut st = self.state.lock();
        if st.dirty {
            // Leave the closed file holding only whole records when possible.
            if let Some(f) = &st.file {
                if self.cut_back(f, st.good_len).is_ok() {
                    st.dirty = false;
                }
            }
        }
        let old = st.seq;
        let (file, path) = create_file(&self.dir, old + 1, self.sync)?;
        st.file = Some(file);
        st.path = path;
        st.seq = old + 1;
        st.good_len = MAGIC.len() as u64;
        st.dirty = false;
        Ok(old)
    }
}

fn batch_failed(path: &Path, msg: &str) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(format!(
            "the WAL write of this batch failed ({msg}); it was not stored — free disk space or fix the device, the next write retries"
        )),
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

/// Whether the frame at `pos` runs past the end of `buf` (a torn write), as opposed to
/// a whole frame that is wrong.
pub fn frame_cut_short(buf: &[u8], pos: usize) -> bool {
    let Some(h) = buf.get(pos..pos.saturating_add(FRAME)) else {
        return true;
    };
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    len <= MAX_RECORD && (pos + FRAME).saturating_add(len as usize) > buf.len()
}

/// Whether the bad bytes from `pos` to the end look like a crash mid-write rather than
/// damage: an incomplete last record, or only zeros (a file whose size reached the disk
/// before its data did).
pub fn torn_tail(buf: &[u8], pos: usize) -> bool {
    frame_cut_short(buf, pos) || buf.get(pos..).is_some_and(|t| t.iter().all(|&b| b == 0))
}

/// The first offset at or after `from` where a whole, CRC-valid frame starts whose
/// payload's first byte passes `first_ok` (which rejects most false starts before
/// any CRC is computed).
pub fn resync(buf: &[u8], from: usize, first_ok: impl Fn(u8) -> bool) -> Option<usize> {
    (from..buf.len().saturating_sub(FRAME)).find(|&p| {
        buf.get(p + FRAME).is_some_and(|&b| first_ok(b)) && matches!(read_frame(buf, p), Frame::Record { .. })
    })
}

/// Replays one WAL file, calling `apply(payload)` for each good record; `apply` returns
/// `false` for a record that does not decode (it must not have applied any of it).
///
/// Damage costs only the damaged records: on a bad record the reader scans forward for
/// the next valid frame (see [`resync`]) and continues; every byte skipped is counted in
/// `damage` and logged. A copy of a damaged file is first kept as `*.corrupt` (see
/// [`super::keep_copy`]), then it is rewritten with its good records so the next open reads
/// it clean. A bad or missing header is damage too, and never blocks the open. Only a
/// torn tail of the newest file — an incomplete last record, never acknowledged — is
/// simply truncated.
///
/// Why no per-record magic: the frame's length + CRC-32 + a known first payload byte
/// (the record tag) already make a false resync point a ~2^-32 event, and keeping the
/// framing unchanged keeps every existing WAL readable without a format version bump.
pub fn replay(
    path: &Path,
    is_newest: bool,
    damage: &super::Damage,
    mut apply: impl FnMut(&[u8]) -> bool,
) -> Result<(), StoreError> {
    let mut buf = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut buf))
        .map_err(io_err(path))?;
    if buf.is_empty() || (buf.len() < MAGIC.len() && MAGIC.starts_with(&buf)) {
        // A crash between creating the file and syncing its magic: nothing was ever
        // acknowledged in it.
        tracing::warn!(path = %path.display(), "WAL file without header (crash at creation); ignoring it");
        return Ok(());
    }
    let is_record_tag = super::record::is_known_tag;
    let mut good = MAGIC.to_vec();
    let (mut records_lost, mut bytes_lost) = (0u64, 0u64);
    let mut first_damage: Option<(usize, &'static str)> = None;
    if buf.get(..MAGIC.len()) != Some(MAGIC.as_slice()) {
        let n = buf.len().min(MAGIC.len());
        tracing::warn!(path = %path.display(), offset = 0, skipped_bytes = n, "WAL file header is damaged; reading the records after it");
        bytes_lost += n as u64;
        first_damage = Some((0, "bad WAL file header (magic)"));
    }
    let mut torn_at = None;
    let mut pos = MAGIC.len();
    while pos < buf.len() {
        let reason = match read_frame(&buf, pos) {
            Frame::Record { payload, next } => {
                if apply(payload) {
                    good.extend_from_slice(&buf[pos..next]);
                    pos = next;
                    continue;
                }
                "WAL record with a valid CRC does not decode"
            }
            Frame::Bad(reason) => reason,
        };
        match resync(&buf, pos + 1, is_record_tag) {
            Some(next) => {
                tracing::warn!(path = %path.display(), offset = pos, skipped_bytes = next - pos, reason, "damaged WAL record skipped; continuing at the next valid record");
                records_lost += 1;
                bytes_lost += (next - pos) as u64;
                first_damage.get_or_insert((pos, reason));
                pos = next;
            }
            None if is_newest && torn_tail(&buf, pos) => {
                // A torn write from a crash: only never-acknowledged data is in it.
                tracing::warn!(
                    path = %path.display(), offset = pos, dropped_bytes = buf.len() - pos, reason,
                    "truncating torn tail of the WAL (data that was never acknowledged)"
                );
                torn_at = Some(pos);
                break;
            }
            None => {
                tracing::warn!(path = %path.display(), offset = pos, skipped_bytes = buf.len() - pos, reason, "damaged last WAL record skipped");
                records_lost += 1;
                bytes_lost += (buf.len() - pos) as u64;
                first_damage.get_or_insert((pos, reason));
                break;
            }
        }
    }
    if let Some((offset, reason)) = first_damage {
        let err = StoreError::Corrupt {
            path: path.to_path_buf(),
            offset: offset as u64,
            reason: format!("{reason}; {records_lost} record(s), {bytes_lost} byte(s) lost, the rest kept"),
        };
        super::keep_copy(path, &err)?;
        super::write_file_atomic(path, &good)?;
        damage.note(records_lost, bytes_lost);
    } else if let Some(at) = torn_at {
        let f = OpenOptions::new().write(true).open(path).map_err(io_err(path))?;
        f.set_len(at as u64).map_err(io_err(path))?;
        f.sync_all().map_err(io_err(path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn records(path: &Path, newest: bool, damage: &super::super::Damage) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        replay(path, newest, damage, |p| {
            out.push(p.to_vec());
            true
        })?;
        Ok(out)
    }

    #[test]
    fn torn_tail_is_truncated_and_earlier_records_kept() {
        let dir = tempfile::tempdir().unwrap();
        let w = WalWriter::create(dir.path(), 1, true, None).unwrap();
        w.append(b"\x01one").unwrap();
        w.append(b"\x01two").unwrap();
        let path = dir.path().join(file_name(1));
        let full = std::fs::metadata(&path).unwrap().len();
        // Cut the last record in half.
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(full - 2)
            .unwrap();
        let damage = super::super::Damage::default();
        assert_eq!(records(&path, true, &damage).unwrap(), vec![b"\x01one".to_vec()]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), (8 + 8 + 4) as u64);
        assert_eq!(damage.snapshot(), (0, 0, 0), "a torn tail is not damage");
    }

    #[test]
    fn zero_filled_tail_of_the_newest_file_is_torn_not_damage() {
        let dir = tempfile::tempdir().unwrap();
        let w = WalWriter::create(dir.path(), 1, true, None).unwrap();
        w.append(b"\x01one").unwrap();
        let path = dir.path().join(file_name(1));
        let good = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(good + 4096)
            .unwrap();
        let damage = super::super::Damage::default();
        assert_eq!(records(&path, true, &damage).unwrap(), vec![b"\x01one".to_vec()]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
        assert_eq!(damage.snapshot(), (0, 0, 0));
    }

    #[test]
    fn damage_in_an_older_file_costs_only_that_record() {
        let dir = tempfile::tempdir().unwrap();
        let w = WalWriter::create(dir.path(), 1, true, None).unwrap();
        for p in [b"\x01one", b"\x01two", b"\x01six"] {
            w.append(p).unwrap();
        }
        let path = dir.path().join(file_name(1));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[8 + 12 + 9] ^= 0xFF; // inside the second record's payload
        std::fs::write(&path, &bytes).unwrap();
        let damage = super::super::Damage::default();
        assert_eq!(
            records(&path, false, &damage).unwrap(),
            vec![b"\x01one".to_vec(), b"\x01six".to_vec()]
        );
        assert_eq!(damage.snapshot(), (1, 12, 1));
        assert!(dir.path().join(format!("{}.corrupt", file_name(1))).exists());
        // Rewritten clean: a second read finds no damage.
        let again = super::super::Damage::default();
        assert_eq!(records(&path, false, &again).unwrap().len(), 2);
        assert_eq!(again.snapshot(), (0, 0, 0));
    }

    /// Fails the first `fail` writes after writing half of them.
    struct HalfThenFail(AtomicUsize);
    impl fault::FaultInjector for HalfThenFail {
        fn on_write(&self, _: &Path, len: usize) -> Result<(), (usize, std::io::Error)> {
            if self.0.load(Ordering::SeqCst) == 0 {
                return Ok(());
            }
            self.0.fetch_sub(1, Ordering::SeqCst);
            Err((len / 2, std::io::Error::from_raw_os_error(28)))
        }
    }

    #[test]
    fn failed_write_is_cut_back_and_the_next_append_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let inj = Arc::new(HalfThenFail(AtomicUsize::new(0)));
        let w = WalWriter::create(dir.path(), 1, true, Some(inj.clone())).unwrap();
        w.append(b"\x01one").unwrap();
        inj.0.store(2, Ordering::SeqCst);
        assert!(w.append(b"\x01lost-1").is_err());
        assert!(w.append(b"\x01lost-2").is_err());
        w.append(b"\x01two").unwrap();
        let damage = super::super::Damage::default();
        let path = dir.path().join(file_name(1));
        assert_eq!(
            records(&path, true, &damage).unwrap(),
            vec![b"\x01one".to_vec(), b"\x01two".to_vec()]
        );
        assert_eq!(damage.snapshot(), (0, 0, 0));
    }

    #[test]
    fn concurrent_appends_all_become_durable() {
        let dir = tempfile::tempdir().unwrap();
        let w = std::sync::Arc::new(WalWriter::create(dir.path(), 1, true, None).unwrap());
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
        let damage = super::super::Damage::default();
        let recs = records(&dir.path().join(file_name(1)), true, &damage).unwrap();
        assert_eq!(recs.len(), 200);
    }
}
