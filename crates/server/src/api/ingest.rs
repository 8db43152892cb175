//! Push endpoints of `gpuwarden serve`: `POST /api/v1/ingest` (batches from
//! `gpuwarden agent`) and `POST /api/v1/write` (Prometheus remote_write).
//!
//! Both go through the same [`Ingestor`] as scraped pages, so a pushed or forwarded GPU is
//! stored, tracked for staleness and analysed exactly like a scraped one. Both check the
//! bearer token ([`auth`]), read the body with a hard size limit (413 past it), and answer
//! malformed bodies with a JSON error (400) that tells the sender not to retry; store
//! failures are 503 so that senders keep the data and retry.
//!
//! Idempotency: a batch id already in the [`ledger`] is answered `{"status":"duplicate"}`
//! without storing anything. Pushes are applied one at a time (a mutex around check →
//! ingest → record), so two concurrent retries of one batch cannot both be stored. The
//! same samples under a new batch id are dropped too: per (GPU, source) the newest stored
//! timestamp is kept, and rows at or before it are not stored again (in memory: after a
//! restart only the ledger's batch ids protect against replays).
//!
//! Scope: a token may be bound to nodes ([`auth::NodeScope`]). A batch whose node, or
//! whose GPUs' node labels, fall outside the token's scope is refused 403, and so is a
//! batch that would move a GPU already known on a node outside the scope.
//!
//! Client certificates: on a listener with `client_ca` (mutual TLS), the agent's node is
//! bound to its certificate: the scope is narrowed to the certificate's common name and
//! DNS names ([`NodeScope::bound_to`]), so a batch for another node is refused 403 even
//! with a valid token. remote_write is not bound that way (one Prometheus sends many
//! nodes); its token's scope applies.

pub mod auth;
pub mod ledger;
pub mod remote_write;

use super::AppState;
use crate::tls::ClientCertificate;
use crate::ApiError;
use auth::{Access, IngestTokens, NodeScope};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use gpuwarden_agent::wire::BatchLimits;
use gpuwarden_agent::Batch;
use gpuwarden_collect::prom::Limits;
use gpuwarden_pipeline::Ingestor;
use ledger::BatchIds;
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use utoipa::ToSchema;

/// Default largest push body (compressed size for remote_write).
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// Counters of the push endpoints (`gpuwarden_ingest_*`).
#[derive(Clone, Default)]
pub struct IngestMetrics {
    batches: Family<ResultLabel, Counter>,
    remote_write_samples: Counter,
}

impl IngestMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "gpuwarden_ingest_batches",
            "Pushed agent batches by result (stored, duplicate, rejected, failed)",
            self.batches.clone(),
        );
        registry.register(
            "gpuwarden_remote_write_samples",
            "Samples received through Prometheus remote_write and mapped to GPUs",
            self.remote_write_samples.clone(),
        );
    }

    fn count(&self, result: &'static str) {
        self.batches.get_or_create(&ResultLabel { result }).inc();
    }
}

/// What the push endpoints need; `None` in [`AppState`] disables them (404).
pub struct IngestState {
    pub ingestor: Arc<Ingestor>,
    pub tokens: IngestTokens,
    /// Held across check → ingest → record.
    pub ledger: Mutex<Box<dyn BatchIds>>,
    pub max_body_bytes: usize,
    pub limits: BatchLimits,
    pub metrics: IngestMetrics,
    /// Newest stored sample timestamp per (GPU UUID, page source), for dropping samples
    /// pushed again under a new batch id. Guarded by the ledger's lock in practice.
    pub newest: Mutex<HashMap<(String, String), i64>>,
    /// Agents must present a client certificate (the ingest listener has a client CA):
    /// a push on a listener without one (the API/UI listener) is refused 403, so the
    /// binding of agents to their nodes cannot be bypassed there.
    pub require_client_certificate: bool,
}

/// Answer to an accepted push.
#[derive(Debug, Serialize, ToSchema)]
pub struct IngestReply {
    /// `stored`, or `duplicate` when this batch id was stored before.
    status: &'static str,
    /// Batch id.
    id: String,
    /// Sample values stored (0 for a duplicate).
    samples: usize,
    /// Sample rows dropped because they were stored before (same GPU, source and an
    /// equal or older timestamp), e.g. a retry under a new batch id.
    #[serde(skip_serializing_if = "is_zero")]
    repeated_rows: usize,
    /// Events stored.
    events: usize,
    /// Events refused because their time is too far ahead of this server's clock or too
    /// old (counted per sender in `/api/v1/targets`).
    #[serde(skip_serializing_if = "is_zero")]
    refused_events: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        code,
        message: message.into(),
    }
}

fn ingest_state(state: &AppState) -> Result<Arc<IngestState>, ApiError> {
    state.ingest.clone().ok_or_else(|| {
        ApiError::not_found(
            "ingest_disabled",
            "this server does not accept pushes; run `gpuwarden serve` to receive agents and remote_write",
        )
    })
}

