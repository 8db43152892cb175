//! `gpuwarden bench detect`: detection quality of the health rules, the anomaly detectors,
//! and both together, on simulated fleets with labelled faults.
//!
//! For each seed and each fault kind, a fresh simulated fleet runs `--warmup` of normal
//! work, then one fault of that kind is injected on one GPU and the run continues for
//! `--after`. Fault-free fleets (random faults off) run `--clean-hours` per seed to count
//! false incidents. Pages go through the normal code: the simulator renders
//! dcgm-exporter pages, `collect::dcgm::map_exporter_page` maps them, the XID tracker and
//! `LiveFleet` make events and freshness, and the engines (`HealthEngine`,
//! `AnomalyAnalyzer`, `IncidentEngine`) are driven as `pipeline::Analysis::evaluate`
//! drives them — directly, without HTTP or the store, so the run is deterministic.
//!
//! Scoring against the simulator's labels: an incident *matches* a label when it is on
//! the label's GPU (or its node, for node-level incidents) and opened between the fault's
//! start and its end plus `auto_resolve_after` (the time an incident may legitimately lag
//! the condition). Recall: labels with a matching incident. Precision: matching incidents
//! over all incidents opened after warm-up in those runs. Incidents per fault: every
//! incident opened after warm-up in a run with one fault (goal ≤ 1.5: correlation makes
//! the findings of one cause one incident; the "both, uncorrelated" set shows the count
//! without the correlation rules). Delay: from the first sample that can show the fault
//! (the first scrape at or after its start) to the first matching incident, in scrape
//! intervals (rounded up). False incidents: incidents opened on fault-free fleets, per
//! 1,000 GPU-hours.

use super::machine_line;
use crate::cli::BenchDetectArgs;
use anyhow::{anyhow, Result};
use gpuwarden_anomaly::AnomalyAnalyzer;
use gpuwarden_collect::dcgm::map_exporter_page;
use gpuwarden_collect::prom::Limits;
use gpuwarden_collect::xid::XidTracker;
use gpuwarden_detect::{HealthEngine, HealthRules, XidCatalog};
use gpuwarden_incident::{CorrelationRules, IncidentConfig, IncidentEngine};
use gpuwarden_model::{Analyzer, Event, EventKind, FaultKind, FaultLabel, Finding, GpuUuid, Incident, TimestampMs};
use gpuwarden_pipeline::LiveFleet;
use gpuwarden_sim::{Fleet, SimConfig};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The fault kinds scored: every hardware kind, plus application XIDs.
const KINDS: &[FaultKind] = &[
    FaultKind::EccDbe,
    FaultKind::RowRemapFailure,
    FaultKind::FallenOffBus,
    FaultKind::Thermal,
    FaultKind::PowerBrake,
    FaultKind::NvlinkErrors,
    FaultKind::PcieReplay,
    FaultKind::Straggler,
    FaultKind::AppXid,
];

/// Which findings feed an incident engine. The last is "both" without correlation (one
/// incident per rule and GPU, as before correlation), to show what correlation changes.
const SETS: [&str; 4] = ["rules", "anomaly", "both", "both, uncorrelated"];
const NSETS: usize = SETS.len();

/// Incidents opened in one run, by detector set.
struct RunResult {
    incidents: [Vec<Incident>; NSETS],
    labels: Vec<FaultLabel>,
    /// The run's first data time (scrapes are at `start_ms + k·interval`, k ≥ 1).
    start_ms: TimestampMs,
    gpu_hours: f64,
    /// Time spent in the anomaly analyzer and the samples it saw.
    anomaly_busy: Duration,
    samples: u64,
    anomaly_memory: (usize, usize),
}

