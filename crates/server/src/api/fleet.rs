//! `/api/v1/fleet/summary` and `/api/v1/nodes`: the fleet at a glance.

use super::dto::GpuItem;
use super::dto::{implied_state, state_rank as rank};
use super::dto::{FleetSummary, NodeItem, NodeList, SeverityCounts, StateCounts};
use super::gpus::{health_of, worst_first};
use super::AppState;
use crate::cache::AcceptsGzip;
use crate::scope::CallerScope;
use crate::visibility::Visibility;
use crate::ApiError;
use axum::extract::State;
use axum::response::Response;
use gpuwarden_detect::{GpuHealth, NodeHealth};
use gpuwarden_incident::IncidentFilter;
use gpuwarden_model::{Finding, GpuUuid, HealthState, Incident, Severity};
use gpuwarden_pipeline::Staleness;
use std::collections::{BTreeSet, HashMap, HashSet};

/// Counts by state, open incidents by severity, and the worst GPUs.
#[utoipa::path(get, operation_id = "get_fleet_summary", path = "/api/v1/fleet/summary", tag = "fleet",
    responses((status = 200, description = "Success", body = FleetSummary)))]
pub async fn summary(
    State(state): State<AppState>,
    scope: CallerScope,
    gzip: AcceptsGzip,
) -> Result<Response, ApiError> {
    state.cached_json(&scope, "summary", gzip, || summary_now(&state, &scope))
}

/// How many of the worst GPUs the summary lists.
const WORST: usize = 10;

fn summary_now(state: &AppState, scope: &CallerScope) -> Result<FleetSummary, ApiError> {
    // One pass over references into the live view: counts, node names, and the worst
    // GPUs so far (kept sorted, ties in listing order, as a stable sort of the whole
    // fleet would give); only those few are copied and rendered.
    let evaluation = state.analysis.latest();
    // The worst state each GPU's open non-health incidents imply (the GPU's status
    // raises its health to it, see `GpuStatus`): one pass over the active incidents.
    let visible = Visibility::new(state, scope);
    let raised: HashMap<GpuUuid, u8> = state.analysis.with_incidents(|engine| {
        let mut m: HashMap<GpuUuid, u8> = HashMap::new();
        for i in engine.list(&IncidentFilter::active()) {
            if !visible.incident(i) {
                continue;
            }
            if let (Some(g), Some(implied)) = (&i.gpu, implied_state(i)) {
                let r = m.entry(g.clone()).or_insert(u8::MAX);
                *r = (*r).min(rank(implied));
            }
        }
        m
    });
    let mut counts = StateCounts::default();
    let mut nodes: HashSet<String> = HashSet::new();
    let mut gpus = 0;
    let mut worst: Vec<((u8, f64), GpuUuid)> = Vec::with_capacity(WORST + 1);
    state.live.for_each(state.clock.now_ms(), |g| {
        if !scope.allows(g.identity) {
            return;
        }
        gpus += 1;
        if !nodes.contains(&g.identity.node) {
            nodes.insert(g.identity.node.clone());
        }
        let health = health_of(&evaluation, &g.identity.node, &g.identity.uuid)
            .filter(|h| g.staleness == Staleness::Fresh && h.state != HealthState::Unknown);
        let (shown, score) = match health {
            Some(h) => (h.state, h.score),
            None => (HealthState::Unknown, None),
        };
        match shown {
            HealthState::Healthy => counts.healthy += 1,
            HealthState::Degraded => counts.degraded += 1,
            HealthState::Unhealthy => counts.unhealthy += 1,
            HealthState::Unknown => counts.unknown += 1,
        }
        // Worst first by status: health raised by open incidents (stale stays unknown).
        let status_rank = match raised.get(&g.identity.uuid) {
            Some(&r) if g.staleness == Staleness::Fresh => r.min(rank(shown)),
            _ => rank(shown),
        };
        let key = (status_rank, score.unwrap_or(f64::MAX));
        let at = worst.partition_point(|(k, _)| k.0 < key.0 || (k.0 == key.0 && k.1.total_cmp(&key.1).is_le()));
        if at < WORST {
            worst.insert(at, (key, g.identity.uuid.clone()));
            worst.truncate(WORST);
        }
    });
    let now = state.clock.now_ms();
    let mut items: Vec<GpuItem> = state.analysis.with_incidents(|engine| {
        let active = engine.list(&IncidentFilter::active());
        worst
            .iter()
            .filter_map(|(_, uuid)| state.live.get(uuid.as_str(), now))
            .map(|view| {
                let h = health_of(&evaluation, &view.identity.node, &view.identity.uuid);
                let findings: Vec<&Finding> = evaluation
                    .findings
                    .iter()
                    .filter(|f| f.gpu.as_ref() == Some(&view.identity.uuid))
                    .collect();
                let incidents: Vec<&Incident> = active
                    .iter()
                    .copied()
                    .filter(|i| i.gpu.as_ref() == Some(&view.identity.uuid) && visible.incident(i))
                    .collect();
                GpuItem::new(view, h, &findings, &incidents)
            })
            .collect()
    });
    // The view may have moved on between the pass and the copies.
    worst_first(&mut items);
    let mut open = SeverityCounts::default();
    state.analysis.with_incidents(|engine| {
        for incident in engine.list(&IncidentFilter::active()) {
            if !visible.incident(incident) {
                continue;
            }
            match incident.severity {
                Severity::Info => open.info += 1,
                Severity::Warning => open.warning += 1,
                Severity::Critical => open.critical += 1,
                Severity::Fatal => open.fatal += 1,
            }
        }
    });
    Ok(FleetSummary {
        gpus,
        nodes: nodes.len(),
        counts,
        open_incidents: open,
        worst: items,
    })
}