fn unauthorized() -> ApiError {
    error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "a valid `Authorization: Bearer <token>` header is required",
    )
}

fn forbidden_node(scope: &NodeScope, what: &str, node: &str) -> ApiError {
    if scope.certificate_refuses(node) {
        let names = match scope {
            NodeScope::Certified { names, .. } => names.join(", "),
            _ => String::new(),
        };
        return error(
            StatusCode::FORBIDDEN,
            "node_not_certified",
            format!(
                "{what} is '{node}', but the client certificate is for {names}; \
                 give the agent a certificate whose common name or DNS name is its node"
            ),
        );
    }
    error(
        StatusCode::FORBIDDEN,
        "node_not_allowed",
        format!(
            "{what} is '{node}', outside the nodes this token may write; \
             give the agent a token scoped to it (node=… in the token file)"
        ),
    )
}

/// The scope of the request's token (`Any` when no token is configured), narrowed to the
/// client certificate's names when the agent presented one.
fn authorize(
    ingest: &IngestState,
    headers: &HeaderMap,
    cert: Option<&ClientCertificate>,
) -> Result<NodeScope, ApiError> {
    let scope = match ingest.tokens.access(headers) {
        Access::Open => NodeScope::Any,
        Access::Token(scope) => scope,
        Access::Denied => return Err(unauthorized()),
    };
    Ok(match cert {
        Some(c) => scope.bound_to(c),
        None => scope,
    })
}

/// Refuses GPUs labelled with a node outside `scope`.
fn check_gpu_nodes<'a>(
    scope: &NodeScope,
    gpus: impl IntoIterator<Item = &'a gpuwarden_model::GpuIdentity>,
) -> Result<(), ApiError> {
    for g in gpus {
        if !scope.allows(&g.node) {
            return Err(forbidden_node(
                scope,
                &format!("the node label of GPU {}", g.uuid.as_str()),
                &g.node,
            ));
        }
    }
    Ok(())
}

async fn read_body(
    ingest: &IngestState,
    headers: &HeaderMap,
    cert: Option<&ClientCertificate>,
    body: Body,
) -> Result<(NodeScope, axum::body::Bytes), ApiError> {
    let scope = authorize(ingest, headers, cert)?;
    let bytes = axum::body::to_bytes(body, ingest.max_body_bytes).await.map_err(|_| {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "the body is larger than {} bytes (or was cut off); send smaller batches",
                ingest.max_body_bytes
            ),
        )
    })?;
    Ok((scope, bytes))
}

/// Pushes write fleet data (any node's, any GPU's): never from a principal confined to a
/// tenant. Agents and Prometheus authenticate with ingest tokens, not as tenants.
fn refuse_tenant(caller: &crate::scope::CallerScope) -> Result<(), ApiError> {
    caller.refuse_if_tenant("pushes write any node's data (agents and remote_write senders use an ingest token)")
}

/// Accept a batch pushed by `gpuwarden agent`.
#[utoipa::path(post, operation_id = "ingest_batch", path = "/api/v1/ingest", tag = "ingest",
    request_body(content = String, description = "A batch in the agent push format (JSON; see docs/deploy.md)", content_type = "application/json"),
    responses(
        (status = 200, description = "Stored, or already stored (status=duplicate)", body = IngestReply),
        (status = 400, description = "Malformed batch: do not retry", body = super::dto::ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = super::dto::ErrorBody),
        (status = 403, description = "The batch's node or GPUs are outside the token's nodes, or not named by the client certificate (or none was presented where one is required), or the caller is confined to a tenant", body = super::dto::ErrorBody),
        (status = 404, description = "Ingest is not enabled on this server", body = super::dto::ErrorBody),
        (status = 413, description = "Body larger than the limit", body = super::dto::ErrorBody),
        (status = 503, description = "The store could not take the batch: retry later", body = super::dto::ErrorBody)))]
