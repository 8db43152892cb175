//! `/api/v1/gpus…`: the fleet's GPUs, their latest values, series and events.

use super::AppState;
use crate::scope::CallerScope;
use crate::time_param::parse_time;
use crate::ApiError;
use axum::extract::{Path, Query, State};
use axum::Json;
use gpuwarden_model::{FieldName, GpuUuid};
use gpuwarden_pipeline::GpuView;
use serde::{Deserialize, Serialize};

const DEFAULT_LIMIT: usize = 1000;
const MAX_LIMIT: usize = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only GPUs of this node.
    node: Option<String>,
    /// `true`: only stale GPUs; `false`: only fresh ones.
    stale: Option<bool>,
    limit: Option<usize>,
    offset: Option<usize>,
}

#[derive(Serialize)]
pub struct GpuList {
    gpus: Vec<GpuView>,
    total: usize,
    limit: usize,
    offset: usize,
}

pub async fn list(
    State(state): State<AppState>,
    scope: CallerScope,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<GpuList>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(
            "bad_limit",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let offset = params.offset.unwrap_or(0);
    let all: Vec<GpuView> = state
        .live
        .snapshot(state.clock.now_ms())
        .into_iter()
        .filter(|g| scope.allows(&g.identity))
        .filter(|g| params.node.as_ref().is_none_or(|n| &g.identity.node == n))
        .filter(|g| params.stale.is_none_or(|s| g.stale == s))
        .collect();
    let total = all.len();
    let gpus = all.into_iter().skip(offset).take(limit).collect();
    Ok(Json(GpuList {
        gpus,
        total,
        limit,
        offset,
    }))
}

fn find_gpu(state: &AppState, scope: &CallerScope, uuid: &str) -> Result<GpuView, ApiError> {
    state
        .live
        .get(uuid, state.clock.now_ms())
        .filter(|g| scope.allows(&g.identity))
        .ok_or_else(|| ApiError::not_found("gpu_not_found", format!("no GPU with UUID '{uuid}'")))
}

pub async fn get_one(
    State(state): State<AppState>,
    scope: CallerScope,
    Path(uuid): Path<String>,
) -> Result<Json<GpuView>, ApiError> {
    find_gpu(&state, &scope, &uuid).map(Json)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesParams {
    /// dcgm-exporter field name, e.g. `DCGM_FI_DEV_GPU_TEMP`.
    field: Option<String>,
    from: Option<String>,
    to: Option<String>,
    max_points: Option<usize>,
}

#[derive(Serialize)]
pub struct SeriesBody {
    gpu: String,
    field: String,
    from: i64,
    to: i64,
    points: Vec<[f64; 2]>,
}

/// The default window ends just after the GPU's latest sample, so it works the same when
/// the simulator runs faster than wall time.
fn window(params_from: Option<&str>, params_to: Option<&str>, gpu: &GpuView) -> Result<(i64, i64), ApiError> {
    let anchor = gpu.last_seen_ms + 1;
    let to = match params_to {
        Some(s) => parse_time(s, anchor).map_err(|m| ApiError::bad_request("bad_time", format!("to: {m}")))?,
        None => anchor,
    };
    let from = match params_from {
        Some(s) => parse_time(s, anchor).map_err(|m| ApiError::bad_request("bad_time", format!("from: {m}")))?,
        None => to - 3_600_000,
    };
    if from >= to {
        return Err(ApiError::bad_request("bad_time", "from must be before to"));
    }
    Ok((from, to))
}

pub async fn series(
    State(state): State<AppState>,
    scope: CallerScope,
    Path(uuid): Path<String>,
    params: Result<Query<SeriesParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SeriesBody>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let gpu = find_gpu(&state, &scope, &uuid)?;
    let Some(field) = params.field.clone() else {
        return Err(ApiError::bad_request(
            "missing_field",
            "query parameter 'field' is required, e.g. field=DCGM_FI_DEV_GPU_TEMP",
        ));
    };
    let (from, to) = window(params.from.as_deref(), params.to.as_deref(), &gpu)?;
    let max_points = params.max_points.unwrap_or(1000).clamp(1, 100_000);
    let store = state.store.clone();
    let field_name = FieldName::parse(&field);
    let gpu_uuid = GpuUuid::new(&uuid);
    let points = tokio::task::spawn_blocking(move || store.range(&gpu_uuid, &field_name, from, to, max_points))
        .await
        .map_err(|e| ApiError::internal("reading series", e))?
        .map_err(|e| ApiError::internal("reading series", e))?;
    Ok(Json(SeriesBody {
        gpu: uuid,
        field,
        from,
        to,
        points: points.iter().map(|p| [p.ts_ms as f64, p.value]).collect(),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventParams {
    from: Option<String>,
    to: Option<String>,
}

pub async fn events(
    State(state): State<AppState>,
    scope: CallerScope,
    Path(uuid): Path<String>,
    params: Result<Query<EventParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let gpu = find_gpu(&state, &scope, &uuid)?;
    let (from, to) = match (params.from.as_deref(), params.to.as_deref()) {
        (None, None) => (i64::MIN, i64::MAX),
        (f, t) => window(f, t, &gpu)?,
    };
    let store = state.store.clone();
    let gpu_uuid = GpuUuid::new(&uuid);
    let events = tokio::task::spawn_blocking(move || store.events(Some(&gpu_uuid), from, to))
        .await
        .map_err(|e| ApiError::internal("reading events", e))?
        .map_err(|e| ApiError::internal("reading events", e))?;
    Ok(Json(serde_json::json!({ "gpu": uuid, "events": events })))
}