fn run_fleet(
    seed: u64,
    nodes: usize,
    interval_ms: i64,
    warmup_ms: i64,
    total_ms: i64,
    inject: Option<FaultKind>,
) -> Result<RunResult> {
    let cfg = SimConfig {
        nodes,
        gpus_per_node: 8,
        seed,
        speed: 10.0, // pages carry timestamps, as at --speed > 1
        fault_rate_multiplier: 0.0,
        ..SimConfig::default()
    };
    let mut fleet = Fleet::new(&cfg).map_err(|e| anyhow!("{e}"))?;
    let start = fleet.now_ms();
    let live = LiveFleet::new(interval_ms * 5 / 2);
    let mut xid = XidTracker::default();
    let mut health = HealthEngine::new(HealthRules::builtin(), XidCatalog::builtin());
    let mut anomaly = AnomalyAnalyzer::default();
    let mut engines: [IncidentEngine; NSETS] = std::array::from_fn(|i| {
        let e = IncidentEngine::new(IncidentConfig::default(), Vec::new());
        if i == NSETS - 1 {
            e.with_correlation(CorrelationRules::none())
        } else {
            e
        }
    });
    let mut opened: [BTreeMap<String, Incident>; NSETS] = Default::default();
    let gpus = fleet.gpus();
    let mut injected = false;
    let mut page = String::new();
    let mut anomaly_busy = Duration::ZERO;
    let mut samples = 0u64;
    let limits = Limits::default();
    let mut t = start;
    while t < start + total_ms {
        t += interval_ms;
        fleet.advance_to(t);
        if let (Some(kind), false) = (inject, injected) {
            if t >= start + warmup_ms {
                // Deterministic victim: the first GPU (from a seed-dependent offset) the
                // fault applies to (NVLink faults need an NVLink board).
                let n = gpus.len();
                let off = (seed as usize).wrapping_mul(7) % n;
                let ok = (0..n).any(|i| fleet.inject(&gpus[(off + i) % n].uuid, kind, t).is_ok());
                if !ok {
                    return Err(anyhow!("no GPU accepts {kind}"));
                }
                injected = true;
            }
        }
        for (ni, node) in fleet.node_names().to_vec().iter().enumerate() {
            page.clear();
            fleet.render_node(ni, &mut page);
            let p = map_exporter_page(page.as_bytes(), node, t, &limits).map_err(|e| anyhow!("{e}"))?;
            let mut events = xid.observe_page(&p);
            let change = live.apply_scrape(
                node,
                t,
                &p.gpus,
                p.rows.iter().map(|r| (&r.gpu, r.ts_ms, &r.values[..])),
            );
            for gone in change.disappeared {
                events.push(Event {
                    gpu: gone.uuid.clone(),
                    node: gone.node.clone(),
                    ts_ms: t,
                    kind: EventKind::GpuDisappeared,
                });
            }
            health.observe_page(&p.gpus, &p.rows, &events);
            samples += p.rows.iter().map(|r| r.values.len() as u64).sum::<u64>();
            let t0 = Instant::now();
            anomaly.observe_page(&p.gpus, &p.rows, &events);
            anomaly_busy += t0.elapsed();
        }
        let fresh = |g: &GpuUuid| live.freshness(g, t);
        let rules: Vec<Finding> = health.evaluate(t, &fresh).findings;
        let t0 = Instant::now();
        let anom = anomaly.evaluate(t, &fresh);
        anomaly_busy += t0.elapsed();
        let both: Vec<Finding> = rules.iter().chain(&anom).cloned().collect();
        for (i, f) in [&rules, &anom, &both, &both].into_iter().enumerate() {
            for inc in engines[i].apply(t, f) {
                opened[i].entry(inc.id.clone()).or_insert(inc);
            }
        }
    }
    let incidents = opened.map(|m| {
        m.into_values()
            .filter(|i| i.opened_ms > start + warmup_ms.min(total_ms / 4))
            .collect()
    });
    Ok(RunResult {
        incidents,
        labels: fleet.labels().to_vec(),
        start_ms: start,
        gpu_hours: gpus.len() as f64 * (total_ms - warmup_ms.min(total_ms / 4)) as f64 / 3_600_000.0,
        anomaly_busy,
        samples,
        anomaly_memory: anomaly.memory(),
    })
}

fn matches(inc: &Incident, l: &FaultLabel, end_ms: TimestampMs, grace_ms: i64) -> bool {
    let on_target = match &inc.gpu {
        Some(g) => *g == l.gpu,
        None => inc.node == l.node,
    };
    on_target && inc.opened_ms >= l.start_ms && inc.opened_ms <= end_ms + grace_ms
}

/// The first scrape time (`start + k·interval`) at or after `ts`.
fn first_scrape_at_or_after(start: TimestampMs, interval: i64, ts: TimestampMs) -> TimestampMs {
    if ts <= start || interval <= 0 {
        return start.max(ts);
    }
    start + (ts - start + interval - 1) / interval * interval
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[(((v.len() - 1) as f64) * q).round() as usize]
}

