//! Compaction of the embedded store: merging small segments changes nothing a reader
//! sees (points, order of duplicates, latest values, events, counts), shrinks the files,
//! survives a reopen, and a crash between writing the merged segment and deleting its
//! inputs leaves no duplicates.

use gpuwarden_model::{DcgmField, Event, EventKind, FieldName, GpuSamples, GpuUuid};
use gpuwarden_store::embedded::{EmbeddedOptions, EmbeddedStore};
use gpuwarden_store::{Point, Store};
use std::path::{Path, PathBuf};

const T0: i64 = 1_700_000_000_000;
const GPUS: usize = 20;

fn gpu(i: usize) -> GpuUuid {
    GpuUuid::new(&format!("GPU-{i:04}"))
}

fn fields() -> Vec<FieldName> {
    vec![
        DcgmField::GpuTemp.into(),
        DcgmField::PowerUsage.into(),
        FieldName::parse("CUSTOM_METRIC"),
    ]
}

/// Small memtables: every 300 samples become a segment.
fn options() -> EmbeddedOptions {
    EmbeddedOptions {
        memtable_max_samples: 300,
        sync: false,
        ..EmbeddedOptions::default()
    }
}

fn open(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(dir, options()).unwrap()
}

fn write_seconds(s: &EmbeddedStore, from: i64, to: i64) {
    for sec in from..to {
        let rows: Vec<GpuSamples> = (0..GPUS)
            .map(|g| GpuSamples {
                gpu: gpu(g),
                ts_ms: T0 + sec * 10_000,
                values: vec![
                    (DcgmField::GpuTemp.into(), 40.0 + ((sec + g as i64) % 7) as f64),
                    (DcgmField::PowerUsage.into(), 300.0 + sec as f64 * 0.5),
                    (FieldName::parse("CUSTOM_METRIC"), g as f64),
                ],
            })
            .collect();
        s.append_samples(&rows).unwrap();
    }
}

/// Everything a reader sees: every point of every series, latest values, events, counts.
#[derive(Debug, PartialEq)]
struct Seen {
    points: Vec<Vec<Point>>,
    latest: Vec<Vec<(FieldName, Point)>>,
    events: Vec<Event>,
    samples: u64,
    series: u64,
}

fn seen(s: &EmbeddedStore) -> Seen {
    let mut points = Vec::new();
    let mut latest = Vec::new();
    for g in 0..GPUS {
        for f in fields() {
            points.push(s.range(&gpu(g), &f, i64::MIN / 2, i64::MAX / 2, usize::MAX).unwrap());
        }
        let mut l = s.latest(&gpu(g)).unwrap();
        l.sort_by(|a, b| a.0.cmp(&b.0));
        latest.push(l);
    }
    let st = s.stats().unwrap();
    Seen {
        points,
        latest,
        events: s.events(None, i64::MIN, i64::MAX).unwrap(),
        samples: st.samples,
        series: st.series,
    }
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    out.sort();
    out
}

fn compact_all(s: &EmbeddedStore) -> usize {
    let mut merged = 0;
    loop {
        match s.compact().unwrap() {
            0 => return merged,
            n => merged += n,
        }
    }
}

#[test]
fn compaction_changes_nothing_readers_see_and_shrinks_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    write_seconds(&s, 0, 100);
    s.append_events(&[Event {
        gpu: gpu(3),
        node: "n1".into(),
        ts_ms: T0 + 5_000,
        kind: EventKind::Xid {
            code: 79,
            message: None,
            pid: None,
            process: None,
        },
    }])
    .unwrap();
    s.flush().unwrap();
    let before = seen(&s);
    let files_before = segment_files(dir.path()).len();
    let bytes_before = s.stats().unwrap().bytes_on_disk;
    assert!(files_before >= 16, "{files_before} segments");
    assert_eq!(before.points[0].len(), 100);

    let merged = compact_all(&s);
    assert!(merged >= 16, "merged {merged}");
    let files_after = segment_files(dir.path()).len();
    assert!(files_after < 4, "{files_after} segments left of {files_before}");
    assert_eq!(seen(&s), before);
    let bytes_after = s.stats().unwrap().bytes_on_disk;
    assert!(
        bytes_after * 2 < bytes_before,
        "{bytes_after} bytes after, {bytes_before} before"
    );
    // New data after a compaction lands beside it as usual.
    write_seconds(&s, 100, 110);
    s.flush().unwrap();
    let with_more = seen(&s);
    assert_eq!(with_more.points[0].len(), 110);
    drop(s);
    assert_eq!(seen(&open(dir.path())), with_more, "the same after a reopen");
}

