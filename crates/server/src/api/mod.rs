//! Routes of the API, and the state they share.

pub(crate) mod audit;
pub mod dto;
pub(crate) mod fleet;
pub(crate) mod gpus;
pub(crate) mod incidents;
pub mod ingest;
pub(crate) mod notifications;
pub(crate) mod predictions;
pub(crate) mod silences;
pub(crate) mod system;

use axum::routing::{delete, get, post};
use axum::Router;
use gpuwarden_collect::scrape::TargetStates;
use gpuwarden_model::Clock;
use gpuwarden_pipeline::{Analysis, LiveFleet};
use gpuwarden_store::Store;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use utoipa_swagger_ui::SwaggerUi;

/// Everything the handlers read.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub live: Arc<LiveFleet>,
    pub analysis: Arc<Analysis>,
    pub targets: TargetStates,
    pub registry: Arc<Registry>,
    pub clock: Arc<dyn Clock>,
    /// Called before `/metrics` is rendered, to refresh time-dependent gauges.
    pub before_metrics: Arc<dyn Fn() + Send + Sync>,
    pub started_ms: i64,
    /// The push endpoints (`gpuwarden serve`); `None` answers them with 404.
    pub ingest: Option<Arc<ingest::IngestState>>,
    /// The notification subsystem (outbox, silences); `None` answers its routes with 404.
    pub notifier: Option<Arc<gpuwarden_notify::Notifier>>,
    /// Rendered fleet-wide answers, valid until the fleet changes.
    pub cache: Arc<crate::cache::JsonCache>,
    /// Live failure prediction (`gpuwarden run`); `None` answers its routes with 404.
    pub predictor: Option<Arc<gpuwarden_predict::Predictor>>,
    /// The names the `Host` header may carry (see [`crate::request_guard`]).
    pub allowed_hosts: Arc<crate::request_guard::AllowedHosts>,
    /// The audit trail: changes and denied requests are recorded in it (see
    /// [`crate::audit`]) and `GET /api/v1/audit` lists it; `None` records nothing and
    /// answers that route with 404.
    pub audit: Option<Arc<gpuwarden_audit::AuditLog>>,
}

impl AppState {
    /// The version a cached fleet-wide answer depends on.
    pub(crate) fn cache_version(&self) -> crate::cache::Version {
        crate::cache::Version {
            live: self.live.generation(),
            analysis: self.analysis.generation(),
            second: self.clock.now_ms().div_euclid(1000),
        }
    }

    /// Renders `value` as JSON through the cache under `key` for callers of `scope`.
    /// The scope is part of every key (first, and unambiguous), so one tenant's answer
    /// is never served to another; plain and gzip answers have distinct prefixes, so a
    /// query string cannot name the other's key either.
    pub(crate) fn cached_json<T: serde::Serialize>(
        &self,
        scope: &crate::scope::CallerScope,
        key: &str,
        gzip: crate::cache::AcceptsGzip,
        render: impl FnOnce() -> Result<T, crate::ApiError>,
    ) -> Result<axum::response::Response, crate::ApiError> {
        let version = self.cache_version();
        let key = format!("{}\u{0}{key}", scope.cache_key());
        let plain = self.cache.get_or_render(version, &format!("p\u{0}{key}"), || {
            let value = render()?;
            serde_json::to_vec(&value).map_err(|e| crate::ApiError::internal("encoding the answer", e))
        })?;
        if !gzip.0 {
            return Ok(crate::cache::json_response(plain, false));
        }
        let zipped = self.cache.get_or_render(version, &format!("z\u{0}{key}"), || {
            crate::cache::gzip(&plain).map_err(|e| crate::ApiError::internal("compressing the answer", e))
        })?;
        Ok(crate::cache::json_response(zipped, true))
    }
}

