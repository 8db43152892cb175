//! Behaviour of the embedded store through the `Store` trait: persistence across reopen,
//! corrupt files, retention, range downsampling, out-of-order data, events, concurrency.

use gpuwarden_model::{DcgmField, Event, EventKind, FieldName, GpuIdentity, GpuSamples, GpuUuid};
use gpuwarden_store::embedded::{EmbeddedOptions, EmbeddedStore};
use gpuwarden_store::{Point, Store, StoreError};
use std::path::Path;
use std::sync::Arc;

const T0: i64 = 1_700_000_000_000;

fn open(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(dir, EmbeddedOptions::default()).unwrap()
}

fn gpu(i: usize) -> GpuUuid {
    GpuUuid::new(&format!("GPU-{i:04}"))
}

fn temp() -> FieldName {
    DcgmField::GpuTemp.into()
}

fn row(g: usize, ts: i64, temp_c: f64, power_w: f64) -> GpuSamples {
    GpuSamples {
        gpu: gpu(g),
        ts_ms: ts,
        values: vec![
            (temp(), temp_c),
            (DcgmField::PowerUsage.into(), power_w),
            (FieldName::parse("CUSTOM_METRIC"), ts as f64),
        ],
    }
}

/// `n` seconds of rows for `gpus` GPUs starting at `T0`.
fn rows(gpus: usize, secs: i64) -> Vec<GpuSamples> {
    (0..secs)
        .flat_map(|s| (0..gpus).map(move |g| row(g, T0 + s * 1000, 40.0 + (s % 7) as f64, 300.125 + s as f64)))
        .collect()
}

fn xid(g: usize, ts: i64, code: u32) -> Event {
    Event {
        gpu: gpu(g),
        node: "node-a".into(),
        ts_ms: ts,
        kind: EventKind::Xid {
            code,
            message: None,
            pid: None,
            process: None,
        },
    }
}

fn all_points(s: &EmbeddedStore, g: usize, f: &FieldName) -> Vec<Point> {
    s.range(&gpu(g), f, i64::MIN, i64::MAX, usize::MAX).unwrap()
}

#[test]
fn data_survives_reopen_before_and_after_seal() {
    let dir = tempfile::tempdir().unwrap();
    let data = rows(2, 100);
    {
        let s = open(dir.path());
        s.append_samples(&data[..100]).unwrap();
        s.flush().unwrap(); // first half sealed into a segment
        s.append_samples(&data[100..]).unwrap(); // second half only in the WAL
        s.append_events(&[xid(1, T0 + 5000, 79)]).unwrap();
        s.upsert_gpus(&[GpuIdentity::new(gpu(0), "node-a")], T0).unwrap();
    }
    let s = open(dir.path());
    let pts = all_points(&s, 0, &temp());
    assert_eq!(pts.len(), 100);
    assert!(pts.windows(2).all(|w| w[0].ts_ms < w[1].ts_ms));
    assert_eq!(
        pts[3],
        Point {
            ts_ms: T0 + 3000,
            value: 43.0
        }
    );
    let custom = all_points(&s, 1, &FieldName::parse("CUSTOM_METRIC"));
    assert_eq!(custom.len(), 100);
    let latest = s.latest(&gpu(1)).unwrap();
    assert_eq!(latest.len(), 3);
    assert!(latest.iter().all(|(_, p)| p.ts_ms == T0 + 99_000));
    assert_eq!(s.events(None, i64::MIN, i64::MAX).unwrap(), vec![xid(1, T0 + 5000, 79)]);
    let gpus = s.gpus().unwrap();
    assert_eq!(gpus.len(), 1);
    assert_eq!((gpus[0].first_seen_ms, gpus[0].last_seen_ms), (T0, T0 + 99_000));
    let st = s.stats().unwrap();
    assert_eq!((st.samples, st.series, st.events), (600, 6, 1));
    assert!(st.bytes_on_disk > 0);

    // Seal everything and reopen again: all from segments now.
    s.flush().unwrap();
    drop(s);
    let s = open(dir.path());
    assert_eq!(all_points(&s, 0, &temp()).len(), 100);
    assert_eq!(s.stats().unwrap().samples, 600);
    assert_eq!(s.latest(&gpu(1)).unwrap(), latest);
    assert_eq!(s.gpus().unwrap(), gpus);
    assert_eq!(s.events(Some(&gpu(1)), T0, T0 + 6000).unwrap().len(), 1);
}

