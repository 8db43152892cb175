//! Labelled simulated fleets for measuring the rule pack (`gpuwarden bench security`):
//! the simulator's core is driven directly (no HTTP), abuse is planted on known GPUs at
//! known times, and every rule is scored per episode: recall, precision, detection delay
//! and false alarms per 1,000 GPU-hours of legitimate work.
//!
//! Besides the simulator's own training, inference and HPC jobs, a share of GPUs run the
//! hardest legitimate case for the mining rule, synthesised here because the simulator
//! has no such profile: steady, memory-bound, single-GPU training at the power cap (flat
//! power, SM and DRAM pinned, no NVLink), whose only difference from a miner is its data
//! loader's host traffic. Drift (power limit, ECC, MIG, driver downgrade, a GPU going
//! missing) is applied to the rows the bench feeds, since the simulator exports no mode
//! fields and never changes a power limit.

use crate::config::SecurityConfig;
use crate::engine::SecurityEngine;
use gpuwarden_model::{
    Analyzer, DcgmField, FaultKind, FieldName, Finding, Freshness, GpuIdentity, GpuSamples, GpuUuid, TimestampMs,
    Workload,
};
use gpuwarden_sim::{workload::APPROVED_NAMESPACES, Fleet, SimConfig};
use std::collections::{BTreeMap, HashSet};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
/// The simulator's driver; the bench's security-bulletin floor.
const DRIVER: &str = "550.90.07";
const OLD_DRIVER: &str = "535.54.03";
/// A finding that starts this long after its episode ended still belongs to it (windows lag).
pub const GRACE_MS: i64 = 15 * MIN;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub nodes: usize,
    pub gpus_per_node: usize,
    pub hours: f64,
    pub step_ms: i64,
    pub seed: u64,
    /// One abuse or drift scenario starts this often, on a GPU picked at random.
    pub scenario_every_ms: i64,
    /// GPUs that run the synthetic steady memory-bound training instead of the simulator's jobs.
    pub hard_legit_gpus: usize,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            nodes: 8,
            gpus_per_node: 8,
            hours: 200.0,
            step_ms: 20_000,
            seed: 7,
            scenario_every_ms: 2 * HOUR,
            hard_legit_gpus: 8,
        }
    }
}

/// Scenario kinds planted, in rotation.
const SCENARIOS: &[&str] = &[
    "miner",
    "miner-throttled",
    "miner-intermittent",
    "miner-in-job",
    "unapproved-namespace",
    "drift-power-limit",
    "drift-ecc",
    "drift-mig",
    "drift-driver",
    "gpu-missing",
];

/// One labelled episode of abuse or drift on a GPU.
#[derive(Debug, Clone)]
pub struct Episode {
    pub gpu: usize,
    pub variant: &'static str,
    pub start: TimestampMs,
    pub end: TimestampMs,
    /// Rules that must fire (recall).
    pub expected: Vec<&'static str>,
    /// Rules that may fire without being false alarms.
    pub acceptable: Vec<&'static str>,
}

/// Scores of one rule.
#[derive(Debug, Clone, Default)]
pub struct RuleScore {
    pub rule: String,
    pub episodes: usize,
    pub detected: usize,
    pub delays_ms: Vec<i64>,
    /// Contiguous runs of the rule firing on one GPU.
    pub finding_runs: usize,
    pub false_runs: usize,
    /// False runs on the synthetic memory-bound training GPUs.
    pub false_runs_hard: usize,
}

/// Detection of one planted variant.
#[derive(Debug, Clone, Default)]
pub struct VariantScore {
    pub variant: String,
    pub episodes: usize,
    pub detected: usize,
    pub delays_ms: Vec<i64>,
}

