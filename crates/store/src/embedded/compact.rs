//! Compaction: merges runs of consecutive small segments into one larger segment.
//!
//! Why: a segment holds what one memtable held, and in a large fleet the memtable fills
//! in under a minute (4 million samples are ~40 s of 20,000 GPUs), so each series has
//! only a handful of points per segment. Chunks that short compress poorly (the live
//! store measured ~17 bytes a sample against 0.78 for the same data in long chunks) and
//! every segment adds an index entry per series. Merging keeps the write path as it is
//! (a seal stays a quick, bounded write) and rewrites data a few times as it ages, like
//! a size-tiered LSM tree.
//!
//! Policy: segments are grouped by *tier* — ⌊log₄(samples / 65,536)⌋ — and the oldest
//! run of [`EmbeddedOptions::compact_fanout`] consecutive segments of the same tier is
//! merged, as long as the result spans at most
//! [`EmbeddedOptions::compact_max_span_ms`] of data time (retention drops whole
//! segments, so a segment must not grow past the retention granularity we promise).
//! Only consecutive segments are merged, and their points are concatenated in segment
//! order, so the order of duplicate timestamps (arrival order) is kept.
//!
//! Crash safety: the merged segment is written under the name of the newest input
//! (`*.tmp`, fsync, rename over it, directory fsync) and records the oldest input's id
//! (`covers_from`); only then are the other inputs deleted. A crash in between leaves
//! inputs whose ids fall in a newer segment's `[covers_from, id)`: open deletes them as
//! duplicates. Readers holding an input keep reading it through its open descriptor.
//!
//! [`EmbeddedOptions::compact_fanout`]: super::EmbeddedOptions::compact_fanout
//! [`EmbeddedOptions::compact_max_span_ms`]: super::EmbeddedOptions::compact_max_span_ms

use super::segment::{Builder, Chunk, Segment};
use crate::StoreError;
use gpuwarden_model::{FieldName, TimestampMs};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

/// One GPU's fields with their chunks, as an index lists them.
type GpuFields = Vec<(FieldName, Vec<Chunk>)>;

/// Samples of the smallest tier.
const TIER_BASE: u64 = 65_536;

/// A segment's tier: segments of one tier have sizes within a factor of 4.
pub fn tier(samples: u64) -> u32 {
    (samples / TIER_BASE).max(1).ilog(4)
}

/// The run to merge next: indexes `[start, end)` into `segments` (oldest first), or
/// `None` when nothing qualifies.
pub fn pick(segments: &[Arc<Segment>], fanout: usize, max_span_ms: i64) -> Option<(usize, usize)> {
    let fanout = fanout.max(2);
    if segments.len() < fanout {
        return None;
    }
    for start in 0..=segments.len() - fanout {
        let run = &segments[start..start + fanout];
        let t = tier(run[0].samples);
        if run.iter().any(|s| tier(s.samples) != t) {
            continue;
        }
        let lo = run.iter().filter_map(|s| s.span.map(|(lo, _)| lo)).min();
        let hi = run.iter().filter_map(|s| s.span.map(|(_, hi)| hi)).max();
        if let (Some(lo), Some(hi)) = (lo, hi) {
            if hi.saturating_sub(lo) > max_span_ms {
                continue;
            }
        }
        return Some((start, start + fanout));
    }
    None
}

/// Writes the merge of `inputs` (consecutive, oldest first) as a segment named after the
/// newest input. Walks the inputs' indexes GPU by GPU in UUID order (each index is
/// sorted) and writes each series as it is merged, so memory holds the inputs' encoded
/// indexes and one GPU's points, not the data.
pub fn merge(dir: &Path, inputs: &[Arc<Segment>], chunk_max_samples: usize, sync: bool) -> Result<Segment, StoreError> {
    let Some(last) = inputs.last() else {
        return Err(StoreError::Encoding {
            what: "compaction".into(),
            reason: "no segment to merge".into(),
        });
    };
    let indexes = inputs.iter().map(|s| s.read_index()).collect::<Result<Vec<_>, _>>()?;
    let mut cursors: Vec<_> = indexes.iter().map(|i| i.iter().peekable()).collect();
    let mut b = Builder::create(dir, last.id, chunk_max_samples)?;
    let mut ts: Vec<TimestampMs> = Vec::new();
    let mut vals: Vec<f64> = Vec::new();
    // The smallest UUID at the head of any input, GPU after GPU.
    while let Some(gpu) = cursors
        .iter_mut()
        .filter_map(|c| c.peek().map(|(g, _)| *g))
        .min()
        .cloned()
    {
        // This GPU's fields from every input that has it, in input (= time) order.
        let mut per_input: Vec<(usize, GpuFields)> = Vec::new();
        for (i, c) in cursors.iter_mut().enumerate() {
            if c.peek().is_some_and(|(g, _)| **g == gpu) {
                if let Some((_, fields)) = c.next() {
                    per_input.push((i, fields));
                }
            }
        }
        let names: BTreeSet<&FieldName> = per_input
            .iter()
            .flat_map(|(_, fields)| fields.iter().map(|(f, _)| f))
            .collect();
        b.begin_gpu(&gpu);
        for name in names {
            ts.clear();
            vals.clear();
            let mut sorted = true;
            for (i, fields) in &per_input {
                let Some((_, chunks)) = fields.iter().find(|(f, _)| f == name) else {
                    continue;
                };
                for c in chunks {
                    for p in inputs[*i].read_chunk(c)? {
                        if ts.last().is_some_and(|&t| p.ts_ms < t) {
                            sorted = false;
                        }
                        ts.push(p.ts_ms);
                        vals.push(p.value);
                    }
                }
            }
            if !sorted {
                // A late point from a newer segment: sort (stably, duplicates keep
                // arrival order), as queries over the separate segments would.
                let mut idx: Vec<usize> = (0..ts.len()).collect();
                idx.sort_by_key(|&i| ts[i]);
                ts = idx.iter().map(|&i| ts[i]).collect();
                vals = idx.iter().map(|&i| vals[i]).collect();
            }
            b.add_series(name, &ts, &vals)?;
        }
        b.end_gpu();
    }
    let events: Vec<_> = inputs.iter().flat_map(|s| s.events.iter().cloned()).collect();
    let wal_upto = inputs.iter().map(|s| s.wal_upto).max().unwrap_or(0);
    let covers_from = inputs.iter().map(|s| s.covers_from).min().unwrap_or(last.id);
    b.finish(covers_from, wal_upto, &events, sync)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_group_sizes_within_a_factor_of_four() {
        assert_eq!(tier(0), 0);
        assert_eq!(tier(TIER_BASE * 3), 0);
        assert_eq!(tier(TIER_BASE * 4), 1);
        assert_eq!(tier(TIER_BASE * 15), 1);
        assert_eq!(tier(TIER_BASE * 16), 2);
        assert_eq!(tier(4_000_000), 2);
        assert_eq!(tier(16_000_000), 3);
    }
}