/// Refuses callers confined to a tenant (for routes that cannot be scoped).
async fn refuse_tenants(
    scope: crate::scope::CallerScope,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match scope.refuse_if_tenant("this route acts on the whole fleet") {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// The API router without authentication (see [`router_with_auth`]).
pub fn router(state: AppState, extra: Option<Router>) -> Router {
    router_with_auth(state, extra, None, None)
}

/// The API router. `extra` is merged in (e.g. the simulator's control routes). All of
/// it is behind [`crate::request_guard`] (content type, `Origin`, `Host`), and, when
/// `auth` is given, behind [`crate::auth::middleware`] inside it (tokens, sessions,
/// roles). `/api/v1/auth/*` is served either way (without `auth` its token and session
/// routes answer 404).
///
/// Layers, outermost first: the audit trail (so every refusal below is recorded), the
/// per-address rate limit, the request guard, authentication, the per-principal rate
/// limit (it needs the principal authentication found), the handlers.
pub fn router_with_auth(
    state: AppState,
    extra: Option<Router>,
    auth: Option<Arc<crate::auth::Auth>>,
    limits: Option<Arc<crate::rate_limit::RateLimits>>,
) -> Router {
    let hosts = state.allowed_hosts.clone();
    let audit = state.audit.clone();
    let api = Router::new()
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/metrics", get(system::metrics))
        .route("/api/v1/gpus", get(gpus::list))
        .route("/api/v1/gpus/{uuid}", get(gpus::get_one))
        .route("/api/v1/gpus/{uuid}/series", get(gpus::series))
        .route("/api/v1/gpus/{uuid}/events", get(gpus::events))
        .route("/api/v1/gpus/{uuid}/health/history", get(gpus::health_history))
        .route("/api/v1/gpus/{uuid}/predictions", get(predictions::gpu))
        .route("/api/v1/predictions", get(predictions::list))
        .route("/api/v1/models/current", get(predictions::current_model))
        .route("/api/v1/nodes", get(fleet::nodes))
        .route("/api/v1/fleet/summary", get(fleet::summary))
        .route("/api/v1/incidents", get(incidents::list))
        .route("/api/v1/incidents/{id}", get(incidents::get_one))
        .route("/api/v1/incidents/{id}/ack", post(incidents::ack))
        .route("/api/v1/incidents/{id}/resolve", post(incidents::resolve))
        .route("/api/v1/targets", get(system::targets))
        .route("/api/v1/notifications", get(notifications::list))
        .route("/api/v1/silences", get(silences::list).post(silences::create))
        .route("/api/v1/silences/{id}", delete(silences::expire))
        .route("/api/v1/audit", get(audit::list))
        .route("/api/v1/ingest", post(ingest::push))
        .route("/api/v1/write", post(ingest::remote_write))
        .merge(crate::ui::router())
        .fallback(system::not_found)
        .with_state(state)
        // Serves the document at /api/openapi.json and Swagger UI (assets in the binary)
        // at /api/docs.
        .merge(SwaggerUi::new("/api/docs").url("/api/openapi.json", crate::openapi::document()));
    let api = api
        .merge(crate::auth::api::routes(auth.clone()))
        .merge(crate::auth::oidc::login::routes(auth.clone()));
    let api = match extra {
        // The extra routes (the simulator's fault injection and ground truth) act on and
        // describe the whole fleet, without a notion of scope: not for tenants.
        Some(extra) => api.merge(extra.layer(axum::middleware::from_fn(refuse_tenants))),
        None => api,
    };
    let api = match &limits {
        Some(l) => crate::rate_limit::wrap_principals(api, l.clone()),
        None => api,
    };
    // A route layer: it runs after routing, so the route template is known.
    let api = match auth {
        Some(auth) => api.route_layer(axum::middleware::from_fn_with_state(
            auth,
            crate::auth::middleware::authenticate,
        )),
        None => api,
    };
    let api = crate::request_guard::wrap(api, hosts);
    let api = match limits {
        Some(l) => crate::rate_limit::wrap_addresses(api, l),
        None => api,
    };
    crate::audit::wrap(api, audit)
}
