//! `gpuwarden bench replay`: false incidents on real production traffic. Replays a real
//! trace as dcgm-exporter pages through the analysis `run` uses — the pages are parsed by
//! `collect::dcgm`, admitted and stored by `pipeline::Ingestor` (embedded store in a
//! temporary directory), and judged by `pipeline::Analysis` with the health engine, the
//! anomaly analyzer and the security rule pack registered as `commands::stage` registers
//! them, one evaluation per scrape round — and counts the incidents it opens per 1,000
//! GPU-hours. The trace has no labelled faults, so every incident is a candidate false
//! alarm.
//!
//! The trace is the GenTD26 half in the shared data folder (Alibaba's GenAI serving
//! pods: `pod_gpu_duty_cycle` and `pod_gpu_memory_used_bytes`, one sample per pod every
//! 57 s). One pod is one GPU; the trace has no nodes, so pods are put, in sorted order,
//! on nodes of `--gpus-per-node`. Each metric's value at a replayed time is its latest
//! sample within the last 5 minutes — Prometheus' lookback, i.e. what an instant query
//! over the published trace returns; the trace's collector missed single samples (2–3
//! steps) that dcgm-exporter itself would have listed. A metric with no sample in that
//! window is left out of the row (missing is missing, never zero). When a pod has no
//! sample of either metric in the window, or before its first or after its last sample,
//! it is not running: its GPU is listed idle (0%, 0 MiB) without pod labels, as
//! dcgm-exporter lists a GPU no pod holds. The receiver's clock follows the trace
//! (explicit replay clock, admission bounds on).

use super::machine_line;
use crate::cli::BenchReplayArgs;
use anyhow::{bail, Context, Result};
use gpuwarden_collect::dcgm::map_exporter_page;
use gpuwarden_collect::prom::Limits;
use gpuwarden_detect::{HealthRules, XidCatalog};
use gpuwarden_incident::{IncidentConfig, IncidentFilter};
use gpuwarden_model::{Clock, Incident, TimestampMs};
use gpuwarden_pipeline::{Analysis, Ingestor, LiveFleet, PipelineMetrics};
use gpuwarden_store::embedded::{EmbeddedOptions, EmbeddedStore};
use gpuwarden_store::Store;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Prometheus' default lookback: a sample stands for its series this long.
const LOOKBACK_MS: i64 = 5 * 60_000;

const DUTY_FILE: &str = "pod_gpu_duty_cycle.dev-half.csv";
const MEMORY_FILE: &str = "pod_gpu_memory_used_bytes.dev-half.csv";

/// The receiver's clock during a replay: the trace's time, moved on by the replay.
#[derive(Debug, Default)]
struct ReplayClock(AtomicI64);

impl Clock for ReplayClock {
    fn now_ms(&self) -> TimestampMs {
        self.0.load(Ordering::Relaxed)
    }
}

/// One pod's samples: timestamp (ms) → (utilisation %, memory used bytes).
type PodSeries = BTreeMap<TimestampMs, (Option<f64>, Option<f64>)>;

/// A GPU of a replayed node: its number in the trace and its pod.
type NodeGpu<'a> = (usize, &'a (String, PodSeries));

/// The trace: pods (sorted by id) and the sorted set of timestamps.
pub struct Trace {
    pub pods: Vec<(String, PodSeries)>,
    pub times: Vec<TimestampMs>,
}

/// Reads one CSV of the trace: the columns are found by name (`value`,
/// `timestamp_anon`, `container_ip`), as the two files order them differently.
fn read_metric(path: &Path, mut put: impl FnMut(&str, TimestampMs, f64)) -> Result<usize> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {} (is --data the GenTD26 folder?)", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').map(str::trim).collect();
    let col = |name: &str| {
        header.iter().position(|h| *h == name).with_context(|| {
            format!(
                "{}: no column '{name}' in the header {header:?}; expected value, timestamp_anon, container_ip",
                path.display()
            )
        })
    };
    let (v, t, p) = (col("value")?, col("timestamp_anon")?, col("container_ip")?);
    let mut n = 0;
    for (i, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        let field = |k: usize| {
            f.get(k)
                .with_context(|| format!("{} line {}: too few fields", path.display(), i + 2))
        };
        let value: f64 = field(v)?
            .trim()
            .parse()
            .with_context(|| format!("{} line {}: value is not a number", path.display(), i + 2))?;
        let ts: f64 = field(t)?
            .trim()
            .parse()
            .with_context(|| format!("{} line {}: timestamp is not a number", path.display(), i + 2))?;
        if !value.is_finite() || !ts.is_finite() {
            continue;
        }
        put(field(p)?.trim(), (ts * 1000.0).round() as TimestampMs, value);
        n += 1;
    }
    Ok(n)
}

