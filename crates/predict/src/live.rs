//! Live scoring: the [`Predictor`] (shared, read by the API) and the
//! [`PredictionAnalyzer`] (registered with the pipeline's analysis stage).
//!
//! The analyzer feeds every row and event to its [`FeatureBank`] — the same code the
//! trainer replays history through — and every `period` of data time scores every fresh
//! GPU: probability, risk band, top contributing features. Predictions above the
//! threshold become `prediction` findings with action `drain_node`, so the incident
//! engine, notifiers and UI handle them like any finding. The scores are kept per GPU
//! (latest + a bounded ring) for the API, and handed out via
//! [`Predictor::take_history_rows`] to be stored as `gpuwarden_failure_probability`
//! samples, like the health score history.
//!
//! The model can be swapped at any time ([`Predictor::reload`]); the next scoring uses it.

use crate::error::PredictError;
use crate::features::{feature_count, FeatureBank};
use crate::model::{Contribution, FailureModel, CURRENT_FILE};
use gpuwarden_detect::XidCatalog;
use gpuwarden_model::{
    Action, Analyzer, Event, Evidence, FieldName, Finding, FindingKind, Freshness, GpuIdentity, GpuSamples, GpuUuid,
    Severity, TimestampMs,
};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Field under which a GPU's failure probability history is stored.
pub const PROBABILITY_FIELD: &str = "gpuwarden_failure_probability";
/// Scores kept per GPU in memory (a day at the default 5-minute period).
const HISTORY_PER_GPU: usize = 288;

/// Risk band of a probability relative to the operating threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskBand {
    /// Below a quarter of the threshold.
    Low,
    /// Between a quarter of the threshold and the threshold.
    Elevated,
    /// At or above the threshold: a finding is raised.
    High,
    /// At or above the midpoint between the threshold and 1.
    Critical,
}

impl RiskBand {
    pub fn of(p: f64, threshold: f64) -> RiskBand {
        // A NaN probability (should not happen; perpetual handles NaN features) is low:
        // it must never raise a finding.
        if p.is_nan() || p < threshold * 0.25 {
            RiskBand::Low
        } else if p < threshold {
            RiskBand::Elevated
        } else if p < (threshold + 1.0) / 2.0 {
            RiskBand::High
        } else {
            RiskBand::Critical
        }
    }
}

/// One GPU's prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub gpu: GpuUuid,
    pub node: String,
    pub ts_ms: TimestampMs,
    /// Probability of a hard failure within the horizon (24 h).
    pub probability: f64,
    pub band: RiskBand,
    /// The features that raised the risk most, with their values.
    pub top_features: Vec<Contribution>,
    pub model_version: String,
}

/// A point of a GPU's probability history.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProbabilityPoint {
    pub ts_ms: TimestampMs,
    pub probability: f64,
}

/// Settings of live scoring.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PredictConfig {
    /// Scoring period (data time), seconds.
    pub period_s: u64,
    /// Probability at or above which a finding is raised; `None`: the model's own
    /// operating threshold.
    pub threshold: Option<f64>,
    /// Features listed per prediction.
    pub top_features: usize,
}

impl Default for PredictConfig {
    fn default() -> Self {
        PredictConfig {
            period_s: 300,
            threshold: None,
            top_features: 3,
        }
    }
}

