//! A real Prometheus (Debian's `prometheus` 2.42) scrapes a simulated dcgm-exporter
//! (`gpuwarden simulate`) and remote-writes to `gpuwarden serve`: the samples arrive, and
//! every GPU gets exactly the identity that scraping the same page directly gives (same
//! mapper: remote_write series are rendered as a text page and mapped by
//! `gpuwarden_collect::dcgm`). Free loopback ports, bounded waits; skipped with a message
//! when `prometheus` is missing, unless `GPUWARDEN_REQUIRE_TOOLS=1`.

mod common;

use common::{free_port, get_json, tools_required, wait_for};
use gpuwarden_collect::dcgm::map_exporter_page;
use gpuwarden_collect::prom::Limits;
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn prometheus_available() -> bool {
    Command::new("prometheus")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_remote_write_delivers_dcgm_samples_with_scrape_identities() {
    if !prometheus_available() {
        assert!(
            !tools_required(),
            "prometheus is required (GPUWARDEN_REQUIRE_TOOLS=1) but not installed"
        );
        eprintln!("skipping: `prometheus` is not installed (apt-get install prometheus)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let token = "rw-token-42-0123456789abcdef0123456789";
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token).unwrap();

    // The simulated exporter: one node, two GPUs, on a known port.
    let sim_port = free_port();
    let _sim = Killed(
        Command::new(common::binary())
            .args(["simulate", "--nodes", "1", "--gpus-per-node", "2", "--seed", "7"])
            .args(["--base-port", &sim_port.to_string(), "--fault-rate-multiplier", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let sim_url = format!("http://127.0.0.1:{sim_port}/metrics");
    wait_for(Duration::from_secs(30), "the simulated exporter", || {
        let url = sim_url.clone();
        async move { reqwest::get(&url).await.ok().filter(|r| r.status().is_success()) }
    })
    .await;

    let serve_port = free_port();
    let base = format!("http://127.0.0.1:{serve_port}");
    let _serve = Killed(
        Command::new(common::binary())
            .args(["serve", "--listen", &format!("127.0.0.1:{serve_port}")])
            .arg("--data-dir")
            .arg(dir.path().join("serve"))
            .arg("--ingest-token-file")
            .arg(&token_file)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    wait_for(Duration::from_secs(30), "serve", || {
        let url = format!("{base}/healthz");
        async move { get_json(&url).await.ok() }
    })
    .await;

    let prom_port = free_port();
    let config = format!(
        "global:\n  scrape_interval: 1s\n\
         scrape_configs:\n  - job_name: dcgm\n    static_configs:\n      - targets: ['127.0.0.1:{sim_port}']\n\
         remote_write:\n  - url: {base}/api/v1/write\n    authorization:\n      credentials_file: {}\n    \
         queue_config:\n      batch_send_deadline: 1s\n      min_backoff: 100ms\n      max_backoff: 1s\n",
        token_file.display()
    );
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let _prom = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // Samples arrive: both GPUs, several temperature points each.
    let gpus: Vec<Value> = wait_for(Duration::from_secs(60), "remote-written GPUs with 3+ samples", || {
        let base = base.clone();
        async move {
            let body = get_json(&format!("{base}/api/v1/gpus")).await.ok()?;
            let gpus = body["gpus"].as_array()?.clone();
            if gpus.len() != 2 {
                return None;
            }
            for g in &gpus {
                let uuid = g["identity"]["uuid"].as_str()?;
                let s = get_json(&format!(
                    "{base}/api/v1/gpus/{uuid}/series?field=DCGM_FI_DEV_GPU_TEMP&from=0&to=now"
                ))
                .await
                .ok()?;
                if s["points"].as_array()?.len() < 3 {
                    return None;
                }
            }
            Some(gpus)
        }
    })
    .await;

    // Same identities as scraping the page directly with the scrape path's mapper.
    let page = reqwest::get(&sim_url).await.unwrap().bytes().await.unwrap();
    let direct = map_exporter_page(&page, "127.0.0.1", 0, &Limits::default()).unwrap();
    assert_eq!(direct.gpus.len(), 2);
    for g in &gpus {
        assert!(
            g["target"].as_str().unwrap().starts_with("remote_write://127.0.0.1:"),
            "{}",
            g["target"]
        );
        let uuid = g["identity"]["uuid"].as_str().unwrap();
        let want = serde_json::to_value(direct.gpu(uuid).expect("GPU on the page")).unwrap();
        let mut got = g["identity"].clone();
        // The simulator's workload labels may change between the two reads; compare the rest.
        got["workload"] = Value::Null;
        let mut want = want;
        want["workload"] = Value::Null;
        assert_eq!(got, want, "identity of {uuid}");
    }
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("gpuwarden_remote_write_samples_total"))
        .unwrap_or_default();
    let n: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
    assert!(n > 0.0, "remote_write sample counter: {line:?}");
}
