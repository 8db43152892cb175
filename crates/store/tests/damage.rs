//! One flipped byte costs one record: the WAL reader and the incident-log reader resync
//! on the next valid record, keep the damaged file as `*.corrupt`, and count the loss in
//! `StoreStats`. Also: a newest WAL that is empty or has a bad header never blocks open.

use gpuwarden_model::{
    Action, DcgmField, Event, EventKind, FindingKind, GpuIdentity, GpuSamples, GpuUuid, Incident, IncidentState,
    Severity,
};
use gpuwarden_store::embedded::{EmbeddedOptions, EmbeddedStore};
use gpuwarden_store::{PageWrite, Store};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const T0: i64 = 1_700_000_000_000;
const PAGES: usize = 60;
const GPUS: usize = 3;

fn open(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(dir, EmbeddedOptions::default()).expect("open")
}

fn gpu(g: usize) -> GpuUuid {
    GpuUuid::new(&format!("GPU-{g}"))
}

/// Page `i`: one row, one event and one (page-unique) identity, all stamped `T0 + i s`.
fn page_parts(i: usize) -> (Vec<GpuSamples>, Vec<Event>, Vec<GpuIdentity>) {
    let ts = T0 + i as i64 * 1000;
    let rows = vec![GpuSamples {
        gpu: gpu(i % GPUS),
        ts_ms: ts,
        values: vec![
            (DcgmField::GpuTemp.into(), i as f64),
            (DcgmField::PowerUsage.into(), 300.0 + i as f64),
        ],
    }];
    let events = vec![Event {
        gpu: gpu(i % GPUS),
        node: "node-a".into(),
        ts_ms: ts,
        kind: EventKind::Xid {
            code: i as u32,
            message: None,
            pid: None,
            process: None,
        },
    }];
    let gpus = vec![GpuIdentity::new(GpuUuid::new(&format!("GPU-page-{i:03}")), "node-a")];
    (rows, events, gpus)
}

fn write_page(s: &dyn Store, i: usize) {
    let (rows, events, gpus) = page_parts(i);
    s.append_page(&PageWrite {
        rows: &rows,
        events: &events,
        gpus: &gpus,
        seen_ms: T0 + i as i64 * 1000,
    })
    .expect("append_page");
}

/// For each page: whether its row, its event and its identity are in the store, checking
/// their content.
fn pages_present(s: &EmbeddedStore) -> Vec<(bool, bool, bool)> {
    let mut rows = BTreeSet::new();
    for g in 0..GPUS {
        for p in s
            .range(&gpu(g), &DcgmField::GpuTemp.into(), i64::MIN, i64::MAX, usize::MAX)
            .expect("range")
        {
            let i = ((p.ts_ms - T0) / 1000) as usize;
            assert_eq!(p.value, i as f64, "row content of page {i}");
            rows.insert(i);
        }
    }
    let mut events = BTreeSet::new();
    for e in s.events(None, i64::MIN, i64::MAX).expect("events") {
        let i = ((e.ts_ms - T0) / 1000) as usize;
        assert_eq!(e, page_parts(i).1[0], "event content of page {i}");
        events.insert(i);
    }
    let ids: BTreeSet<String> = s
        .gpus()
        .expect("gpus")
        .into_iter()
        .map(|g| g.identity.uuid.as_str().to_string())
        .collect();
    (0..PAGES)
        .map(|i| {
            (
                rows.contains(&i),
                events.contains(&i),
                ids.contains(&format!("GPU-page-{i:03}")),
            )
        })
        .collect()
}

/// `(start, end)` of each frame after the 8-byte file header.
fn frames(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 8;
    while pos + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        out.push((pos, pos + 8 + len));
        pos += 8 + len;
    }
    assert_eq!(pos, bytes.len(), "test file parses into whole frames");
    out
}

/// 50 positions spread evenly over `len` bytes, plus the first and the last byte.
fn positions(len: usize) -> Vec<usize> {
    let mut p: Vec<usize> = (0..50).map(|k| k * len / 50).collect();
    p.push(0);
    p.push(len - 1);
    p.sort_unstable();
    p.dedup();
    p
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        if e.file_type().expect("type").is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }
}

fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

/// How the reader must treat the flipped byte at `at` of a file of frames `fr`: `None`
/// for the header (nothing lost), `Some((k, torn))` for frame `k`, `torn` when the flip
/// made the last frame's length run past the end (a torn tail: truncated, not counted).
fn expected_loss(bytes: &[u8], fr: &[(usize, usize)], at: usize) -> Option<(usize, bool)> {
    let k = fr.iter().position(|&(s, e)| at >= s && at < e)?;
    let (start, _) = fr[k];
    let mut flipped = bytes.to_vec();
    flipped[at] ^= 0xFF;
    let len = u32::from_le_bytes(flipped[start..start + 4].try_into().expect("4 bytes")) as usize;
    let torn = k == fr.len() - 1 && at < start + 4 && len <= 1 << 30 && start + 8 + len > bytes.len();
    Some((k, torn))
}

#[test]
fn wal_one_flipped_byte_costs_only_its_record() {
    let base = tempfile::tempdir().expect("tempdir");
    {
        let s = open(base.path());
        for i in 0..PAGES {
            write_page(&s, i);
        }
        // Dropped without flush, like a SIGKILLed run: everything is in the newest WAL.
    }
    let wal = files_ending(base.path(), ".log")
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("wal-")))
        .expect("a WAL file");
    let bytes = std::fs::read(&wal).expect("read wal");
    let fr = frames(&bytes);
    assert_eq!(fr.len(), PAGES, "one record per page");
    for at in positions(bytes.len()) {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_dir(base.path(), dir.path());
        let path = dir.path().join(wal.file_name().expect("name"));
        let mut b = bytes.clone();
        b[at] ^= 0xFF;
        std::fs::write(&path, &b).expect("write");

        let loss = expected_loss(&bytes, &fr, at);
        let s = open(dir.path());
        let present = pages_present(&s);
        for (i, &p) in present.iter().enumerate() {
            let lost = loss.is_some_and(|(k, _)| k == i);
            assert_eq!(p, (!lost, !lost, !lost), "flip at byte {at}: page {i} (loss {loss:?})");
        }
        let st = s.stats().expect("stats");
        let torn = loss.is_some_and(|(_, t)| t);
        let (records, kept) = match loss {
            None => (0, 1),
            Some((_, true)) => (0, 0),
            Some((_, false)) => (1, 1),
        };
        assert_eq!(
            (st.damaged_records_skipped, st.damaged_files_kept),
            (records, kept),
            "flip at byte {at}: counters"
        );
        assert_eq!(
            files_ending(dir.path(), ".corrupt").len() as u64,
            kept,
            "flip at {at}: evidence kept"
        );
        if !torn {
            assert!(st.damaged_bytes_skipped > 0, "flip at {at}: bytes counted");
        }
        drop(s);
        // The repaired file reads clean the next time.
        let s = open(dir.path());
        assert_eq!(pages_present(&s), present, "flip at {at}: second open");
        assert_eq!(s.stats().expect("stats").damaged_records_skipped, 0);
    }
}

