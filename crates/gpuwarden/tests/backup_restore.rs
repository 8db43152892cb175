//! `gpuwarden backup` / `gpuwarden restore` through the real binary.
//!
//! - A backup taken while `serve` ingests pushed batches, restored into a fresh
//!   directory and served again: every sample acknowledged before the backup command
//!   started is served, and so are the incident and the silence created before it.
//! - `restore` refuses a non-empty directory, an archive with one flipped byte (naming
//!   the file), a damaged compressed stream, and a hand-built archive with a `../` path;
//!   in each case nothing is written.

mod common;

use common::{get_json, post_json, start_serve, wait_for};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOKEN: &str = "test-token-0123456789abcdef-0123456789";
const GPU: &str = "GPU-backup-load";
const FIELD: &str = "DCGM_FI_DEV_GPU_TEMP";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn batch(id: &str, gpu: &str, ts: i64, events: Value) -> Value {
    json!({
        "version": 1, "id": id, "node": "n1", "created_ms": ts,
        "pages": [{"source": "nvml",
                   "gpus": [{"uuid": gpu, "node": "n1", "index": 0, "device": null, "model": null,
                             "pci_bus_id": null, "driver_version": null, "mig": null,
                             "workload": {"namespace": null, "pod": null, "container": null, "job": null},
                             "extra_labels": {}}],
                   "rows": [{"gpu": gpu, "ts_ms": ts, "values": [[FIELD, 40.0 + (ts % 20) as f64]]}]}],
        "events": events
    })
}

