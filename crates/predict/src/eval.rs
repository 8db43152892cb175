//! Held-out evaluation: replay simulated histories whose seeds training never saw,
//! score every GPU at every snapshot with the model, a rule baseline ("any DBE or
//! pending remap in the last 24 h") and random scores, and report ROC-AUC, PR-AUC,
//! precision/recall at the operating point, and how many failures were flagged ≥ 1 h and
//! ≥ 6 h ahead (of all failures, and of those the simulator gave a precursor). Also the
//! cost of scoring a large fleet once.
//!
//! A fourth scorer is no predictor: an oracle that reads the simulator's hidden state
//! (each board's true wear hazard, and whether it is in a warning episode that ends in a
//! failure within the horizon). It shows the ceiling the simulation's randomness leaves — failures of sound
//! boards without a warning cannot be ranked by anyone — so that the model's figures can
//! be read against what is attainable, not against 1.0.

use crate::dataset::{replay_sim_with_truth, SimHistory, HORIZON_MS};
use crate::error::PredictError;
use crate::features::{feature_index, FeatureBank};
use crate::live::{PredictConfig, PredictionAnalyzer, Predictor};
use crate::metrics::{self, Metrics};
use crate::model::FailureModel;
use gpuwarden_detect::XidCatalog;
use gpuwarden_model::{Analyzer, Freshness, GpuIdentity, GpuUuid, TimestampMs};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

const HOUR_MS: i64 = 3_600_000;

/// One scorer's results.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScorerReport {
    pub name: String,
    pub metrics: Metrics,
    /// Share of failures whose GPU was flagged at the last scoring at least 1 h / 6 h
    /// before the failure (the alert was up that far ahead).
    pub lead_1h: f64,
    pub lead_6h: f64,
    /// The same, among failures the simulator preceded by a warning episode.
    pub lead_1h_warned: f64,
    pub lead_6h_warned: f64,
    /// ROC-AUC on the GPU-times before each GPU's first hard failure only: the figure
    /// without the boards back from a repair (which a past failure makes easier).
    pub roc_auc_before_first_failure: f64,
}

/// The evaluation report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EvalReport {
    pub seeds: Vec<u64>,
    pub gpus: usize,
    pub rows: usize,
    pub failures: usize,
    pub failures_warned: usize,
    /// Failures of a board that had failed before in the same history (back from a
    /// repair: see "Repairs" in docs/simulator.md).
    pub failures_repeat: usize,
    pub scorers: Vec<ScorerReport>,
}

#[derive(Default)]
struct Collected {
    model: Vec<f64>,
    rule: Vec<f64>,
    random: Vec<f64>,
    oracle: Vec<f64>,
    label: Vec<bool>,
    /// The row's GPU had a hard failure earlier in its history.
    after_failure: Vec<bool>,
    /// (history, gpu) of each row, and its time.
    key: Vec<(usize, GpuUuid)>,
    ts: Vec<TimestampMs>,
}

/// The rule baseline's score of a feature row: 1 with a DBE or a pending remap in the
/// last 24 h, else 0.
pub fn rule_score(row: &[f64], dbe: usize, pending: usize, pending_h: usize) -> f64 {
    let pos = |v: f64| v.is_finite() && v > 0.0;
    if pos(row[dbe]) || pos(row[pending]) || pos(row[pending_h]) {
        1.0
    } else {
        0.0
    }
}

fn xorshift(state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 11) as f64 / (1u64 << 53) as f64
}