/// Loads the GenTD26 half from `dir`, keeping the first `max_pods` pods (sorted) and the
/// first `max_hours` of data.
pub fn load_trace(dir: &Path, max_pods: Option<usize>, max_hours: Option<f64>) -> Result<Trace> {
    let mut pods: BTreeMap<String, PodSeries> = BTreeMap::new();
    read_metric(&dir.join(DUTY_FILE), |pod, ts, v| {
        pods.entry(pod.to_string()).or_default().entry(ts).or_default().0 = Some(v);
    })?;
    read_metric(&dir.join(MEMORY_FILE), |pod, ts, v| {
        pods.entry(pod.to_string()).or_default().entry(ts).or_default().1 = Some(v);
    })?;
    let mut pods: Vec<(String, PodSeries)> = pods.into_iter().collect();
    if let Some(n) = max_pods {
        pods.truncate(n);
    }
    let mut times: BTreeSet<TimestampMs> = pods.iter().flat_map(|(_, s)| s.keys().copied()).collect();
    if let (Some(h), Some(&first)) = (max_hours, times.first()) {
        let end = first + (h * 3_600_000.0) as i64;
        times.retain(|t| *t <= end);
    }
    if pods.is_empty() || times.len() < 2 {
        bail!("{}: no usable samples (need at least two timestamps)", dir.display());
    }
    Ok(Trace {
        pods,
        times: times.into_iter().collect(),
    })
}

/// What one replay found.
pub struct ReplayReport {
    pub gpus: usize,
    pub gpu_hours: f64,
    pub interval_ms: i64,
    pub incidents: Vec<Incident>,
    pub rows: u64,
    pub refused: u64,
}

impl ReplayReport {
    pub fn per_1000_gpu_hours(&self) -> f64 {
        self.incidents.len() as f64 * 1000.0 / self.gpu_hours.max(1e-9)
    }
}