pub fn detect(args: BenchDetectArgs) -> Result<ExitCode> {
    let interval_ms = args.interval.as_millis() as i64;
    let warmup_ms = args.warmup.as_millis() as i64;
    let after_ms = args.after.as_millis() as i64;
    let grace_ms = IncidentConfig::default().auto_resolve_after.as_millis() as i64;
    println!(
        "bench detect: seeds 1..={}, {} nodes x 8 GPUs, scrape interval {}, warm-up {}, {} after injection; fault-free: {} h per seed",
        args.seeds, args.nodes, args.interval, args.warmup, args.after, args.clean_hours
    );
    println!("machine: {}", machine_line());
    let wall = Instant::now();
    // Per set and kind: labels, detected, matched incidents, all incidents, delays, and
    // incidents per fault of each seed (for the spread).
    #[derive(Default, Clone)]
    struct Acc {
        labels: usize,
        detected: usize,
        matched: usize,
        incidents: usize,
        delays: Vec<f64>,
        per_seed: Vec<f64>,
        by_rule: BTreeMap<String, usize>,
    }
    let mut acc: Vec<BTreeMap<FaultKind, Acc>> = vec![BTreeMap::new(); NSETS];
    let mut busy = Duration::ZERO;
    let mut samples = 0u64;
    let mut memory = (0usize, 0usize);
    for &kind in KINDS {
        for seed in 1..=args.seeds {
            let r = run_fleet(
                seed,
                args.nodes,
                interval_ms,
                warmup_ms,
                warmup_ms + after_ms,
                Some(kind),
            )?;
            busy += r.anomaly_busy;
            samples += r.samples;
            memory = memory.max(r.anomaly_memory);
            let end_of_run = r.labels.first().map_or(0, |l| l.start_ms) + after_ms;
            for (si, incs) in r.incidents.iter().enumerate() {
                let a = acc[si].entry(kind).or_default();
                a.incidents += incs.len();
                for i in incs {
                    *a.by_rule.entry(i.rule.clone()).or_default() += 1;
                }
                a.matched += incs
                    .iter()
                    .filter(|i| {
                        r.labels
                            .iter()
                            .any(|l| matches(i, l, l.end_ms.unwrap_or(end_of_run), grace_ms))
                    })
                    .count();
                let labels = r.labels.iter().filter(|l| l.kind == kind).count();
                a.per_seed.push(incs.len() as f64 / labels.max(1) as f64);
                for l in r.labels.iter().filter(|l| l.kind == kind) {
                    a.labels += 1;
                    let first = incs
                        .iter()
                        .filter(|i| matches(i, l, l.end_ms.unwrap_or(end_of_run), grace_ms))
                        .map(|i| i.opened_ms)
                        .min();
                    if let Some(o) = first {
                        a.detected += 1;
                        // From the first scrape at or after the fault's start: the first
                        // sample that can show it (the fleet is scraped every interval
                        // from the run's start, and faults start on a scrape).
                        let first_sample = first_scrape_at_or_after(r.start_ms, interval_ms, l.start_ms);
                        a.delays
                            .push(((o - first_sample) as f64 / interval_ms as f64).ceil().max(0.0));
                    }
                }
            }
        }
        eprintln!("  {kind} done ({:.0} s)", wall.elapsed().as_secs_f64());
    }
    // Fault-free fleets.
    let mut clean = [0usize; NSETS];
    let mut clean_rules: [BTreeMap<String, usize>; NSETS] = Default::default();
    let mut gpu_hours = 0.0;
    let clean_ms = (args.clean_hours * 3_600_000.0) as i64;
    for seed in 1..=args.seeds {
        let r = run_fleet(1000 + seed, args.nodes, interval_ms, warmup_ms, clean_ms, None)?;
        busy += r.anomaly_busy;
        samples += r.samples;
        gpu_hours += r.gpu_hours;
        for (si, incs) in r.incidents.iter().enumerate() {
            clean[si] += incs.len();
            for i in incs {
                *clean_rules[si].entry(i.rule.clone()).or_default() += 1;
            }
        }
    }
    eprintln!("  fault-free done ({:.0} s)", wall.elapsed().as_secs_f64());

    let mut t = String::new();
    writeln!(
        t,
        "\n| fault kind | set | recall | precision | incidents per fault: mean (min–max over seeds) | delay from first showing sample p50 / p95 (intervals) |\n|---|---|---:|---:|---:|---:|"
    )?;
    let mut ok = true;
    let mut per_fault_all: [Vec<f64>; NSETS] = Default::default();
    let mut delays_all: [Vec<f64>; NSETS] = Default::default();
    for &kind in KINDS {
        for (si, set) in SETS.iter().enumerate() {
            let a = acc[si].get(&kind).cloned().unwrap_or_default();
            let recall = a.detected as f64 / a.labels.max(1) as f64;
            let precision = if a.incidents == 0 {
                f64::NAN
            } else {
                a.matched as f64 / a.incidents as f64
            };
            let per_fault = a.incidents as f64 / a.labels.max(1) as f64;
            let (lo, hi) = a
                .per_seed
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
                    (lo.min(x), hi.max(x))
                });
            per_fault_all[si].push(per_fault);
            delays_all[si].extend(a.delays.iter().copied());
            let mut d = a.delays.clone();
            let (med, p95) = (quantile(&mut d, 0.5), quantile(&mut d, 0.95));
            if si == 2 && kind.is_hardware() && (recall < 0.95 || p95.is_nan() || p95 > 3.0 || per_fault > 1.5) {
                ok = false;
            }
            let nan_dash = |x: f64, digits: usize| {
                if x.is_nan() || x.is_infinite() {
                    "–".to_string()
                } else {
                    format!("{x:.digits$}")
                }
            };
            writeln!(
                t,
                "| {kind} | {set} | {:.0}% ({}/{}) | {} | {} ({}–{}) | {} / {} |",
                recall * 100.0,
                a.detected,
                a.labels,
                if precision.is_nan() {
                    "–".into()
                } else {
                    format!("{:.0}%", precision * 100.0)
                },
                nan_dash(per_fault, 2),
                nan_dash(lo, 1),
                nan_dash(hi, 1),
                nan_dash(med, 0),
                nan_dash(p95, 0),
            )?;
        }
    }
    writeln!(t, "\nincidents by rule (both; cause.* = correlated):")?;
    for &kind in KINDS {
        let a = acc[2].get(&kind).cloned().unwrap_or_default();
        writeln!(t, "  {kind}: {:?}", a.by_rule)?;
    }
    writeln!(t, "\nover all fault kinds:")?;
    for (si, set) in SETS.iter().enumerate() {
        let v = &per_fault_all[si];
        let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
        let worst = v.iter().copied().fold(0.0, f64::max);
        let mut d = delays_all[si].clone();
        writeln!(
            t,
            "  {set:<20} incidents per fault: mean {mean:.2}, worst kind {worst:.2}; delay p50 {} / p95 {} intervals",
            quantile(&mut d.clone(), 0.5),
            quantile(&mut d, 0.95)
        )?;
    }
    writeln!(t, "\nfault-free fleets: {gpu_hours:.0} GPU-hours")?;
    for (si, set) in SETS.iter().enumerate() {
        let per_k = clean[si] as f64 / gpu_hours * 1000.0;
        if si == 2 && per_k > 1.0 {
            ok = false;
        }
        writeln!(
            t,
            "  {set:<20} false incidents: {} ({per_k:.2} per 1,000 GPU-hours) {:?}",
            clean[si], clean_rules[si]
        )?;
    }
    println!("{t}");
    println!(
        "anomaly analyzer cost: {:.0} ns per sample ({samples} samples, {:.2} s), {} series detectors, {} bytes for the largest fleet ({:.0} bytes per series)",
        busy.as_nanos() as f64 / samples.max(1) as f64,
        busy.as_secs_f64(),
        memory.0,
        memory.1,
        memory.1 as f64 / memory.0.max(1) as f64
    );
    println!(
        "acceptance (both: recall >= 95%, p95 delay <= 3 intervals and <= 1.5 incidents per fault for each hardware kind, <= 1 false incident per 1,000 GPU-hours): {}",
        if ok { "PASS" } else { "FAIL" }
    );
    println!(
        "reproduce: gpuwarden bench detect --seeds {} --nodes {} --interval {} --warmup {} --after {} --clean-hours {}",
        args.seeds, args.nodes, args.interval, args.warmup, args.after, args.clean_hours
    );
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