pub async fn push(
    State(state): State<AppState>,
    cert: Option<Extension<ClientCertificate>>,
    caller: crate::scope::CallerScope,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestReply>, ApiError> {
    refuse_tenant(&caller)?;
    let ingest = ingest_state(&state)?;
    if ingest.require_client_certificate && cert.is_none() {
        ingest.metrics.count("forbidden");
        return Err(error(
            StatusCode::FORBIDDEN,
            "client_certificate_required",
            "agents must push over TLS with a client certificate (the ingest listener has a client CA); \
             push to the ingest listener with --client-cert and --client-key",
        ));
    }
    let (scope, bytes) = read_body(&ingest, &headers, cert.as_ref().map(|c| &c.0), body).await?;
    // Decoding a 16 MiB batch at the limits is CPU work: off the async workers, so
    // one large push does not stall every other request on this thread.
    let limits = ingest.limits;
    let decoded = tokio::task::spawn_blocking(move || Batch::decode(&bytes, &limits))
        .await
        .map_err(|e| ApiError::internal("decoding a pushed batch", e))?;
    let batch = match decoded {
        Ok(b) => b,
        Err(e) => {
            ingest.metrics.count("rejected");
            return Err(ApiError::bad_request("bad_batch", e.to_string()));
        }
    };
    let in_scope = if scope.allows(&batch.node) {
        check_gpu_nodes(&scope, batch.pages.iter().flat_map(|p| &p.gpus)).and_then(|()| {
            match batch.events.iter().find(|e| !scope.allows(&e.node)) {
                Some(e) => Err(forbidden_node(
                    &scope,
                    &format!("the node of an event of GPU {}", e.gpu.as_str()),
                    &e.node,
                )),
                None => Ok(()),
            }
        })
    } else {
        Err(forbidden_node(&scope, "the batch's node", &batch.node))
    };
    if let Err(e) = in_scope {
        ingest.metrics.count("forbidden");
        tracing::warn!(node = %batch.node, "refused a pushed batch: {}", e.message);
        return Err(e);
    }
    let wall_ms = state.clock.now_ms();
    let st = state.clone();
    let ing = ingest.clone();
    tokio::task::spawn_blocking(move || apply_batch(&st, &ing, &scope, batch, wall_ms))
        .await
        .map_err(|e| ApiError::internal("ingesting a batch", e))?
}

fn apply_batch(
    state: &AppState,
    ingest: &IngestState,
    scope: &NodeScope,
    mut batch: Batch,
    wall_ms: i64,
) -> Result<Json<IngestReply>, ApiError> {
    let mut ledger = ingest.ledger.lock();
    let id = batch.id.as_str().to_owned();
    if ledger.contains(&id) {
        ingest.metrics.count("duplicate");
        return Ok(Json(IngestReply {
            status: "duplicate",
            id,
            samples: 0,
            events: 0,
            repeated_rows: 0,
            refused_events: 0,
        }));
    }
    // A scoped token may not take over a GPU that is known on a node outside its scope
    // (that would move the GPU's history and incidents to the attacker's node).
    if !matches!(scope, NodeScope::Any) {
        // Every GPU the batch writes: listed identities, sample rows and events (rows and
        // events name their GPU on their own, so checking identities alone is not enough).
        let gpus = batch
            .pages
            .iter()
            .flat_map(|p| p.gpus.iter().map(|g| &g.uuid).chain(p.rows.iter().map(|r| &r.gpu)))
            .chain(batch.events.iter().map(|e| &e.gpu));
        for uuid in gpus {
            if let Some(known) = state.live.get(uuid.as_str(), wall_ms) {
                if !scope.allows(&known.identity.node) {
                    ingest.metrics.count("forbidden");
                    tracing::warn!(gpu = %uuid.as_str(), known_on = %known.identity.node, batch_node = %batch.node, "refused a batch writing another node's GPU");
                    return Err(error(
                        StatusCode::FORBIDDEN,
                        "gpu_on_other_node",
                        format!(
                            "GPU {} is known on node '{}', which this token may not write; it cannot be moved to or written from '{}' with it",
                            uuid.as_str(),
                            known.identity.node,
                            batch.node
                        ),
                    ));
                }
            }
        }
    }
    let repeated_rows = drop_repeated_rows(&ingest.newest.lock(), &mut batch);
    let unavailable = |e: &dyn std::fmt::Display| {
        ingest.metrics.count("failed");
        tracing::error!(batch = %id, node = %batch.node, "storing a pushed batch: {e}");
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the store could not take the batch; keep it and retry",
        )
    };
    // Events are bounded in time like samples (they bypass the pages' admission).
    let refused_events = ingest
        .ingestor
        .admit_events(&format!("agent://{}", batch.node), &mut batch.events, wall_ms);
    let mut samples = 0;
    for page in &batch.pages {
        let target = format!("agent://{}/{}", batch.node, page.source);
        let report = ingest
            .ingestor
            .ingest_page(&target, wall_ms, &page.to_exporter_page())
            .map_err(|e| unavailable(&e))?;
        samples += report.samples;
        // Only stored rows move the dedup mark: a row stamped in 2100 was refused and
        // must not make every later row of its GPU a "repeat", and a GPU dropped by the
        // identity limits must not grow this map.
        let mut newest = ingest.newest.lock();
        for (gpu, ts) in report.newest_rows {
            let e = newest
                .entry((gpu.as_str().to_owned(), page.source.clone()))
                .or_insert(i64::MIN);
            *e = (*e).max(ts);
        }
    }
    if !batch.events.is_empty() {
        state.store.append_events(&batch.events).map_err(|e| unavailable(&e))?;
        state.analysis.observe_events(&batch.events);
    }
    if let Err(e) = ledger.record(&id) {
        // The data is stored; only the memory of it is not durable. A retry would store it
        // again, which is better than refusing the batch now.
        tracing::error!("{e}");
    }
    ingest.metrics.count("stored");
    Ok(Json(IngestReply {
        status: "stored",
        id,
        samples,
        events: batch.events.len(),
        repeated_rows,
        refused_events,
    }))
}