async fn push(client: &reqwest::Client, base: &str, body: &Value) -> Result<Value, String> {
    let resp = client
        .post(format!("{base}/api/v1/ingest"))
        .bearer_auth(TOKEN)
        .json(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let reply: Value = resp.json().await.unwrap_or(Value::Null);
    if status == 200 && reply["status"] == "stored" {
        Ok(reply)
    } else {
        Err(format!("{status}: {reply}"))
    }
}

/// Runs `gpuwarden ARGS`; returns (success, stdout + stderr).
fn gpuwarden(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = Command::new(common::binary())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run gpuwarden");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn restore(from: &Path, dir: &Path) -> (bool, String) {
    gpuwarden(&[
        "restore".as_ref(),
        "--from".as_ref(),
        from.as_os_str(),
        "--data-dir".as_ref(),
        dir.as_os_str(),
    ])
}

/// Every timestamp `GPU` has in `FIELD`.
async fn served_timestamps(base: &str) -> BTreeSet<i64> {
    let url = format!("{base}/api/v1/gpus/{GPU}/series?field={FIELD}&from=0&to=now&max_points=100000");
    let body = get_json(&url).await.unwrap();
    body["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_f64().unwrap() as i64)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_during_ingest_restores_everything_acknowledged_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("token");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    let data = dir.path().join("data");
    let serve_args = [
        "--ingest-token-file",
        tokens.to_str().unwrap(),
        "--agent-interval",
        "1s",
    ];
    let server = start_serve(&data, &serve_args).await;
    let base = server.base.clone();
    let client = reqwest::Client::new();

    // Before the backup: an incident (XID 79, fallen off the bus) and a silence.
    let xid = json!([{"gpu": "GPU-xid", "node": "n1", "ts_ms": now_ms(), "kind": {"type": "xid", "code": 79}}]);
    push(&client, &base, &batch("xid-1", "GPU-xid", now_ms(), xid))
        .await
        .unwrap();
    let incident = wait_for(Duration::from_secs(30), "the XID incident", || async {
        let b = get_json(&format!("{base}/api/v1/incidents?gpu=GPU-xid")).await.ok()?;
        b["incidents"].as_array()?.first().cloned()
    })
    .await;
    let incident_id = incident["id"].as_str().unwrap().to_string();
    let (status, silence) = post_json(
        &format!("{base}/api/v1/silences"),
        json!({"matchers": {"gpus": ["GPU-xid"]}, "author": "alice", "comment": "swapping it", "duration": "2h"}),
    )
    .await;
    assert_eq!(status, 201, "{silence}");
    let silence_id = silence["id"].as_str().unwrap().to_string();

    // Ingest in the background: one batch after another, each remembered once stored.
    let acked = Arc::new(Mutex::new(Vec::<i64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let pusher = {
        let (acked, stop, base, client) = (acked.clone(), stop.clone(), base.clone(), client.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            let mut last_ts = 0;
            while !stop.load(Ordering::Relaxed) {
                let ts = now_ms().max(last_ts + 1);
                last_ts = ts;
                i += 1;
                push(&client, &base, &batch(&format!("load-{i}"), GPU, ts, json!([])))
                    .await
                    .unwrap_or_else(|e| panic!("push {i}: {e}"));
                acked.lock().unwrap().push(ts);
            }
        })
    };
    wait_for(Duration::from_secs(30), "40 acknowledged batches", || async {
        (acked.lock().unwrap().len() >= 40).then_some(())
    })
    .await;

    // Everything acknowledged before the backup command starts must come back.
    let archive = dir.path().join("backup.tar.gz");
    let before: Vec<i64> = acked.lock().unwrap().clone();
    let backup = {
        let (data, archive) = (data.clone(), archive.clone());
        tokio::task::spawn_blocking(move || {
            gpuwarden(&[
                "backup".as_ref(),
                "--data-dir".as_ref(),
                data.as_os_str(),
                "--to".as_ref(),
                archive.as_os_str(),
            ])
        })
    };
    let (ok, out) = backup.await.unwrap();
    assert!(ok, "backup failed: {out}");
    assert!(out.contains("written to"), "{out}");
    let during = acked.lock().unwrap().len() - before.len();
    // A little more ingest after the backup, then stop.
    let after_backup = acked.lock().unwrap().len();
    wait_for(Duration::from_secs(30), "more batches after the backup", || async {
        (acked.lock().unwrap().len() >= after_backup + 10).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    pusher.await.unwrap();
    drop(server);

    // The manifest lists every file with its hash; locks are not in it.
    let manifest = read_manifest(&archive);
    assert_eq!(manifest["format"], "gpuwarden-backup");
    assert_eq!(manifest["format_version"], 1);
    let paths: Vec<&str> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(paths.iter().any(|p| p.starts_with("store/wal-")), "{paths:?}");
    assert!(paths.contains(&"store/incidents.log"), "{paths:?}");
    assert!(paths.contains(&"outbox/silences.json"), "{paths:?}");
    assert!(!paths.iter().any(|p| p.ends_with("LOCK")), "{paths:?}");
    assert!(manifest["files"][0]["sha256"].as_str().unwrap().len() == 64);

    // Restore into a fresh directory and serve it.
    let restored = dir.path().join("restored");
    let (ok, out) = restore(&archive, &restored);
    assert!(ok, "restore failed: {out}");
    let server = start_serve(&restored, &serve_args).await;
    let served = served_timestamps(&server.base).await;
    let missing: Vec<&i64> = before.iter().filter(|ts| !served.contains(ts)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} samples acknowledged before the backup are not served after restore: {missing:?}",
        missing.len(),
        before.len()
    );
    assert!(
        served.len() <= before.len() + during,
        "the restored instance serves {} samples, but only {} + {} were acknowledged before the backup finished",
        served.len(),
        before.len(),
        during
    );
    eprintln!(
        "acknowledged before the backup: {}, during it: {during}, restored: {}",
        before.len(),
        served.len()
    );
    let inc = get_json(&format!("{}/api/v1/incidents/{incident_id}", server.base))
        .await
        .unwrap_or_else(|e| panic!("incident {incident_id} after restore: {e}"));
    assert_eq!(inc["id"], incident_id.as_str());
    let silences = get_json(&format!("{}/api/v1/silences", server.base)).await.unwrap();
    assert!(
        silences["silences"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == silence_id.as_str() && s["comment"] == "swapping it"),
        "{silences}"
    );
    drop(server);

    // Restoring over it again is refused: the directory is not empty.
    let (ok, out) = restore(&archive, &restored);
    assert!(!ok && out.contains("not empty") && out.contains("--force"), "{out}");

    refusals(dir.path(), &archive);
}

fn read_manifest(archive: &Path) -> Value {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(archive).unwrap());
    let mut tar = tar::Archive::new(gz);
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some("MANIFEST.json") {
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            return serde_json::from_str(&text).unwrap();
        }
    }
    panic!("no MANIFEST.json in {}", archive.display());
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// Damaged and hostile archives: refused with a clear error, nothing written.
fn refusals(dir: &Path, archive: &Path) {
    let compressed = std::fs::read(archive).unwrap();
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(compressed.as_slice())
        .read_to_end(&mut plain)
        .unwrap();

    // One byte of silences.json flipped inside the tar: the hash names the file.
    let at = find(&plain, b"swapping it").expect("the silence's comment in the archive");
    let mut flipped = plain.clone();
    flipped[at] ^= 0x01;
    let bad = dir.join("flipped.tar.gz");
    std::fs::write(&bad, gzip(&flipped)).unwrap();
    let target = dir.join("from-flipped");
    let (ok, out) = restore(&bad, &target);
    assert!(!ok, "a damaged archive was restored: {out}");
    assert!(out.contains("outbox/silences.json is damaged"), "{out}");
    assert!(!target.exists(), "something was written from a damaged archive");

    // A byte flipped in the compressed stream itself.
    let mut broken = compressed.clone();
    let mid = broken.len() / 2;
    broken[mid] ^= 0x55;
    let bad = dir.join("broken.tar.gz");
    std::fs::write(&bad, &broken).unwrap();
    let target = dir.join("from-broken");
    let (ok, out) = restore(&bad, &target);
    assert!(!ok, "a damaged archive was restored: {out}");
    assert!(out.contains("broken.tar.gz"), "{out}");
    assert!(!target.exists(), "something was written from a damaged archive");

    // A hostile archive: a `../` path (built by hand: tar writers refuse to).
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..12].copy_from_slice(b"../escaped-1");
    header.set_size(4);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut hostile = header.as_bytes().to_vec();
    hostile.extend_from_slice(b"evil");
    hostile.resize(hostile.len() + 508 + 1024, 0);
    let bad = dir.join("hostile.tar.gz");
    std::fs::write(&bad, gzip(&hostile)).unwrap();
    let target = dir.join("sub").join("from-hostile");
    let (ok, out) = restore(&bad, &target);
    assert!(!ok, "a hostile archive was restored: {out}");
    assert!(out.contains("../escaped-1") && out.contains("hostile"), "{out}");
    assert!(!target.exists());
    assert!(!dir.join("sub").join("escaped-1").exists());
    assert!(!dir.join("escaped-1").exists());
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn help_explains_what_is_included_and_the_guarantee() {
    let (ok, out) = gpuwarden(&["backup".as_ref(), "--help".as_ref()]);
    assert!(ok, "{out}");
    for words in ["acknowledged before the backup started", "0600", "pg_dump", "--to"] {
        assert!(out.contains(words), "backup --help lacks '{words}': {out}");
    }
    let (ok, out) = gpuwarden(&["restore".as_ref(), "--help".as_ref()]);
    assert!(ok, "{out}");
    for words in ["SHA-256", "--force", "--check", "hostile"] {
        assert!(out.contains(words), "restore --help lacks '{words}': {out}");
    }
}
