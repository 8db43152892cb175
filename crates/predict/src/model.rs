//! The failure model: a gradient-boosted tree ensemble (perpetual) with its metadata,
//! saved as one versioned JSON file.
//!
//! **Why perpetual.** It is pure Rust (no C++ toolchain, no Python at training time), it
//! trains and predicts, and its serde round-trip is exact, so the model that
//! `gpuwarden train` evaluated is bit-for-bit the model `run` scores with. Its single
//! `budget` parameter replaces learning-rate / depth / rounds tuning, which we cannot
//! afford per fleet, and it handles NaN natively (a GPU without NVLink, a temperature
//! that was not reported). It gives per-prediction contributions (`Average`, the usual
//! TreeSHAP approximation) for the "top contributing features". Pinned to 3.0.0-rc.2
//! because its stable releases need a nightly compiler.
//!
//! The file holds `format_version`, a `version` (creation time + content hash),
//! `created_ms`, the feature names (a model with other names is refused), the horizon,
//! the operating threshold, training metrics, a Platt calibration of the raw scores, and
//! the booster.

use crate::error::PredictError;
use crate::features::{feature_count, feature_names, Snapshot};
use crate::metrics::Metrics;
use perpetual::booster::config::BoosterIO;
use perpetual::objective::Objective;
use perpetual::{ContributionsMethod, Matrix, PerpetualBooster};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Version of the file layout.
pub const FORMAT_VERSION: u32 = 1;
/// Name of the file `run` loads from `data_dir/models/`.
pub const CURRENT_FILE: &str = "failure-current.json";

/// What the trainer measured, stored with the model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingReport {
    /// `simulated (…)` or `store (…)`.
    pub source: String,
    pub rows_train: usize,
    pub rows_test: usize,
    pub failures_train: usize,
    pub failures_test: usize,
    /// Rows with `ts < split_ms − horizon` train, rows with `ts >= split_ms` test.
    pub split_ms: i64,
    /// On the later (test) part of the time split.
    pub test: Metrics,
    pub train_seconds: f64,
}

/// Metadata of a model file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    pub format_version: u32,
    pub version: String,
    pub created_ms: i64,
    pub feature_names: Vec<String>,
    pub horizon_hours: f64,
    /// Operating threshold (best F1 on the test split).
    pub threshold: f64,
    /// Platt scaling of the raw log-odds: p = σ(a·z + b).
    pub calibration: (f64, f64),
    pub training: TrainingReport,
}

/// The model file: metadata + booster.
#[derive(Serialize, Deserialize)]
struct ModelFile {
    meta: ModelMeta,
    booster: PerpetualBooster,
}

/// A loaded model.
pub struct FailureModel {
    pub meta: ModelMeta,
    booster: PerpetualBooster,
}

impl std::fmt::Debug for FailureModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailureModel").field("meta", &self.meta).finish()
    }
}

/// One feature's share of a prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    pub feature: String,
    /// The feature's value for this GPU now (null when not observed).
    pub value: Option<f64>,
    /// Its contribution to the log-odds (positive: raises the risk).
    pub contribution: f64,
}

fn sigmoid(z: f64) -> f64 {
    if z.is_nan() {
        return f64::NAN;
    }
    1.0 / (1.0 + (-z).exp())
}

/// Row-major `rows × cols` → the column-major layout perpetual reads.
pub fn column_major(row_major: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut out = vec![0.0; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = row_major[r * cols + c];
        }
    }
    out
}