impl PredictConfig {
    /// This configuration with the environment's overrides: `GPUWARDEN_PREDICT_PERIOD_S`,
    /// `GPUWARDEN_PREDICT_THRESHOLD` (a probability in (0, 1]; anything else keeps the
    /// model's operating threshold), `GPUWARDEN_PREDICT_TOP_FEATURES`. Unparseable values
    /// are ignored with a warning rather than stopping the server.
    pub fn with_env_overrides(self) -> PredictConfig {
        let mut c = self;
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if let Some(v) = var("GPUWARDEN_PREDICT_PERIOD_S") {
            match v.trim().parse::<u64>() {
                Ok(s) if s > 0 => c.period_s = s,
                _ => tracing::warn!(value = %v, "GPUWARDEN_PREDICT_PERIOD_S is not a positive integer; using 300"),
            }
        }
        if let Some(v) = var("GPUWARDEN_PREDICT_THRESHOLD") {
            match v.trim().parse::<f64>() {
                Ok(t) if t > 0.0 && t <= 1.0 => c.threshold = Some(t),
                _ => tracing::warn!(value = %v, "GPUWARDEN_PREDICT_THRESHOLD is not in (0, 1]; using the model's"),
            }
        }
        if let Some(v) = var("GPUWARDEN_PREDICT_TOP_FEATURES") {
            match v.trim().parse::<usize>() {
                Ok(k) => c.top_features = k,
                _ => tracing::warn!(value = %v, "GPUWARDEN_PREDICT_TOP_FEATURES is not an integer; using 3"),
            }
        }
        c
    }
}

#[derive(Default)]
struct Scores {
    latest: HashMap<GpuUuid, Prediction>,
    history: HashMap<GpuUuid, VecDeque<ProbabilityPoint>>,
    unsaved: Vec<GpuSamples>,
}

/// The shared state of live prediction: the model (swappable) and the latest scores.
pub struct Predictor {
    models_dir: Option<PathBuf>,
    model: RwLock<Option<Arc<FailureModel>>>,
    scores: RwLock<Scores>,
    config: PredictConfig,
}

impl std::fmt::Debug for Predictor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Predictor")
            .field("models_dir", &self.models_dir)
            .finish()
    }
}

impl Predictor {
    /// A predictor reading models from `models_dir` (`data_dir/models`), loading the
    /// current model if there is one (a missing model is not an error: nothing is scored
    /// until one is trained).
    pub fn new(models_dir: Option<PathBuf>, config: PredictConfig) -> Arc<Predictor> {
        let p = Arc::new(Predictor {
            models_dir,
            model: RwLock::new(None),
            scores: RwLock::new(Scores::default()),
            config,
        });
        if let Err(e) = p.reload() {
            tracing::info!(error = %e, "failure prediction: no model loaded");
        }
        p
    }

    /// A predictor with a given model (tests, benchmarks).
    pub fn with_model(model: FailureModel, config: PredictConfig) -> Arc<Predictor> {
        Arc::new(Predictor {
            models_dir: None,
            model: RwLock::new(Some(Arc::new(model))),
            scores: RwLock::new(Scores::default()),
            config,
        })
    }

    /// Path of the current model file.
    pub fn current_path(&self) -> Option<PathBuf> {
        self.models_dir.as_ref().map(|d| d.join(CURRENT_FILE))
    }

    /// (Re)loads the current model file; the old model stays if loading fails.
    pub fn reload(&self) -> Result<Arc<FailureModel>, PredictError> {
        let path = self.current_path().ok_or(PredictError::NoModel)?;
        if !path.exists() {
            return Err(PredictError::NoModel);
        }
        let m = Arc::new(FailureModel::load(&path)?);
        tracing::info!(version = %m.meta.version, "failure prediction: model loaded");
        *self.model.write() = Some(m.clone());
        Ok(m)
    }

    /// Reloads when the file changed since `last` (its modification time); for a cheap
    /// poll-based watch. Returns the new modification time.
    pub fn reload_if_changed(&self, last: Option<std::time::SystemTime>) -> Option<std::time::SystemTime> {
        let path = self.current_path()?;
        let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
        if last != Some(mtime) {
            if let Err(e) = self.reload() {
                tracing::warn!(error = %e, "failure prediction: model reload failed");
                return last;
            }
        }
        Some(mtime)
    }

    pub fn model(&self) -> Option<Arc<FailureModel>> {
        self.model.read().clone()
    }

    pub fn config(&self) -> &PredictConfig {
        &self.config
    }

    /// The threshold in force.
    pub fn threshold(&self) -> f64 {
        self.config
            .threshold
            .or_else(|| self.model().map(|m| m.meta.threshold))
            .unwrap_or(0.5)
    }

