//! `/healthz`, `/readyz`, `/metrics`, `/api/v1/targets`, the JSON 404, and the documentation of
//! the simulator's routes (served by the simulator's own router when it runs).

use super::AppState;
use crate::scope::CallerScope;
use crate::visibility::Visibility;
use crate::ApiError;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct Healthz {
    status: &'static str,
    version: &'static str,
    uptime_s: i64,
    gpus: usize,
    gpus_stale: usize,
}

/// Liveness, with GPU counts (a tenant's: only its GPUs).
#[utoipa::path(get, operation_id = "healthz", path = "/healthz", tag = "system", responses((status = 200, description = "Success", body = Healthz)))]
pub async fn healthz(State(state): State<AppState>, scope: CallerScope) -> Json<Healthz> {
    let now = state.clock.now_ms();
    let (gpus, stale) = if scope.is_restricted() {
        let mine: Vec<_> = state
            .live
            .snapshot(now)
            .into_iter()
            .filter(|g| scope.allows(&g.identity))
            .collect();
        (mine.len(), mine.iter().filter(|g| g.stale).count())
    } else {
        state.live.counts(now)
    };
    Json(Healthz {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        uptime_s: (now - state.started_ms) / 1000,
        gpus,
        gpus_stale: stale,
    })
}

#[derive(Serialize, ToSchema)]
pub struct Readyz {
    /// `ready`, or `not_ready` while the store's writes fail.
    status: &'static str,
    /// `ok`, or `failing` (disk full, I/O error: new data is not being kept).
    store: &'static str,
    /// When writes began failing (Unix ms), the latest error, and how many failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    failing_since_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failed_writes: Option<u64>,
}

/// Readiness: 200 while the store accepts writes, 503 while they fail (a full disk, an
/// I/O error), so an orchestrator stops routing pushes to a replica that cannot keep
/// them and an operator's probe turns red. Liveness stays `/healthz`: a failing disk is
/// not cured by a restart, and killing the process would lose what it still holds.
#[utoipa::path(get, operation_id = "readyz", path = "/readyz", tag = "system", responses(
    (status = 200, description = "Ready: the store accepts writes", body = Readyz),
    (status = 503, description = "Not ready: the store's writes are failing", body = Readyz)))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.store.write_health() {
        gpuwarden_store::WriteHealth::Ok => (
            axum::http::StatusCode::OK,
            Json(Readyz {
                status: "ready",
                store: "ok",
                failing_since_ms: None,
                error: None,
                failed_writes: None,
            }),
        ),
        gpuwarden_store::WriteHealth::Failing {
            since_ms,
            error,
            failed_writes,
        } => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Json(Readyz {
                status: "not_ready",
                store: "failing",
                failing_since_ms: Some(since_ms),
                error: Some(error),
                failed_writes: Some(failed_writes),
            }),
        ),
    }
}

/// gpuwarden's own metrics and the derived health state: OpenMetrics text when the
/// scraper asks for it (`Accept: application/openmetrics-text`, as Prometheus does),
/// Prometheus text 0.0.4 otherwise.
#[utoipa::path(get, operation_id = "metrics", path = "/metrics", tag = "system",
    responses((status = 200, description = "OpenMetrics or Prometheus text", content_type = "text/plain")))]
pub async fn metrics(
    State(state): State<AppState>,
    scope: CallerScope,
    headers: axum::http::HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    // Fleet-wide by nature (every GPU's health gauges): authentication refuses it to
    // tenant principals; refused here too, so that no wiring can forget it.
    scope.refuse_if_tenant("/metrics describes the whole fleet")?;
    let before = state.before_metrics.clone();
    // Refreshing reads store stats from disk: keep it off the async workers.
    tokio::task::spawn_blocking(move || before())
        .await
        .map_err(|e| ApiError::internal("refreshing metrics", e))?;
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, &state.registry)
        .map_err(|e| ApiError::internal("encoding metrics", e))?;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    if crate::exposition::wants_openmetrics(accept) {
        Ok(([(header::CONTENT_TYPE, crate::exposition::OPENMETRICS)], body))
    } else {
        Ok((
            [(header::CONTENT_TYPE, crate::exposition::PROMETHEUS_TEXT)],
            crate::exposition::to_prometheus_text(&body),
        ))
    }
}

