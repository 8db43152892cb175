//! `gpuwarden bench scale`: a live fleet of N GPUs through the real `run` pipeline — the
//! simulator serving every node's page, scraped, admitted, stored, scored, analysed and
//! served — for a stated time, as a child process measured from outside:
//!
//! - CPU (cores) and RSS of the process over time (`/proc/PID/stat`, `/proc/PID/status`),
//!   printed at start, middle and end and as a series;
//! - scrape lag: how old the least recently scraped target's last scrape is (a round
//!   that keeps up stays below the interval plus one round's duration), and scrape
//!   durations;
//! - evaluation time per round and per GPU (`gpuwarden_evaluation_duration_seconds` on
//!   `/metrics`, over the measured window);
//! - API latency under load while scrapes land: clients asking for a page of 100 GPUs
//!   (at a random offset) and the fleet summary, each once a second;
//! - bytes per sample on disk, live: the store's directory over the samples it holds.
//!
//! The simulator runs inside the measured process (it is part of `run`), so CPU and
//! RSS include it: with real exporters they would be lower.

use super::cpu::process_cpu;
use crate::cli::BenchScaleArgs;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

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

/// One reading of the process.
#[derive(Debug, Clone, Copy)]
struct Reading {
    at_s: f64,
    rss_mb: f64,
    cpu_s: f64,
}

fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
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

fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The value of an unlabelled metric in a Prometheus text page.
fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// What `/metrics` says about evaluations and the store.
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    eval_sum_s: f64,
    eval_count: f64,
    eval_gpus: f64,
    store_samples: f64,
    samples_ingested: f64,
}

async fn counters(client: &reqwest::Client, base: &str) -> Result<Counters> {
    let page = client.get(format!("{base}/metrics")).send().await?.text().await?;
    Ok(Counters {
        eval_sum_s: metric(&page, "gpuwarden_evaluation_duration_seconds_sum").unwrap_or(0.0),
        eval_count: metric(&page, "gpuwarden_evaluation_duration_seconds_count").unwrap_or(0.0),
        eval_gpus: metric(&page, "gpuwarden_evaluation_gpus").unwrap_or(0.0),
        store_samples: metric(&page, "gpuwarden_store_samples").unwrap_or(0.0),
        samples_ingested: metric(&page, "gpuwarden_samples_ingested_total").unwrap_or(0.0),
    })
}

/// Age of the least recently scraped target's last scrape (ms), and the p95 scrape
/// duration (ms), from `/api/v1/targets`.
async fn scrape_lag(client: &reqwest::Client, base: &str) -> Result<(f64, f64, usize)> {
    let targets: serde_json::Value = client
        .get(format!("{base}/api/v1/targets"))
        .send()
        .await?
        .json()
        .await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as f64)
        .unwrap_or(0.0);
    let list = targets["targets"].as_array().cloned().unwrap_or_default();
    let mut oldest: f64 = 0.0;
    let mut durations = Vec::new();
    for t in &list {
        match t["last_scrape_ms"].as_f64() {
            Some(ms) => oldest = oldest.max(now - ms),
            None => oldest = f64::INFINITY,
        }
        if let Some(d) = t["last_duration_ms"].as_f64() {
            durations.push(d);
        }
    }
    durations.sort_by(f64::total_cmp);
    Ok((oldest, pct(&durations, 0.95), list.len()))
}

/// Latencies of each endpoint under paced load: `clients` tasks, each asking once a
/// second, alternating a page of 100 GPUs at a random offset and the fleet summary.
async fn api_load(base: String, clients: usize, gpus: usize, until: Instant) -> Result<(Vec<f64>, Vec<f64>, usize)> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(clients)
        .no_proxy()
        .build()?;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let client = client.clone();
        let base = base.clone();
        tasks.spawn(async move {
            let mut page_ms = Vec::new();
            let mut summary_ms = Vec::new();
            let mut failed = 0;
            // Spread the clients over the second.
            tokio::time::sleep(Duration::from_millis((c as u64 * 1000) / clients.max(1) as u64)).await;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut k = c;
            while Instant::now() < until {
                tick.tick().await;
                k = k.wrapping_mul(2_654_435_761).wrapping_add(1);
                let (url, out) = if k % 2 == 0 {
                    let offset = (k / 2) % gpus.max(1);
                    (
                        format!("{base}/api/v1/gpus?limit=100&offset={}", offset - offset % 100),
                        &mut page_ms,
                    )
                } else {
                    (format!("{base}/api/v1/fleet/summary"), &mut summary_ms)
                };
                let t = Instant::now();
                match client.get(&url).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        out.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    _ => failed += 1,
                }
            }
            (page_ms, summary_ms, failed)
        });
    }
    let (mut page, mut summary, mut failed) = (Vec::new(), Vec::new(), 0);
    while let Some(r) = tasks.join_next().await {
        let (p, s, f) = r?;
        page.extend(p);
        summary.extend(s);
        failed += f;
    }
    page.sort_by(f64::total_cmp);
    summary.sort_by(f64::total_cmp);
    Ok((page, summary, failed))
}

