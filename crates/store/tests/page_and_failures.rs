//! Atomic pages (`append_page` is one WAL record: a crash mid-write leaves all of a page
//! or none of it), writes that come back after a full or failing disk (`write_health`
//! says so meanwhile), and the `testing::FailingStore` double.

use gpuwarden_model::{
    Action, DcgmField, Event, EventKind, FindingKind, GpuIdentity, GpuSamples, GpuUuid, Incident, IncidentState,
    Severity,
};
use gpuwarden_store::embedded::{EmbeddedOptions, EmbeddedStore, FaultInjector};
use gpuwarden_store::testing::{FailingStore, Op};
use gpuwarden_store::{PageWrite, Store, StoreError, WriteHealth};
use std::collections::BTreeSet;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const T0: i64 = 1_700_000_000_000;

fn open(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(dir, EmbeddedOptions::default()).expect("open")
}

fn gpu(i: usize) -> GpuUuid {
    GpuUuid::new(&format!("GPU-{}", i % 4))
}

fn page_parts(i: usize) -> (Vec<GpuSamples>, Vec<Event>, Vec<GpuIdentity>) {
    let ts = T0 + i as i64 * 1000;
    let rows = (0..4)
        .map(|g| GpuSamples {
            gpu: gpu(g),
            ts_ms: ts,
            values: vec![
                (DcgmField::GpuTemp.into(), i as f64),
                (DcgmField::PowerUsage.into(), g as f64),
            ],
        })
        .collect();
    let events = vec![Event {
        gpu: gpu(i),
        node: "node-a".into(),
        ts_ms: ts,
        kind: EventKind::Xid {
            code: 79,
            message: None,
            pid: None,
            process: None,
        },
    }];
    let gpus = vec![GpuIdentity::new(GpuUuid::new(&format!("GPU-page-{i:04}")), "node-a")];
    (rows, events, gpus)
}

fn write_page(s: &dyn Store, i: usize) -> Result<(), StoreError> {
    let (rows, events, gpus) = page_parts(i);
    s.append_page(&PageWrite {
        rows: &rows,
        events: &events,
        gpus: &gpus,
        seen_ms: T0 + i as i64 * 1000,
    })
}

/// Pages fully present, asserting that no page is present in part.
fn whole_pages(s: &dyn Store, n: usize) -> BTreeSet<usize> {
    let idx = |ts: i64| ((ts - T0) / 1000) as usize;
    let mut rows = vec![0usize; n];
    for g in 0..4 {
        for p in s
            .range(&gpu(g), &DcgmField::GpuTemp.into(), i64::MIN, i64::MAX, usize::MAX)
            .expect("range")
        {
            assert_eq!(p.value, idx(p.ts_ms) as f64);
            rows[idx(p.ts_ms)] += 1;
        }
    }
    let events: BTreeSet<usize> = s
        .events(None, i64::MIN, i64::MAX)
        .expect("events")
        .iter()
        .map(|e| idx(e.ts_ms))
        .collect();
    let ids: BTreeSet<String> = s
        .gpus()
        .expect("gpus")
        .into_iter()
        .map(|g| g.identity.uuid.as_str().to_string())
        .collect();
    (0..n)
        .filter(|&i| {
            let parts = (rows[i], events.contains(&i), ids.contains(&format!("GPU-page-{i:04}")));
            assert!(
                parts == (4, true, true) || parts == (0, false, false),
                "page {i} is half there: {parts:?}"
            );
            parts.1
        })
        .collect()
}

fn newest_wal(dir: &Path) -> std::path::PathBuf {
    let mut wals: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("wal-")))
        .collect();
    wals.sort();
    wals.pop().expect("a WAL file")
}

#[test]
fn append_page_round_trips_across_seal_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = open(dir.path());
        for i in 0..5 {
            write_page(&s, i).expect("append_page");
        }
        assert_eq!(whole_pages(&s, 10).len(), 5, "visible once acknowledged");
        s.flush().expect("flush");
        for i in 5..10 {
            write_page(&s, i).expect("append_page");
        }
    }
    let s = open(dir.path());
    assert_eq!(whole_pages(&s, 10), (0..10).collect());
    assert_eq!(s.gpus().expect("gpus").len(), 10, "one identity per page");
}