#[test]
fn duplicates_across_segments_keep_the_last_arrival() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let temp: FieldName = DcgmField::GpuTemp.into();
    let at = |ts: i64, v: f64| GpuSamples {
        gpu: gpu(0),
        ts_ms: ts,
        values: vec![(temp.clone(), v)],
    };
    // Four segments: the second repeats a timestamp of the first (the later arrival
    // replaces it, as the store conformance suite requires of every store), the fourth
    // brings a point older than everything before it. Compaction must keep arrival
    // order, or the earlier value would win again.
    for batch in [
        vec![at(T0, 1.0), at(T0 + 10_000, 2.0)],
        vec![at(T0 + 10_000, 3.0), at(T0 + 20_000, 4.0)],
        vec![at(T0 + 30_000, 5.0)],
        vec![at(T0 - 10_000, 6.0)],
    ] {
        s.append_samples(&batch).unwrap();
        s.flush().unwrap();
    }
    let read = |s: &EmbeddedStore| {
        s.range(&gpu(0), &temp, i64::MIN / 2, i64::MAX / 2, usize::MAX)
            .unwrap()
            .iter()
            .map(|p| p.value)
            .collect::<Vec<_>>()
    };
    assert_eq!(read(&s), vec![6.0, 1.0, 3.0, 4.0, 5.0]);
    assert_eq!(s.compact().unwrap(), 4);
    assert_eq!(read(&s), vec![6.0, 1.0, 3.0, 4.0, 5.0]);
    drop(s);
    let s = open(dir.path());
    assert_eq!(read(&s), vec![6.0, 1.0, 3.0, 4.0, 5.0]);
    let latest = s.latest(&gpu(0)).unwrap();
    assert_eq!(latest[0].1.value, 5.0);
}

/// A crash after the merged segment replaced its newest input but before the older
/// inputs were deleted: they are still on disk at the next open, and must not count
/// twice.
#[test]
fn inputs_left_behind_by_a_crash_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let saved = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    write_seconds(&s, 0, 40);
    s.flush().unwrap();
    let before = seen(&s);
    let files = segment_files(dir.path());
    for f in &files {
        std::fs::copy(f, saved.path().join(f.file_name().unwrap())).unwrap();
    }
    assert_eq!(s.compact().unwrap(), 4);
    drop(s);
    // Put back the inputs compaction deleted: the state a crash would have left.
    let mut restored = 0;
    for f in &files {
        if !f.exists() {
            std::fs::copy(saved.path().join(f.file_name().unwrap()), f).unwrap();
            restored += 1;
        }
    }
    assert_eq!(restored, 3);
    let s = open(dir.path());
    assert_eq!(seen(&s), before, "no sample counted twice");
    assert_eq!(
        segment_files(dir.path()).len(),
        files.len() - 3,
        "the duplicates are gone"
    );
}

#[test]
fn segments_spanning_more_than_the_limit_are_not_merged() {
    let dir = tempfile::tempdir().unwrap();
    let s = EmbeddedStore::open(
        dir.path(),
        EmbeddedOptions {
            compact_max_span_ms: 60_000,
            ..options()
        },
    )
    .unwrap();
    // Rounds 10 s apart: a segment of 300 samples holds 5 rounds (40 s of data time),
    // four of them span more than a minute.
    write_seconds(&s, 0, 100);
    s.flush().unwrap();
    let before = seen(&s);
    let files = segment_files(dir.path()).len();
    assert_eq!(compact_all(&s), 0);
    assert_eq!(segment_files(dir.path()).len(), files);
    assert_eq!(seen(&s), before);
}