#[test]
fn second_open_of_the_same_dir_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _s = open(dir.path());
    match EmbeddedStore::open(dir.path(), EmbeddedOptions::default()) {
        Err(StoreError::Locked { .. }) => {}
        other => panic!("expected Locked, got {other:?}"),
    }
}

fn newest_wal(dir: &Path) -> std::path::PathBuf {
    let mut wals: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    wals.sort();
    wals.pop().unwrap()
}

#[test]
fn garbage_wal_tail_is_truncated_and_acknowledged_data_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        s.append_samples(&rows(1, 10)).unwrap();
    }
    // A torn record: a plausible header, then junk that fails its CRC.
    let wal = newest_wal(dir.path());
    let mut bytes = std::fs::read(&wal).unwrap();
    let good_len = bytes.len();
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9]);
    std::fs::write(&wal, &bytes).unwrap();
    {
        let s = open(dir.path());
        assert_eq!(all_points(&s, 0, &temp()).len(), 10);
        assert_eq!(std::fs::metadata(&wal).unwrap().len() as usize, good_len);
        s.append_samples(&[row(0, T0 + 10_000, 50.0, 1.0)]).unwrap();
    }
    let s = open(dir.path());
    assert_eq!(all_points(&s, 0, &temp()).len(), 11);
}

#[test]
fn truncated_wal_keeps_every_whole_record() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        for r in rows(1, 5) {
            s.append_samples(&[r]).unwrap();
        }
    }
    let wal = newest_wal(dir.path());
    let len = std::fs::metadata(&wal).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let s = open(dir.path());
    assert_eq!(all_points(&s, 0, &temp()).len(), 4, "only the cut record is lost");
}

#[test]
fn corruption_inside_an_older_wal_file_costs_only_that_record() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        for r in rows(1, 5) {
            s.append_samples(&[r]).unwrap();
        }
    }
    let older = newest_wal(dir.path());
    {
        let _s = open(dir.path()); // creates a newer WAL; `older` is now complete history
    }
    let mut bytes = std::fs::read(&older).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0x55; // inside the last record
    std::fs::write(&older, &bytes).unwrap();
    let s = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    assert_eq!(all_points(&s, 0, &temp()).len(), 4, "only the damaged record is lost");
    let stats = s.stats().unwrap();
    assert_eq!((stats.damaged_records_skipped, stats.damaged_files_kept), (1, 1));
    let mut kept = older.clone().into_os_string();
    kept.push(".corrupt");
    assert!(Path::new(&kept).exists(), "the damaged file is kept as evidence");
}

#[test]
fn damaged_segment_is_quarantined_and_the_rest_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        s.append_samples(&rows(1, 10)).unwrap();
        s.flush().unwrap();
        s.append_samples(&[row(0, T0 + 20_000, 60.0, 1.0)]).unwrap();
        s.flush().unwrap();
    }
    let mut segs: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    assert_eq!(segs.len(), 2);
    let mut bytes = std::fs::read(&segs[0]).unwrap();
    let n = bytes.len();
    bytes[n - 30] ^= 0xFF; // inside the index
    std::fs::write(&segs[0], &bytes).unwrap();
    let s = open(dir.path());
    assert_eq!(
        all_points(&s, 0, &temp()),
        vec![Point {
            ts_ms: T0 + 20_000,
            value: 60.0
        }]
    );
    assert!(dir
        .path()
        .join(format!("{}.corrupt", segs[0].file_name().unwrap().to_str().unwrap()))
        .exists());
}

