//! The OpenAPI 3.1 document, generated from the handlers' annotations (utoipa) and served
//! at `/api/openapi.json`, with an interactive page at `/api/docs` (Swagger UI, vendored
//! into the binary: no CDN).

use crate::api::{dto, fleet, gpus, incidents, ingest, notifications, predictions, silences, system};
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
        (name = "ingest", description = "Pushes from gpuwarden agents and Prometheus remote_write (gpuwarden serve)"),
    )
)]
pub struct ApiDoc;

/// The document as JSON.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    add_rate_limit_answers(&mut doc);
    doc
}

/// Every operation but the probes may be answered 429 by the rate limits
/// ([`crate::rate_limit`]); documented once here instead of on each handler.
fn add_rate_limit_answers(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{header::HeaderBuilder, ObjectBuilder, Ref, ResponseBuilder, Type};
    let response = ResponseBuilder::new()
        .description("Too many requests from this client address or principal: retry after Retry-After seconds")
        .header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1))))
                .description(Some("Whole seconds until a request will be allowed again"))
                .build(),
        )
        .content(
            "application/json",
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    for (path, item) in doc.paths.paths.iter_mut() {
        if matches!(path.as_str(), "/healthz" | "/readyz") {
            continue;
        }
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            op.responses
                .responses
                .entry("429".to_string())
                .or_insert_with(|| response.clone().into());
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