fn incident(n: usize) -> Incident {
    Incident {
        id: format!("inc-{n:06}"),
        dedup_key: format!("xid.79@GPU-{n}"),
        rule: "xid.79".into(),
        kind: FindingKind::Health,
        severity: Severity::Critical,
        gpu: Some(GpuUuid::new(&format!("GPU-{n}"))),
        node: "node-a".into(),
        state: IncidentState::Open,
        summary: format!("GPU {n} fell off the bus"),
        action: Action::ResetGpu,
        opened_ms: T0,
        updated_ms: T0 + n as i64,
        last_seen_ms: T0 + n as i64,
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

/// Flips bytes across `incidents.log` in `base` and checks only the incidents of the
/// record holding the byte are lost.
fn flip_incident_log(base: &Path) {
    let path = base.join("incidents.log");
    let bytes = std::fs::read(&path).expect("read log");
    let fr = frames(&bytes);
    let ids_of: Vec<Vec<String>> = fr
        .iter()
        .map(|&(s, e)| {
            serde_json::from_slice::<Vec<Incident>>(&bytes[s + 8..e])
                .expect("record is JSON")
                .into_iter()
                .map(|i| i.id)
                .collect()
        })
        .collect();
    let all: BTreeSet<String> = ids_of.iter().flatten().cloned().collect();
    for at in positions(bytes.len()) {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_dir(base, dir.path());
        let mut b = bytes.clone();
        b[at] ^= 0xFF;
        std::fs::write(dir.path().join("incidents.log"), &b).expect("write");
        let loss = expected_loss(&bytes, &fr, at);
        let s = open(dir.path());
        let got: BTreeSet<String> = s.incidents().expect("incidents").into_iter().map(|i| i.id).collect();
        let mut want = all.clone();
        if let Some((k, _)) = loss {
            for id in &ids_of[k] {
                want.remove(id);
            }
        }
        assert_eq!(got, want, "flip at byte {at} (loss {loss:?})");
        for inc in s.incidents().expect("incidents") {
            let n: usize = inc.id["inc-".len()..].parse().expect("id number");
            assert_eq!(inc, incident(n), "content of {}", inc.id);
        }
        let (records, kept) = match loss {
            None => (0, 1),
            Some((_, true)) => (0, 0),
            Some((_, false)) => (1, 1),
        };
        let st = s.stats().expect("stats");
        assert_eq!(
            (st.damaged_records_skipped, st.damaged_files_kept),
            (records, kept),
            "flip at byte {at}: counters"
        );
        assert_eq!(
            files_ending(dir.path(), ".corrupt").len() as u64,
            kept,
            "flip at {at}: evidence kept"
        );
        drop(s);
        let s = open(dir.path());
        assert_eq!(
            s.incidents().expect("incidents").len(),
            got.len(),
            "flip at {at}: second open"
        );
        assert_eq!(s.stats().expect("stats").damaged_records_skipped, 0);
    }
}

#[test]
fn incident_log_one_flipped_byte_costs_only_its_record() {
    let base = tempfile::tempdir().expect("tempdir");
    {
        let s = open(base.path());
        for n in 0..35 {
            s.upsert_incidents(&[incident(n)]).expect("upsert");
        }
    }
    flip_incident_log(base.path());
}

#[test]
fn compacted_incident_log_one_flipped_byte_costs_only_its_incident() {
    let base = tempfile::tempdir().expect("tempdir");
    {
        let s = open(base.path());
        // One batch of 30 (one record), then a retention pass rewrites the log compacted
        // (one record per incident), then 5 more upserts.
        let mut first: Vec<Incident> = (0..30).map(incident).collect();
        let mut old = incident(999);
        old.state = IncidentState::Resolved;
        old.resolved_ms = Some(0);
        first.push(old);
        s.upsert_incidents(&first).expect("upsert");
        s.apply_configured_retention(T0).expect("retention");
        for n in 30..35 {
            s.upsert_incidents(&[incident(n)]).expect("upsert");
        }
        assert_eq!(s.incidents().expect("incidents").len(), 35);
    }
    let bytes = std::fs::read(base.path().join("incidents.log")).expect("read");
    assert_eq!(frames(&bytes).len(), 35, "compacted: one record per incident");
    flip_incident_log(base.path());
}

#[test]
fn empty_or_bad_header_newest_wal_does_not_block_open() {
    for (what, content) in [
        ("empty", &b""[..]),
        ("short garbage", &b"xyz"[..]),
        ("bad magic, no records", &b"NOTAWAL!"[..]),
        ("bad magic and junk", &b"NOTAWAL!\x05\x00\x00\x00junkjunk"[..]),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = open(dir.path());
            for i in 0..5 {
                write_page(&s, i);
            }
            s.flush().expect("flush");
        }
        // The store's next WAL, as a crash at its creation or a damaged disk leaves it.
        std::fs::write(dir.path().join(format!("wal-{:020}.log", 1000)), content).expect("write");
        let s = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())
            .unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
        let present = pages_present(&s);
        assert!(present[..5].iter().all(|&p| p == (true, true, true)), "{what}");
        write_page(&s, 5);
        drop(s);
        let s = open(dir.path());
        assert_eq!(pages_present(&s)[5], (true, true, true), "{what}: writes after it");
    }
}