#[derive(Serialize, ToSchema)]
pub struct TargetList {
    /// Per-target scrape state: url, node_hint, source, up, last_scrape_ms,
    /// last_duration_ms, last_error, last_samples, scrapes_total, errors_total.
    #[schema(value_type = Vec<Object>)]
    targets: Vec<gpuwarden_collect::scrape::TargetState>,
    /// Per-source admission state, for every source of pages (scrape targets, pushing
    /// agents `agent://NODE/SOURCE`, remote_write senders): target, gpus held, refused
    /// samples by reason (too_far_ahead, too_old, gpu_limit, series_limit,
    /// impossible_value), last_refusal_reasons, last_refusal_ms, gpus_vanished.
    #[schema(value_type = Vec<Object>)]
    ingest: Vec<gpuwarden_pipeline::TargetIngestState>,
}

/// Scrape targets and their state (a tenant: only the targets of nodes it owns).
#[utoipa::path(get, operation_id = "list_targets", path = "/api/v1/targets", tag = "system", responses((status = 200, description = "Success", body = TargetList)))]
pub async fn targets(State(state): State<AppState>, scope: CallerScope) -> Json<TargetList> {
    let targets = state.targets.snapshot();
    let ingest = state.live.target_ingest_states();
    if !scope.is_restricted() {
        return Json(TargetList { targets, ingest });
    }
    // Targets reveal the fleet's layout and every GPU they serve: only the nodes the
    // tenant owns by `nodes`. An ingest source's node is the node of the scrape target
    // of the same URL, or the NODE of `agent://NODE/SOURCE`; else it is not shown.
    let visible = Visibility::new(&state, &scope);
    let node_of = |target: &str| -> Option<String> {
        targets
            .iter()
            .find(|t| t.url == target)
            .map(|t| t.node_hint.clone())
            .or_else(|| {
                target
                    .strip_prefix("agent://")
                    .and_then(|rest| rest.split('/').next())
                    .map(str::to_string)
            })
    };
    let ingest = ingest
        .into_iter()
        .filter(|i| visible.target_node(node_of(&i.target).as_deref()))
        .collect();
    let targets = targets
        .into_iter()
        .filter(|t| visible.target_node(Some(&t.node_hint)))
        .collect();
    Json(TargetList { targets, ingest })
}

pub async fn not_found() -> ApiError {
    ApiError::not_found(
        "not_found",
        "no such route; see /api/docs for the API, or /api/v1/gpus, /api/v1/incidents, /healthz, /metrics",
    )
}

/// Body of a fault injection.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct FaultRequest {
    /// GPU UUID.
    gpu: String,
    kind: gpuwarden_model::FaultKind,
    /// Optional duration in seconds (default depends on the kind), at most 30 days.
    #[schema(exclusive_minimum = 0, maximum = 2592000)]
    duration_s: Option<f64>,
}

/// Inject a fault into the simulated fleet (only when the simulator runs).
#[utoipa::path(post, operation_id = "inject_fault", path = "/api/v1/simulation/faults", tag = "simulation",
    request_body = FaultRequest,
    responses((status = 201, description = "Created", body = gpuwarden_model::FaultLabel), (status = 400, description = "Bad request: the error names the parameter and what is expected", body = super::dto::ErrorBody),
        (status = 404, description = "Not found", body = super::dto::ErrorBody), (status = 409, description = "Conflict: not possible in the current state", body = super::dto::ErrorBody)))]
#[allow(dead_code)]
pub async fn simulation_inject() {}

/// Ground truth of every simulated fault (only when the simulator runs).
#[utoipa::path(get, operation_id = "list_fault_labels", path = "/api/v1/simulation/labels", tag = "simulation",
    responses((status = 200, description = "Success", body = Vec<gpuwarden_model::FaultLabel>)))]
#[allow(dead_code)]
pub async fn simulation_labels() {}
