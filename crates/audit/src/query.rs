//! Reading the trail back, newest first, with filters and a cursor (`before` a sequence
//! number). Reads the files without the lock: an unfinished last line (a write in
//! progress) is skipped, and lines that do not read are skipped here (verification is
//! [`crate::verify()`]'s job).

use crate::error::AuditError;
use crate::record::{Outcome, Record};
use crate::segments;
use std::path::Path;

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// From this time (ms since the epoch), inclusive.
    pub from_ms: Option<i64>,
    /// Until this time, inclusive.
    pub to_ms: Option<i64>,
    /// Exactly this actor.
    pub actor: Option<String>,
    /// This action, or a prefix of actions ending with `.` or `*` (`incident.`,
    /// `silence.*`).
    pub action: Option<String>,
    pub result: Option<Outcome>,
    /// Only records with a smaller sequence number (the cursor of the next page).
    pub before_seq: Option<u64>,
    /// At most this many (at least 1).
    pub limit: usize,
}

impl Query {
    fn matches(&self, r: &Record) -> bool {
        self.from_ms.is_none_or(|f| r.ts_ms >= f)
            && self.to_ms.is_none_or(|t| r.ts_ms <= t)
            && self.actor.as_ref().is_none_or(|a| &r.actor == a)
            && self.result.is_none_or(|o| r.result == o)
            && self.before_seq.is_none_or(|b| r.seq < b)
            && self.action.as_ref().is_none_or(|a| match a.strip_suffix('*') {
                Some(prefix) => r.action.starts_with(prefix),
                None if a.ends_with('.') => r.action.starts_with(a.as_str()),
                None => &r.action == a,
            })
    }
}

/// One page of records, newest first.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub records: Vec<Record>,
    /// Pass as `before_seq` for the next (older) page; `None` when this was the last.
    pub next_before: Option<u64>,
}

/// Lists the records of the log in `dir` that match `q`, newest first.
pub fn query(dir: &Path, q: &Query) -> Result<Page, AuditError> {
    let limit = q.limit.max(1);
    let mut out = Vec::new();
    let segs = segments::list(dir)?;
    for p in segs.iter().rev() {
        if let (Some(b), Some(first)) = (q.before_seq, segments::first_seq(p)) {
            if first >= b {
                continue;
            }
        }
        let bytes = std::fs::read(p).map_err(AuditError::io(p, "reading"))?;
        let (lines, _) = segments::lines(&bytes);
        for line in lines.iter().rev() {
            let Some(r) = std::str::from_utf8(line).ok().and_then(|t| Record::from_line(t).ok()) else {
                continue;
            };
            if q.matches(&r) {
                if out.len() == limit {
                    let next_before = out.last().map(|r: &Record| r.seq);
                    return Ok(Page {
                        records: out,
                        next_before,
                    });
                }
                out.push(r);
            }
        }
    }
    Ok(Page {
        records: out,
        next_before: None,
    })
}
