//! `/api/v1/gpus…`: the fleet's GPUs with their health, series, events and health history.

use super::dto::{EventList, GpuItem, GpuList, HealthHistory, SeriesBody};
use super::AppState;
use crate::cache::AcceptsGzip;
use crate::scope::CallerScope;
use crate::time_param::parse_time;
use crate::visibility::Visibility;
use crate::ApiError;
use axum::extract::{Path, Query, RawQuery, State};
use axum::response::Response;
use axum::Json;
use gpuwarden_detect::{Evaluation, GpuHealth};
use gpuwarden_incident::IncidentFilter;
use gpuwarden_model::{Dimension, FieldName, Finding, GpuUuid, HealthState, Incident};
use gpuwarden_pipeline::analyze::{dimension_field, SCORE_FIELD};
use gpuwarden_pipeline::{GpuView, Staleness};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};

use utoipa::IntoParams;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;

pub(crate) type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

pub(crate) fn query<T>(q: QueryResult<T>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::bad_request("bad_query", e.body_text()))
}

pub(crate) fn check_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(
            "bad_limit",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    Ok(limit)
}

/// The largest `offset`, `max_points` or sequence number the document admits (2^53 - 1,
/// exact in every JSON client).
pub(crate) const MAX_OFFSET: usize = (1 << 53) - 1;

pub(crate) fn check_offset(offset: Option<usize>) -> Result<usize, ApiError> {
    match offset.unwrap_or(0) {
        o if o > MAX_OFFSET => Err(ApiError::bad_request(
            "bad_offset",
            format!("offset must be at most {MAX_OFFSET}"),
        )),
        o => Ok(o),
    }
}

/// `max_points` as documented (1 to 2^53 - 1), clamped to what one answer returns.
fn check_max_points(max_points: Option<usize>, default: usize) -> Result<usize, ApiError> {
    match max_points.unwrap_or(default) {
        0 => Err(ApiError::bad_request("bad_max_points", "max_points must be at least 1")),
        m if m > MAX_OFFSET => Err(ApiError::bad_request(
            "bad_max_points",
            format!("max_points must be at most {MAX_OFFSET}"),
        )),
        m => Ok(m.min(100_000)),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only GPUs of this node.
    node: Option<String>,
    /// `true`: only stale GPUs; `false`: only fresh ones.
    stale: Option<bool>,
    /// Only GPUs in this health state (healthy, degraded, unhealthy, unknown).
    state: Option<HealthState>,
    /// Page size (1–10000, default 100).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
    /// Items to skip.
    #[param(maximum = 9007199254740991_u64)]
    offset: Option<usize>,
}

/// List GPUs with identity, freshness, latest values and health.
#[utoipa::path(get, operation_id = "list_gpus", path = "/api/v1/gpus", tag = "gpus", params(ListParams),
    responses((status = 200, description = "Success", body = GpuList), (status = 400, description = "Bad request: the error names the parameter and what is expected", body = super::dto::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    scope: CallerScope,
    gzip: AcceptsGzip,
    RawQuery(raw): RawQuery,
    params: QueryResult<ListParams>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let limit = check_limit(params.limit)?;
    let offset = check_offset(params.offset)?;
    let key = format!("gpus?{}", raw.unwrap_or_default());
    state.cached_json(&scope, &key, gzip, || {
        Ok(list_page(&state, &scope, &params, offset, limit))
    })
}

/// The health of one GPU in an evaluation (its GPUs are sorted by node, then UUID).
pub(crate) fn health_of<'a>(evaluation: &'a Evaluation, node: &str, uuid: &GpuUuid) -> Option<&'a GpuHealth> {
    match evaluation
        .gpus
        .binary_search_by(|g| (g.node.as_str(), &g.uuid).cmp(&(node, uuid)))
    {
        Ok(i) => evaluation.gpus.get(i),
        // Moved to another node since the evaluation: look it up by UUID alone.
        Err(_) => evaluation.gpus.iter().find(|g| &g.uuid == uuid),
    }
}

