//! Feeds arbitrary bytes to the Prometheus text parser and the exporter-page mapping.
//!
//! Beyond "never panics", it checks that the two agree (the mapping parses with the same
//! parser, so it must succeed exactly when the parser does), that every parsed series
//! renders back to text that parses to the same name and labels, that the mapped page
//! keeps its promises (only physically possible values, counts that add up), and that
//! what a scrape feeds next accepts it: the XID tracker and the whole ingest stage
//! (admission, live view) with a store that checks what admission let through.

#![no_main]

mod common;

use gpuwarden_collect::{dcgm, prom, xid};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Small limits so the fuzzer reaches every limit check quickly.
    let limits = prom::Limits {
        max_line_bytes: 4096,
        max_labels_per_sample: 16,
        max_label_value_bytes: 512,
        max_body_bytes: 1 << 20,
        max_samples: 10_000,
    };
    let mut rendered = Vec::new();
    let parsed = prom::parse(data, &limits, |s| {
        let mut series = String::new();
        prom::write_series(&mut series, s.name, &s.labels);
        let labels: Vec<(String, String)> = s
            .labels
            .iter()
            .map(|l| (l.name.to_owned(), l.value.to_string()))
            .collect();
        rendered.push((series, s.name.to_owned(), labels));
    });
    let mapped = dcgm::map_exporter_page(data, "fuzz-node", common::NOW_MS, &limits);
    match (&parsed, &mapped) {
        (Ok(summary), Ok(page)) => {
            assert_eq!(summary, &page.summary.parse);
            common::check_mapped_page(page);
            let mut tracker = xid::XidTracker::new();
            let _ = tracker.observe_page(page);
            // Twice: the second page meets the GPUs the first one made known.
            common::ingest("http://fuzz-node:9400/metrics", &[page, page]);
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!(
            "parser and mapping disagree: {parsed:?} vs {:?}",
            mapped.as_ref().map(|p| &p.summary)
        ),
    }
    for (series, name, labels) in rendered {
        let line = format!("{series} 1\n");
        let mut again = None;
        let roomy = prom::Limits::default();
        prom::parse(line.as_bytes(), &roomy, |s| {
            let l: Vec<(String, String)> = s
                .labels
                .iter()
                .map(|l| (l.name.to_owned(), l.value.to_string()))
                .collect();
            again = Some((s.name.to_owned(), l));
        })
        .unwrap_or_else(|e| panic!("rendered series {series:?} does not parse: {e}"));
        assert_eq!(again, Some((name, labels)), "round trip of {series:?}");
    }
});
