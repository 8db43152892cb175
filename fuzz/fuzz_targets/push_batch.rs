//! Agent push batches as `POST /api/v1/ingest` handles them: `Batch::decode` (JSON and
//! the batch limits), then each page in the scrape path's shape through the ingest stage
//! (admission refuses impossible values and out-of-bounds timestamps of pushed rows,
//! which did not pass the exporter mapping), and the XID tracker.

#![no_main]

mod common;

use gpuwarden_agent::wire::{Batch, BatchId, BatchLimits};
use gpuwarden_collect::xid::XidTracker;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Small limits so the fuzzer reaches each of them.
    let limits = BatchLimits {
        max_pages: 4,
        max_gpus_per_page: 32,
        max_rows_per_page: 256,
        max_events: 64,
    };
    let Ok(batch) = Batch::decode(data, &limits) else {
        return;
    };
    // What decode promises.
    assert!(BatchId::is_valid(batch.id.as_str()));
    assert!(!batch.node.trim().is_empty());
    assert!(batch.pages.len() <= limits.max_pages && batch.events.len() <= limits.max_events);
    // A decoded batch encodes and decodes to itself (the agent's spool relies on it).
    // NaN values are the exception: JSON has no NaN, so serde_json writes null.
    let has_nan = batch
        .pages
        .iter()
        .flat_map(|p| &p.rows)
        .any(|r| r.values.iter().any(|(_, v)| v.is_nan()));
    if !has_nan {
        let again = Batch::decode(&batch.encode(), &limits).expect("an encoded batch decodes");
        assert_eq!(again, batch);
    }
    let pages: Vec<_> = batch.pages.iter().map(|p| p.to_exporter_page()).collect();
    let mut tracker = XidTracker::new();
    for (wire, page) in batch.pages.iter().zip(&pages) {
        assert_eq!(
            page.sample_count(),
            wire.rows.iter().map(|r| r.values.len()).sum::<usize>()
        );
        let _ = tracker.observe_page(page);
        common::ingest(&format!("agent://{}/{}", batch.node, wire.source), &[page, page]);
    }
});