/// Everything measured.
#[derive(Debug, Clone, Default)]
pub struct BenchReport {
    pub gpus: usize,
    pub gpu_hours: f64,
    pub legit_gpu_hours: f64,
    pub hard_legit_gpu_hours: f64,
    pub rows: u64,
    pub rules: Vec<RuleScore>,
    pub variants: Vec<VariantScore>,
    /// The labelled episodes and the GPUs (`Episode::gpu` indexes `uuids`), for scoring
    /// what the caller made of the findings.
    pub episodes: Vec<Episode>,
    pub uuids: Vec<GpuUuid>,
}

/// splitmix64: deterministic randomness without another dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit().max(1e-12), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// State of a GPU running the synthetic memory-bound training.
struct HardLegit {
    drift: f64,
    phase_ms: i64,
}

fn hard_legit_row(
    h: &mut HardLegit,
    rng: &mut Rng,
    t: TimestampMs,
    step_ms: i64,
    limit: f64,
    out: &mut Vec<(FieldName, f64)>,
) {
    let a = (-(step_ms as f64) / 120_000.0).exp();
    h.drift = a * h.drift + (1.0 - a * a).sqrt() * rng.normal();
    // A checkpoint every two hours, 90 s long: SMs rest, weights stream to the host.
    let ckpt = (t + h.phase_ms).rem_euclid(2 * HOUR) < 90_000;
    let (sm, dram, power, rx, tx) = if ckpt {
        (0.02, 0.01, 0.2 * limit, 5e6, 2e9)
    } else {
        // Data loader: log-normal around 60 MB/s, never below 10 MB/s (real loaders
        // stream batches continuously; a job without any host traffic is the
        // data-resident case the rule documents as indistinguishable).
        let rx = (60e6 * (0.6 * rng.normal()).exp()).max(10e6);
        (
            (0.93 + 0.01 * h.drift + 0.004 * rng.normal()).clamp(0.0, 1.0),
            (0.86 + 0.01 * h.drift + 0.004 * rng.normal()).clamp(0.0, 1.0),
            limit * (0.99 + 0.004 * rng.normal()),
            rx,
            rx * 0.05,
        )
    };
    let f = |d: DcgmField| FieldName::Dcgm(d);
    out.extend([
        (f(DcgmField::ProfSmActive), sm),
        (f(DcgmField::ProfDramActive), dram),
        (f(DcgmField::GpuUtil), if ckpt { 5.0 } else { 100.0 }),
        (f(DcgmField::PowerUsage), power),
        (f(DcgmField::PowerMgmtLimit), limit),
        (f(DcgmField::ProfPcieRxBytes), rx),
        (f(DcgmField::ProfPcieTxBytes), tx),
        (f(DcgmField::ProfNvlinkRxBytes), 0.0),
        (f(DcgmField::ProfNvlinkTxBytes), 0.0),
    ]);
}

/// The security policy the bench runs with: the simulator's approved namespaces and
/// its driver as the floor.
pub fn bench_policy() -> SecurityConfig {
    SecurityConfig {
        approved_namespaces: APPROVED_NAMESPACES.iter().map(|s| s.to_string()).collect(),
        min_driver_version: Some(DRIVER.into()),
        ..SecurityConfig::default()
    }
}

fn identity_of(info: &gpuwarden_sim::GpuInfo, workload: Workload, driver: &str) -> GpuIdentity {
    let mut id = GpuIdentity::new(info.uuid.clone(), info.node.clone());
    id.index = Some(info.index);
    id.model = Some(info.model.clone());
    id.pci_bus_id = Some(info.pci_bus_id.clone());
    id.driver_version = Some(driver.to_string());
    id.workload = workload;
    id
}

/// Runs the bench. `progress` gets the fraction done now and then.
pub fn run(cfg: &BenchConfig, progress: &mut dyn FnMut(f64)) -> BenchReport {
    run_with(cfg, progress, &mut |_, _| {})
}

