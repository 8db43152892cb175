//! Running a real Prometheus (Debian package `prometheus`) next to gpuwarden on the same
//! simulated endpoints, and measuring both the same way: CPU time of the process from
//! `/proc`, samples from each one's own counter, bytes on disk with a directory walk.

use super::cpu::process_cpu;
use anyhow::{anyhow, bail, Context, Result};
use gpuwarden_sim::{SimConfig, Simulator};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Sums the sizes of all files under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
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

/// Waits for a child with a deadline; kills it when the deadline passes.
fn wait_with_timeout(child: &mut Child, timeout: Duration, what: &str) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Converts an OpenMetrics file into Prometheus TSDB blocks with promtool and returns
/// the blocks' size in bytes.
pub fn tsdb_bytes_from_openmetrics(file: &Path, out: &Path) -> Result<u64> {
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out)?;
    eprintln!("converting the same samples into Prometheus TSDB blocks with promtool…");
    let mut child = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(file)
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting promtool (install the Debian package `prometheus`, or pass --no-prometheus)")?;
    let status = wait_with_timeout(&mut child, Duration::from_secs(900), "promtool tsdb create-blocks-from")?;
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        bail!(
            "promtool failed ({status}): {}",
            err.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
        );
    }
    Ok(dir_bytes(out))
}

pub struct LiveRow {
    pub name: &'static str,
    pub samples: u64,
    pub cpu: Duration,
    pub bytes: u64,
}

pub struct Live {
    pub duration: Duration,
    pub rows: Vec<LiveRow>,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Kills a child on drop, so an error never leaves a server behind.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Guard {
    /// SIGTERM, then wait (bounded) for a clean exit.
    fn stop(&mut self, what: &str) -> Result<()> {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        wait_with_timeout(&mut self.0, Duration::from_secs(30), what).map(|_| ())
    }
}

/// Sum of a counter's samples (all label sets) in a Prometheus text page.
fn counter_value(page: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in page.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else { continue };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value = rest
            .rsplit_once('}')
            .map(|(_, v)| v)
            .unwrap_or(rest)
            .split_whitespace()
            .next()?;
        *found.get_or_insert(0.0) += value.parse::<f64>().ok()?;
    }
    found
}

async fn get_text(client: &reqwest::Client, url: &str) -> Result<String> {
    let resp = client.get(url).send().await?;
    if !resp.status().is_success() {
        bail!("{url}: HTTP {}", resp.status());
    }
    Ok(resp.text().await?)
}

async fn wait_ready(client: &reqwest::Client, url: &str, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if get_text(client, url).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(anyhow!("{what} did not become ready at {url} within 60 s"))
}

