//! `gpuwarden forensics collect|verify`: a bundle collected from a stopped instance's data
//! directory holds the GPU's identity, incidents, samples, events and workloads with a
//! SHA-256 manifest that verifies; a tampered archive fails verification (non-zero exit);
//! a locked store (running instance) gets an error that says to copy the directory.

mod common;

use gpuwarden_model::{
    Action, DcgmField, Event, EventKind, FieldName, FindingKind, GpuIdentity, GpuSamples, GpuUuid, Incident,
    IncidentState, Severity,
};
use gpuwarden_store::embedded::{EmbeddedOptions, EmbeddedStore};
use gpuwarden_store::Store;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output};

const GPU: &str = "GPU-0f0e0d0c-0000-4000-8000-000000000001";
const T0: i64 = 1_735_689_600_000;

fn seed_store(dir: &Path) {
    let store = EmbeddedStore::open(&dir.join("store"), EmbeddedOptions::default()).unwrap();
    let gpu = GpuUuid::new(GPU);
    let mut id = GpuIdentity::new(gpu.clone(), "node-a");
    id.workload.namespace = Some("crypto-free".into());
    id.workload.pod = Some("data-prep-1".into());
    store.upsert_gpus(&[id], T0).unwrap();
    let rows: Vec<GpuSamples> = (0..60)
        .map(|i| GpuSamples {
            gpu: gpu.clone(),
            ts_ms: T0 + i * 15_000,
            values: vec![
                (FieldName::Dcgm(DcgmField::ProfSmActive), 0.98),
                (FieldName::Dcgm(DcgmField::PowerUsage), 455.0 + i as f64 * 0.1),
            ],
        })
        .collect();
    store.append_samples(&rows).unwrap();
    store
        .append_events(&[Event {
            gpu: gpu.clone(),
            node: "node-a".into(),
            ts_ms: T0 + 60_000,
            kind: EventKind::ProcessStart {
                pid: 4242,
                name: Some("xmrig".into()),
            },
        }])
        .unwrap();
    store
        .upsert_incidents(&[Incident {
            id: "inc-000001".into(),
            dedup_key: format!("sec.mining.telemetry@{GPU}"),
            rule: "sec.mining.telemetry".into(),
            kind: FindingKind::Security,
            severity: Severity::Critical,
            gpu: Some(gpu.clone()),
            node: "node-a".into(),
            state: IncidentState::Open,
            summary: "Cryptomining signature in GPU telemetry [T1496]: …; pod crypto-free/data-prep-1".into(),
            action: Action::RestartApp,
            opened_ms: T0 + 120_000,
            updated_ms: T0 + 120_000,
            last_seen_ms: T0 + 120_000,
            acknowledged_ms: None,
            acknowledged_by: None,
            resolved_ms: None,
            resolution: None,
            finding_count: 1,
            labels: Default::default(),
            flaps: 0,
            correlation: Default::default(),
            timeline: Vec::new(),
        }])
        .unwrap();
    store.flush().unwrap();
}

fn gpuwarden(args: &[&str]) -> Output {
    Command::new(common::binary())
        .args(args)
        .output()
        .expect("gpuwarden runs")
}

fn collect(data: &Path, out: &Path) -> Output {
    gpuwarden(&[
        "forensics",
        "collect",
        "--gpu",
        GPU,
        "--from",
        "2025-01-01T00:00:00Z",
        "--to",
        &(T0 + 3_600_000).to_string(),
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
}

fn entries(tar_path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut ar = tar::Archive::new(std::fs::File::open(tar_path).unwrap());
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (name, data)
        })
        .collect()
}

fn write_tar(path: &Path, files: &[(String, Vec<u8>)]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    b.finish().unwrap();
}

#[test]
fn collected_bundle_holds_the_evidence_and_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    seed_store(tmp.path());
    let tar_path = tmp.path().join("case.tar");
    let out = collect(tmp.path(), &tar_path);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let files = entries(&tar_path);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "identity.json",
        "incidents.jsonl",
        "samples.csv",
        "events.jsonl",
        "workloads.json",
        "MANIFEST.sha256",
    ] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    let get = |n: &str| String::from_utf8(files.iter().find(|(f, _)| f == n).unwrap().1.clone()).unwrap();
    assert_eq!(
        get("samples.csv").lines().count(),
        1 + 60 * 2,
        "header + 60 rows x 2 fields"
    );
    assert!(get("incidents.jsonl").contains("sec.mining.telemetry"));
    assert!(get("workloads.json").contains("xmrig") && get("workloads.json").contains("data-prep-1"));
    assert!(get("identity.json").contains("node-a"));
    assert_eq!(get("MANIFEST.sha256").lines().count(), 5);

    let v = gpuwarden(&["forensics", "verify", tar_path.to_str().unwrap()]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    assert!(String::from_utf8_lossy(&v.stdout).contains("OK"));
}

#[test]
fn tampered_missing_or_extra_files_fail_verification() {
    let tmp = tempfile::tempdir().unwrap();
    seed_store(tmp.path());
    let tar_path = tmp.path().join("case.tar");
    assert!(collect(tmp.path(), &tar_path).status.success());
    let files = entries(&tar_path);

    // One changed byte in the samples.
    let mut tampered = files.clone();
    for (name, data) in tampered.iter_mut() {
        if name == "samples.csv" {
            let i = data.iter().rposition(|b| *b == b'8').unwrap();
            data[i] = b'9';
        }
    }
    let p = tmp.path().join("tampered.tar");
    write_tar(&p, &tampered);
    let v = gpuwarden(&["forensics", "verify", p.to_str().unwrap()]);
    assert!(!v.status.success());
    assert!(String::from_utf8_lossy(&v.stdout).contains("samples.csv: SHA-256 mismatch"));

    // A file removed, and a file smuggled in.
    let mut changed: Vec<_> = files.iter().filter(|(n, _)| n != "events.jsonl").cloned().collect();
    changed.push(("notes.txt".into(), b"planted".to_vec()));
    let p = tmp.path().join("changed.tar");
    write_tar(&p, &changed);
    let v = gpuwarden(&["forensics", "verify", p.to_str().unwrap()]);
    assert!(!v.status.success());
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(
        text.contains("events.jsonl: listed in the manifest but missing"),
        "{text}"
    );
    assert!(text.contains("notes.txt: not listed"), "{text}");
}

#[test]
fn a_locked_store_gets_advice_to_copy_the_data_directory() {
    let tmp = tempfile::tempdir().unwrap();
    seed_store(tmp.path());
    let _running = EmbeddedStore::open(&tmp.path().join("store"), EmbeddedOptions::default()).unwrap();
    let out = collect(tmp.path(), &tmp.path().join("case.tar"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("locked") && err.contains("cp -a"), "{err}");
}

#[test]
fn unknown_gpu_or_missing_store_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = collect(tmp.path(), &tmp.path().join("case.tar"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no store"));
}