/// The state a GPU shows in the API (stale data is `unknown` whatever its last score).
fn shown_state(health: Option<&GpuHealth>, staleness: Staleness) -> HealthState {
    match health {
        Some(h) if staleness == Staleness::Fresh => h.state,
        _ => HealthState::Unknown,
    }
}

/// One page of `/api/v1/gpus`: filters run over references into the live view, and
/// only the page's GPUs are copied and rendered, so the cost of a page of 100 does not
/// grow with the fleet's render cost (scrapes change the view every few milliseconds in
/// a large fleet, so a cache of whole-fleet answers rarely hits).
fn list_page(state: &AppState, scope: &CallerScope, params: &ListParams, offset: usize, limit: usize) -> GpuList {
    let evaluation = state.analysis.latest();
    let page = state.live.page(
        state.clock.now_ms(),
        |g| {
            scope.allows(g.identity)
                && params.node.as_ref().is_none_or(|n| &g.identity.node == n)
                && params.stale.is_none_or(|s| (g.staleness != Staleness::Fresh) == s)
                && params.state.is_none_or(|s| {
                    shown_state(health_of(&evaluation, &g.identity.node, &g.identity.uuid), g.staleness) == s
                })
        },
        offset,
        limit,
    );
    let on_page: HashSet<&GpuUuid> = page.gpus.iter().map(|v| &v.identity.uuid).collect();
    let mut findings: HashMap<&GpuUuid, Vec<&Finding>> = HashMap::new();
    for f in &evaluation.findings {
        if let Some(g) = f.gpu.as_ref().filter(|g| on_page.contains(g)) {
            findings.entry(g).or_default().push(f);
        }
    }
    // A GPU's status is its health raised by its open incidents (security, prediction,
    // anomaly): one pass over the active incidents, keeping the page's — and only those
    // the caller may see (a security incident about the previous tenant's workload on
    // this GPU is not this tenant's to read).
    let visible = Visibility::new(state, scope);
    let gpus = state.analysis.with_incidents(|engine| {
        let mut incidents: HashMap<&GpuUuid, Vec<&Incident>> = HashMap::new();
        for i in engine.list(&IncidentFilter::active()) {
            if let Some(g) = i.gpu.as_ref().filter(|g| on_page.contains(g) && visible.incident(i)) {
                incidents.entry(g).or_default().push(i);
            }
        }
        page.gpus
            .iter()
            .map(|view| {
                let h = health_of(&evaluation, &view.identity.node, &view.identity.uuid);
                let f = findings.get(&view.identity.uuid).map(Vec::as_slice).unwrap_or(&[]);
                let i = incidents.get(&view.identity.uuid).map(Vec::as_slice).unwrap_or(&[]);
                GpuItem::new(view.clone(), h, f, i)
            })
            .collect()
    });
    GpuList {
        gpus,
        total: page.total,
        limit,
        offset,
    }
}

fn find_view(state: &AppState, scope: &CallerScope, uuid: &str) -> Result<GpuView, ApiError> {
    state
        .live
        .get(uuid, state.clock.now_ms())
        .filter(|g| scope.allows(&g.identity))
        .ok_or_else(|| ApiError::not_found("gpu_not_found", format!("no GPU with UUID '{uuid}'")))
}

/// The earliest instant of a GPU's history the caller may read. A tenant that sees the
/// GPU through its workload (namespace, Slurm account) rather than by owning its node
/// reads only since that workload arrived: what ran there before was another tenant's.
fn history_floor(scope: &CallerScope, view: &GpuView) -> i64 {
    if scope.is_restricted() && !scope.owns_node(&view.identity.node) {
        view.workload_since_ms
    } else {
        i64::MIN
    }
}