    /// Latest predictions of every GPU, riskiest first.
    pub fn predictions(&self) -> Vec<Prediction> {
        let mut v: Vec<Prediction> = self.scores.read().latest.values().cloned().collect();
        v.sort_by(|a, b| b.probability.total_cmp(&a.probability).then_with(|| a.gpu.cmp(&b.gpu)));
        v
    }

    /// One GPU's latest prediction and its in-memory history (oldest first).
    pub fn gpu(&self, gpu: &GpuUuid) -> (Option<Prediction>, Vec<ProbabilityPoint>) {
        let s = self.scores.read();
        (
            s.latest.get(gpu).cloned(),
            s.history
                .get(gpu)
                .map(|h| h.iter().copied().collect())
                .unwrap_or_default(),
        )
    }

    /// Probability rows not yet stored (the caller appends them to the store).
    pub fn take_history_rows(&self) -> Vec<GpuSamples> {
        std::mem::take(&mut self.scores.write().unsaved)
    }

    /// Replaces the latest predictions with `predictions` (what one scoring of the fleet
    /// produced) and extends their history. The analyzer calls it after each scoring;
    /// API tests use it to serve known predictions without training a model.
    pub fn record(&self, predictions: Vec<Prediction>) {
        let mut s = self.scores.write();
        s.latest.clear();
        for p in predictions {
            let h = s.history.entry(p.gpu.clone()).or_default();
            h.push_back(ProbabilityPoint {
                ts_ms: p.ts_ms,
                probability: p.probability,
            });
            while h.len() > HISTORY_PER_GPU {
                h.pop_front();
            }
            s.unsaved.push(GpuSamples {
                gpu: p.gpu.clone(),
                ts_ms: p.ts_ms,
                values: vec![(FieldName::Other(PROBABILITY_FIELD.into()), p.probability)],
            });
            s.latest.insert(p.gpu.clone(), p);
        }
        // A store that is not draining must not make this grow without end.
        let cap = 4 * s.latest.len().max(1024);
        let unsaved = s.unsaved.len();
        if unsaved > cap {
            s.unsaved.drain(..unsaved - cap);
        }
        let live: std::collections::HashSet<GpuUuid> = s.latest.keys().cloned().collect();
        s.history.retain(|g, _| live.contains(g));
    }
}

/// The analyzer: feature state + scoring on a period.
pub struct PredictionAnalyzer {
    predictor: Arc<Predictor>,
    bank: FeatureBank,
    nodes: HashMap<GpuUuid, String>,
    last_scored_ms: Option<TimestampMs>,
    findings: Vec<Finding>,
}

impl PredictionAnalyzer {
    pub fn new(predictor: Arc<Predictor>, catalog: &XidCatalog) -> Self {
        PredictionAnalyzer {
            predictor,
            bank: FeatureBank::new(catalog),
            nodes: HashMap::new(),
            last_scored_ms: None,
            findings: Vec::new(),
        }
    }

    /// The feature state (for the training/live identity test).
    pub fn bank(&self) -> &FeatureBank {
        &self.bank
    }

