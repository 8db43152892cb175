//! The OpenAPI 3.1 document, generated from the handlers' annotations (utoipa) and served
//! at `/api/openapi.json`, with an interactive page at `/api/docs` (Swagger UI, vendored
//! into the binary: no CDN).

use crate::api::{dto, fleet, gpus, incidents, ingest, notifications, predictions, silences, system};
use crate::auth::api as auth;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "gpuwarden API",
        description = "GPU fleet health and abuse detection: GPUs with explained health scores, nodes, incidents. \
Errors are JSON `{\"error\": {\"code\", \"message\"}}` with stable codes; lists take `limit` and `offset`.",
        license(name = "Apache-2.0")
    ),
    paths(
        system::healthz,
        system::readyz,
        system::metrics,
        system::targets,
        gpus::list,
        gpus::get_one,
        gpus::series,
        gpus::events,
        gpus::health_history,
        fleet::summary,
        fleet::nodes,
        incidents::list,
        incidents::get_one,
        incidents::ack,
        incidents::resolve,
        system::simulation_inject,
        system::simulation_labels,
        ingest::push,
        ingest::remote_write,
        notifications::list,
        silences::list,
        silences::create,
        silences::expire,
        predictions::list,
        predictions::gpu,
        predictions::current_model,
        auth::whoami,
        auth::list_tokens,
        auth::create_token,
        auth::revoke_token,
        auth::sign_in,
        auth::sign_out,
    ),
    components(schemas(dto::ErrorBody, dto::GpuList, dto::GpuItem, dto::IncidentList, dto::IncidentAction)),
    tags(
        (name = "gpus", description = "GPUs, their series, events and health"),
        (name = "fleet", description = "Fleet and node summaries"),
        (name = "incidents", description = "Incidents and their lifecycle"),
        (name = "system", description = "Liveness, metrics, scrape targets"),
        (name = "simulation", description = "The built-in simulator (only when it runs)"),
        (name = "notifications", description = "Notification outbox per sink, and silences"),
        (name = "predictions", description = "Hard-failure predictions (24 h horizon) and the model in use"),
        (name = "auth", description = "Who am I, API tokens (admins), web UI sign-in. With `[auth] enabled = true` every \
route except /healthz, /readyz, the UI's files, this document and sign-in needs `Authorization: Bearer <token>` (or the UI's \
session cookie with `X-CSRF-Token` on changes): 401 without a valid one, 403 when the role is too low (viewer: reads; \
operator: ack/resolve, silences; admin: tokens) or a tenant calls a fleet-wide route (/metrics, targets, tokens)."),
        (name = "ingest", description = "Pushes from gpuwarden agents and Prometheus remote_write (gpuwarden serve)"),
    )
)]
pub struct ApiDoc;

/// The document as JSON.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