#[test]
fn damaged_chunk_is_a_corrupt_error_with_path() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.append_samples(&rows(1, 100)).unwrap();
    s.flush().unwrap();
    drop(s);
    let seg = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    for b in &mut bytes[8..20] {
        *b ^= 0xA5; // first column data, not the index
    }
    std::fs::write(&seg, &bytes).unwrap();
    let s = open(dir.path());
    let errs: Vec<_> = [temp(), DcgmField::PowerUsage.into(), FieldName::parse("CUSTOM_METRIC")]
        .iter()
        .map(|f| s.range(&gpu(0), f, i64::MIN, i64::MAX, 10))
        .filter_map(Result::err)
        .collect();
    assert!(!errs.is_empty());
    assert!(errs
        .iter()
        .all(|e| matches!(e, StoreError::Corrupt { path, .. } if *path == seg)));
}

#[test]
fn retention_drops_whole_old_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.append_samples(&rows(2, 10)).unwrap(); // T0 .. T0+9s
    s.append_events(&[xid(0, T0 + 1000, 13)]).unwrap();
    s.flush().unwrap();
    let later: Vec<_> = (0..10).map(|i| row(0, T0 + 3_600_000 + i * 1000, 50.0, 1.0)).collect();
    s.append_samples(&later).unwrap();
    s.flush().unwrap();
    s.append_samples(&[row(0, T0 - 1_000_000, 1.0, 1.0)]).unwrap(); // old but unsealed
    assert_eq!(
        s.apply_retention(T0 + 5000).unwrap(),
        0,
        "first segment is only partly expired"
    );
    assert_eq!(s.apply_retention(T0 + 60_000).unwrap(), 60);
    assert!(s.events(None, i64::MIN, i64::MAX).unwrap().is_empty());
    let pts = all_points(&s, 0, &temp());
    assert_eq!(pts.len(), 11, "the later segment and the unsealed point stay");
    assert_eq!(s.stats().unwrap().samples, 33);
    drop(s);
    let s = open(dir.path());
    assert_eq!(all_points(&s, 0, &temp()).len(), 11);
    assert_eq!(
        s.apply_configured_retention(T0 + 3_600_000 + 8 * 86_400_000).unwrap(),
        30
    );
}

#[test]
fn range_is_half_open_and_downsampled_by_bucket_average() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let data: Vec<_> = (0..100)
        .map(|i| GpuSamples {
            gpu: gpu(0),
            ts_ms: T0 + i * 1000,
            values: vec![(temp(), i as f64)],
        })
        .collect();
    s.append_samples(&data[..50]).unwrap();
    s.flush().unwrap();
    s.append_samples(&data[50..]).unwrap();
    let pts = s.range(&gpu(0), &temp(), T0 + 10_000, T0 + 20_000, 100).unwrap();
    assert_eq!(pts.len(), 10);
    assert_eq!((pts[0].ts_ms, pts[9].ts_ms), (T0 + 10_000, T0 + 19_000));
    let ds = s.range(&gpu(0), &temp(), T0, T0 + 100_000, 10).unwrap();
    assert_eq!(ds.len(), 10);
    assert_eq!(ds[0], Point { ts_ms: T0, value: 4.5 });
    assert_eq!(
        ds[5],
        Point {
            ts_ms: T0 + 50_000,
            value: 54.5
        }
    ); // spans segment + memtable
    assert!(s.range(&gpu(0), &temp(), T0, T0 + 100_000, 0).unwrap().is_empty());
    assert!(s.range(&gpu(9), &temp(), T0, T0 + 100_000, 10).unwrap().is_empty());
}