/// Removes rows at or before the newest stored timestamp of their (GPU, source); returns
/// how many. Rows of one batch are compared with what was stored before it, so two
/// sources reporting one GPU at the same time are both kept.
fn drop_repeated_rows(newest: &HashMap<(String, String), i64>, batch: &mut Batch) -> usize {
    let mut dropped = 0;
    for page in &mut batch.pages {
        let before = page.rows.len();
        let source = page.source.clone();
        page.rows.retain(|r| {
            newest
                .get(&(r.gpu.as_str().to_owned(), source.clone()))
                .is_none_or(|&ts| r.ts_ms > ts)
        });
        dropped += before - page.rows.len();
    }
    dropped
}

/// Prometheus remote_write 1.0 receiver (protobuf `WriteRequest`, snappy raw block).
#[utoipa::path(post, operation_id = "remote_write", path = "/api/v1/write", tag = "ingest",
    request_body(content = String, description = "Snappy-compressed (raw block) protobuf prometheus.WriteRequest", content_type = "application/x-protobuf"),
    responses(
        (status = 204, description = "Samples stored"),
        (status = 400, description = "Not a snappy-compressed WriteRequest: do not retry", body = super::dto::ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = super::dto::ErrorBody),
        (status = 403, description = "Samples of nodes outside the token's nodes", body = super::dto::ErrorBody),
        (status = 404, description = "Ingest is not enabled on this server", body = super::dto::ErrorBody),
        (status = 413, description = "Body larger than the limit", body = super::dto::ErrorBody),
        (status = 503, description = "The store could not take the samples: retry later", body = super::dto::ErrorBody)))]
pub async fn remote_write(
    State(state): State<AppState>,
    caller: crate::scope::CallerScope,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    refuse_tenant(&caller)?;
    let ingest = ingest_state(&state)?;
    // A client certificate is not bound to nodes here: one Prometheus forwards many
    // nodes' series (its certificate only got it through the handshake); the token's
    // node scope still applies.
    let (scope, bytes) = read_body(&ingest, &headers, None, body).await?;
    let wall_ms = state.clock.now_ms();
    let ing = ingest.clone();
    tokio::task::spawn_blocking(move || {
        // Decompressed requests may be up to 8x the body limit (Prometheus sends ~1-4 MiB
        // compressed); past that the request is refused before allocating.
        let req = remote_write::decode(&bytes, ing.max_body_bytes.saturating_mul(8))
            .map_err(|e| ApiError::bad_request("bad_remote_write", e.to_string()))?;
        let mapped = remote_write::map_request(&req, wall_ms, &Limits::default())
            .map_err(|e| ApiError::bad_request("bad_remote_write", e.to_string()))?;
        for m in &mapped {
            check_gpu_nodes(&scope, &m.page.gpus)?;
        }
        for m in mapped {
            let target = format!("remote_write://{}", m.instance);
            let report = ing.ingestor.ingest_page(&target, wall_ms, &m.page).map_err(|e| {
                tracing::error!("storing remote_write samples of {}: {e}", m.instance);
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the store could not take the samples; retry",
                )
            })?;
            ing.metrics.remote_write_samples.inc_by(report.samples as u64);
        }
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
    .map_err(|e| ApiError::internal("ingesting remote_write", e))?
}

/// `/metrics` on the ingest listener: it names every GPU, node and score, so when tokens
/// are configured it needs one (any token, whatever its nodes) like the push endpoints.
async fn metrics_with_token(
    State(state): State<AppState>,
    caller: crate::scope::CallerScope,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let ingest = ingest_state(&state)?;
    if matches!(ingest.tokens.access(&headers), Access::Denied) {
        return Err(unauthorized());
    }
    Ok(super::system::metrics(State(state), caller, headers)
        .await?
        .into_response())
}

/// The router of `gpuwarden serve`'s separate ingest listener: only the push endpoints,
/// `/healthz` and `/metrics` (behind the bearer token), so the listener can face agents
/// without exposing the read API (which has no authentication yet).
pub fn ingest_router(state: AppState) -> axum::Router {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/api/v1/ingest", post(push))
        .route("/api/v1/write", post(remote_write))
        .route("/healthz", get(super::system::healthz))
        .route("/readyz", get(super::system::readyz))
        .route("/metrics", get(metrics_with_token))
        .fallback(super::system::not_found)
        .with_state(state)
}
