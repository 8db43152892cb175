//! Training: a labelled dataset from a history, a **time-based split** (train on the
//! earlier part, test on the later; rows whose 24 h label window crosses the split are
//! left out of training, so no GPU-time and no label leaks across), a perpetual fit, then
//! calibration, the operating threshold and the test metrics on the later part.

use crate::dataset::{Dataset, Labeler, ReplayOutcome, HORIZON_MS};
use crate::error::PredictError;
use crate::metrics;
use crate::model::{FailureModel, TrainOptions, TrainingReport};
use gpuwarden_model::TimestampMs;

/// Negatives kept: one in this many (each weighted by it).
pub const NEGATIVE_KEEP_EVERY: u64 = 12;
/// Share of the history's time used for training (the rest tests).
pub const TRAIN_SHARE: f64 = 0.7;

/// Features computed (and kept in the vector, so model files stay compatible) that the
/// model must not learn from. `age_h_capped_7d` (how long the GPU has been observed) is a
/// survivorship artifact in any finite history: GPUs that fail leave early, so the older
/// the history, the healthier the survivors look. Live, it would make every GPU of a
/// fresh install look riskier. Blanked to NaN in the training rows, no tree splits on it.
pub const MASKED_FEATURES: &[&str] = &["age_h_capped_7d"];

/// A labeler with the training defaults.
pub fn labeler() -> Labeler {
    Labeler::new(NEGATIVE_KEEP_EVERY)
}

/// Fits a model on `data` from a replay. `source` describes where the history came from.
pub fn fit_time_split(
    data: &Dataset,
    outcome: &ReplayOutcome,
    source: String,
    opts: TrainOptions,
) -> Result<FailureModel, PredictError> {
    let span = (outcome.end_ms - outcome.start_ms) as f64;
    let split: TimestampMs = outcome.start_ms + (span * TRAIN_SHARE) as i64;
    let mut train = data.select(|ts| ts < split - HORIZON_MS);
    let n = crate::features::feature_count();
    for j in MASKED_FEATURES.iter().filter_map(|f| crate::features::feature_index(f)) {
        for i in 0..train.len() {
            train.x[i * n + j] = f64::NAN;
        }
    }
    let test = data.select(|ts| ts >= split);
    let positives = |d: &Dataset| d.y.iter().filter(|y| **y).count();
    if positives(&train) == 0 || positives(&test) == 0 {
        return Err(PredictError::Training(format!(
            "too few failures on one side of the time split ({} train / {} test positive rows)",
            positives(&train),
            positives(&test)
        )));
    }
    let started = std::time::Instant::now();
    let mut model = FailureModel::fit(&train.x, &train.y, &train.w, opts)?;
    let train_seconds = started.elapsed().as_secs_f64();
    let raw = model.raw(&test.x, test.len());
    model.calibrate(&raw, &test.y, &test.w);
    let p = model.probabilities(&test.x, test.len());
    let threshold = metrics::best_f1_threshold(&p, &test.y, Some(&test.w));
    model.meta.threshold = threshold;
    let failures_in = |from: TimestampMs, to: TimestampMs| {
        outcome
            .failures
            .iter()
            .filter(|f| f.ts_ms >= from && f.ts_ms < to)
            .count()
    };
    model.meta.training = TrainingReport {
        source,
        rows_train: train.len(),
        rows_test: test.len(),
        failures_train: failures_in(outcome.start_ms, split - HORIZON_MS),
        failures_test: failures_in(split, outcome.end_ms + HORIZON_MS),
        split_ms: split,
        test: metrics::evaluate(&p, &test.y, Some(&test.w), threshold),
        train_seconds,
    };
    Ok(model)
}
