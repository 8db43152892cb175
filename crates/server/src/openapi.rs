//! The OpenAPI 3.1 document, generated from the handlers' annotations (utoipa) and served
//! at `/api/openapi.json`, with an interactive page at `/api/docs` (Swagger UI, vendored
//! into the binary: no CDN).

use crate::api::{audit, dto, fleet, gpus, incidents, ingest, notifications, predictions, silences, system};

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
        audit::list,

        auth::whoami,
        auth::list_tokens,
        auth::create_token,
        auth::revoke_token,
        auth::sign_in,
        auth::sign_out,
        auth::methods,
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
        (name = "audit", description = "The audit trail: every change and every denied request (admins only)"),

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
    let mut doc = ApiDoc::openapi();
    add_guard_responses(&mut doc);
    doc
}

/// Routes served without the request guard's `Host` check (probes).
const PROBES: [&str; 2] = ["/healthz", "/readyz"];
/// State-changing routes exempt from the content-type and Origin checks (they take
/// their own formats from agents and Prometheus, with a bearer token).
const PUSH_ROUTES: [&str; 2] = ["/api/v1/ingest", "/api/v1/write"];
/// Operations whose request body is optional (an empty body means "no actor, no comment").
const OPTIONAL_BODIES: [&str; 2] = ["ack_incident", "resolve_incident"];

/// Documents, on every operation, the answers that come from layers around the handlers
/// rather than from the handlers themselves, so that the document states everything the
/// server may answer (checked by schemathesis in `crates/gpuwarden/tests/schemathesis.rs`):
/// `421` from the `Host` check ([`crate::request_guard`]) and `429` (with `Retry-After`)
/// from the rate limits ([`crate::rate_limit`]) on every route but the probes,
/// `403`/`415` from the Origin and content-type checks on state-changing routes, and
/// `400` on every operation that takes query parameters or a body (a malformed query
/// string or an unknown parameter is refused, not ignored).
fn add_guard_responses(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::Operation;
    use utoipa::openapi::{header::HeaderBuilder, ObjectBuilder, Ref, RefOr, Required, ResponseBuilder, Type};

    let error_builder = |description: &str| {
        ResponseBuilder::new().description(description).content(
            "application/json",
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
    };
    let error = |description: &str| RefOr::T(error_builder(description).build());
    let rate_limited = RefOr::T(
        error_builder("Too many requests from this client address or principal: retry after Retry-After seconds")
            .header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(Some(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1))))
                    .description(Some("Whole seconds until a request will be allowed again"))
                    .build(),
            )
            .build(),
    );
    let add = |op: &mut Operation, code: &str, description: &str| {
        op.responses
            .responses
            .entry(code.to_string())
            .or_insert_with(|| error(description));
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        let probe = PROBES.contains(&path.as_str());
        let push = PUSH_ROUTES.contains(&path.as_str());
        let ops = [
            (false, item.get.as_mut()),
            (false, item.head.as_mut()),
            (true, item.post.as_mut()),
            (true, item.put.as_mut()),
            (true, item.patch.as_mut()),
            (true, item.delete.as_mut()),
        ];
        for (changes, op) in ops {
            let Some(op) = op else { continue };
            if !probe {
                add(
                    op,
                    "421",
                    "The `Host` header names a host this server does not answer to (DNS rebinding guard)",
                );
                op.responses
                    .responses
                    .entry("429".to_string())
                    .or_insert_with(|| rate_limited.clone());
            }
            if changes && !push {
                add(op, "415", "Not `Content-Type: application/json` (required on every state-changing request, even without a body)");
                add(op, "403", "A cross-origin browser request (`Origin` not this server)");
            }
            let has_query = op.parameters.as_ref().is_some_and(|ps| {
                ps.iter()
                    .any(|p| matches!(p, RefOr::T(p) if p.parameter_in == utoipa::openapi::path::ParameterIn::Query))
            });
            if has_query || op.request_body.is_some() {
                add(
                    op,
                    "400",
                    "Bad request: the error names the parameter and what is expected",
                );
            }
            if op
                .operation_id
                .as_deref()
                .is_some_and(|id| OPTIONAL_BODIES.contains(&id))
            {
                if let Some(RefOr::T(body)) = op.request_body.as_mut() {
                    body.required = Some(Required::False);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_operation_but_the_probes_documents_429() {
        let doc = serde_json::to_value(super::document()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        assert!(paths["/healthz"]["get"]["responses"].get("429").is_none());
        let r = &paths["/api/v1/gpus"]["get"]["responses"]["429"];
        assert!(r["headers"]["Retry-After"].is_object(), "{r}");
        assert!(paths["/api/v1/incidents/{id}/ack"]["post"]["responses"]["429"].is_object());
    }
}
