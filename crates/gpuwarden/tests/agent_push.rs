//! Acceptance tests of `gpuwarden agent` → `gpuwarden serve`, with the real binary on
//! free loopback ports and an NVML fixture as the GPU source (no GPU in CI).
//!
//! - The server is stopped for a while and restarted while the agent keeps collecting:
//!   afterwards every GPU has exactly one sample per collection timestamp (nothing lost,
//!   nothing stored twice), counted through the server's own API.
//! - A batch pushed again (a retry after a lost answer) is answered "duplicate" and not
//!   stored again, also after a server restart (the batch ledger is persisted).
//! - Bad pushes get JSON errors: no token 401, malformed 400, oversized 413.

mod common;

use common::{free_port, get_json, wait_for};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/nvml/h100-hgx-8gpu.json");
const TOKEN: &str = "test-token-0123456789abcdef-0123456789";

struct Serve {
    child: Child,
    base: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    async fn start(data: &Path, port: u16, token_file: &Path) -> Serve {
        let child = Command::new(common::binary())
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--agent-interval",
                "1s",
            ])
            .arg("--data-dir")
            .arg(data)
            .arg("--ingest-token-file")
            .arg(token_file)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start gpuwarden serve");
        let s = Serve {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let url = format!("{}/healthz", s.base);
        wait_for(Duration::from_secs(30), "serve to answer /healthz", || {
            let url = url.clone();
            async move { get_json(&url).await.ok() }
        })
        .await;
        s
    }

    /// Graceful stop (SIGTERM), as systemd or Kubernetes would do it.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("serve did not stop within 20 s of SIGTERM");
    }
}

fn token_file(dir: &Path) -> PathBuf {
    let p = dir.join("token");
    std::fs::write(&p, format!("{TOKEN}\n")).unwrap();
    p
}

/// `ts → number of points` of one field of one GPU, over all time.
async fn points_per_ts(base: &str, uuid: &str, field: &str) -> BTreeMap<i64, usize> {
    let url = format!("{base}/api/v1/gpus/{uuid}/series?field={field}&from=0&to=now&max_points=100000");
    let body = get_json(&url).await.unwrap();
    let mut out = BTreeMap::new();
    for p in body["points"].as_array().unwrap() {
        *out.entry(p[0].as_f64().unwrap() as i64).or_insert(0) += 1;
    }
    out
}

