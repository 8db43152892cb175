//! Incident persistence in the embedded store: round trip across reopen, latest version
//! wins, compaction, torn tail, damaged middle, bad magic, retention of resolved ones.

use gpuwarden_model::{Action, FindingKind, GpuUuid, Incident, IncidentState, Resolution, Severity, TimelineEntry};
use gpuwarden_store::embedded::{EmbeddedOptions, EmbeddedStore};
use gpuwarden_store::Store;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

const T0: i64 = 1_700_000_000_000;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

fn open(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(dir, EmbeddedOptions::default()).expect("open")
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("incidents.log")
}

fn incident(n: u32, version: u64) -> Incident {
    Incident {
        id: format!("inc-{n:06}"),
        dedup_key: format!("xid.79@GPU-{n}"),
        rule: "xid.79".into(),
        kind: FindingKind::Health,
        severity: Severity::Critical,
        gpu: Some(GpuUuid::new(&format!("GPU-{n}"))),
        node: "node-a".into(),
        state: IncidentState::Open,
        summary: format!("GPU fell off the bus (version {version})"),
        action: Action::ResetGpu,
        opened_ms: T0,
        updated_ms: T0 + version as i64,
        last_seen_ms: T0 + version as i64,
        acknowledged_ms: None,
        acknowledged_by: None,
        resolved_ms: None,
        resolution: None,
        finding_count: version,
        labels: Default::default(),
        flaps: 0,
        correlation: Default::default(),
        timeline: vec![TimelineEntry {
            ts_ms: T0,
            what: "opened".into(),
            detail: "XID 79".into(),
            severity: Some(Severity::Critical),
        }],
    }
}

fn resolved(mut inc: Incident, at: i64) -> Incident {
    inc.state = IncidentState::Resolved;
    inc.resolved_ms = Some(at);
    inc.resolution = Some(Resolution::Automatic { cleared_since_ms: at });
    inc
}

fn corrupt_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".corrupt"))
        .collect();
    names.sort();
    names
}

#[test]
fn incidents_round_trip_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut acked = incident(2, 1);
    acked.state = IncidentState::Acknowledged;
    acked.acknowledged_by = Some("alice".into());
    acked.acknowledged_ms = Some(T0 + 5);
    let written = vec![incident(1, 1), acked, resolved(incident(3, 1), T0 + 9)];
    {
        let s = open(dir.path());
        assert!(s.incidents().expect("incidents").is_empty());
        s.upsert_incidents(&written).expect("upsert");
        s.upsert_incidents(&[]).expect("empty upsert is a no-op");
        assert_eq!(s.incidents().expect("incidents"), written);
    }
    let s = open(dir.path());
    assert_eq!(s.incidents().expect("incidents"), written);
}

#[test]
fn many_updates_of_one_incident_latest_wins_and_log_stays_compact() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = open(dir.path());
        for v in 1..=3_000 {
            s.upsert_incidents(&[incident(1, v)]).expect("upsert");
        }
        assert_eq!(s.incidents().expect("incidents"), vec![incident(1, 3_000)]);
    }
    // ~500 bytes a version: without compaction the log would be ~1.5 MB.
    let len = std::fs::metadata(log_path(dir.path())).expect("stat").len();
    assert!(len < 200 * 1024, "incident log not compacted: {len} bytes");
    let s = open(dir.path());
    assert_eq!(s.incidents().expect("incidents"), vec![incident(1, 3_000)]);
}

#[test]
fn compaction_keeps_the_latest_version_of_each_incident() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = open(dir.path());
        for v in 1..=200 {
            let batch: Vec<Incident> = (1..=20).map(|n| incident(n, v + u64::from(n))).collect();
            s.upsert_incidents(&batch).expect("upsert");
        }
    }
    let s = open(dir.path());
    let expected: Vec<Incident> = (1..=20).map(|n| incident(n, 200 + u64::from(n))).collect();
    assert_eq!(s.incidents().expect("incidents"), expected);
    assert!(!dir.path().join("incidents.log.tmp").exists());
}

