//! The outbox's file format: an append-only log of CRC-framed records.
//!
//! Each frame is `[len: u32 LE][crc32(payload): u32 LE][payload: len bytes of JSON]`.
//! A crash can leave a torn frame at the end; reading stops at the first frame whose
//! length runs past the file or whose CRC does not match, and the file is cut back to
//! the last good frame, so a torn write loses only what was never acknowledged (the
//! caller fsyncs before it treats a record as written).
//!
//! JSON payloads keep the file greppable in an incident of our own, at a size that does
//! not matter here (a few hundred bytes per notification).

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Largest record accepted when reading: anything larger is a corrupt length.
const MAX_RECORD: u32 = 16 * 1024 * 1024;

/// Appends one frame to `out` (no fsync).
pub fn write_frame(out: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    let len =
        u32::try_from(payload.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "record too large"))?;
    let mut head = [0u8; 8];
    head[..4].copy_from_slice(&len.to_le_bytes());
    head[4..].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.write_all(&head)?;
    out.write_all(payload)
}

/// What reading a log found.
pub struct ReadLog {
    pub payloads: Vec<Vec<u8>>,
    /// Bytes of good frames; the file is cut back to this.
    pub good_len: u64,
    /// Bytes after the last good frame (a torn or corrupt tail), dropped.
    pub dropped_bytes: u64,
}

/// Reads every good frame of `path` and truncates a torn tail. A missing file is empty.
pub fn read_and_repair(path: &Path) -> io::Result<ReadLog> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(ReadLog {
                payloads: Vec::new(),
                good_len: 0,
                dropped_bytes: 0,
            })
        }
        Err(e) => return Err(e),
    };
    let total = file.metadata()?.len();
    let mut r = BufReader::new(file);
    let mut payloads = Vec::new();
    let mut good_len = 0u64;
    loop {
        let mut head = [0u8; 8];
        if read_exact_or_eof(&mut r, &mut head)? {
            break;
        }
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        if len > MAX_RECORD || good_len + 8 + u64::from(len) > total {
            break;
        }
        let mut payload = vec![0u8; len as usize];
        if read_exact_or_eof(&mut r, &mut payload)? || crc32fast::hash(&payload) != crc {
            break;
        }
        good_len += 8 + u64::from(len);
        payloads.push(payload);
    }
    if good_len < total {
        let f = OpenOptions::new().write(true).open(path)?;
        f.set_len(good_len)?;
        f.sync_all()?;
    }
    Ok(ReadLog {
        payloads,
        good_len,
        dropped_bytes: total - good_len,
    })
}

/// Fills `buf`; `Ok(true)` when the input ended first.
fn read_exact_or_eof(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    match r.read_exact(buf) {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(true),
        Err(e) => Err(e),
    }
}

/// Opens `path` for appending, creating it (and making its directory entry durable).
pub fn open_append(path: &Path) -> io::Result<File> {
    let existed = path.exists();
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    f.seek(SeekFrom::End(0))?;
    if !existed {
        sync_dir(path)?;
    }
    Ok(f)
}

/// Writes `payloads` to a new file and atomically replaces `path` with it.
pub fn rewrite(path: &Path, payloads: impl Iterator<Item = Vec<u8>>) -> io::Result<()> {
    let tmp = path.with_extension("log.compact");
    {
        let mut out = io::BufWriter::new(File::create(&tmp)?);
        for p in payloads {
            write_frame(&mut out, &p)?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(path)
}

/// fsync of the directory holding `path`, so a created or renamed file survives a crash.
fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_and_corrupt_tails_are_cut_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        let mut f = open_append(&p).unwrap();
        write_frame(&mut f, b"one").unwrap();
        write_frame(&mut f, b"two").unwrap();
        f.write_all(&[9, 0, 0, 0, 1, 2]).unwrap(); // torn header
        drop(f);
        let r = read_and_repair(&p).unwrap();
        assert_eq!(r.payloads, vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(r.dropped_bytes, 6);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), r.good_len);

        // A flipped byte in the last payload: that frame goes, the first stays.
        let mut bytes = std::fs::read(&p).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 0xff;
        std::fs::write(&p, &bytes).unwrap();
        let r = read_and_repair(&p).unwrap();
        assert_eq!(r.payloads, vec![b"one".to_vec()]);
    }

    #[test]
    fn rewrite_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        let mut f = open_append(&p).unwrap();
        write_frame(&mut f, b"old").unwrap();
        rewrite(&p, vec![b"new".to_vec()].into_iter()).unwrap();
        assert_eq!(read_and_repair(&p).unwrap().payloads, vec![b"new".to_vec()]);
    }
}