async fn gpu_uuids(base: &str) -> Vec<String> {
    let body = get_json(&format!("{base}/api/v1/gpus?limit=1000")).await.unwrap();
    body["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["identity"]["uuid"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_outage_loses_and_duplicates_nothing() {
    const BATCHES: u64 = 30;
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_file(dir.path());
    let data = dir.path().join("server");
    let port = free_port();
    let server = Serve::start(&data, port, &tokens).await;

    let mut agent = Command::new(common::binary())
        .args([
            "agent",
            "--server",
            &server.base,
            "--node",
            "hgx-1",
            "--interval",
            "200ms",
        ])
        .args(["--kernel-log", "off", "--nvml-fixture", FIXTURE])
        .args(["--exit-after-batches", &BATCHES.to_string()])
        .arg("--token-file")
        .arg(&tokens)
        .arg("--spool-dir")
        .arg(dir.path().join("spool"))
        .arg("--proc-root")
        .arg(dir.path().join("no-proc"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start gpuwarden agent");

    // Let a few batches through, then take the server away for ~10 collections.
    let base = server.base.clone();
    wait_for(Duration::from_secs(30), "the first pushed GPUs", || {
        let base = base.clone();
        async move { (gpu_uuids(&base).await.len() == 8).then_some(()) }
    })
    .await;
    server.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spooled = std::fs::read_dir(dir.path().join("spool")).unwrap().count();
    assert!(
        spooled >= 3,
        "the agent should have spooled batches while the server was down ({spooled})"
    );
    let server = Serve::start(&data, port, &tokens).await;

    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = agent.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "agent did not finish within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "agent exited with {status}");

    let uuids = gpu_uuids(&server.base).await;
    assert_eq!(uuids.len(), 8);
    let mut reference: Option<Vec<i64>> = None;
    for uuid in &uuids {
        for field in ["DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE"] {
            let counts = points_per_ts(&server.base, uuid, field).await;
            assert_eq!(counts.len() as u64, BATCHES, "{uuid} {field}: one timestamp per batch");
            assert!(
                counts.values().all(|&n| n == 1),
                "{uuid} {field}: a timestamp stored twice: {counts:?}"
            );
            let ts: Vec<i64> = counts.keys().copied().collect();
            match &reference {
                None => reference = Some(ts),
                Some(r) => assert_eq!(r, &ts, "every GPU has the same collection times"),
            }
        }
    }
    let metrics = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("gpuwarden_ingest_batches_total{result=\"stored\"}"),
        "{metrics}"
    );
}

fn one_batch(id: &str, ts: i64) -> Value {
    json!({
        "version": 1, "id": id, "node": "n1", "created_ms": ts,
        "pages": [{"source": "nvml",
                   "gpus": [{"uuid": "GPU-dup", "node": "n1", "index": 0, "device": null, "model": null,
                             "pci_bus_id": null, "driver_version": null, "mig": null,
                             "workload": {"namespace": null, "pod": null, "container": null, "job": null},
                             "extra_labels": {}}],
                   "rows": [{"gpu": "GPU-dup", "ts_ms": ts, "values": [["DCGM_FI_DEV_GPU_TEMP", 40.0]]}]}],
        "events": []
    })
}

async fn post(base: &str, body: Vec<u8>, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}/api/v1/ingest"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_batch_is_stored_once_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_file(dir.path());
    let data = dir.path().join("server");
    let port = free_port();
    // Recent, so that retention (7 days, applied at start) keeps it.
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 60_000;
    let body = serde_json::to_vec(&one_batch("batch-0001", ts)).unwrap();

    let server = Serve::start(&data, port, &tokens).await;
    let (status, reply) = post(&server.base, body.clone(), Some(TOKEN)).await;
    assert_eq!((status, reply["status"].as_str()), (200, Some("stored")), "{reply}");
    let (status, reply) = post(&server.base, body.clone(), Some(TOKEN)).await;
    assert_eq!((status, reply["status"].as_str()), (200, Some("duplicate")), "{reply}");
    server.stop();

    let server = Serve::start(&data, port, &tokens).await;
    let (status, reply) = post(&server.base, body, Some(TOKEN)).await;
    assert_eq!((status, reply["status"].as_str()), (200, Some("duplicate")), "{reply}");
    let counts = points_per_ts(&server.base, "GPU-dup", "DCGM_FI_DEV_GPU_TEMP").await;
    assert_eq!(counts, BTreeMap::from([(ts, 1)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pushes_get_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_file(dir.path());
    let server = Serve::start(&dir.path().join("server"), free_port(), &tokens).await;
    let good = serde_json::to_vec(&one_batch("b-1", 1_000)).unwrap();

    let (status, reply) = post(&server.base, good.clone(), None).await;
    assert_eq!((status, reply["error"]["code"].as_str()), (401, Some("unauthorized")));
    let (status, reply) = post(&server.base, good, Some("wrong-token")).await;
    assert_eq!((status, reply["error"]["code"].as_str()), (401, Some("unauthorized")));
    for bad in [&b"{not json"[..], b"[]", b"{\"version\":1}", b"\xff\xfe"] {
        let (status, reply) = post(&server.base, bad.to_vec(), Some(TOKEN)).await;
        assert_eq!(
            (status, reply["error"]["code"].as_str()),
            (400, Some("bad_batch")),
            "{reply}"
        );
    }
    // The server answers 413 without reading the rest of the body and closes the
    // connection; a client still writing may see that as a reset instead of the answer
    // (timing), which is also a refusal. What must never happen is a 2xx.
    let huge = vec![b' '; 17 * 1024 * 1024];
    let sent = reqwest::Client::new()
        .post(format!("{}/api/v1/ingest", server.base))
        .header("content-type", "application/json")
        .bearer_auth(TOKEN)
        .body(huge)
        .send()
        .await;
    if let Ok(resp) = sent {
        let status = resp.status().as_u16();
        let reply: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!((status, reply["error"]["code"].as_str()), (413, Some("body_too_large")));
    }
    // remote_write with garbage
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/write", server.base))
        .bearer_auth(TOKEN)
        .body(&b"definitely not snappy"[..])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let reply: Value = resp.json().await.unwrap();
    assert_eq!(reply["error"]["code"], "bad_remote_write");
    // The server still answers.
    assert!(get_json(&format!("{}/healthz", server.base)).await.is_ok());
}
