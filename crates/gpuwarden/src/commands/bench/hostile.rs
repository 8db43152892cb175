//! `gpuwarden bench hostile`: the real binary (`gpuwarden run`, default limits) scraping
//! a hostile exporter on loopback, as an operator would meet it — not a library call on
//! a quiet, small case. Two kinds of scenario:
//!
//! - **Names**: one GPU with N distinct metric names on every page (a buggy exporter, or
//!   an attacker's). Admission keeps `scrape.max_series_per_gpu` of them; the rest must
//!   cost a constant per name, so `/healthz` stays fast and SIGTERM prompt.
//! - **Churn**: N fresh GPU UUIDs on every page. Admission keeps at most
//!   `scrape.max_gpus_per_target` per target; memory and the data directory must stay
//!   bounded, and the vanishing GPUs are one target-level finding, not N incidents.
//!
//! While each scenario runs, a prober asks `/healthz` every 100 ms (latency p50/p95/max)
//! and the child's RSS is read from `/proc/PID/status` every second; at the end the
//! child gets SIGTERM and the time to its exit is measured.

use crate::cli::BenchHostileArgs;
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the exporter serves.
#[derive(Debug, Clone, Copy)]
enum Scenario {
    /// One GPU with this many distinct metric names.
    Names(usize),
    /// This many fresh GPU UUIDs on every page.
    Churn(usize),
}

impl Scenario {
    fn label(self) -> String {
        match self {
            Scenario::Names(n) => format!("{} names on 1 GPU", thousands(n)),
            Scenario::Churn(n) => format!("{} new GPU UUIDs per page", thousands(n)),
        }
    }
}

