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
    start_subcommand("run", data_dir, extra).await
}

/// Starts `gpuwarden SUBCOMMAND` (`run` or `serve`) with `extra` arguments on a free
/// port, data in `data_dir`, and waits (at most 30 s) for it to answer /healthz.
async fn start_subcommand(subcommand: &str, data_dir: &Path, extra: &[&str]) -> Gpuwarden {
    let port = free_port();
    let child = Command::new(binary())
        .arg(subcommand)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start gpuwarden {subcommand}: {e}"));
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
            "gpuwarden {subcommand} did not answer /healthz within 30 s"
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

/// Trains a tiny failure model (32 simulated GPUs × 4 days at a 5-minute step, high fault
/// rate, a short fit budget: about a second) and saves it into `data_dir/models/` as
/// `failure-current.json`, the file `run` and `serve` load at start. Returns its version.
pub fn train_tiny_model(data_dir: &Path) -> String {
    use gpuwarden_predict::dataset::{replay_sim, SimHistory};
    use gpuwarden_predict::model::TrainOptions;
    use gpuwarden_predict::train::{fit_time_split, labeler};
    let h = SimHistory {
        gpus: 32,
        days: 4.0,
        step_ms: 300_000,
        seed: 21,
        fault_rate_multiplier: 3000.0,
        snapshot_every_ms: 1_800_000,
    };
    let catalog = gpuwarden_detect::XidCatalog::builtin();
    let mut lab = labeler();
    let outcome = replay_sim(&h, &catalog, &mut |_, _| {}, &mut |s, f| lab.observe(s, f)).expect("simulated history");
    let opts = TrainOptions {
        budget: 0.3,
        ..TrainOptions::default()
    };
    let mut model = fit_time_split(&lab.data, &outcome, "test: tiny simulated history".into(), opts).expect("fit");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    model
        .save(&gpuwarden_predict::live::models_dir(data_dir), now)
        .expect("save the model");
    model.meta.version.clone()
}

/// Writes a `gpuwarden.toml` into `dir` with a `[predict]` section that scores every
/// `period_s` seconds (the default 5 minutes is too long for a test) and `extra` TOML
/// appended; returns its path.
pub fn predict_config(dir: &Path, period_s: u64, extra: &str) -> PathBuf {
    let path = dir.join("gpuwarden-test.toml");
    std::fs::write(&path, format!("{extra}\n[predict]\nperiod_s = {period_s}\n")).expect("write the config");
    path
}

/// Starts `gpuwarden serve` with `extra` arguments on a free port, data in `data_dir`,
/// and waits (at most 30 s) for it to answer /healthz.
pub async fn start_serve(data_dir: &Path, extra: &[&str]) -> Gpuwarden {
    start_subcommand("serve", data_dir, extra).await
}

/// Starts `gpuwarden simulate` (exporters only, no scraping, no random faults) with
/// `nodes` × `gpus_per_node` GPUs on consecutive ports from a free one; returns the guard
/// and the `host:port` of each node's exporter once the first one answers (at most 30 s).
pub async fn start_sim_exporters(nodes: usize, gpus_per_node: usize, seed: u64) -> (KillOnDrop, Vec<String>) {
    // Consecutive free ports are likely, not certain: probe them all before using them.
    let base_port = loop {
        let p = free_port();
        if (1..nodes as u16).all(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok()) {
            break p;
        }
    };
    let child = Command::new(binary())
        .arg("simulate")
        .args([
            "--nodes",
            &nodes.to_string(),
            "--gpus-per-node",
            &gpus_per_node.to_string(),
        ])
        .args(["--seed", &seed.to_string(), "--fault-rate-multiplier", "0"])
        .args(["--base-port", &base_port.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start gpuwarden simulate");
    let guard = KillOnDrop(child);
    let hostports: Vec<String> = (0..nodes as u16)
        .map(|i| format!("127.0.0.1:{}", base_port + i))
        .collect();
    let url = format!("http://{}/metrics", hostports[0]);
    wait_for(Duration::from_secs(30), "the simulated exporter", || {
        let url = url.clone();
        async move { reqwest::get(&url).await.ok().filter(|r| r.status().is_success()) }
    })
    .await;
    (guard, hostports)
}

/// Whether an incident (API JSON) answers to `rule`: its own rule, or — for an incident
/// that correlates several findings (`cause.*`) — one of its contributing signals.
pub fn has_rule(incident: &serde_json::Value, rule: &str) -> bool {
    incident["rule"] == rule
        || incident["correlation"]["contributors"]
            .as_array()
            .is_some_and(|c| c.iter().any(|s| s["rule"] == rule))
}

/// Whether an incident answers to a rule for which `pred` holds (see [`has_rule`]).
pub fn has_rule_where(incident: &serde_json::Value, pred: impl Fn(&str) -> bool) -> bool {
    pred(incident["rule"].as_str().unwrap_or(""))
        || incident["correlation"]["contributors"]
            .as_array()
            .is_some_and(|c| c.iter().any(|s| pred(s["rule"].as_str().unwrap_or(""))))
}
