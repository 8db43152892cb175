//! Failure predictions: the fleet ranked by risk, one GPU's prediction with its
//! probability history, and the model in use. Answered from the live
//! [`gpuwarden_predict::Predictor`] (latest scores, held in memory) and the store (the
//! history, stored as `gpuwarden_failure_probability` samples so it survives restarts).
//! Without a predictor (the API bench, tests) the routes answer 404; with one
//! but no model yet, they answer empty lists and `model: null`.

use super::AppState;
use crate::scope::CallerScope;
use crate::visibility::Visibility;
use crate::ApiError;
use axum::extract::{Path, State};
use axum::Json;
use gpuwarden_model::{FieldName, GpuUuid};
use gpuwarden_predict::live::PROBABILITY_FIELD;
use gpuwarden_predict::Predictor;
use serde::Serialize;
use std::sync::Arc;
use utoipa::ToSchema;

/// How far back the per-GPU history reaches (the 24 h horizon, a week of context).
const HISTORY_MS: i64 = 7 * 24 * 3_600_000;

/// A feature that raised a GPU's risk.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeatureContribution {
    pub feature: String,
    /// The feature's value now (null when not observed).
    pub value: Option<f64>,
    /// Its contribution to the log-odds.
    pub contribution: f64,
}

/// One GPU's latest prediction.
#[derive(Debug, Serialize, ToSchema)]
pub struct PredictionItem {
    pub gpu: String,
    pub node: String,
    pub ts_ms: i64,
    /// Probability of a hard failure within 24 h.
    pub probability: f64,
    /// `low`, `elevated`, `high` (a finding is raised) or `critical`.
    pub band: String,
    pub top_features: Vec<FeatureContribution>,
    pub model_version: String,
}

/// The fleet's predictions, riskiest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct PredictionList {
    /// Version of the model in use (null: none trained yet).
    pub model: Option<String>,
    pub threshold: f64,
    pub predictions: Vec<PredictionItem>,
}

/// A point of the probability history.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProbabilityPoint {
    pub ts_ms: i64,
    pub probability: f64,
}

/// One GPU's prediction and its probability history (last 7 days), with what a page
/// needs to present it: the model in use and the threshold a finding is raised at.
#[derive(Debug, Serialize, ToSchema)]
pub struct GpuPredictions {
    pub gpu: String,
    /// Version of the model in use (null: none trained yet, so nothing is scored).
    pub model: Option<String>,
    /// Horizon of the model in use, hours (null without a model).
    pub horizon_hours: Option<f64>,
    /// Probability at or above which a prediction opens an incident.
    pub threshold: f64,
    /// The latest prediction (null: not scored yet, or the GPU's data is not fresh).
    pub latest: Option<PredictionItem>,
    /// Stored and in-memory scores, oldest first.
    pub history: Vec<ProbabilityPoint>,
}

/// The model in use: version, creation time, threshold, training report.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelInfo {
    pub version: String,
    pub created_ms: i64,
    pub horizon_hours: f64,
    /// The model's own operating threshold.
    pub threshold: f64,
    /// The threshold in force (configuration may override the model's).
    pub threshold_in_force: f64,
    pub feature_count: usize,
    /// What the trainer measured (source, rows, failures, time-split test metrics);
    /// null for a caller confined to a tenant (it describes the whole fleet).
    #[schema(value_type = Object)]
    pub training: serde_json::Value,
}

fn predictor(state: &AppState) -> Result<Arc<Predictor>, ApiError> {
    state
        .predictor
        .clone()
        .ok_or_else(|| ApiError::not_found("no_predictor", "failure prediction does not run in this process"))
}

fn item(p: gpuwarden_predict::Prediction) -> PredictionItem {
    PredictionItem {
        gpu: p.gpu.to_string(),
        node: p.node,
        ts_ms: p.ts_ms,
        probability: p.probability,
        band: serde_json::to_value(p.band)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        top_features: p
            .top_features
            .into_iter()
            .map(|c| FeatureContribution {
                feature: c.feature,
                value: c.value,
                contribution: c.contribution,
            })
            .collect(),
        model_version: p.model_version,
    }
}

/// Every scored GPU's latest failure prediction, riskiest first.
#[utoipa::path(get, operation_id = "list_predictions", path = "/api/v1/predictions", tag = "predictions",
    responses((status = 200, description = "Success", body = PredictionList), (status = 404, description = "Prediction not running", body = super::dto::ErrorBody)))]