    /// Scores every GPU `freshness` calls fresh at `now` and records the predictions.
    pub fn score_now(&mut self, now: TimestampMs, freshness: &dyn Fn(&GpuUuid) -> Freshness) -> Vec<Prediction> {
        let Some(model) = self.predictor.model() else {
            self.findings.clear();
            return Vec::new();
        };
        let snap = self
            .bank
            .snapshot(now, Some(&|g: &GpuUuid| matches!(freshness(g), Freshness::Fresh)));
        let probs = model.score(&snap);
        let threshold = self.predictor.threshold();
        // Explanations cost a tree walk per feature; only rows worth explaining get one.
        let explain_idx: Vec<usize> = (0..probs.len())
            .filter(|&i| RiskBand::of(probs[i], threshold) >= RiskBand::Elevated)
            .collect();
        let n = feature_count();
        let mut rows = Vec::with_capacity(explain_idx.len() * n);
        for &i in &explain_idx {
            rows.extend_from_slice(snap.row(i));
        }
        let mut explained: HashMap<usize, Vec<Contribution>> = explain_idx
            .iter()
            .copied()
            .zip(model.explain(&rows, explain_idx.len(), self.predictor.config.top_features))
            .collect();
        let mut out = Vec::with_capacity(probs.len());
        self.findings.clear();
        for (i, gpu) in snap.gpus.iter().enumerate() {
            let p = probs[i];
            if !p.is_finite() {
                continue;
            }
            let band = RiskBand::of(p, threshold);
            let pred = Prediction {
                gpu: gpu.clone(),
                node: self.nodes.get(gpu).cloned().unwrap_or_default(),
                ts_ms: now,
                probability: p,
                band,
                top_features: explained.remove(&i).unwrap_or_default(),
                model_version: model.meta.version.clone(),
            };
            if band >= RiskBand::High {
                self.findings.push(finding_of(&pred, threshold));
            }
            out.push(pred);
        }
        self.predictor.record(out.clone());
        out
    }
}

fn finding_of(p: &Prediction, threshold: f64) -> Finding {
    let reasons: Vec<String> = p
        .top_features
        .iter()
        .map(|c| match c.value {
            Some(v) => format!("{} = {}", c.feature, (v * 100.0).round() / 100.0),
            None => c.feature.clone(),
        })
        .collect();
    let mut evidence = vec![Evidence {
        signal: PROBABILITY_FIELD.into(),
        observed: p.probability,
        previous: None,
        expected: Some(threshold),
        ts_ms: p.ts_ms,
    }];
    evidence.extend(p.top_features.iter().filter_map(|c| {
        Some(Evidence {
            signal: c.feature.clone(),
            observed: c.value?,
            previous: None,
            expected: None,
            ts_ms: p.ts_ms,
        })
    }));
    Finding {
        kind: FindingKind::Prediction,
        rule: "prediction.hard_failure_24h".into(),
        severity: if p.band == RiskBand::Critical {
            Severity::Critical
        } else {
            Severity::Warning
        },
        gpu: Some(p.gpu.clone()),
        node: p.node.clone(),
        ts_ms: p.ts_ms,
        summary: format!(
            "hard failure predicted within 24 h (p = {:.2}, threshold {:.2}); drain before failure. Top reasons: {}",
            p.probability,
            threshold,
            if reasons.is_empty() {
                "-".into()
            } else {
                reasons.join(", ")
            }
        ),
        evidence,
        action: Action::DrainNode,
        dimension: None,
        labels: [("model".to_string(), p.model_version.clone())].into_iter().collect(),
    }
}

impl Analyzer for PredictionAnalyzer {
    fn name(&self) -> &'static str {
        "prediction"
    }

    fn observe_identity(&mut self, identity: &GpuIdentity) {
        self.bank.observe_identity(identity);
        if self.nodes.get(&identity.uuid) != Some(&identity.node) {
            self.nodes.insert(identity.uuid.clone(), identity.node.clone());
        }
    }

    fn observe_row(&mut self, row: &GpuSamples) {
        self.bank.observe_row(row);
    }

    fn observe_event(&mut self, event: &Event) {
        self.bank.observe_event(event);
    }

    /// Scores once per period of data time; between scorings the last findings stay
    /// active (a prediction is a condition until the next scoring says otherwise).
    fn evaluate(&mut self, now_ms: TimestampMs, freshness: &dyn Fn(&GpuUuid) -> Freshness) -> Vec<Finding> {
        let period = (self.predictor.config.period_s.max(1) * 1000) as i64;
        if self.last_scored_ms.is_none_or(|l| now_ms - l >= period || now_ms < l) {
            self.last_scored_ms = Some(now_ms);
            self.score_now(now_ms, freshness);
        }
        self.findings.clone()
    }
}

/// Path of the models folder of a data dir.
pub fn models_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("models")
}
