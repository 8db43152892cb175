//! Shared helpers for end-to-end tests: start the real `gpuwarden` binary on a free
//! loopback port with its own data directory, wait for it with a bounded timeout, and
//! kill it when the test ends (pass or fail).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Gpuwarden {
    pub child: Child,
    pub base: String,
    pub data_dir: PathBuf,
}

impl Drop for Gpuwarden {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_gpuwarden")
}

/// Starts `gpuwarden run` with `extra` arguments on a free port, data in `data_dir`.
pub async fn start(data_dir: &Path, extra: &[&str]) -> Gpuwarden {
    let port = free_port();
    let child = Command::new(binary())
        .arg("run")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start gpuwarden");
    let g = Gpuwarden {
        child,
        base: format!("http://127.0.0.1:{port}"),
        data_dir: data_dir.to_path_buf(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if get_json(&format!("{}/healthz", g.base)).await.is_ok() {
            return g;
        }
        assert!(
            Instant::now() < deadline,
            "gpuwarden did not answer /healthz within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn get_json(url: &str) -> Result<serde_json::Value, String> {
    let resp = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{url}: {status}: {body}"));
    }
    Ok(body)
}

pub async fn post_json(url: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .post(url)
        .json(&body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("POST");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether tests that need external tools must fail (not skip) when a tool is missing.
pub fn tools_required() -> bool {
    std::env::var("GPUWARDEN_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
}

/// Starts `gpuwarden run` on the simulator at `speed` simulated seconds per second, one
/// scrape a second and no random faults, so the only faults are the ones a test injects.
pub async fn start_simulated(data_dir: &Path, seed: u64, speed: u32) -> Gpuwarden {
    let (seed, speed) = (seed.to_string(), speed.to_string());
    start(
        data_dir,
        &[
            "--scrape-interval",
            "1s",
            "--speed",
            &speed,
            "--seed",
            &seed,
            "--fault-rate-multiplier",
            "0",
        ],
    )
    .await
}

/// Injects a fault into the simulated fleet; returns the HTTP status and the body.
pub async fn inject(base: &str, gpu: &str, kind: &str) -> (u16, serde_json::Value) {
    post_json(
        &format!("{base}/api/v1/simulation/faults"),
        serde_json::json!({"gpu": gpu, "kind": kind}),
    )
    .await
}

/// A child process killed (and reaped) when the test ends, pass or fail.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `host:port` of every scrape target of a running gpuwarden (the simulated exporters).
pub async fn exporter_hostports(base: &str) -> Vec<String> {
    let targets = get_json(&format!("{base}/api/v1/targets")).await.expect("targets");
    targets["targets"]
        .as_array()
        .expect("a target list")
        .iter()
        .filter_map(|t| t["url"].as_str())
        .map(|u| u.trim_start_matches("http://").trim_end_matches("/metrics").to_string())
        .collect()
}

/// Starts a real Prometheus (Debian package) in `dir`, on a free loopback port, scraping
/// `hostports` every second. Returns its base URL and the guard that stops it.
pub fn start_prometheus(dir: &Path, hostports: &[String]) -> (String, KillOnDrop) {
    let port = free_port();
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: gpuwarden-test\n    static_configs:\n      - targets: [{}]\n",
        hostports.iter().map(|h| format!("'{h}'")).collect::<Vec<_>>().join(",")
    );
    std::fs::write(dir.join("prometheus.yml"), config).expect("write prometheus.yml");
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("prom").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    (format!("http://127.0.0.1:{port}"), KillOnDrop(child))
}