#[test]
fn crash_at_any_byte_of_a_page_record_leaves_all_or_nothing() {
    let base = tempfile::tempdir().expect("tempdir");
    {
        let s = open(base.path());
        for i in 0..4 {
            write_page(&s, i).expect("append_page");
        }
    }
    let wal = newest_wal(base.path());
    let bytes = std::fs::read(&wal).expect("read");
    // The last record is page 3's: find where it starts by walking the frames.
    let mut pos = 8;
    let mut last = 8;
    while pos < bytes.len() {
        last = pos;
        pos += 8 + u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4")) as usize;
    }
    let rec_len = bytes.len() - last;
    let cuts = [
        0,
        1,
        4,
        7,
        8,
        9,
        rec_len / 3,
        rec_len / 2,
        rec_len - 2,
        rec_len - 1,
        rec_len,
    ];
    for cut in cuts {
        let dir = tempfile::tempdir().expect("tempdir");
        for e in std::fs::read_dir(base.path()).expect("dir") {
            let e = e.expect("entry");
            std::fs::copy(e.path(), dir.path().join(e.file_name())).expect("copy");
        }
        let path = dir.path().join(wal.file_name().expect("name"));
        std::fs::write(&path, &bytes[..last + cut]).expect("write");
        let s = open(dir.path());
        let want: BTreeSet<usize> = if cut == rec_len {
            (0..4).collect()
        } else {
            (0..3).collect()
        };
        assert_eq!(whole_pages(&s, 4), want, "cut {cut} bytes into the page record");
    }
}

/// A disk that can be made full (ENOSPC after writing half of what was asked, like a
/// disk filling mid-record) or failing on sync (EIO).
#[derive(Default)]
struct Disk {
    full: AtomicBool,
    sync_fails: AtomicBool,
}

impl FaultInjector for Disk {
    fn on_write(&self, _: &Path, len: usize) -> Result<(), (usize, io::Error)> {
        if self.full.load(Ordering::SeqCst) {
            return Err((len / 2, io::Error::from_raw_os_error(28)));
        }
        Ok(())
    }

    fn on_sync(&self, _: &Path) -> io::Result<()> {
        if self.sync_fails.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(5));
        }
        Ok(())
    }
}

fn is_io(r: &Result<(), StoreError>) -> bool {
    matches!(r, Err(StoreError::Io { .. }))
}

#[test]
fn full_disk_fails_writes_then_they_resume_once_freed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = Arc::new(Disk::default());
    {
        let s =
            EmbeddedStore::open_with_faults(dir.path(), EmbeddedOptions::default(), Some(disk.clone())).expect("open");
        write_page(&s, 0).expect("page 0");
        assert_eq!(s.write_health(), WriteHealth::Ok);
        disk.full.store(true, Ordering::SeqCst);
        let r = write_page(&s, 1);
        assert!(is_io(&r), "a write to a full disk is an error: {r:?}");
        let r = s.append_samples(&page_parts(2).0);
        assert!(is_io(&r), "{r:?}");
        match s.write_health() {
            WriteHealth::Failing {
                since_ms,
                error,
                failed_writes,
            } => {
                assert!(since_ms > 0);
                assert_eq!(failed_writes, 2);
                assert!(!error.is_empty());
            }
            h => panic!("expected Failing, got {h:?}"),
        }
        assert_eq!(whole_pages(&s, 5), [0].into(), "nothing of a failed page is visible");
        disk.full.store(false, Ordering::SeqCst);
        write_page(&s, 3).expect("writes come back once the disk has room");
        assert_eq!(s.write_health(), WriteHealth::Ok);
        assert_eq!(whole_pages(&s, 5), [0, 3].into());
    }
    let s = open(dir.path());
    assert_eq!(whole_pages(&s, 5), [0, 3].into(), "the failed page never reached disk");
    let st = s.stats().expect("stats");
    assert_eq!(st.damaged_records_skipped, 0, "no half record was left behind");
    assert_eq!(st.damaged_files_kept, 0);
}