/// Starts a simulated fleet, then gpuwarden (`run` with the fleet as static targets)
/// and Prometheus scraping the same endpoints every second, and measures both over
/// `duration` after both are up.
pub fn side_by_side(dir: &Path, duration: Duration) -> Result<Live> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let rt = crate::commands::runtime()?;
    rt.block_on(async move {
        let sim = Simulator::start(SimConfig { seed: 7, fault_rate_multiplier: 0.0, ..SimConfig::default() }).await?;
        let targets = sim.targets();
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;

        let prom_port = free_port()?;
        let hostports: Vec<String> = targets
            .iter()
            .map(|(_, url)| url.trim_start_matches("http://").trim_end_matches("/metrics").to_string())
            .collect();
        let prom_yml = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n  - job_name: dcgm\n    static_configs:\n      - targets: [{}]\n",
            hostports.iter().map(|h| format!("'{h}'")).collect::<Vec<_>>().join(", ")
        );
        std::fs::write(dir.join("prometheus.yml"), prom_yml)?;
        let prom = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("prometheus-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log"))?)
            .spawn()
            .context("starting prometheus (install the Debian package `prometheus`, or pass --no-prometheus)")?;
        let mut prom = Guard(prom);

        let gw_port = free_port()?;
        let toml = format!(
            "[scrape]\ninterval = \"1s\"\ntimeout = \"900ms\"\ntargets = [{}]\n",
            targets.iter().map(|(_, u)| format!("\"{u}\"")).collect::<Vec<_>>().join(", ")
        );
        std::fs::write(dir.join("gpuwarden.toml"), toml)?;
        let exe = std::env::current_exe()?;
        let gw = Command::new(exe)
            .arg("run")
            .arg("--config")
            .arg(dir.join("gpuwarden.toml"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{gw_port}"))
            .arg("--data-dir")
            .arg(dir.join("gpuwarden-data"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("gpuwarden.log"))?)
            .spawn()
            .context("starting gpuwarden run")?;
        let mut gw = Guard(gw);

        let prom_metrics = format!("http://127.0.0.1:{prom_port}/metrics");
        let gw_metrics = format!("http://127.0.0.1:{gw_port}/metrics");
        wait_ready(&client, &format!("http://127.0.0.1:{prom_port}/-/ready"), "prometheus").await?;
        wait_ready(&client, &format!("http://127.0.0.1:{gw_port}/healthz"), "gpuwarden").await?;
        // Let both settle into their scrape loop before the clock starts.
        tokio::time::sleep(Duration::from_secs(3)).await;

        let prom_samples_name = "prometheus_tsdb_head_samples_appended_total";
        let gw_samples_name = "gpuwarden_samples_ingested_total";
        let p0 = counter_value(&get_text(&client, &prom_metrics).await?, prom_samples_name).unwrap_or(0.0);
        let g0 = counter_value(&get_text(&client, &gw_metrics).await?, gw_samples_name).unwrap_or(0.0);
        let pc0 = process_cpu(prom.0.id()).unwrap_or_default();
        let gc0 = process_cpu(gw.0.id()).unwrap_or_default();
        eprintln!("measuring gpuwarden and Prometheus side by side for {duration:?}…");
        tokio::time::sleep(duration).await;
        let p1 = counter_value(&get_text(&client, &prom_metrics).await?, prom_samples_name)
            .ok_or_else(|| anyhow!("prometheus /metrics has no {prom_samples_name}"))?;
        let g1 = counter_value(&get_text(&client, &gw_metrics).await?, gw_samples_name)
            .ok_or_else(|| anyhow!("gpuwarden /metrics has no {gw_samples_name}"))?;
        let pc1 = process_cpu(prom.0.id()).unwrap_or_default();
        let gc1 = process_cpu(gw.0.id()).unwrap_or_default();
        let p_total = p1;
        let g_total = g1;

        gw.stop("gpuwarden")?;
        prom.stop("prometheus")?;
        sim.shutdown().await;
        let rows = vec![
            LiveRow {
                name: "gpuwarden run",
                samples: (g1 - g0) as u64,
                cpu: gc1.saturating_sub(gc0),
                // Bytes per sample over everything it stored since start.
                bytes: scale_bytes(dir_bytes(&dir.join("gpuwarden-data")), g_total, g1 - g0),
            },
            LiveRow {
                name: "Prometheus 2 (Debian)",
                samples: (p1 - p0) as u64,
                cpu: pc1.saturating_sub(pc0),
                bytes: scale_bytes(dir_bytes(&dir.join("prometheus-data")), p_total, p1 - p0),
            },
        ];
        Ok(Live { duration, rows })
    })
}

/// Bytes attributable to the measured window: total bytes × window samples / all samples.
fn scale_bytes(total_bytes: u64, all_samples: f64, window_samples: f64) -> u64 {
    if all_samples <= 0.0 {
        return total_bytes;
    }
    (total_bytes as f64 * window_samples / all_samples) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_value_sums_label_sets_and_ignores_prefixes() {
        let page = "# TYPE x_total counter\nx_total{a=\"1\"} 2\nx_total{a=\"2\"} 3.5\nx_total_created 9\n";
        assert_eq!(counter_value(page, "x_total"), Some(5.5));
        assert_eq!(counter_value(page, "y_total"), None);
    }
}
