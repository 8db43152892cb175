//! The files of the log: `audit-<first seq, 20 digits>.jsonl`, oldest first. A new file
//! is started when the current one reaches the size limit; the chain simply continues
//! (the first record of a file has the last hash of the file before as its `prev`).

use crate::error::AuditError;
use std::path::{Path, PathBuf};

const PREFIX: &str = "audit-";
const SUFFIX: &str = ".jsonl";

/// The file name of the segment starting at `seq`.
pub fn name(seq: u64) -> String {
    format!("{PREFIX}{seq:020}{SUFFIX}")
}

/// The first sequence number a segment's name says it holds.
pub fn first_seq(path: &Path) -> Option<u64> {
    let n = path.file_name()?.to_str()?;
    let digits = n.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Every segment in `dir`, oldest first (an absent directory has none).
pub fn list(dir: &Path) -> Result<Vec<PathBuf>, AuditError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(AuditError::io(dir, "listing the directory")(e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let p = e.map_err(AuditError::io(dir, "listing the directory"))?.path();
        if first_seq(&p).is_some() {
            out.push(p);
        }
    }
    // Zero-padded numbers: name order is sequence order.
    out.sort();
    Ok(out)
}

/// Splits `bytes` into complete lines (without `\n`) and the unterminated rest.
pub fn lines(bytes: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let complete = &bytes[..end];
    let mut v: Vec<&[u8]> = complete.split(|&b| b == b'\n').collect();
    // split leaves one empty piece after the final newline.
    v.pop();
    (v, &bytes[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort() {
        assert_eq!(first_seq(Path::new(&name(42))), Some(42));
        assert!(name(9) < name(10));
        assert_eq!(first_seq(Path::new("audit-12.jsonl")), None);
        assert_eq!(first_seq(Path::new("torn-1.bin")), None);
    }

    #[test]
    fn lines_keep_the_torn_rest() {
        let (l, rest) = lines(b"a\nb\nc");
        assert_eq!(l, vec![&b"a"[..], &b"b"[..]]);
        assert_eq!(rest, b"c");
        let (l, rest) = lines(b"a\n");
        assert_eq!(l, vec![&b"a"[..]]);
        assert!(rest.is_empty());
        assert_eq!(lines(b"").0.len(), 0);
    }
}
