//! Prometheus remote_write as `POST /api/v1/write` handles it: a snappy raw block of a
//! protobuf `WriteRequest`, decoded with a bound on the decompressed size, grouped by
//! instance and mapped with the scrape path's mapper, then ingested.
//!
//! The first byte picks how the rest is used: even, it is the request body as sent
//! (exercises the snappy decoder and its bomb check); odd, it is the protobuf itself,
//! which the target compresses first, so the fuzzer reaches the protobuf decoder and the
//! mapping without having to learn snappy.

#![no_main]

mod common;

use gpuwarden_collect::prom::{Limits, ParseError};
use gpuwarden_server::api::ingest::remote_write::{decode, map_request, RemoteWriteError};
use libfuzzer_sys::fuzz_target;

/// As the handler: 8 times the body limit. Small here so the bomb check is reached.
const MAX_DECOMPRESSED: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let compressed;
    let body = if mode & 1 == 0 {
        rest
    } else {
        compressed = snap::raw::Encoder::new()
            .compress_vec(rest)
            .expect("any input compresses");
        &compressed[..]
    };
    let req = match decode(body, MAX_DECOMPRESSED) {
        Ok(req) => req,
        Err(RemoteWriteError::TooLarge { size, limit }) => {
            assert!(size > limit);
            return;
        }
        Err(_) => return,
    };
    let series = req.timeseries.len();
    let mapped = match map_request(&req, common::NOW_MS, &Limits::default()) {
        Ok(mapped) => mapped,
        // The series are rendered as text the scrape parser reads: only its size limits
        // may refuse what the renderer wrote, never its syntax.
        Err(RemoteWriteError::Map { source, .. }) => {
            assert!(
                matches!(
                    source,
                    ParseError::LineTooLong { .. }
                        | ParseError::TooManyLabels { .. }
                        | ParseError::LabelValueTooLong { .. }
                        | ParseError::TooManySamples { .. }
                        | ParseError::BodyTooLarge { .. }
                ),
                "rendered remote_write series do not parse: {source}"
            );
            return;
        }
        Err(e) => panic!("map_request failed with a decoding error: {e}"),
    };
    let skipped: usize = mapped.iter().map(|m| m.skipped).sum();
    assert!(skipped <= series, "skipped {skipped} of {series} series");
    let mut instances: Vec<&str> = mapped.iter().map(|m| m.instance.as_str()).collect();
    instances.dedup();
    assert_eq!(instances.len(), mapped.len(), "one page per instance");
    for m in &mapped {
        common::check_mapped_page(&m.page);
        common::ingest(&format!("remote_write://{}", m.instance), &[&m.page]);
    }
});
