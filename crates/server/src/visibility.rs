//! Whether things derived from GPUs — incidents, notifications, predictions, scrape
//! targets — are visible to a caller's [`CallerScope`]. One place decides, so that every
//! route answers the same way (and a tenant never sees in one route what another hides).
//!
//! The rules (tenants see the union of their parts, see [`crate::scope`]):
//! - **A GPU** by its identity now: the live view, else the store's inventory (a GPU that
//!   stopped reporting). Unknown GPUs are visible only through their node, by `nodes`.
//! - **An incident of a GPU**: when the tenant owns its node, or when the workload the
//!   incident recorded (the `gpuwarden.namespace` / `gpuwarden.account` labels its
//!   findings carried, e.g. security findings) is the tenant's. When the incident
//!   recorded no workload (most health incidents), the GPU's workload now decides. The
//!   recorded workload wins over the current one because a security incident describes
//!   the workload that ran then: the next tenant on that GPU must not read it.
//! - **An incident without a GPU** (a node's, a target's): only to tenants owning the
//!   node by `nodes`.
//! - **A notification** follows its incident; a bare finding's notification (no
//!   incident) is judged like an incident from its own fields.
//! - **A scrape target or ingest source** only to tenants owning its node by `nodes`
//!   (it reveals the fleet's layout and every GPU it serves).

use crate::api::AppState;
use crate::scope::CallerScope;
use gpuwarden_model::{GpuIdentity, GpuUuid, Incident};
use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

/// Incident labels that say which workload the incident's findings were about.
const RECORDED_WORKLOAD: [&str; 5] = [
    "gpuwarden.namespace",
    "gpuwarden.pod",
    "gpuwarden.container",
    "gpuwarden.job",
    "gpuwarden.account",
];

/// The visibility of GPU-derived things for one request's scope. Cheap for a caller who
/// sees everything (answers `true` without looking anything up).
pub struct Visibility<'a> {
    scope: &'a CallerScope,
    state: &'a AppState,
    live: OnceLock<HashMap<GpuUuid, GpuIdentity>>,
    stored: OnceLock<HashMap<GpuUuid, GpuIdentity>>,
}

impl<'a> Visibility<'a> {
    pub fn new(state: &'a AppState, scope: &'a CallerScope) -> Self {
        Visibility {
            scope,
            state,
            live: OnceLock::new(),
            stored: OnceLock::new(),
        }
    }

    pub fn scope(&self) -> &CallerScope {
        self.scope
    }

    /// The GPU's identity now: live view first, else the store's inventory.
    fn identity(&self, uuid: &str) -> Option<&GpuIdentity> {
        let key = GpuUuid::new(uuid);
        let live = self.live.get_or_init(|| {
            self.state
                .live
                .snapshot(self.state.clock.now_ms())
                .into_iter()
                .map(|v| (v.identity.uuid.clone(), v.identity))
                .collect()
        });
        if let Some(id) = live.get(&key) {
            return Some(id);
        }
        let stored = self.stored.get_or_init(|| match self.state.store.gpus() {
            Ok(list) => list
                .into_iter()
                .map(|r| (r.identity.uuid.clone(), r.identity))
                .collect(),
            Err(e) => {
                // Deny rather than guess: a tenant then sees less, never more.
                tracing::warn!("reading the GPU inventory for a tenant's request: {e}");
                HashMap::new()
            }
        });
        stored.get(&key)
    }

    /// Whether the GPU is visible, by its identity now; an unknown GPU only through
    /// `node` (when given) owned by `nodes`.
    pub fn gpu(&self, uuid: &str, node: Option<&str>) -> bool {
        if !self.scope.is_restricted() || node.is_some_and(|n| self.scope.owns_node(n)) {
            return true;
        }
        self.identity(uuid).is_some_and(|id| self.scope.allows(id))
    }

    /// Whether an incident is visible (see the module documentation).
    pub fn incident(&self, inc: &Incident) -> bool {
        self.subject(inc.gpu.as_ref().map(GpuUuid::as_str), &inc.node, &inc.labels, None)
    }

    /// Whether a notification is visible: its incident's visibility when the incident is
    /// known, else judged from the notification's own fields.
    pub fn notification(&self, n: &gpuwarden_notify::Notification, incident: Option<&Incident>) -> bool {
        if !self.scope.is_restricted() {
            return true;
        }
        match incident {
            Some(inc) => self.incident(inc),
            None => self.subject(n.gpu.as_deref(), &n.node, &n.labels, n.namespace.as_deref()),
        }
    }

    fn subject(
        &self,
        gpu: Option<&str>,
        node: &str,
        labels: &BTreeMap<String, String>,
        namespace: Option<&str>,
    ) -> bool {
        if self.scope.owns_node(node) {
            return true;
        }
        let Some(gpu) = gpu else {
            return false; // node-level: owners of the node only
        };
        let recorded = namespace.is_some() || RECORDED_WORKLOAD.iter().any(|k| labels.contains_key(*k));
        if recorded {
            let ns = namespace.or_else(|| labels.get("gpuwarden.namespace").map(String::as_str));
            let account = labels.get("gpuwarden.account").map(String::as_str);
            return self.scope.allows_parts(node, ns, account);
        }
        self.identity(gpu).is_some_and(|id| self.scope.allows(id))
    }

    /// Whether a scrape target or ingest source on `node` is visible (owners of the node).
    pub fn target_node(&self, node: Option<&str>) -> bool {
        !self.scope.is_restricted() || node.is_some_and(|n| self.scope.owns_node(n))
    }
}