#[test]
fn torn_tail_is_truncated_and_earlier_versions_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = open(dir.path());
        s.upsert_incidents(&[incident(1, 1), incident(2, 1)]).expect("upsert");
        s.upsert_incidents(&[incident(1, 2)]).expect("upsert");
    }
    let path = log_path(dir.path());
    let good = std::fs::metadata(&path).expect("stat").len();
    // A crash mid-write of the next batch: a frame header promising more than is there.
    let mut f = OpenOptions::new().append(true).open(&path).expect("open log");
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'[', b'{']).expect("write");
    drop(f);

    {
        let s = open(dir.path());
        assert_eq!(s.incidents().expect("incidents"), vec![incident(1, 2), incident(2, 1)]);
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), good);
        assert!(corrupt_files(dir.path()).is_empty(), "a torn tail is not quarantined");
        s.upsert_incidents(&[incident(2, 2)]).expect("upsert after truncation");
    }
    let s = open(dir.path());
    assert_eq!(s.incidents().expect("incidents"), vec![incident(1, 2), incident(2, 2)]);
}

#[test]
fn damaged_middle_is_quarantined_and_records_around_it_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = open(dir.path());
        s.upsert_incidents(&[incident(1, 1)]).expect("upsert");
        s.upsert_incidents(&[incident(2, 1)]).expect("upsert");
        s.upsert_incidents(&[incident(3, 1)]).expect("upsert");
    }
    let path = log_path(dir.path());
    let mut bytes = std::fs::read(&path).expect("read");
    // Flip a byte inside the second record's payload (JSON of `inc-000002`).
    let at = bytes
        .windows(10)
        .position(|w| w == b"inc-000002")
        .expect("second record");
    bytes[at + 4] ^= 0x55;
    std::fs::write(&path, &bytes).expect("write");

    {
        let s = open(dir.path());
        assert_eq!(s.incidents().expect("incidents"), vec![incident(1, 1), incident(3, 1)]);
        assert_eq!(corrupt_files(dir.path()), ["incidents.log.corrupt"]);
        s.upsert_incidents(&[incident(4, 1)]).expect("upsert after quarantine");
    }
    let s = open(dir.path());
    assert_eq!(
        s.incidents().expect("incidents"),
        vec![incident(1, 1), incident(3, 1), incident(4, 1)]
    );
    assert_eq!(corrupt_files(dir.path()).len(), 1, "the rewritten log is clean");
}

#[test]
fn garbage_file_is_quarantined_and_store_opens_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(log_path(dir.path()), b"this is not an incident log at all").expect("write");
    // Twice, to check a second quarantine does not overwrite the first.
    for expected in [1, 2] {
        let s = open(dir.path());
        assert!(s.incidents().expect("incidents").is_empty());
        s.upsert_incidents(&[incident(1, 1)]).expect("upsert");
        drop(s);
        assert_eq!(corrupt_files(dir.path()).len(), expected);
        if expected == 1 {
            std::fs::write(log_path(dir.path()), b"garbage again").expect("write");
        }
    }
}

#[test]
fn retention_drops_old_resolved_incidents_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = T0 + 100 * DAY_MS;
    {
        let s = open(dir.path());
        s.upsert_incidents(&[
            incident(1, 1),                         // active, old: kept
            resolved(incident(2, 1), T0 + DAY_MS),  // resolved 99 days ago: dropped
            resolved(incident(3, 1), now - DAY_MS), // resolved yesterday: kept
        ])
        .expect("upsert");
        s.apply_configured_retention(now).expect("retention");
        let ids: Vec<String> = s.incidents().expect("incidents").into_iter().map(|i| i.id).collect();
        assert_eq!(ids, ["inc-000001", "inc-000003"]);
    }
    let s = open(dir.path());
    let ids: Vec<String> = s.incidents().expect("incidents").into_iter().map(|i| i.id).collect();
    assert_eq!(ids, ["inc-000001", "inc-000003"]);
}
