//! `verify`: reads every file of a log and reports each record that was modified,
//! removed, inserted or moved, by sequence number, file and line.
//!
//! Each record carries its sequence number, the previous record's hash and its own hash
//! over both and its content. So: an edited record no longer matches its own hash; a
//! removed one leaves a gap in the numbers; a moved one comes after a higher number; an
//! inserted one repeats a number or does not link to its predecessor's hash. What a
//! chain cannot show on its own is records cut off the end, or a whole chain rewritten
//! by someone who recomputed every hash: compare the head hash `verify` prints with a
//! copy kept elsewhere (a SIEM that received the records, an earlier `verify`).

use crate::error::AuditError;
use crate::record::{Record, GENESIS};
use crate::segments;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;

/// Where a line is: file name and 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub file: String,
    pub line: usize,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} line {}", self.file, self.line)
    }
}

/// One thing wrong with the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The line is not a record (not JSON, unknown or missing fields).
    Unreadable { at: Place, why: String },
    /// The record's content does not match its hash: it was edited.
    Modified { seq: u64, at: Place },
    /// Records `from..=to` are not in the log: removed.
    Missing { from: u64, to: u64 },
    /// The record comes after a record with a higher number: moved.
    OutOfOrder { seq: u64, after: u64, at: Place },
    /// A second record with this number: inserted.
    Duplicate { seq: u64, at: Place },
    /// The record's `prev` is not the hash of the record before it: it, or its
    /// predecessor, was replaced (or inserted with recomputed hashes).
    BrokenLink { seq: u64, at: Place },
    /// The file ends in an unfinished line (a crash during a write; `gpuwarden` cuts it
    /// off at the next start).
    TornTail { file: String, bytes: usize },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Unreadable { at, why } => write!(f, "{at}: not a record ({why})"),
            Problem::Modified { seq, at } => {
                write!(
                    f,
                    "record {seq} ({at}) was modified: its content does not match its hash"
                )
            }
            Problem::Missing { from, to } if from == to => write!(f, "record {from} is missing (removed)"),
            Problem::Missing { from, to } => write!(f, "records {from} to {to} are missing (removed)"),
            Problem::OutOfOrder { seq, after, at } => {
                write!(
                    f,
                    "record {seq} ({at}) is out of order: it comes after record {after} (moved)"
                )
            }
            Problem::Duplicate { seq, at } => write!(f, "record {seq} ({at}) appears twice (inserted)"),
            Problem::BrokenLink { seq, at } => write!(
                f,
                "record {seq} ({at}) does not link to the record before it: one of the two was replaced or inserted"
            ),
            Problem::TornTail { file, bytes } => {
                write!(
                    f,
                    "{file} ends in an unfinished record of {bytes} bytes (a crash during a write)"
                )
            }
        }
    }
}

/// What `verify` found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub files: usize,
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The hash of the last record: keep it elsewhere to detect a cut-off end later.
    pub head: Option<String>,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verifies the log in `dir` (see the module doc). `Err` only when the files cannot be
/// read; problems with their content are in the report.
pub fn verify(dir: &Path) -> Result<VerifyReport, AuditError> {
    // Writers hold the lock while they write, so no line is half-written while we read.
    let lock = std::fs::File::open(dir.join(".lock")).ok();
    let _guard = match &lock {
        Some(f) => Some(crate::log::FlockGuard::shared(f).map_err(AuditError::io(dir.join(".lock"), "locking"))?),
        None => None,
    };
    let segs = segments::list(dir)?;
    let mut report = VerifyReport {
        files: segs.len(),
        ..VerifyReport::default()
    };
    // Every readable record in file order, with where it is.
    let mut all: Vec<(Record, Place)> = Vec::new();
    for p in &segs {
        let file = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = std::fs::read(p).map_err(AuditError::io(p, "reading"))?;
        let (lines, rest) = segments::lines(&bytes);
        for (i, line) in lines.iter().enumerate() {
            let at = Place {
                file: file.clone(),
                line: i + 1,
            };
            let parsed = std::str::from_utf8(line)
                .map_err(|_| "not UTF-8".to_string())
                .and_then(|t| Record::from_line(t).map_err(|e| e.to_string()));
            match parsed {
                Ok(r) => all.push((r, at)),
                Err(why) => report.problems.push(Problem::Unreadable { at, why }),
            }
        }
        if !rest.is_empty() {
            report.problems.push(Problem::TornTail {
                file,
                bytes: rest.len(),
            });
        }
    }
    report.records = all.len() as u64;
    // Hash of each sequence number, when it appears exactly once.
    let mut by_seq: HashMap<u64, Option<&str>> = HashMap::new();
    for (r, _) in &all {
        by_seq
            .entry(r.seq)
            .and_modify(|h| *h = None)
            .or_insert(Some(r.hash.as_str()));
    }
    let mut highest: Option<u64> = None;
    for (r, at) in &all {
        if r.computed_hash() != r.hash {
            report.problems.push(Problem::Modified {
                seq: r.seq,
                at: at.clone(),
            });
        }
        match highest {
            Some(h) if r.seq == h => report.problems.push(Problem::Duplicate {
                seq: r.seq,
                at: at.clone(),
            }),
            Some(h) if r.seq < h => {
                let dup = by_seq.get(&r.seq).is_some_and(|h| h.is_none());
                report.problems.push(if dup {
                    Problem::Duplicate {
                        seq: r.seq,
                        at: at.clone(),
                    }
                } else {
                    Problem::OutOfOrder {
                        seq: r.seq,
                        after: h,
                        at: at.clone(),
                    }
                });
            }
            _ => highest = Some(r.seq),
        }
        let expected_prev = if r.seq == 1 {
            Some(GENESIS)
        } else {
            by_seq.get(&(r.seq - 1)).copied().flatten()
        };
        if let Some(p) = expected_prev {
            if r.prev != p {
                report.problems.push(Problem::BrokenLink {
                    seq: r.seq,
                    at: at.clone(),
                });
            }
        }
    }
    // Gaps, from record 1 on (older files are never deleted by gpuwarden).
    let mut seqs: Vec<u64> = by_seq.keys().copied().collect();
    seqs.sort_unstable();
    let mut next = 1u64;
    for s in &seqs {
        if *s > next {
            report.problems.push(Problem::Missing { from: next, to: s - 1 });
        }
        next = next.max(s + 1);
    }
    report.first_seq = seqs.first().copied();
    report.last_seq = seqs.last().copied();
    report.head = all
        .iter()
        .filter(|(r, _)| Some(r.seq) == report.last_seq)
        .map(|(r, _)| r.hash.clone())
        .next_back();
    Ok(report)
}