#[test]
fn failed_sync_is_an_error_and_the_batch_is_not_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = Arc::new(Disk::default());
    {
        let s =
            EmbeddedStore::open_with_faults(dir.path(), EmbeddedOptions::default(), Some(disk.clone())).expect("open");
        write_page(&s, 0).expect("page 0");
        disk.sync_fails.store(true, Ordering::SeqCst);
        assert!(is_io(&write_page(&s, 1)));
        assert!(matches!(
            s.write_health(),
            WriteHealth::Failing { failed_writes: 1, .. }
        ));
        disk.sync_fails.store(false, Ordering::SeqCst);
        write_page(&s, 2).expect("page 2");
        assert_eq!(s.write_health(), WriteHealth::Ok);
    }
    let s = open(dir.path());
    assert_eq!(whole_pages(&s, 3), [0, 2].into());
}

#[test]
fn concurrent_writers_through_a_full_disk_lose_only_refused_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = Arc::new(Disk::default());
    let s = Arc::new(
        EmbeddedStore::open_with_faults(dir.path(), EmbeddedOptions::default(), Some(disk.clone())).expect("open"),
    );
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (s, disk) = (s.clone(), disk.clone());
            std::thread::spawn(move || {
                let mut ok = Vec::new();
                for k in 0..40 {
                    let i = t * 40 + k;
                    if k % 10 == 5 {
                        disk.full.fetch_xor(true, Ordering::SeqCst);
                    }
                    if write_page(&*s, i).is_ok() {
                        ok.push(i);
                    }
                }
                ok
            })
        })
        .collect();
    let mut acked: BTreeSet<usize> = BTreeSet::new();
    for t in threads {
        acked.extend(t.join().expect("thread"));
    }
    disk.full.store(false, Ordering::SeqCst);
    write_page(&*s, 160).expect("after the disk is freed");
    acked.insert(160);
    assert_eq!(whole_pages(&*s, 161), acked);
    drop(s);
    let s = open(dir.path());
    assert_eq!(
        whole_pages(&s, 161),
        acked,
        "exactly the acknowledged pages survive reopen"
    );
    assert_eq!(s.stats().expect("stats").damaged_records_skipped, 0);
}

fn incident(n: usize) -> Incident {
    Incident {
        id: format!("inc-{n:06}"),
        dedup_key: format!("k{n}"),
        rule: "xid.79".into(),
        kind: FindingKind::Health,
        severity: Severity::Critical,
        gpu: None,
        node: "node-a".into(),
        state: IncidentState::Open,
        summary: "s".into(),
        action: Action::ResetGpu,
        opened_ms: T0,
        updated_ms: T0,
        last_seen_ms: T0,
        acknowledged_ms: None,
        acknowledged_by: None,
        resolved_ms: None,
        resolution: None,
        finding_count: 1,
        labels: Default::default(),
        flaps: 0,
        correlation: Default::default(),
        timeline: Vec::new(),
    }
}

#[test]
fn incident_upserts_resume_after_a_full_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = Arc::new(Disk::default());
    {
        let s =
            EmbeddedStore::open_with_faults(dir.path(), EmbeddedOptions::default(), Some(disk.clone())).expect("open");
        s.upsert_incidents(&[incident(1)]).expect("upsert");
        disk.full.store(true, Ordering::SeqCst);
        assert!(is_io(&s.upsert_incidents(&[incident(2)])));
        assert!(matches!(s.write_health(), WriteHealth::Failing { .. }));
        assert_eq!(s.incidents().expect("incidents"), vec![incident(1)]);
        disk.full.store(false, Ordering::SeqCst);
        s.upsert_incidents(&[incident(3)]).expect("upserts come back");
        assert_eq!(s.write_health(), WriteHealth::Ok);
    }
    let s = open(dir.path());
    assert_eq!(s.incidents().expect("incidents"), vec![incident(1), incident(3)]);
    assert_eq!(s.stats().expect("stats").damaged_files_kept, 0);
}

/// Unmounts the tmpfs (and removes its mount point) even when the test panics.
struct Mounted(tempfile::TempDir);

impl Drop for Mounted {
    fn drop(&mut self) {
        let ok = std::process::Command::new("umount")
            .arg(self.0.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.0.path())
                .status();
        }
    }
}