/// Health per node (the worst of its GPUs, and node-level findings).
#[utoipa::path(get, operation_id = "list_nodes", path = "/api/v1/nodes", tag = "fleet",
    responses((status = 200, description = "Success", body = NodeList)))]
pub async fn nodes(State(state): State<AppState>, scope: CallerScope, gzip: AcceptsGzip) -> Result<Response, ApiError> {
    state.cached_json(&scope, "nodes", gzip, || nodes_now(&state, &scope))
}

fn nodes_now(state: &AppState, scope: &CallerScope) -> Result<NodeList, ApiError> {
    let evaluation = state.analysis.latest();
    let mut visible: HashSet<GpuUuid> = HashSet::new();
    let mut known: BTreeSet<String> = BTreeSet::new();
    for g in state.live.snapshot(state.clock.now_ms()) {
        if scope.allows(&g.identity) {
            visible.insert(g.identity.uuid);
            known.insert(g.identity.node);
        }
    }
    // A node the caller sees only part of (a tenant's pods on a shared node) is
    // aggregated over the caller's GPUs alone, without the node's own findings: its
    // other GPUs' health is another tenant's.
    let partial: Vec<NodeHealth> = if scope.is_restricted() {
        let gpus: Vec<GpuHealth> = evaluation
            .gpus
            .iter()
            .filter(|g| !scope.owns_node(&g.node) && visible.contains(&g.uuid))
            .cloned()
            .collect();
        let findings: Vec<Finding> = evaluation
            .findings
            .iter()
            .filter(|f| f.gpu.as_ref().is_some_and(|g| visible.contains(g)))
            .cloned()
            .collect();
        gpuwarden_detect::engine::nodes(&gpus, &findings)
    } else {
        Vec::new()
    };
    let mut nodes: Vec<NodeItem> = evaluation
        .nodes
        .iter()
        .filter(|n| known.contains(&n.node) && scope.owns_node(&n.node))
        .chain(partial.iter())
        .map(|n| NodeItem {
            node: n.node.clone(),
            score: n.score,
            state: n.state,
            dimensions: n.dimensions.iter().map(|(d, v)| (d.as_str().to_string(), *v)).collect(),
            gpus: n.gpus,
            gpus_unknown: n.gpus_unknown,
            worst_gpu: n.worst_gpu.as_ref().map(|u| u.to_string()),
        })
        .collect();
    // Nodes seen but not yet evaluated are unknown, not missing.
    let listed: HashSet<String> = nodes.iter().map(|n| n.node.clone()).collect();
    for node in &known {
        if !listed.contains(node) {
            nodes.push(NodeItem {
                node: node.clone(),
                score: None,
                state: HealthState::Unknown,
                dimensions: Default::default(),
                gpus: 0,
                gpus_unknown: 0,
                worst_gpu: None,
            });
        }
    }
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(NodeList { nodes })
}