pub async fn list(State(state): State<AppState>, scope: CallerScope) -> Result<Json<PredictionList>, ApiError> {
    let p = predictor(&state)?;
    let visible = Visibility::new(&state, &scope);
    Ok(Json(PredictionList {
        model: p.model().map(|m| m.meta.version.clone()),
        threshold: p.threshold(),
        predictions: p
            .predictions()
            .into_iter()
            .filter(|x| visible.gpu(x.gpu.as_str(), Some(&x.node)))
            .map(item)
            .collect(),
    }))
}

/// One GPU's latest prediction and its stored probability history.
#[utoipa::path(get, operation_id = "get_gpu_predictions", path = "/api/v1/gpus/{uuid}/predictions", tag = "predictions",
    params(("uuid" = String, Path, description = "GPU UUID")),
    responses((status = 200, description = "Success", body = GpuPredictions), (status = 404, description = "Not found", body = super::dto::ErrorBody)))]
pub async fn gpu(
    State(state): State<AppState>,
    scope: CallerScope,
    Path(uuid): Path<String>,
) -> Result<Json<GpuPredictions>, ApiError> {
    let p = predictor(&state)?;
    // Outside the caller's scope: the same answer as a GPU never seen.
    if !Visibility::new(&state, &scope).gpu(&uuid, None) {
        return Err(ApiError::not_found("gpu_not_found", format!("no GPU {uuid}")));
    }
    let gpu = GpuUuid::new(&uuid);
    let (latest, memory) = p.gpu(&gpu);
    let store = state.store.clone();
    let to = state.clock.now_ms() + 1;
    let g = gpu.clone();
    let stored = tokio::task::spawn_blocking(move || {
        store.range(
            &g,
            &FieldName::Other(PROBABILITY_FIELD.into()),
            to - HISTORY_MS,
            to,
            2016,
        )
    })
    .await
    .map_err(|e| ApiError::internal("reading the probability history", e))?
    .map_err(|e| ApiError::internal("reading the probability history", e))?;
    // The store lags the scorer by up to one write; the in-memory tail fills the gap.
    let mut history: Vec<ProbabilityPoint> = stored
        .into_iter()
        .map(|pt| ProbabilityPoint {
            ts_ms: pt.ts_ms,
            probability: pt.value,
        })
        .collect();
    let last = history.last().map_or(i64::MIN, |pt| pt.ts_ms);
    history.extend(
        memory
            .into_iter()
            .filter(|pt| pt.ts_ms > last)
            .map(|pt| ProbabilityPoint {
                ts_ms: pt.ts_ms,
                probability: pt.probability,
            }),
    );
    if latest.is_none() && history.is_empty() && state.live.get(&uuid, state.clock.now_ms()).is_none() {
        return Err(ApiError::not_found("gpu_not_found", format!("no GPU {uuid}")));
    }
    let model = p.model();
    Ok(Json(GpuPredictions {
        gpu: uuid,
        model: model.as_ref().map(|m| m.meta.version.clone()),
        horizon_hours: model.as_ref().map(|m| m.meta.horizon_hours),
        threshold: p.threshold(),
        latest: latest.map(item),
        history,
    }))
}

/// The failure model in use.
#[utoipa::path(get, operation_id = "get_current_model", path = "/api/v1/models/current", tag = "predictions",
    responses((status = 200, description = "Success", body = ModelInfo), (status = 404, description = "No model", body = super::dto::ErrorBody)))]
pub async fn current_model(State(state): State<AppState>, scope: CallerScope) -> Result<Json<ModelInfo>, ApiError> {
    let p = predictor(&state)?;
    let m = p
        .model()
        .ok_or_else(|| ApiError::not_found("no_model", "no failure model loaded (run `gpuwarden train`)"))?;
    Ok(Json(ModelInfo {
        version: m.meta.version.clone(),
        created_ms: m.meta.created_ms,
        horizon_hours: m.meta.horizon_hours,
        threshold: m.meta.threshold,
        threshold_in_force: p.threshold(),
        feature_count: m.meta.feature_names.len(),
        // The training report counts the fleet's GPUs and failures: a fleet-wide figure
        // that a tenant does not get.
        training: if scope.is_restricted() {
            serde_json::Value::Null
        } else {
            serde_json::to_value(&m.meta.training).unwrap_or(serde_json::Value::Null)
        },
    }))
}