#[test]
fn out_of_order_rows_are_sorted_and_a_duplicate_timestamp_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let r = |ts: i64, v: f64| GpuSamples {
        gpu: gpu(0),
        ts_ms: T0 + ts,
        values: vec![(temp(), v)],
    };
    s.append_samples(&[r(3000, 3.0), r(1000, 1.0), r(2000, 2.0), r(2000, 2.5)])
        .unwrap();
    let expect = vec![
        Point {
            ts_ms: T0 + 1000,
            value: 1.0,
        },
        // The second point at T0+2000 replaces the first (last write wins).
        Point {
            ts_ms: T0 + 2000,
            value: 2.5,
        },
        Point {
            ts_ms: T0 + 3000,
            value: 3.0,
        },
    ];
    assert_eq!(all_points(&s, 0, &temp()), expect);
    assert_eq!(
        s.latest(&gpu(0)).unwrap(),
        vec![(
            temp(),
            Point {
                ts_ms: T0 + 3000,
                value: 3.0
            }
        )]
    );
    s.flush().unwrap();
    s.append_samples(&[r(500, 0.5)]).unwrap(); // older than the sealed segment
    s.flush().unwrap();
    let mut expect2 = vec![Point {
        ts_ms: T0 + 500,
        value: 0.5,
    }];
    expect2.extend(expect);
    assert_eq!(all_points(&s, 0, &temp()), expect2);
    drop(s);
    let s = open(dir.path());
    assert_eq!(all_points(&s, 0, &temp()), expect2);
    assert_eq!(s.latest(&gpu(0)).unwrap()[0].1.ts_ms, T0 + 3000);
}

#[test]
fn special_float_values_survive_seal_bit_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let vals = [f64::NAN, -0.0, f64::INFINITY, f64::NEG_INFINITY, 1e-310, 0.1 + 0.2];
    let data: Vec<_> = vals
        .iter()
        .enumerate()
        .map(|(i, &v)| GpuSamples {
            gpu: gpu(0),
            ts_ms: i as i64 * 1000,
            values: vec![(temp(), v)],
        })
        .collect();
    s.append_samples(&data).unwrap();
    s.flush().unwrap();
    let got: Vec<u64> = all_points(&s, 0, &temp()).iter().map(|p| p.value.to_bits()).collect();
    assert_eq!(got, vals.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
}

#[test]
fn events_filter_by_gpu_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.append_events(&[xid(0, T0 + 3000, 13), xid(1, T0 + 1000, 31)])
        .unwrap();
    s.flush().unwrap();
    s.append_events(&[xid(0, T0 + 2000, 43)]).unwrap();
    let all = s.events(None, T0, T0 + 10_000).unwrap();
    assert_eq!(
        all.iter().map(|e| e.ts_ms - T0).collect::<Vec<_>>(),
        vec![1000, 2000, 3000]
    );
    let g0 = s.events(Some(&gpu(0)), T0, T0 + 3000).unwrap();
    assert_eq!(g0, vec![xid(0, T0 + 2000, 43)]);
}

#[test]
fn gpu_labels_update_and_seen_times_widen() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let mut id = GpuIdentity::new(gpu(0), "node-a");
    s.upsert_gpus(&[id.clone()], T0 + 5000).unwrap();
    id.workload.pod = Some("trainer-0".into());
    s.upsert_gpus(&[id.clone()], T0 + 9000).unwrap();
    s.append_samples(&[row(0, T0, 40.0, 1.0)]).unwrap();
    let g = s.gpus().unwrap();
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].identity, id);
    assert_eq!((g[0].first_seen_ms, g[0].last_seen_ms), (T0, T0 + 9000));
    s.flush().unwrap();
    drop(s);
    assert_eq!(open(dir.path()).gpus().unwrap(), g);
}

#[test]
fn concurrent_appenders_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let opts = EmbeddedOptions {
        memtable_max_samples: 500,
        ..EmbeddedOptions::default()
    };
    let s = Arc::new(EmbeddedStore::open(dir.path(), opts.clone()).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..100 {
                    s.append_samples(&[row(t, T0 + i * 1000, 40.0, i as f64)]).unwrap();
                    if i % 10 == 0 {
                        let _ = s.range(&gpu(t), &temp(), T0, T0 + 1_000_000, 10).unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for t in 0..4 {
        assert_eq!(all_points(&s, t, &temp()).len(), 100);
    }
    assert_eq!(s.stats().unwrap().samples, 1200);
    drop(s);
    let s = EmbeddedStore::open(dir.path(), opts).unwrap();
    assert_eq!(s.stats().unwrap().samples, 1200);
    for t in 0..4 {
        assert_eq!(all_points(&s, t, &temp()).len(), 100);
    }
}