pub fn scale(a: BenchScaleArgs) -> Result<ExitCode> {
    let binary = match &a.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("finding this gpuwarden binary")?,
    };
    let per_node = a.gpus_per_node.clamp(1, 64);
    let nodes = a.gpus.div_ceil(per_node).max(1);
    let duration: Duration = a.duration.into();
    let interval: Duration = a.scrape_interval.into();
    println!("# gpuwarden bench scale");
    println!("machine: {}", super::machine_line());
    println!(
        "command: gpuwarden bench scale --gpus {} --gpus-per-node {per_node} --duration {} --scrape-interval {} --clients {}",
        a.gpus,
        humantime::format_duration(duration),
        humantime::format_duration(interval),
        a.clients
    );
    println!(
        "fleet: {nodes} simulated nodes x {per_node} GPUs = {} GPUs, the real `gpuwarden run` pipeline in a child process",
        nodes * per_node
    );
    println!();

    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let data = dir.path().join("data");
    let log_path = dir.path().join("gpuwarden.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let base = format!("http://127.0.0.1:{port}");
    let child = Command::new(&binary)
        .args(["run", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(&data)
        .args(["--nodes", &nodes.to_string(), "--gpus-per-node", &per_node.to_string()])
        .args(["--scrape-interval", &humantime::format_duration(interval).to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path)?)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let pid = child.id();
    let mut guard = Guard(Some(child));
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let rt = super::super::runtime()?;
    let report = rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .no_proxy()
            .build()?;
        // Up: /healthz answers, then every GPU has been scraped once.
        let started = Instant::now();
        loop {
            if let Ok(r) = client.get(format!("{base}/healthz")).send().await {
                let h: serde_json::Value = r.json().await.unwrap_or_default();
                if h["gpus"].as_u64().unwrap_or(0) as usize >= nodes * per_node {
                    break;
                }
            }
            if let Some(Some(status)) = guard.0.as_mut().map(|c| c.try_wait()).transpose()? {
                bail!(
                    "gpuwarden exited ({status}) before its fleet was up; its log:\n{}",
                    log()
                );
            }
            if started.elapsed() > Duration::from_secs(300) {
                bail!("the fleet was not fully scraped within 5 minutes; log:\n{}", log());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let ready_s = started.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let cpu0 = process_cpu(pid).unwrap_or_default();
        let first = counters(&client, &base).await?;
        let until = t0 + duration;
        let load = tokio::spawn(api_load(base.clone(), a.clients, nodes * per_node, until));
        let every = (duration / 20).clamp(Duration::from_secs(1), Duration::from_secs(60));
        let mut readings = Vec::new();
        let mut lags = Vec::new();
        let mut scrape_p95 = Vec::new();
        let mut next_lag = t0;
        while Instant::now() < until {
            if let Some(Some(status)) = guard.0.as_mut().map(|c| c.try_wait()).transpose()? {
                bail!("gpuwarden exited ({status}) during the run; its log:\n{}", log());
            }
            readings.push(Reading {
                at_s: t0.elapsed().as_secs_f64(),
                rss_mb: rss_mb(pid).unwrap_or(f64::NAN),
                cpu_s: process_cpu(pid).unwrap_or_default().saturating_sub(cpu0).as_secs_f64(),
            });
            if Instant::now() >= next_lag {
                let (lag, p95, _) = scrape_lag(&client, &base).await?;
                lags.push(lag);
                scrape_p95.push(p95);
                next_lag += (duration / 6).max(interval);
            }
            tokio::time::sleep(every.min(until.saturating_duration_since(Instant::now()))).await;
        }
        let wall = t0.elapsed().as_secs_f64();
        let cpu = process_cpu(pid).unwrap_or_default().saturating_sub(cpu0).as_secs_f64();
        readings.push(Reading {
            at_s: wall,
            rss_mb: rss_mb(pid).unwrap_or(f64::NAN),
            cpu_s: cpu,
        });
        let last = counters(&client, &base).await?;
        let store_dir_bytes = dir_bytes(&data.join("store"));
        let (page_ms, summary_ms, failed) = load.await??;
        Ok::<_, anyhow::Error>((
            ready_s,
            wall,
            cpu,
            readings,
            lags,
            scrape_p95,
            first,
            last,
            store_dir_bytes,
            page_ms,
            summary_ms,
            failed,
        ))
    });
    let (ready_s, wall, cpu, readings, lags, scrape_p95, first, last, store_dir_bytes, page_ms, summary_ms, failed) =
        report?;
    // Stop the child politely (it flushes the store), then forcibly.
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let term = Instant::now();
    while term.elapsed() < Duration::from_secs(60) {
        if let Some(c) = guard.0.as_mut() {
            if c.try_wait()?.is_some() {
                guard.0 = None;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(guard);

    let gpus = nodes * per_node;
    let rss_at = |frac: f64| {
        let target = wall * frac;
        readings
            .iter()
            .min_by(|x, y| (x.at_s - target).abs().total_cmp(&(y.at_s - target).abs()))
            .map_or(f64::NAN, |r| r.rss_mb)
    };
    let (rss_start, rss_mid, rss_end) = (rss_at(0.0), rss_at(0.5), rss_at(1.0));
    let evals = last.eval_count - first.eval_count;
    let eval_ms = if evals > 0.0 {
        (last.eval_sum_s - first.eval_sum_s) * 1000.0 / evals
    } else {
        f64::NAN
    };
    let scored = last.eval_gpus.max(1.0);
    let ingested = last.samples_ingested - first.samples_ingested;
    let max_lag = lags.iter().copied().fold(0.0, f64::max);
    let max_scrape_p95 = scrape_p95.iter().copied().fold(0.0, f64::max);
    println!("fleet up (every GPU scraped) after {ready_s:.1} s; measured for {wall:.0} s");
    println!();
    println!("| figure | value |");
    println!("|---|---:|");
    println!("| GPUs | {gpus} |");
    println!("| CPU (cores, mean over the run) | {:.2} |", cpu / wall.max(1e-9));
    println!("| RSS start / middle / end (MB) | {rss_start:.0} / {rss_mid:.0} / {rss_end:.0} |");
    println!(
        "| RSS per GPU at the end (KB) | {:.1} |",
        rss_end * 1024.0 / gpus as f64
    );
    println!(
        "| scrape lag: oldest target's last scrape, worst reading (ms; interval {} ms) | {max_lag:.0} |",
        interval.as_millis()
    );
    println!("| scrape duration p95, worst reading (ms) | {max_scrape_p95:.1} |");
    println!("| samples ingested per second | {:.0} |", ingested / wall.max(1e-9));
    println!("| evaluations in the window | {evals:.0} |");
    println!("| evaluation per round (ms, mean) | {eval_ms:.1} |");
    println!("| evaluation per GPU (µs, mean) | {:.2} |", eval_ms * 1000.0 / scored);
    println!(
        "| API `/api/v1/gpus?limit=100` p50 / p95 / p99 (ms), {} requests | {:.1} / {:.1} / {:.1} |",
        page_ms.len(),
        pct(&page_ms, 0.5),
        pct(&page_ms, 0.95),
        pct(&page_ms, 0.99)
    );
    println!(
        "| API `/api/v1/fleet/summary` p50 / p95 / p99 (ms), {} requests | {:.1} / {:.1} / {:.1} |",
        summary_ms.len(),
        pct(&summary_ms, 0.5),
        pct(&summary_ms, 0.95),
        pct(&summary_ms, 0.99)
    );
    println!("| API requests failed | {failed} |");
    println!(
        "| store on disk (MB) / samples held | {:.1} / {:.0} |",
        store_dir_bytes as f64 / 1e6,
        last.store_samples
    );
    println!(
        "| bytes per sample on disk, live | {:.2} |",
        store_dir_bytes as f64 / last.store_samples.max(1.0)
    );
    println!();
    println!("RSS and CPU over time (s: MB, cores since the previous reading):");
    let mut prev: Option<Reading> = None;
    let mut line = String::new();
    for r in &readings {
        let cores = match prev {
            Some(p) if r.at_s > p.at_s => (r.cpu_s - p.cpu_s) / (r.at_s - p.at_s),
            _ => f64::NAN,
        };
        line.push_str(&format!("  {:.0}s: {:.0} MB {:.2}c", r.at_s, r.rss_mb, cores));
        prev = Some(*r);
    }
    println!("{}", line.trim_start());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_reads_unlabelled_values_only() {
        let page = "# HELP x\ngpuwarden_evaluation_gpus 20000\ngpuwarden_scrapes_total{target=\"a\"} 3\ngpuwarden_evaluation_duration_seconds_sum 1.5\n";
        assert_eq!(metric(page, "gpuwarden_evaluation_gpus"), Some(20000.0));
        assert_eq!(metric(page, "gpuwarden_evaluation_duration_seconds_sum"), Some(1.5));
        assert_eq!(metric(page, "gpuwarden_scrapes_total"), None);
    }

    #[test]
    fn percentiles_of_sorted_latencies() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(pct(&v, 0.5), 51.0);
        assert_eq!(pct(&v, 0.95), 95.0);
        assert!(pct(&[], 0.5).is_nan());
    }
}
