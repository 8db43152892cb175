//! Bounded incident timelines.
//!
//! A long-lived, flapping incident would otherwise grow its timeline without bound (and
//! with it every persisted copy). When the cap is reached the oldest entries after the
//! head are folded into one `truncated` note: the opening of the incident and the most
//! recent history are what people read.

use gpuwarden_model::{Severity, TimelineEntry, TimestampMs};

/// `what` of the note that stands for dropped entries.
pub(crate) const TRUNCATED: &str = "truncated";

/// Entries kept at the start (the opening context).
const HEAD: usize = 4;

pub(crate) fn entry(ts_ms: TimestampMs, what: &str, detail: String, severity: Option<Severity>) -> TimelineEntry {
    TimelineEntry {
        ts_ms,
        what: what.to_string(),
        detail,
        severity,
    }
}

/// Appends `e`, then keeps the timeline at most `cap` entries long (`cap` >= 16).
pub(crate) fn push(timeline: &mut Vec<TimelineEntry>, e: TimelineEntry, cap: usize) {
    timeline.push(e);
    if timeline.len() <= cap {
        return;
    }
    // The note sits right after the head; create it on the first truncation.
    let has_note = timeline.get(HEAD).is_some_and(|t| t.what == TRUNCATED);
    if !has_note {
        let note = entry(0, TRUNCATED, String::new(), None);
        timeline.insert(HEAD, note);
    }
    let excess = timeline.len() - cap;
    let first = HEAD + 1;
    let last = (first + excess).min(timeline.len());
    let dropped: Vec<TimelineEntry> = timeline.drain(first..last).collect();
    let before = timeline.get(HEAD).map(|n| dropped_count(&n.detail)).unwrap_or(0);
    if let (Some(note), Some(newest_dropped)) = (timeline.get_mut(HEAD), dropped.last()) {
        let total = before + dropped.len() as u64;
        note.ts_ms = newest_dropped.ts_ms;
        note.detail = format!("{total} earlier entries dropped to bound the timeline");
    }
}

/// The count a note's detail carries (0 for a fresh note).
fn dropped_count(detail: &str) -> u64 {
    detail
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_is_capped_keeping_head_and_latest_with_a_note() {
        let mut tl = Vec::new();
        for i in 0..1000 {
            push(&mut tl, entry(i, "finding", format!("#{i}"), None), 20);
            assert!(tl.len() <= 20);
        }
        assert_eq!(tl.len(), 20);
        assert_eq!(tl[0].detail, "#0");
        assert_eq!(tl[HEAD - 1].detail, "#3");
        assert_eq!(tl[HEAD].what, TRUNCATED);
        assert!(tl[HEAD].detail.starts_with("981 "), "{}", tl[HEAD].detail);
        assert_eq!(tl[19].detail, "#999");
        // 4 head + 1 note + 15 newest (985..=999)
        assert_eq!(tl[HEAD + 1].detail, "#985");
    }
}