#[test]
fn real_tmpfs_full_then_freed_resumes_writes() {
    let mnt = tempfile::tempdir().expect("tempdir");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(mnt.path())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!(
            "SKIPPED real_tmpfs_full_then_freed_resumes_writes: `mount -t tmpfs` is not permitted here (needs root)"
        );
        return;
    }
    let mnt = Mounted(mnt);
    let dir = mnt.0.path().join("store");
    let mut acked = BTreeSet::new();
    {
        let s = open(&dir);
        write_page(&s, 0).expect("page 0");
        acked.insert(0);
        // Fill the file system with another file.
        let filler = mnt.0.path().join("filler");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&filler).expect("filler");
            while f.write_all(&[0u8; 4096]).is_ok() {}
        }
        let mut failed = None;
        for i in 1..200 {
            match write_page(&s, i) {
                Ok(()) => {
                    acked.insert(i);
                }
                Err(e) => {
                    failed = Some((i, e));
                    break;
                }
            }
        }
        let (i, e) = failed.expect("a full tmpfs refuses a write");
        assert!(matches!(&e, StoreError::Io { .. }), "{e}");
        assert!(matches!(s.write_health(), WriteHealth::Failing { .. }));
        assert!(write_page(&s, i + 1).is_err(), "still full");
        std::fs::remove_file(&filler).expect("free space");
        write_page(&s, i + 2).expect("writes come back once space is freed");
        acked.insert(i + 2);
        assert_eq!(s.write_health(), WriteHealth::Ok);
        assert_eq!(whole_pages(&s, i + 3), acked);
    }
    let s = open(&dir);
    let n = acked.last().copied().unwrap_or(0) + 1;
    assert_eq!(whole_pages(&s, n), acked, "exactly the acknowledged pages after reopen");
    assert_eq!(s.stats().expect("stats").damaged_records_skipped, 0);
    drop(s);
    drop(mnt);
}

#[test]
fn failing_store_fails_the_next_n_calls_and_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inner: Arc<dyn Store> = Arc::new(open(dir.path()));
    let s = FailingStore::new(inner);
    s.fail_next(Op::AppendPage, 2);
    assert!(is_io(&write_page(&s, 0)));
    assert!(is_io(&write_page(&s, 1)));
    write_page(&s, 2).expect("third call goes through");
    assert_eq!((s.calls(Op::AppendPage), s.failed(Op::AppendPage)), (3, 2));
    assert_eq!(
        whole_pages(&s, 3),
        [2].into(),
        "failed calls never reach the inner store"
    );

    s.fail_next(Op::UpsertIncidents, 1);
    assert!(is_io(&s.upsert_incidents(&[incident(1)])));
    s.upsert_incidents(&[incident(1)]).expect("upsert");
    s.fail_next(Op::Flush, 1);
    assert!(is_io(&s.flush()));
    s.flush().expect("flush");
    s.fail_next(Op::AppendSamples, 1);
    s.fail_next(Op::AppendEvents, 1);
    s.fail_next(Op::UpsertGpus, 1);
    let (rows, events, gpus) = page_parts(3);
    assert!(is_io(&s.append_samples(&rows)));
    assert!(is_io(&s.append_events(&events)));
    assert!(is_io(&s.upsert_gpus(&gpus, T0)));
    for op in [
        Op::AppendSamples,
        Op::AppendEvents,
        Op::UpsertGpus,
        Op::UpsertIncidents,
        Op::Flush,
    ] {
        assert_eq!(s.failed(op), 1, "{op:?}");
    }
    assert_eq!(s.calls(Op::UpsertIncidents), 2);
    assert_eq!(s.incidents().expect("incidents"), vec![incident(1)]);
    // Injected failures never touch the disk, but they do show in the write health,
    // as a real failure would (readiness tests depend on it) …
    assert_eq!(s.inner().write_health(), WriteHealth::Ok, "the disk was never touched");
    match s.write_health() {
        WriteHealth::Failing {
            failed_writes, error, ..
        } => {
            assert_eq!(failed_writes, 3);
            assert!(error.contains("UpsertGpus"), "{error}");
        }
        WriteHealth::Ok => panic!("injected failures must show as Failing"),
    }
    // … until the next write succeeds.
    s.append_samples(&rows).expect("append");
    assert_eq!(s.write_health(), WriteHealth::Ok);
}
