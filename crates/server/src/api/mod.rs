//! Routes of the API, and the state they share.

mod gpus;
mod system;

use axum::routing::get;
use axum::Router;
use gpuwarden_collect::scrape::TargetStates;
use gpuwarden_model::Clock;
use gpuwarden_pipeline::LiveFleet;
use gpuwarden_store::Store;
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// Everything the handlers read.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub live: Arc<LiveFleet>,
    pub targets: TargetStates,
    pub registry: Arc<Registry>,
    pub clock: Arc<dyn Clock>,
    /// Called before `/metrics` is rendered, to refresh time-dependent gauges.
    pub before_metrics: Arc<dyn Fn() + Send + Sync>,
    pub started_ms: i64,
}

/// The API router. `extra` is merged in (e.g. the simulator's control routes).
pub fn router(state: AppState, extra: Option<Router>) -> Router {
    let api = Router::new()
        .route("/healthz", get(system::healthz))
        .route("/metrics", get(system::metrics))
        .route("/api/v1/gpus", get(gpus::list))
        .route("/api/v1/gpus/{uuid}", get(gpus::get_one))
        .route("/api/v1/gpus/{uuid}/series", get(gpus::series))
        .route("/api/v1/gpus/{uuid}/events", get(gpus::events))
        .route("/api/v1/targets", get(system::targets))
        .merge(crate::ui::router())
        .fallback(system::not_found)
        .with_state(state);
    match extra {
        Some(extra) => api.merge(extra),
        None => api,
    }
}