/// Renders one node's page at `ts` (dcgm-exporter's text format, with timestamps).
fn render_node(out: &mut String, node: &str, gpus: &[NodeGpu<'_>], ts: TimestampMs) -> u64 {
    out.clear();
    let mut rows = 0;
    for (slot, (gi, (pod, series))) in gpus.iter().enumerate() {
        let last = series.keys().next_back().copied().unwrap_or(TimestampMs::MIN);
        let recent = || series.range(ts - LOOKBACK_MS + 1..=ts).rev();
        let util = recent().find_map(|(_, v)| v.0);
        let mem = recent().find_map(|(_, v)| v.1);
        let running = ts <= last && (util.is_some() || mem.is_some());
        let (util, mem, labels) = if running {
            let pod = &pod[..pod.len().min(12)];
            (
                util,
                mem,
                format!(r#",namespace="genai-serving",pod="sd-{pod}",container="server""#),
            )
        } else {
            (Some(0.0), Some(0.0), String::new())
        };
        let ident = format!(
            r#"gpu="{slot}",UUID="GPU-gentd26-{gi:04}",device="nvidia{slot}",modelName="GenTD26 serving GPU",Hostname="{node}"{labels}"#
        );
        if let Some(u) = util {
            let _ = writeln!(out, "DCGM_FI_DEV_GPU_UTIL{{{ident}}} {u} {ts}");
        }
        if let Some(m) = mem {
            let _ = writeln!(out, "DCGM_FI_DEV_FB_USED{{{ident}}} {} {ts}", (m / 1_048_576.0).round());
        }
        rows += 1;
    }
    rows
}

/// Replays `trace` through the analysis with `gpus_per_node` GPUs per node.
pub fn replay(trace: &Trace, gpus_per_node: usize, progress: &mut dyn FnMut(f64)) -> Result<ReplayReport> {
    let gpus_per_node = gpus_per_node.max(1);
    let dir = tempfile::tempdir().context("creating a temporary data directory for the replay")?;
    let store: Arc<dyn Store> = Arc::new(
        EmbeddedStore::open(
            dir.path(),
            EmbeddedOptions {
                // A throwaway store: durability is not what is measured.
                sync: false,
                ..EmbeddedOptions::default()
            },
        )
        .context("opening the replay's store")?,
    );
    let steps: Vec<i64> = trace.times.windows(2).map(|w| w[1] - w[0]).collect();
    let mut sorted = steps.clone();
    sorted.sort_unstable();
    let interval_ms = sorted[sorted.len() / 2].max(1000);
    let clock = Arc::new(ReplayClock::default());
    clock.0.store(trace.times[0], Ordering::Relaxed);
    let live = Arc::new(LiveFleet::new(interval_ms * 5 / 2));
    let analysis = Arc::new(
        Analysis::new(
            store.clone(),
            live.clone(),
            clock.clone(),
            HealthRules::builtin(),
            XidCatalog::builtin(),
            IncidentConfig::default(),
        )
        .context("starting the analysis")?,
    );
    analysis.add_analyzer(Box::new(gpuwarden_anomaly::AnomalyAnalyzer::default()));
    analysis.add_analyzer(Box::new(
        gpuwarden_security::SecurityEngine::from_config(&gpuwarden_security::SecurityConfig::default())
            .context("building the security rule pack")?,
    ));
    let ingestor =
        Ingestor::new(store, live, PipelineMetrics::default(), clock.clone()).with_analysis(analysis.clone());
    let limits = Limits::default();
    let nodes: Vec<(String, Vec<NodeGpu<'_>>)> = trace
        .pods
        .iter()
        .enumerate()
        .collect::<Vec<_>>()
        .chunks(gpus_per_node)
        .enumerate()
        .map(|(ni, chunk)| (format!("gentd26-node-{ni:02}"), chunk.to_vec()))
        .collect();
    let mut page = String::new();
    let (mut rows, mut refused) = (0u64, 0u64);
    for (k, &ts) in trace.times.iter().enumerate() {
        // The pages of a round land a little after their samples were taken.
        clock.0.store(ts + 500, Ordering::Relaxed);
        for (node, gpus) in &nodes {
            rows += render_node(&mut page, node, gpus, ts);
            let p = map_exporter_page(page.as_bytes(), node, ts, &limits)
                .with_context(|| format!("parsing the replayed page of {node} at {ts}"))?;
            let sent: u64 = p.rows.iter().map(|r| r.values.len() as u64).sum();
            let report = ingestor
                .ingest_page(&format!("replay://{node}"), ts + 500, &p)
                .with_context(|| format!("ingesting the replayed page of {node}"))?;
            refused += sent.saturating_sub(report.samples as u64);
        }
        analysis.evaluate().context("evaluating the replayed round")?;
        if k % 100 == 0 {
            progress(k as f64 / trace.times.len() as f64);
        }
    }
    let incidents: Vec<Incident> =
        analysis.with_incidents(|e| e.list(&IncidentFilter::default()).into_iter().cloned().collect());
    let span_ms = (trace.times[trace.times.len() - 1] - trace.times[0]) as f64;
    Ok(ReplayReport {
        gpus: trace.pods.len(),
        gpu_hours: trace.pods.len() as f64 * span_ms / 3_600_000.0,
        interval_ms,
        incidents,
        rows,
        refused,
    })
}

pub fn replay_cmd(args: BenchReplayArgs) -> Result<ExitCode> {
    let wall = Instant::now();
    let trace = load_trace(&args.data, args.max_gpus, args.hours)?;
    println!(
        "bench replay: {} ({} pods = GPUs, {} timestamps), {} GPUs per node",
        args.data.display(),
        trace.pods.len(),
        trace.times.len(),
        args.gpus_per_node
    );
    println!("machine: {}", machine_line());
    let mut last = 0.0;
    let report = replay(&trace, args.gpus_per_node, &mut |f| {
        if f - last >= 0.25 {
            eprintln!("  {:.0}%", f * 100.0);
            last = f;
        }
    })?;
    println!(
        "\n{} GPUs x {:.1} h = {:.0} GPU-hours at a {} s interval; {} rows replayed ({} samples refused) in {:.0} s",
        report.gpus,
        report.gpu_hours / report.gpus.max(1) as f64,
        report.gpu_hours,
        report.interval_ms / 1000,
        report.rows,
        report.refused,
        wall.elapsed().as_secs_f64()
    );
    let mut by_rule: BTreeMap<&str, (usize, BTreeSet<String>, u32)> = BTreeMap::new();
    for i in &report.incidents {
        let e = by_rule.entry(i.rule.as_str()).or_default();
        e.0 += 1;
        e.1.insert(i.gpu.as_ref().map_or_else(|| i.node.clone(), |g| g.to_string()));
        e.2 += i.flaps;
    }
    println!("\n| Rule | Incidents | GPUs | Flaps | per 1,000 GPU-h |");
    println!("|---|---|---|---|---|");
    for (rule, (n, gpus, flaps)) in &by_rule {
        println!(
            "| `{rule}` | {n} | {} | {flaps} | {:.2} |",
            gpus.len(),
            *n as f64 * 1000.0 / report.gpu_hours
        );
    }
    println!(
        "| **all** | {} | | | **{:.2}** |",
        report.incidents.len(),
        report.per_1000_gpu_hours()
    );
    for i in report.incidents.iter().take(args.show) {
        println!("  {} {} {}: {}", i.rule, i.severity.as_str(), i.node, i.summary);
    }
    let rate = report.per_1000_gpu_hours();
    let pass = rate <= args.max_rate;
    println!(
        "\nacceptance (<= {} false incidents per 1,000 GPU-hours on real traffic): {} ({rate:.2})",
        args.max_rate,
        if pass { "PASS" } else { "FAIL" }
    );
    println!(
        "Command: gpuwarden bench replay --data {} --gpus-per-node {}{}{}",
        args.data.display(),
        args.gpus_per_node,
        args.max_gpus.map(|n| format!(" --max-gpus {n}")).unwrap_or_default(),
        args.hours.map(|h| format!(" --hours {h}")).unwrap_or_default()
    );
    Ok(if pass { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(samples: &[(i64, Option<f64>, Option<f64>)]) -> (String, PodSeries) {
        (
            "0123456789abcdef".to_string(),
            samples.iter().map(|&(t, u, m)| (t * 1000, (u, m))).collect(),
        )
    }

    fn render(p: &(String, PodSeries), ts_s: i64) -> String {
        let mut out = String::new();
        render_node(&mut out, "n0", &[(0, p)], ts_s * 1000);
        out
    }

    #[test]
    fn missed_samples_are_looked_back_five_minutes_and_missing_stays_missing() {
        let p = pod(&[
            (0, Some(40.0), Some(1_048_576.0 * 100.0)),
            (57, None, Some(1_048_576.0 * 200.0)),
            (1000, Some(10.0), None),
        ]);
        // A missed utilisation sample: the last one within 5 minutes stands for it.
        let page = render(&p, 57);
        assert!(
            page.contains("DCGM_FI_DEV_GPU_UTIL{") && page.contains("} 40 57000"),
            "{page}"
        );
        assert!(page.contains("} 200 57000"), "memory in MiB: {page}");
        assert!(page.contains(r#"pod="sd-0123456789ab""#), "{page}");
        // Only utilisation in the window: memory is left out, not zero.
        let page = render(&p, 1000);
        assert!(
            page.contains("DCGM_FI_DEV_GPU_UTIL{") && !page.contains("DCGM_FI_DEV_FB_USED"),
            "{page}"
        );
    }

    #[test]
    fn a_pod_not_running_leaves_its_gpu_idle_and_unlabelled() {
        let p = pod(&[(600, Some(90.0), Some(5e9)), (1800, Some(90.0), Some(5e9))]);
        for ts in [0, 1200, 2400] {
            let page = render(&p, ts);
            assert!(!page.contains("pod="), "t={ts}: {page}");
            assert!(
                page.contains("DCGM_FI_DEV_GPU_UTIL{") && page.contains("} 0 "),
                "t={ts}: {page}"
            );
        }
        assert!(render(&p, 650).contains("pod="), "running within 5 minutes of a sample");
    }

    #[test]
    fn bad_csv_fails_with_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DUTY_FILE), "value,timestamp_anon,container_ip\nx,1,a\n").unwrap();
        std::fs::write(dir.path().join(MEMORY_FILE), "timestamp_anon,value,container_ip\n").unwrap();
        let e = load_trace(dir.path(), None, None).err().unwrap();
        let msg = format!("{e:#}");
        assert!(msg.contains(DUTY_FILE) && msg.contains("line 2"), "{msg}");
        let e = load_trace(&dir.path().join("nope"), None, None).err().unwrap();
        assert!(format!("{e:#}").contains("GenTD26"), "{e:#}");
    }
}