/// Evaluates `model` on the histories.
pub fn evaluate(
    model: &FailureModel,
    histories: &[SimHistory],
    catalog: &XidCatalog,
    progress: &mut dyn FnMut(usize, i64, i64),
) -> Result<EvalReport, PredictError> {
    let dbe = feature_index("ecc_dbe_24h").unwrap_or(0);
    let pending = feature_index("remap_pending").unwrap_or(0);
    let pending_h = feature_index("remap_pending_hours_24h").unwrap_or(0);
    let mut c = Collected::default();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut failures: Vec<(usize, GpuUuid, TimestampMs, bool)> = Vec::new();
    let mut report = EvalReport::default();
    for (hi, h) in histories.iter().enumerate() {
        let mut rows_here: Vec<usize> = Vec::new();
        let outcome = replay_sim_with_truth(h, catalog, &mut |d, t| progress(hi, d, t), &mut |snap, _, truth| {
            let p = model.score(snap);
            for (i, gpu) in snap.gpus.iter().enumerate() {
                let row = snap.row(i);
                c.model.push(p[i]);
                c.rule.push(rule_score(row, dbe, pending, pending_h));
                c.random.push(xorshift(&mut rng));
                // A warning that ends within the horizon is a failure in it, for sure.
                let warned = truth[i].warning_end_ms.is_some_and(|e| e - snap.ts_ms <= HORIZON_MS);
                c.oracle.push(truth[i].hazard + if warned { 1e3 } else { 0.0 });
                c.key.push((hi, gpu.clone()));
                c.ts.push(snap.ts_ms);
                rows_here.push(c.ts.len() - 1);
            }
        })?;
        // Labels now that the failures are known (a repaired board can fail again);
        // rows in the last 24 h are censored.
        let mut fails_of: HashMap<&GpuUuid, Vec<TimestampMs>> = HashMap::new();
        for f in &outcome.failures {
            fails_of.entry(&f.gpu).or_default().push(f.ts_ms);
        }
        for i in rows_here {
            let t = c.ts[i];
            let label = fails_of
                .get(&c.key[i].1)
                .is_some_and(|fs| fs.iter().any(|&f| f > t && f - t <= HORIZON_MS));
            c.label.push(label);
            c.after_failure
                .push(fails_of.get(&c.key[i].1).is_some_and(|fs| fs.iter().any(|&f| f <= t)));
        }
        // A warned failure starts on the first step at or after its warning's end.
        let step = h.step_ms.max(1);
        let warned_at: Vec<(&GpuUuid, TimestampMs)> = outcome
            .precursors
            .iter()
            .filter(|p| p.precursor.target.is_some())
            .map(|p| (&p.gpu, p.precursor.end_ms))
            .collect();
        for f in &outcome.failures {
            let warned = warned_at
                .iter()
                .any(|(g, end)| *g == &f.gpu && f.ts_ms >= *end && f.ts_ms - *end <= step);
            failures.push((hi, f.gpu.clone(), f.ts_ms, warned));
            if fails_of[&f.gpu].iter().any(|&e| e < f.ts_ms) {
                report.failures_repeat += 1;
            }
        }
        report.seeds.push(h.seed);
        report.gpus += outcome.gpus;
        // Censor: drop rows whose horizon runs past the end.
        let end = outcome.end_ms;
        let keep: Vec<bool> = (0..c.ts.len())
            .map(|i| c.key[i].0 != hi || c.ts[i] + HORIZON_MS <= end)
            .collect();
        retain(&mut c, &keep);
    }
    report.rows = c.ts.len();
    report.failures = failures.len();
    report.failures_warned = failures.iter().filter(|f| f.3).count();
    let threshold = model.meta.threshold;
    // Random gets the model's alert budget: flag the same share of rows.
    let flagged = c.model.iter().filter(|p| **p >= threshold).count() as f64 / c.model.len().max(1) as f64;
    // The oracle, at the same alert rate: the score at the model's flagged share.
    let oracle_thr = {
        let mut s = c.oracle.clone();
        s.sort_by(|a, b| b.total_cmp(a));
        let k = ((flagged * s.len() as f64).round() as usize).clamp(1, s.len().max(1));
        s.get(k - 1).copied().unwrap_or(f64::INFINITY)
    };
    let scorers: [(&str, &Vec<f64>, f64); 4] = [
        ("model (perpetual GBDT)", &c.model, threshold),
        ("rule: DBE or pending remap in 24 h", &c.rule, 0.5),
        ("random (same alert rate)", &c.random, 1.0 - flagged),
        (
            "ceiling: oracle of hidden wear hazard + warning episodes (same alert rate)",
            &c.oracle,
            oracle_thr,
        ),
    ];
    // Index rows by (history, gpu) for lead times.
    let mut by_gpu: HashMap<(usize, &GpuUuid), Vec<usize>> = HashMap::new();
    for (i, k) in c.key.iter().enumerate() {
        by_gpu.entry((k.0, &k.1)).or_default().push(i);
    }
    for (name, scores, thr) in scorers {
        let metrics = metrics::evaluate(scores, &c.label, None, thr);
        let (first_scores, first_labels): (Vec<f64>, Vec<bool>) = (0..c.label.len())
            .filter(|&i| !c.after_failure[i])
            .map(|i| (scores[i], c.label[i]))
            .unzip();
        let roc_auc_before_first_failure = metrics::evaluate(&first_scores, &first_labels, None, thr).roc_auc;
        let ahead = |lead: i64, warned_only: bool| {
            let pool: Vec<_> = failures.iter().filter(|f| !warned_only || f.3).collect();
            let hit = pool
                .iter()
                .filter(|(hi, gpu, fail, _)| {
                    // Flagged at the last scoring at least `lead` before the failure:
                    // "any alert somewhere in the 24 h before" would credit a random
                    // scorer with most failures (it fires ~once a day per GPU).
                    by_gpu.get(&(*hi, gpu)).is_some_and(|rows| {
                        rows.iter()
                            .filter(|&&i| c.ts[i] >= fail - HORIZON_MS && c.ts[i] <= fail - lead)
                            .max_by_key(|&&i| c.ts[i])
                            .is_some_and(|&i| scores[i] >= thr)
                    })
                })
                .count();
            if pool.is_empty() {
                f64::NAN
            } else {
                hit as f64 / pool.len() as f64
            }
        };
        report.scorers.push(ScorerReport {
            name: name.to_string(),
            metrics,
            lead_1h: ahead(HOUR_MS, false),
            lead_6h: ahead(6 * HOUR_MS, false),
            lead_1h_warned: ahead(HOUR_MS, true),
            lead_6h_warned: ahead(6 * HOUR_MS, true),
            roc_auc_before_first_failure,
        });
    }
    Ok(report)
}