/// What one scenario measured.
struct Outcome {
    scenario: Scenario,
    page_bytes: usize,
    pages: u64,
    healthz_ms: Vec<f64>,
    healthz_failed: usize,
    rss_peak_mb: f64,
    rss_end_mb: f64,
    gpus_held: u64,
    incidents_open: usize,
    refused: u64,
    data_dir_mb: f64,
    sigterm_s: Option<f64>,
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

const LABELS: &str = r#"device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="hostile-node""#;

/// The names page: built once, served as is (the exporter must not be the bottleneck).
fn names_page(n: usize) -> String {
    let uuid = "GPU-00000000-0000-0000-0000-0000000a0001";
    let labels = format!(r#"gpu="0",UUID="{uuid}",{LABELS}"#);
    let mut s = String::with_capacity(n * 120);
    s.push_str(&format!("DCGM_FI_DEV_GPU_TEMP{{{labels}}} 45\n"));
    s.push_str(&format!("DCGM_FI_DEV_POWER_USAGE{{{labels}}} 300\n"));
    for i in 0..n {
        s.push_str(&format!("hostile_metric_{i}{{{labels}}} 1\n"));
    }
    s
}

/// A churn page: `n` GPUs never seen before (scrape number `k` makes them unique).
fn churn_page(n: usize, k: u64) -> String {
    let mut s = String::with_capacity(n * 3 * 180);
    for i in 0..n {
        let uuid = format!("GPU-{k:08x}-0000-0000-0000-{i:012x}");
        let labels = format!(r#"gpu="{}",UUID="{uuid}",{LABELS}"#, i % 8);
        s.push_str(&format!("DCGM_FI_DEV_GPU_TEMP{{{labels}}} 45\n"));
        s.push_str(&format!("DCGM_FI_DEV_POWER_USAGE{{{labels}}} 300\n"));
        s.push_str(&format!("DCGM_FI_DEV_XID_ERRORS{{{labels}}} 0\n"));
    }
    s
}

/// Serves the scenario's pages on loopback; returns the address and the page counter.
async fn serve_exporter(scenario: Scenario) -> Result<(String, Arc<AtomicU64>, usize)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let pages = Arc::new(AtomicU64::new(0));
    let fixed = match scenario {
        Scenario::Names(n) => Some(Arc::new(names_page(n))),
        Scenario::Churn(_) => None,
    };
    let page_bytes = match scenario {
        Scenario::Names(_) => fixed.as_ref().map_or(0, |p| p.len()),
        Scenario::Churn(n) => churn_page(n, 0).len(),
    };
    let counter = pages.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (fixed, counter) = (fixed.clone(), counter.clone());
            async move {
                let k = counter.fetch_add(1, Ordering::SeqCst);
                match (scenario, fixed) {
                    (_, Some(page)) => (*page).clone(),
                    (Scenario::Churn(n), None) => tokio::task::spawn_blocking(move || churn_page(n, k + 1))
                        .await
                        .unwrap_or_default(),
                    (Scenario::Names(_), None) => String::new(),
                }
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, pages, page_bytes))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// (VmRSS, VmHWM) of `pid` in MiB.
fn rss_mb(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Kills the child if the benchmark ends early (an error, Ctrl-C).
struct Guard(Option<Child>);
impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn run_scenario(
    binary: &Path,
    scenario: Scenario,
    duration: Duration,
    interval: Duration,
    bar: &ProgressBar,
) -> Result<Outcome> {
    let (exporter, pages, page_bytes) = serve_exporter(scenario).await?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("gpuwarden.toml");
    std::fs::write(
        &config,
        format!(
            "[scrape]\ninterval = \"{}\"\ntargets = [\"{exporter}\"]\n",
            humantime::format_duration(interval)
        ),
    )?;
    let data = dir.path().join("data");
    let log_path = dir.path().join("gpuwarden.log");
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let child = Command::new(binary)
        .args(["run", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(&data)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path)?)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let pid = child.id();
    let mut guard = Guard(Some(child));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .no_proxy()
        .build()?;

    // Up: /healthz answers (30 s at most).
    let started = Instant::now();
    loop {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        if let Some(Some(status)) = guard.0.as_mut().map(|c| c.try_wait()).transpose()? {
            bail!(
                "gpuwarden exited ({status}) before answering; its log: {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("gpuwarden did not answer /healthz within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Probe while pages arrive.
    let mut healthz_ms = Vec::new();
    let mut healthz_failed = 0;
    let mut rss_peak_mb: f64 = 0.0;
    let mut next_rss = Instant::now();
    let t0 = Instant::now();
    while t0.elapsed() < duration {
        let t = Instant::now();
        match client.get(format!("{base}/healthz")).send().await {
            Ok(r) if r.status().is_success() => {
                let _ = r.bytes().await;
                healthz_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            _ => healthz_failed += 1,
        }
        if Instant::now() >= next_rss {
            if let Some((rss, hwm)) = rss_mb(pid) {
                rss_peak_mb = rss_peak_mb.max(rss).max(hwm);
            }
            next_rss += Duration::from_secs(1);
        }
        bar.set_message(format!(
            "{}: {} pages, {:.0} s",
            scenario.label(),
            pages.load(Ordering::SeqCst),
            t0.elapsed().as_secs_f64()
        ));
        tokio::time::sleep(Duration::from_millis(100).saturating_sub(t.elapsed())).await;
    }
    let (rss_end_mb, hwm) = rss_mb(pid).unwrap_or((f64::NAN, f64::NAN));
    rss_peak_mb = rss_peak_mb.max(hwm);

    let health: serde_json::Value = client.get(format!("{base}/healthz")).send().await?.json().await?;
    let targets: serde_json::Value = client
        .get(format!("{base}/api/v1/targets"))
        .send()
        .await?
        .json()
        .await?;
    let refused = targets["ingest"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t["refused"].as_object())
                .flat_map(|r| r.values().filter_map(|v| v.as_u64()))
                .sum()
        })
        .unwrap_or(0);
    let incidents: serde_json::Value = client
        .get(format!("{base}/api/v1/incidents?state=open&limit=1000"))
        .send()
        .await?
        .json()
        .await?;
    let incidents_open = incidents["incidents"].as_array().map_or(0, Vec::len);
    let data_dir_mb = dir_bytes(&data) as f64 / (1024.0 * 1024.0);

    // SIGTERM, then time to exit (two minutes at most, then SIGKILL).
    let term = Instant::now();
    let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
    if !status.success() {
        bail!("sending SIGTERM to {pid} failed ({status})");
    }
    let mut sigterm_s = None;
    while term.elapsed() < Duration::from_secs(120) {
        if let Some(c) = guard.0.as_mut() {
            if c.try_wait()?.is_some() {
                sigterm_s = Some(term.elapsed().as_secs_f64());
                guard.0 = None;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(guard);
    healthz_ms.sort_by(f64::total_cmp);
    Ok(Outcome {
        scenario,
        page_bytes,
        pages: pages.load(Ordering::SeqCst),
        healthz_ms,
        healthz_failed,
        rss_peak_mb,
        rss_end_mb,
        gpus_held: health["gpus"].as_u64().unwrap_or(0),
        incidents_open,
        refused,
        data_dir_mb,
        sigterm_s,
    })
}

pub fn hostile(a: BenchHostileArgs) -> Result<ExitCode> {
    let binary: PathBuf = match a.binary {
        Some(b) => b,
        None => std::env::current_exe().context("finding this binary")?,
    };
    let duration: Duration = a.duration.into();
    let interval: Duration = a.interval.into();
    if duration.is_zero() || interval.is_zero() {
        bail!("--duration and --interval must be positive");
    }
    let mut scenarios: Vec<Scenario> = a
        .names
        .iter()
        .filter(|n| **n > 0)
        .map(|n| Scenario::Names(*n))
        .collect();
    if a.churn > 0 {
        scenarios.push(Scenario::Churn(a.churn));
    }
    let bar = ProgressBar::new(scenarios.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let rt = super::super::runtime()?;
    let mut outcomes = Vec::new();
    for s in scenarios {
        outcomes.push(rt.block_on(run_scenario(&binary, s, duration, interval, &bar))?);
        bar.inc(1);
    }
    bar.finish_and_clear();

    println!(
        "gpuwarden run (default limits, scrape every {}) against a hostile exporter on loopback, {} s per scenario; \
         /healthz probed every 100 ms; {}; binary {}.\n",
        humantime::format_duration(interval),
        duration.as_secs(),
        super::machine_line(),
        binary.display()
    );
    println!(
        "| Scenario | Page | Pages served | /healthz p50 | p95 | max | failed | RSS peak | RSS end | GPUs held | Open incidents | Samples refused | Data dir | SIGTERM → exit |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for o in &outcomes {
        println!(
            "| {} | {:.1} MB | {} | {:.1} ms | {:.1} ms | {:.1} ms | {} | {:.0} MB | {:.0} MB | {} | {} | {} | {:.1} MB | {} |",
            o.scenario.label(),
            o.page_bytes as f64 / 1e6,
            o.pages,
            percentile(&o.healthz_ms, 0.5),
            percentile(&o.healthz_ms, 0.95),
            o.healthz_ms.last().copied().unwrap_or(f64::NAN),
            o.healthz_failed,
            o.rss_peak_mb,
            o.rss_end_mb,
            o.gpus_held,
            o.incidents_open,
            thousands(o.refused as usize),
            o.data_dir_mb,
            o.sigterm_s
                .map(|s| format!("{s:.2} s"))
                .unwrap_or_else(|| "> 120 s (killed)".into()),
        );
    }
    println!(
        "\nReproduce: gpuwarden bench hostile --duration {}s",
        duration.as_secs()
    );
    Ok(ExitCode::SUCCESS)
}