/// As [`run`], handing every step's findings to `on_findings(now, findings)` (e.g. to
/// turn them into incidents as the product does).
pub fn run_with(
    cfg: &BenchConfig,
    progress: &mut dyn FnMut(f64),
    on_findings: &mut dyn FnMut(TimestampMs, &[Finding]),
) -> BenchReport {
    let mut fleet = Fleet::new(&SimConfig {
        nodes: cfg.nodes,
        gpus_per_node: cfg.gpus_per_node,
        seed: cfg.seed,
        fault_rate_multiplier: 0.0,
        ..SimConfig::default()
    })
    .expect("bench fleet config is valid");
    let infos = fleet.gpus();
    let n = infos.len();
    let mut engine = SecurityEngine::from_config(&bench_policy()).expect("bench policy is valid");
    let mut rng = Rng(cfg.seed ^ 0x5EC);
    let start = fleet.now_ms();
    let end = start + (cfg.hours * HOUR as f64) as i64;

    // Hard-legit GPUs: spread over nodes, never picked for scenarios.
    let hard: HashSet<usize> = (0..cfg.hard_legit_gpus.min(n))
        .map(|k| (k * n) / cfg.hard_legit_gpus.max(1))
        .collect();
    let mut hard_state: BTreeMap<usize, HardLegit> = hard
        .iter()
        .map(|&g| {
            (
                g,
                HardLegit {
                    drift: 0.0,
                    phase_ms: rng.below(2 * HOUR as usize) as i64,
                },
            )
        })
        .collect();

    // The plan: one scenario every `scenario_every_ms`, rotating through the kinds.
    let candidates: Vec<usize> = (0..n).filter(|g| !hard.contains(g)).collect();
    let mut plan: Vec<(TimestampMs, usize, &'static str)> = Vec::new();
    let mut t = start + HOUR;
    let mut k = 0;
    while t + 2 * HOUR < end && !candidates.is_empty() {
        let gpu = candidates[rng.below(candidates.len())];
        let jitter = rng.below(30 * MIN as usize) as i64;
        plan.push((t + jitter, gpu, SCENARIOS[k % SCENARIOS.len()]));
        k += 1;
        t += cfg.scenario_every_ms;
    }
    plan.sort_by_key(|p| p.0);

    let mut episodes: Vec<Episode> = Vec::new();
    // Pending miner episodes: their expected rules depend on the labels the planted job
    // got, read one step after planting.
    let mut pending: Vec<usize> = Vec::new();
    // Bench-applied drift: (gpu, kind, start, end).
    let mut drifts: Vec<(usize, &'static str, TimestampMs, TimestampMs)> = Vec::new();
    let mut next_plan = 0;
    let mut last_ident: Vec<Option<GpuIdentity>> = vec![None; n];
    let mut firing: BTreeMap<(String, usize), TimestampMs> = BTreeMap::new();
    let mut runs: Vec<(String, usize, TimestampMs, TimestampMs)> = Vec::new();
    let index: BTreeMap<GpuUuid, usize> = infos.iter().enumerate().map(|(i, g)| (g.uuid.clone(), i)).collect();
    let mut rows: u64 = 0;
    let mut now = start;
    let total_steps = ((end - start) / cfg.step_ms).max(1);
    let mut step_no = 0;
    let mut values: Vec<(FieldName, f64)> = Vec::with_capacity(64);
    let debug = std::env::var_os("GPUWARDEN_BENCH_DEBUG").is_some();
    while now < end {
        now += cfg.step_ms;
        step_no += 1;
        while next_plan < plan.len() && plan[next_plan].0 <= now {
            let (at, gpu, kind) = plan[next_plan];
            next_plan += 1;
            let uuid = &infos[gpu].uuid;
            match kind {
                "miner" | "miner-throttled" => {
                    let fk = if kind == "miner" {
                        FaultKind::Miner
                    } else {
                        FaultKind::MinerThrottled
                    };
                    if let Ok(l) = fleet.inject(uuid, fk, at) {
                        episodes.push(Episode {
                            gpu,
                            variant: if kind == "miner" { "miner" } else { "miner-throttled" },
                            start: l.start_ms,
                            end: l.start_ms + 2 * HOUR,
                            expected: vec![crate::rules::mining::ID],
                            acceptable: vec![],
                        });
                        pending.push(episodes.len() - 1);
                    }
                }
                "miner-intermittent" => {
                    // Three 6-minute bursts half an hour apart.
                    for b in 0..3 {
                        let s = at + b * 30 * MIN;
                        episodes.push(Episode {
                            gpu,
                            variant: "miner-intermittent",
                            start: s,
                            end: s + 6 * MIN,
                            expected: vec![crate::rules::mining::ID],
                            acceptable: vec![],
                        });
                        plan.push((s, gpu, "burst"));
                    }
                    plan[next_plan..].sort_by_key(|p| p.0);
                }
                "burst" => {
                    if let Ok(l) = fleet.inject_for(uuid, FaultKind::Miner, at, Some(6 * MIN)) {
                        if let Some(i) = episodes
                            .iter()
                            .rposition(|e| e.gpu == gpu && e.variant == "miner-intermittent" && e.start == at)
                        {
                            episodes[i].start = l.start_ms;
                            pending.push(i);
                        }
                    }
                }
                "miner-in-job" => {
                    // Hidden in a running job's pod: the planned GPU if it runs a
                    // labelled job now, else the next candidate that does.
                    fleet.advance_to(at);
                    let k0 = candidates.iter().position(|&c| c == gpu).unwrap_or(0);
                    let host = (0..candidates.len())
                        .map(|i| candidates[(k0 + i) % candidates.len()])
                        .find(|&g| {
                            fleet.workload(g).is_some_and(|w| !w.is_empty())
                                && !episodes.iter().any(|e| e.gpu == g && e.end + GRACE_MS > at)
                        });
                    if let Some(host) = host {
                        if let Ok(l) = fleet.inject(&infos[host].uuid, FaultKind::MinerInJob, at) {
                            episodes.push(Episode {
                                gpu: host,
                                variant: "miner-in-job",
                                start: l.start_ms,
                                end: l.start_ms + 2 * HOUR,
                                expected: vec![crate::rules::mining::ID],
                                acceptable: vec![crate::rules::behaviour::ID],
                            });
                        }
                    }
                }
                "unapproved-namespace" => {
                    if let Ok(l) = fleet.inject(uuid, FaultKind::UnapprovedNamespace, at) {
                        episodes.push(Episode {
                            gpu,
                            variant: "unapproved-namespace",
                            start: l.start_ms,
                            end: l.start_ms + HOUR,
                            expected: vec![crate::rules::usage::UNAPPROVED_ID],
                            acceptable: vec![],
                        });
                    }
                }
                drift => {
                    let (len, expected): (i64, Vec<&'static str>) = match drift {
                        "drift-power-limit" => (HOUR, vec![crate::rules::drift::POWER_ID]),
                        "drift-driver" => (
                            HOUR,
                            vec![crate::rules::drift::CONFIG_ID, crate::rules::drift::DRIVER_ID],
                        ),
                        "gpu-missing" => (30 * MIN, vec![crate::rules::drift::INVENTORY_ID]),
                        _ => (HOUR, vec![crate::rules::drift::CONFIG_ID]),
                    };
                    drifts.push((gpu, drift, at, at + len));
                    episodes.push(Episode {
                        gpu,
                        variant: drift,
                        start: at,
                        end: at + len,
                        expected,
                        acceptable: vec![],
                    });
                }
            }
        }
        fleet.advance_to(now);
        let active = |gpu: usize, kind: &str| {
            drifts
                .iter()
                .any(|d| d.0 == gpu && d.1 == kind && d.2 <= now && now < d.3)
        };
        let mut missing: HashSet<usize> = HashSet::new();
        for (gi, info) in infos.iter().enumerate() {
            let hard_gpu = hard.contains(&gi);
            let workload = if hard_gpu {
                Workload {
                    namespace: Some("ml-training".into()),
                    pod: Some(format!("membound-train-{gi}")),
                    container: Some("trainer".into()),
                    job: None,
                    account: None,
                }
            } else {
                fleet.workload(gi).cloned().unwrap_or_default()
            };
            let driver = if active(gi, "drift-driver") { OLD_DRIVER } else { DRIVER };
            if active(gi, "gpu-missing") {
                missing.insert(gi);
                continue;
            }
            let id = identity_of(info, workload, driver);
            if last_ident[gi].as_ref() != Some(&id) {
                engine.observe_identity(&id);
                last_ident[gi] = Some(id);
            }
            values.clear();
            if let Some(h) = hard_state.get_mut(&gi) {
                let limit = fleet.value(gi, DcgmField::PowerMgmtLimit).unwrap_or(700.0);
                hard_legit_row(h, &mut rng, now, cfg.step_ms, limit, &mut values);
            } else {
                for &f in DcgmField::ALL {
                    if let Some(v) = fleet.value(gi, f) {
                        values.push((FieldName::Dcgm(f), v));
                    }
                }
            }
            // Mode fields as an exporter with them in its counters CSV would send.
            let set = |values: &mut Vec<(FieldName, f64)>, f: DcgmField, v: f64| match values
                .iter_mut()
                .find(|(n, _)| *n == FieldName::Dcgm(f))
            {
                Some(slot) => slot.1 = v,
                None => values.push((FieldName::Dcgm(f), v)),
            };
            set(
                &mut values,
                DcgmField::EccCurrent,
                if active(gi, "drift-ecc") { 0.0 } else { 1.0 },
            );
            set(&mut values, DcgmField::PersistenceMode, 1.0);
            set(
                &mut values,
                DcgmField::MigMode,
                if active(gi, "drift-mig") { 1.0 } else { 0.0 },
            );
            if active(gi, "drift-power-limit") {
                let l = values
                    .iter()
                    .find(|(n, _)| *n == FieldName::Dcgm(DcgmField::PowerMgmtLimit))
                    .map(|v| v.1)
                    .unwrap_or(700.0);
                set(&mut values, DcgmField::PowerMgmtLimit, (l * 0.65).round());
            }
            engine.observe_row(&GpuSamples {
                gpu: info.uuid.clone(),
                ts_ms: now,
                values: std::mem::take(&mut values),
            });
            rows += 1;
        }
        // Miners planted last step: their labels decide which usage rule is expected.
        for i in pending.drain(..) {
            let e = &mut episodes[i];
            let w = fleet.workload(e.gpu).cloned().unwrap_or_default();
            let usage_rule = if w.is_empty() {
                crate::rules::usage::GHOST_ID
            } else {
                crate::rules::usage::UNAPPROVED_ID
            };
            e.expected.push(usage_rule);
            e.acceptable.push(crate::rules::behaviour::ID);
        }
        let uuids: Vec<&GpuUuid> = missing.iter().map(|&g| &infos[g].uuid).collect();
        let found: Vec<Finding> = engine.evaluate(now, &|g| {
            if uuids.contains(&g) {
                Freshness::MissingFromScrape
            } else {
                Freshness::Fresh
            }
        });
        on_findings(now, &found);
        let mut seen: HashSet<(String, usize)> = HashSet::new();
        for f in found {
            let Some(gi) = f.gpu.as_ref().and_then(|g| index.get(g)).copied() else {
                continue;
            };
            let key = (f.rule.clone(), gi);
            if !firing.contains_key(&key) && debug {
                eprintln!(
                    "fires: gpu {gi} at {} s: {} {:?}",
                    (now - start) / 1000,
                    f.summary,
                    f.labels.get("gpuwarden.pod")
                );
            }
            firing.entry(key.clone()).or_insert(now);
            seen.insert(key);
        }
        let ended: Vec<(String, usize)> = firing.keys().filter(|k| !seen.contains(*k)).cloned().collect();
        for k in ended {
            let s = firing.remove(&k).unwrap_or(now);
            runs.push((k.0, k.1, s, now));
        }
        if step_no % 500 == 0 {
            progress(step_no as f64 / total_steps as f64);
        }
    }
    for (k, s) in firing {
        runs.push((k.0, k.1, s, end));
    }
    progress(1.0);
    let mut report = score(&engine, n, &hard, start, end, &episodes, &runs, rows);
    report.episodes = episodes;
    report.uuids = infos.iter().map(|i| i.uuid.clone()).collect();
    report
}

#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
fn score(
    engine: &SecurityEngine,
    n: usize,
    hard: &HashSet<usize>,
    start: TimestampMs,
    end: TimestampMs,
    episodes: &[Episode],
    runs: &[(String, usize, TimestampMs, TimestampMs)],
    rows: u64,
) -> BenchReport {
    let hours = (end - start) as f64 / HOUR as f64;
    let abuse_ms: i64 = episodes.iter().map(|e| e.end.min(end) - e.start).sum();
    let gpu_hours = n as f64 * hours;
    let legit_gpu_hours = gpu_hours - abuse_ms as f64 / HOUR as f64;
    let mut rules = Vec::new();
    for r in engine.catalog().rules() {
        let id = r.id();
        let mut s = RuleScore {
            rule: id.to_string(),
            ..RuleScore::default()
        };
        for e in episodes.iter().filter(|e| e.expected.contains(&id)) {
            s.episodes += 1;
            let first = runs
                .iter()
                .filter(|(rule, g, rs, re)| rule == id && *g == e.gpu && *re > e.start && *rs <= e.end + GRACE_MS)
                .map(|(_, _, rs, _)| (*rs).max(e.start))
                .min();
            if let Some(t) = first {
                s.detected += 1;
                s.delays_ms.push(t - e.start);
            }
        }
        for (_, g, rs, re) in runs.iter().filter(|(rule, ..)| rule == id) {
            s.finding_runs += 1;
            let explained = episodes.iter().any(|e| {
                e.gpu == *g
                    && (e.expected.contains(&id) || e.acceptable.contains(&id))
                    && *rs >= e.start
                    && *rs <= e.end + GRACE_MS
            });
            if !explained {
                if std::env::var_os("GPUWARDEN_BENCH_DEBUG").is_some() {
                    eprintln!(
                        "false run: {id} gpu {g} {}..{} ({} s)",
                        (rs - start) / 1000,
                        (re - start) / 1000,
                        (re - rs) / 1000
                    );
                }
                s.false_runs += 1;
                if hard.contains(g) {
                    s.false_runs_hard += 1;
                }
            }
        }
        rules.push(s);
    }
    let mut variants: BTreeMap<&str, VariantScore> = BTreeMap::new();
    for e in episodes {
        let v = variants.entry(e.variant).or_insert_with(|| VariantScore {
            variant: e.variant.to_string(),
            ..VariantScore::default()
        });
        v.episodes += 1;
        // A variant is detected when its first expected rule fires.
        let primary = e.expected[0];
        let first = runs
            .iter()
            .filter(|(rule, g, rs, re)| rule == primary && *g == e.gpu && *re > e.start && *rs <= e.end + GRACE_MS)
            .map(|(_, _, rs, _)| (*rs).max(e.start))
            .min();
        if let Some(t) = first {
            v.detected += 1;
            v.delays_ms.push(t - e.start);
        }
    }
    BenchReport {
        gpus: n,
        gpu_hours,
        legit_gpu_hours,
        hard_legit_gpu_hours: hard.len() as f64 * hours,
        rows,
        rules,
        variants: variants.into_values().collect(),
        episodes: Vec::new(),
        uuids: Vec::new(),
    }
}

/// Median of delays, in seconds.
pub fn median_s(d: &[i64]) -> Option<f64> {
    let mut v = d.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).map(|x| *x as f64 / 1000.0)
}

/// Largest delay, in seconds.
pub fn max_s(d: &[i64]) -> Option<f64> {
    d.iter().max().map(|x| *x as f64 / 1000.0)
}
