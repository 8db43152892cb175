//! The simulator's control API, merged into gpuwarden's API server:
//! `POST /api/v1/simulation/faults`, `GET /api/v1/simulation/labels`,
//! `GET /api/v1/simulation/gpus`. Errors are JSON with stable codes; no input panics.

use crate::error::SimError;
use crate::server::SimHandle;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gpuwarden_model::{FaultKind, GpuUuid};
use serde::Deserialize;
use serde_json::json;

/// Longest fault an API caller may ask for: 30 simulated days.
const MAX_DURATION_S: f64 = 30.0 * 86_400.0;

/// Body of `POST /api/v1/simulation/faults`.
#[derive(Debug, Deserialize)]
struct InjectRequest {
    gpu: String,
    kind: String,
    #[serde(default)]
    duration_s: Option<f64>,
}

/// The control routes, bound to a running simulator.
pub fn control_router(handle: SimHandle) -> Router {
    Router::new()
        .route("/api/v1/simulation/faults", post(inject))
        .route("/api/v1/simulation/labels", get(labels))
        .route("/api/v1/simulation/gpus", get(gpus))
        .with_state(handle)
}

fn error(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.to_string()}})),
    )
        .into_response()
}

async fn inject(State(handle): State<SimHandle>, body: Bytes) -> Response {
    let req: InjectRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("invalid request body: {e}"),
            )
        }
    };
    let kind: FaultKind = match req.kind.parse() {
        Ok(k) => k,
        Err(e) => return error(StatusCode::BAD_REQUEST, "unknown_fault_kind", e),
    };
    let duration_ms = match req.duration_s {
        None => crate::faults::default_injected_duration_ms(kind),
        Some(s) if s.is_finite() && s > 0.0 && s <= MAX_DURATION_S => Some((s * 1000.0) as i64),
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("duration_s must be a number in (0, {MAX_DURATION_S}]"),
            )
        }
    };
    let gpu = GpuUuid::new(&req.gpu);
    let res = handle
        .run_blocking(move |h| h.inject_for(&gpu, kind, duration_ms))
        .await;
    match res {
        Some(Ok(label)) => (StatusCode::CREATED, Json(label)).into_response(),
        Some(Err(e @ SimError::GpuNotFound(_))) => error(StatusCode::NOT_FOUND, "gpu_not_found", e),
        Some(Err(e @ SimError::AlreadyActive { .. })) => error(StatusCode::CONFLICT, "fault_already_active", e),
        Some(Err(e @ SimError::NotApplicable { .. })) => error(StatusCode::CONFLICT, "fault_not_applicable", e),
        Some(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
        None => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "injection task failed"),
    }
}

async fn labels(State(handle): State<SimHandle>) -> Response {
    Json(handle.labels()).into_response()
}

async fn gpus(State(handle): State<SimHandle>) -> Response {
    Json(handle.gpus()).into_response()
}
