//! `/healthz`, `/metrics`, `/api/v1/targets` and the JSON 404.

use super::AppState;
use crate::ApiError;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

pub async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let now = state.clock.now_ms();
    let (gpus, stale) = state.live.counts(now);
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": (now - state.started_ms) / 1000,
        "gpus": gpus,
        "gpus_stale": stale,
    }))
}

pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let before = state.before_metrics.clone();
    // Refreshing reads store stats from disk: keep it off the async workers.
    tokio::task::spawn_blocking(move || before())
        .await
        .map_err(|e| ApiError::internal("refreshing metrics", e))?;
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, &state.registry)
        .map_err(|e| ApiError::internal("encoding metrics", e))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    ))
}

pub async fn targets(State(state): State<AppState>) -> impl IntoResponse {
    let targets = state.targets.snapshot();
    Json(json!({ "targets": targets }))
}

pub async fn not_found() -> ApiError {
    ApiError::not_found(
        "not_found",
        "no such route; see /api/v1/gpus, /api/v1/targets, /healthz, /metrics",
    )
}
