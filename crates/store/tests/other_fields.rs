//! Series with names outside the DCGM list (`FieldName::Other`), such as the health
//! scores the pipeline writes as `gpuwarden_health_score`: stored, compressed and queried
//! like any other field, across seal and reopen.

use gpuwarden_model::{FieldName, GpuSamples, GpuUuid};
use gpuwarden_store::embedded::{EmbeddedOptions, EmbeddedStore};
use gpuwarden_store::{Point, Store};

const T0: i64 = 1_700_000_000_000;

fn score() -> FieldName {
    FieldName::Other("gpuwarden_health_score".into())
}

fn dim_score() -> FieldName {
    FieldName::Other("gpuwarden_health_score_thermal".into())
}

#[test]
fn other_field_series_compress_and_query_across_seal_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gpu = GpuUuid::new("GPU-score");
    // One score per 10 s for a day, mostly flat (as health scores are), some steps.
    let n = 8_640i64;
    let value = |i: i64| if i % 1000 < 900 { 100.0 } else { 87.5 };
    let rows: Vec<GpuSamples> = (0..n)
        .map(|i| GpuSamples {
            gpu: gpu.clone(),
            ts_ms: T0 + i * 10_000,
            values: vec![(score(), value(i)), (dim_score(), 50.0 + (i % 3) as f64)],
        })
        .collect();
    {
        let s = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).expect("open");
        for chunk in rows.chunks(500) {
            s.append_samples(chunk).expect("append");
        }
        s.flush().expect("flush seals into a compressed segment");
        let stats = s.stats().expect("stats");
        assert_eq!(stats.samples, 2 * n as u64);
        assert_eq!(stats.series, 2);
        // Raw would be 16 bytes a point; flat series must compress far below that.
        let per_sample = stats.bytes_on_disk as f64 / stats.samples as f64;
        assert!(per_sample < 4.0, "{per_sample:.2} bytes/sample");
    }
    let s = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).expect("reopen");
    let points = s.range(&gpu, &score(), T0, T0 + n * 10_000, usize::MAX).expect("range");
    let expected: Vec<Point> = (0..n)
        .map(|i| Point {
            ts_ms: T0 + i * 10_000,
            value: value(i),
        })
        .collect();
    assert_eq!(points, expected);
    let latest = s.latest(&gpu).expect("latest");
    assert!(latest.contains(&(
        score(),
        Point {
            ts_ms: T0 + (n - 1) * 10_000,
            value: value(n - 1)
        }
    )));
    let downsampled = s.range(&gpu, &dim_score(), T0, T0 + n * 10_000, 24).expect("range");
    assert!(!downsampled.is_empty() && downsampled.len() <= 24);
    assert!(downsampled.iter().all(|p| (50.0..=52.0).contains(&p.value)));
}