/// Fits σ(a·z + b) to labels (Platt scaling): the booster is trained on rows whose
/// negatives were subsampled, so its raw probabilities are far too high for rare
/// failures. A grid over
/// the slope `a` with a damped 1-D Newton on `b` for each: plain 2-D Newton diverges when
/// the held-out scores separate the classes almost perfectly.
fn platt(z: &[f64], y: &[bool], w: &[f64]) -> (f64, f64) {
    let idx: Vec<usize> = (0..z.len()).filter(|&i| z[i].is_finite()).collect();
    let loss = |a: f64, b: f64| -> f64 {
        idx.iter()
            .map(|&i| {
                let p = sigmoid(a * z[i] + b).clamp(1e-12, 1.0 - 1e-12);
                -w[i] * if y[i] { p.ln() } else { (1.0 - p).ln() }
            })
            .sum()
    };
    let mut best = (1.0, 0.0, f64::INFINITY);
    for k in 0..40 {
        let a = 0.02 * (150f64).powf(k as f64 / 39.0); // 0.02 … 3
        let mut b = 0.0;
        for _ in 0..30 {
            let (mut g, mut h) = (0.0, 1e-9);
            for &i in &idx {
                let p = sigmoid(a * z[i] + b);
                g += w[i] * (p - if y[i] { 1.0 } else { 0.0 });
                h += w[i] * (p * (1.0 - p)).max(1e-12);
            }
            let step = (g / h).clamp(-2.0, 2.0);
            b -= step;
            if step.abs() < 1e-7 {
                break;
            }
        }
        let l = loss(a, b);
        if l.is_finite() && l < best.2 {
            best = (a, b, l);
        }
    }
    (best.0, best.1)
}

/// Training options.
#[derive(Debug, Clone, Copy)]
pub struct TrainOptions {
    /// perpetual's budget: higher fits more, slower.
    pub budget: f32,
    pub seed: u64,
    pub threads: Option<usize>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            budget: 0.5,
            seed: 7,
            threads: None,
        }
    }
}

impl FailureModel {
    /// Trains on row-major `x` (rows × feature_count) with labels. `w` (the labeler's
    /// row weights) must match in length but is not given to the booster: see below.
    pub fn fit(x: &[f64], y: &[bool], w: &[f64], opts: TrainOptions) -> Result<FailureModel, PredictError> {
        let cols = feature_count();
        let rows = y.len();
        if rows == 0 || x.len() != rows * cols || w.len() != rows {
            return Err(PredictError::Training("empty or misshapen training set".into()));
        }
        if !y.iter().any(|v| *v) || y.iter().all(|v| *v) {
            return Err(PredictError::Training(
                "the training set needs both failures and non-failures".into(),
            ));
        }
        let data = column_major(x, rows, cols);
        let matrix = Matrix::new(&data, rows, cols);
        let target: Vec<f64> = y.iter().map(|v| if *v { 1.0 } else { 0.0 }).collect();
        let mut booster = PerpetualBooster::default()
            .set_objective(Objective::LogLoss)
            .set_budget(opts.budget)
            .set_seed(opts.seed)
            .set_num_threads(opts.threads)
            .set_log_iterations(0);
        // perpetual 3.0.0-rc.2 re-weights LogLoss classes by default ("auto class
        // weights"); on top of the labeler's negative-subsampling weights (×12) that
        // pushed leaf values out of all proportion (raw log-odds of ±1.5e9, ROC-AUC 0.59).
        // We train unweighted on the subsampled rows instead (the weights `w` are only
        // checked for shape): ranking is what the trees must get right, and the Platt
        // calibration on the weighted test split restores the true base rate.
        booster.cfg.auto_class_weights = false;
        booster
            .fit(&matrix, &target, None, None)
            .map_err(|e| PredictError::Training(e.to_string()))?;
        Ok(FailureModel {
            meta: ModelMeta {
                format_version: FORMAT_VERSION,
                version: String::new(),
                created_ms: 0,
                feature_names: feature_names(),
                horizon_hours: 24.0,
                threshold: 0.5,
                calibration: (1.0, 0.0),
                training: TrainingReport::default(),
            },
            booster,
        })
    }

    /// Sets the calibration from held-out raw scores (see [`FailureModel::raw`]).
    pub fn calibrate(&mut self, raw: &[f64], y: &[bool], w: &[f64]) {
        self.meta.calibration = platt(raw, y, w);
    }

    /// Raw log-odds of row-major rows.
    pub fn raw(&self, x: &[f64], rows: usize) -> Vec<f64> {
        if rows == 0 {
            return Vec::new();
        }
        let data = column_major(x, rows, feature_count());
        self.booster.predict(&Matrix::new(&data, rows, feature_count()), false)
    }

    /// Failure probabilities of row-major rows.
    pub fn probabilities(&self, x: &[f64], rows: usize) -> Vec<f64> {
        let (a, b) = self.meta.calibration;
        self.raw(x, rows).into_iter().map(|z| sigmoid(a * z + b)).collect()
    }