fn retain(c: &mut Collected, keep: &[bool]) {
    fn f<T: Clone>(v: &mut Vec<T>, keep: &[bool]) {
        let mut i = 0;
        v.retain(|_| {
            let k = keep[i];
            i += 1;
            k
        });
    }
    f(&mut c.model, keep);
    f(&mut c.rule, keep);
    f(&mut c.random, keep);
    f(&mut c.oracle, keep);
    f(&mut c.label, keep);
    f(&mut c.after_failure, keep);
    f(&mut c.key, keep);
    f(&mut c.ts, keep);
}

/// What one scoring pass of a large fleet cost.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScoringCost {
    pub gpus: usize,
    pub wall_ms: f64,
    pub cpu_ms: f64,
    pub cpu_us_per_gpu: f64,
    /// Feature state held, bytes per GPU (estimate from the state's layout).
    pub findings: usize,
}

/// CPU time of this thread, ns (Linux; NaN elsewhere).
pub fn thread_cpu_ns() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()))
        .unwrap_or(f64::NAN)
}

/// Builds a `gpus`-GPU simulated fleet, feeds `warm_hours` of it to a
/// [`PredictionAnalyzer`] through the `Analyzer` trait (as the pipeline does), then
/// times one scoring of every GPU (features, probabilities, explanations, findings).
pub fn scoring_cost(
    model: FailureModel,
    gpus: usize,
    warm_hours: f64,
    catalog: &XidCatalog,
) -> Result<ScoringCost, PredictError> {
    let h = SimHistory {
        gpus,
        days: warm_hours / 24.0,
        step_ms: 300_000,
        seed: 99_001,
        ..SimHistory::default()
    };
    let mut fleet = crate::dataset::sim_fleet(&h)?;
    let infos = fleet.gpus();
    let predictor: Arc<Predictor> = Predictor::with_model(model, PredictConfig::default());
    let mut analyzer = PredictionAnalyzer::new(predictor, catalog);
    for g in &infos {
        analyzer.observe_identity(&GpuIdentity::new(g.uuid.clone(), g.node.clone()));
    }
    let mut xid = gpuwarden_collect::xid::XidTracker::new();
    let mut events = Vec::new();
    let mut t = fleet.now_ms();
    let end = t + (warm_hours * HOUR_MS as f64) as i64;
    while t < end {
        t += fleet.step_ms();
        fleet.advance_to(t);
        for (gi, g) in infos.iter().enumerate() {
            if let Some(row) = crate::dataset::sim_row(&fleet, gi, &g.uuid, t) {
                events.clear();
                xid.observe(&g.node, &row, &mut events);
                analyzer.observe_row(&row);
                for e in &events {
                    analyzer.observe_event(e);
                }
            }
        }
    }
    let cpu0 = thread_cpu_ns();
    let wall0 = std::time::Instant::now();
    let findings = analyzer.evaluate(t, &|_| Freshness::Fresh).len();
    let wall_ms = wall0.elapsed().as_secs_f64() * 1000.0;
    let cpu_ms = (thread_cpu_ns() - cpu0) / 1e6;
    Ok(ScoringCost {
        gpus,
        wall_ms,
        cpu_ms,
        cpu_us_per_gpu: cpu_ms * 1000.0 / gpus.max(1) as f64,
        findings,
    })
}

/// Feature state of a bank, for memory estimates in the bench.
pub fn bank_gpus(bank: &FeatureBank) -> usize {
    bank.len()
}