/// One GPU.
#[utoipa::path(get, operation_id = "get_gpu", path = "/api/v1/gpus/{uuid}", tag = "gpus",
    params(("uuid" = String, Path, description = "GPU UUID")),
    responses((status = 200, description = "Success", body = GpuItem), (status = 404, description = "Not found", body = super::dto::ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    scope: CallerScope,
    Path(uuid): Path<String>,
) -> Result<Json<GpuItem>, ApiError> {
    let view = find_view(&state, &scope, &uuid)?;
    let evaluation = state.analysis.latest();
    let health = evaluation.gpus.iter().find(|g| g.uuid.as_str() == uuid);
    let findings: Vec<&Finding> = evaluation
        .findings
        .iter()
        .filter(|f| f.gpu.as_ref().is_some_and(|g| g.as_str() == uuid))
        .collect();
    let gpu = GpuUuid::new(&uuid);
    let visible = Visibility::new(&state, &scope);
    let item = state.analysis.with_incidents(|engine| {
        let incidents: Vec<&Incident> = engine
            .list(&IncidentFilter::active())
            .into_iter()
            .filter(|i| i.gpu.as_ref() == Some(&gpu) && visible.incident(i))
            .collect();
        GpuItem::new(view, health, &findings, &incidents)
    });
    Ok(Json(item))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SeriesParams {
    /// dcgm-exporter field name, e.g. `DCGM_FI_DEV_GPU_TEMP` (required).
    #[param(required = true, min_length = 1)]
    field: Option<String>,
    /// Start: ms since the epoch, RFC 3339, `now`, or `-1h` (default: 1 h before `to`).
    #[param(value_type = Option<crate::time_param::TimeString>, inline)]
    from: Option<String>,
    /// End (exclusive): same forms (default: just after the GPU's latest sample).
    #[param(value_type = Option<crate::time_param::TimeString>, inline)]
    to: Option<String>,
    /// Downsample to at most this many points (default 1000).
    #[param(minimum = 1, maximum = 9007199254740991_u64)]
    max_points: Option<usize>,
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
        None => to.saturating_sub(3_600_000),
    };
    if from >= to {
        return Err(ApiError::bad_request("bad_time", "from must be before to"));
    }
    Ok((from, to))
}

async fn read_range(
    state: &AppState,
    uuid: &str,
    field: FieldName,
    from: i64,
    to: i64,
    max_points: usize,
) -> Result<Vec<[f64; 2]>, ApiError> {
    let store = state.store.clone();
    let gpu = GpuUuid::new(uuid);
    let points = tokio::task::spawn_blocking(move || store.range(&gpu, &field, from, to, max_points))
        .await
        .map_err(|e| ApiError::internal("reading series", e))?
        .map_err(|e| ApiError::internal("reading series", e))?;
    Ok(points.iter().map(|p| [p.ts_ms as f64, p.value]).collect())
}

/// One field of one GPU over time, from the store.
#[utoipa::path(get, operation_id = "get_gpu_series", path = "/api/v1/gpus/{uuid}/series", tag = "gpus",
    params(("uuid" = String, Path, description = "GPU UUID"), SeriesParams),
    responses((status = 200, description = "Success", body = SeriesBody), (status = 400, description = "Bad request: the error names the parameter and what is expected", body = super::dto::ErrorBody), (status = 404, description = "Not found", body = super::dto::ErrorBody)))]