    /// Probabilities of every GPU of a snapshot.
    pub fn score(&self, snap: &Snapshot) -> Vec<f64> {
        self.probabilities(&snap.values, snap.gpus.len())
    }

    /// The `k` features that raised each row's risk most (TreeSHAP-style `Average`
    /// contributions to the log-odds), with their values.
    pub fn explain(&self, x: &[f64], rows: usize, k: usize) -> Vec<Vec<Contribution>> {
        let cols = feature_count();
        if rows == 0 {
            return Vec::new();
        }
        let data = column_major(x, rows, cols);
        let contrib =
            self.booster
                .predict_contributions(&Matrix::new(&data, rows, cols), ContributionsMethod::Average, false);
        // perpetual returns rows × (cols + 1): the last column is the bias.
        let stride = cols + 1;
        (0..rows)
            .map(|r| {
                let c = &contrib[r * stride..r * stride + cols];
                let mut idx: Vec<usize> = (0..cols).filter(|&j| c[j].is_finite() && c[j] > 0.0).collect();
                idx.sort_by(|&a, &b| c[b].total_cmp(&c[a]));
                idx.truncate(k);
                idx.into_iter()
                    .map(|j| {
                        let v = x[r * cols + j];
                        Contribution {
                            feature: self.meta.feature_names[j].clone(),
                            value: v.is_finite().then_some(v),
                            contribution: c[j],
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// Saves to `dir/failure-<version>.json` and points `dir/failure-current.json` at it
    /// (a copy, written to a temporary name and renamed, so a watcher never reads half a
    /// file). Returns the versioned path.
    pub fn save(&mut self, dir: &Path, created_ms: i64) -> Result<PathBuf, PredictError> {
        std::fs::create_dir_all(dir).map_err(|e| PredictError::Io(dir.to_path_buf(), e))?;
        self.meta.created_ms = created_ms;
        let booster_json = self
            .booster
            .json_dump()
            .map_err(|e| PredictError::Model(e.to_string()))?;
        let hash = crc32fast_hash(booster_json.as_bytes());
        self.meta.version = format!("{}-{hash:08x}", format_utc(created_ms));
        let file = ModelFile {
            meta: self.meta.clone(),
            booster: serde_json::from_str(&booster_json).map_err(|e| PredictError::Model(e.to_string()))?,
        };
        let text = serde_json::to_string(&file).map_err(|e| PredictError::Model(e.to_string()))?;
        let versioned = dir.join(format!("failure-{}.json", self.meta.version));
        write_atomic(&versioned, &text)?;
        write_atomic(&dir.join(CURRENT_FILE), &text)?;
        Ok(versioned)
    }

    /// Loads a model file, refusing one made for other features.
    pub fn load(path: &Path) -> Result<FailureModel, PredictError> {
        let text = std::fs::read_to_string(path).map_err(|e| PredictError::Io(path.to_path_buf(), e))?;
        let file: ModelFile =
            serde_json::from_str(&text).map_err(|e| PredictError::Model(format!("{}: {e}", path.display())))?;
        if file.meta.format_version != FORMAT_VERSION {
            return Err(PredictError::Model(format!(
                "{}: format version {} (this build reads {FORMAT_VERSION})",
                path.display(),
                file.meta.format_version
            )));
        }
        if file.meta.feature_names != feature_names() {
            return Err(PredictError::Model(format!(
                "{}: trained on other features (retrain with this version: gpuwarden train)",
                path.display()
            )));
        }
        Ok(FailureModel {
            meta: file.meta,
            booster: file.booster,
        })
    }
}

fn write_atomic(path: &Path, text: &str) -> Result<(), PredictError> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(|e| PredictError::Io(tmp.clone(), e))?;
    std::fs::rename(&tmp, path).map_err(|e| PredictError::Io(path.to_path_buf(), e))
}

/// FNV-1a, enough to tell model files apart in a version string.
fn crc32fast_hash(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// `YYYYMMDDTHHMMSSZ` of a Unix ms time (civil-from-days, no date crate needed).
pub fn format_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_format() {
        assert_eq!(format_utc(1_735_689_600_000), "20250101T000000Z");
    }
}