pub async fn series(
    State(state): State<AppState>,
    scope: CallerScope,
    Path(uuid): Path<String>,
    params: QueryResult<SeriesParams>,
) -> Result<Json<SeriesBody>, ApiError> {
    let params = query(params)?;
    let view = find_view(&state, &scope, &uuid)?;
    let Some(field) = params.field.clone().filter(|f| !f.is_empty()) else {
        return Err(ApiError::bad_request(
            "missing_field",
            "query parameter 'field' is required, e.g. field=DCGM_FI_DEV_GPU_TEMP",
        ));
    };
    let (from, to) = window(params.from.as_deref(), params.to.as_deref(), &view)?;
    let from = from.max(history_floor(&scope, &view));
    let max_points = check_max_points(params.max_points, 1000)?;
    let points = read_range(&state, &uuid, FieldName::parse(&field), from, to, max_points).await?;
    Ok(Json(SeriesBody {
        gpu: uuid,
        field,
        from,
        to,
        points,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventParams {
    /// Start (default: all).
    #[param(value_type = Option<crate::time_param::TimeString>, inline)]
    from: Option<String>,
    /// End (default: all).
    #[param(value_type = Option<crate::time_param::TimeString>, inline)]
    to: Option<String>,
}

/// Events of one GPU (XIDs, disappearance, …), oldest first.
#[utoipa::path(get, operation_id = "get_gpu_events", path = "/api/v1/gpus/{uuid}/events", tag = "gpus",
    params(("uuid" = String, Path, description = "GPU UUID"), EventParams),
    responses((status = 200, description = "Success", body = EventList), (status = 404, description = "Not found", body = super::dto::ErrorBody)))]
pub async fn events(
    State(state): State<AppState>,
    scope: CallerScope,
    Path(uuid): Path<String>,
    params: QueryResult<EventParams>,
) -> Result<Json<EventList>, ApiError> {
    let params = query(params)?;
    let view = find_view(&state, &scope, &uuid)?;
    let (from, to) = match (params.from.as_deref(), params.to.as_deref()) {
        (None, None) => (i64::MIN, i64::MAX),
        (f, t) => window(f, t, &view)?,
    };
    let from = from.max(history_floor(&scope, &view));
    let store = state.store.clone();
    let gpu_uuid = GpuUuid::new(&uuid);
    let events = tokio::task::spawn_blocking(move || store.events(Some(&gpu_uuid), from, to))
        .await
        .map_err(|e| ApiError::internal("reading events", e))?
        .map_err(|e| ApiError::internal("reading events", e))?;
    Ok(Json(EventList { gpu: uuid, events }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    /// Start (default: 1 h before `to`).
    #[param(value_type = Option<crate::time_param::TimeString>, inline)]
    from: Option<String>,
    /// End (default: just after the latest sample).
    #[param(value_type = Option<crate::time_param::TimeString>, inline)]
    to: Option<String>,
    /// Downsample to at most this many points per series (default 500).
    #[param(minimum = 1, maximum = 9007199254740991_u64)]
    max_points: Option<usize>,
}

/// The GPU's health score over time, overall and per dimension.
#[utoipa::path(get, operation_id = "get_gpu_health_history", path = "/api/v1/gpus/{uuid}/health/history", tag = "gpus",
    params(("uuid" = String, Path, description = "GPU UUID"), HistoryParams),
    responses((status = 200, description = "Success", body = HealthHistory), (status = 404, description = "Not found", body = super::dto::ErrorBody)))]
pub async fn health_history(
    State(state): State<AppState>,
    scope: CallerScope,
    Path(uuid): Path<String>,
    params: QueryResult<HistoryParams>,
) -> Result<Json<HealthHistory>, ApiError> {
    let params = query(params)?;
    let view = find_view(&state, &scope, &uuid)?;
    let mut anchor_view = view.clone();
    // Scores are stamped at evaluation time, which can be after the latest sample.
    anchor_view.last_seen_ms = anchor_view.last_seen_ms.max(state.analysis.now_ms());
    let (from, to) = window(params.from.as_deref(), params.to.as_deref(), &anchor_view)?;
    let from = from.max(history_floor(&scope, &view));
    let max_points = check_max_points(params.max_points, 500)?;
    let points = read_range(
        &state,
        &uuid,
        FieldName::Other(SCORE_FIELD.into()),
        from,
        to,
        max_points,
    )
    .await?;
    let mut dimensions = BTreeMap::new();
    for d in Dimension::ALL {
        let pts = read_range(
            &state,
            &uuid,
            FieldName::Other(dimension_field(d).into()),
            from,
            to,
            max_points,
        )
        .await?;
        dimensions.insert(d.as_str().to_string(), pts);
    }
    Ok(Json(HealthHistory {
        gpu: uuid,
        from,
        to,
        points,
        dimensions,
    }))
}

/// Sort key: by status (health raised by open incidents), unhealthy first, then
/// degraded, unknown, healthy; lower score first.
pub(crate) fn worst_first(items: &mut [GpuItem]) {
    items.sort_by(|a, b| {
        let rank = super::dto::state_rank;
        rank(a.status.state).cmp(&rank(b.status.state)).then(
            a.health
                .score
                .unwrap_or(f64::MAX)
                .total_cmp(&b.health.score.unwrap_or(f64::MAX)),
        )
    });
}
