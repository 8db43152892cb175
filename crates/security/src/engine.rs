//! The security engine: implements [`Analyzer`], keeps bounded per-GPU state, and runs
//! every enabled rule of the catalog on each GPU with fresh data.
//!
//! Stale data never looks clean: a GPU whose data is not fresh is not re-evaluated, and
//! the findings it had at its last fresh evaluation are reported again (marked stale) for
//! up to [`LATCH_MAX_MS`], so a miner that stops the exporter does not resolve its own
//! incident. The inventory rule is the exception: a GPU missing from its node's scrape is
//! exactly what it reports.

use crate::catalog::{Catalog, Rule};
use crate::config::SecurityConfig;
use crate::error::SecurityError;
use crate::finding;
use crate::policy::Policy;
use crate::rules::{self, drift, Ctx};
use crate::state::{GpuState, NodeState, ProcessSeen};
use gpuwarden_model::{
    Analyzer, Event, EventKind, Finding, FindingKind, Freshness, GpuIdentity, GpuSamples, GpuUuid, TimestampMs,
};
use std::collections::BTreeMap;

/// How long findings of a GPU whose data went stale are still reported.
pub const LATCH_MAX_MS: i64 = 24 * 3_600_000;
/// GPUs without data for this long are forgotten (bounded memory over fleet churn).
pub const FORGET_AFTER_MS: i64 = 7 * 24 * 3_600_000;
/// Largest gap the behaviour baseline bridges.
const BASELINE_MAX_GAP_MS: i64 = 300_000;

/// The security analyzer.
#[derive(Debug, Clone)]
pub struct SecurityEngine {
    catalog: Catalog,
    policy: Policy,
    gpus: BTreeMap<GpuUuid, GpuState>,
    nodes: BTreeMap<String, NodeState>,
    /// Newest data time seen: the "now" of identities, which carry no time.
    data_ms: TimestampMs,
    lookback_ms: i64,
    tau_ms: f64,
}

impl SecurityEngine {
    /// An engine over `catalog` enforcing `policy`.
    pub fn new(catalog: Catalog, policy: Policy) -> SecurityEngine {
        let p = |id: &str, name: &str| {
            catalog
                .get(id)
                .map(|r| r.p(name))
                .filter(|v| v.is_finite())
                .unwrap_or(0.0)
        };
        // The window must hold the longest lookback any rule reads.
        let lookback_min = [
            p(rules::mining::ID, "window_minutes"),
            p(rules::usage::GHOST_ID, "window_minutes"),
            p(rules::usage::OFF_HOURS_ID, "window_minutes"),
            p(rules::behaviour::ID, "recent_minutes"),
        ]
        .into_iter()
        .fold(10.0, f64::max);
        SecurityEngine {
            lookback_ms: (lookback_min * 60_000.0) as i64,
            tau_ms: (p(rules::behaviour::ID, "baseline_hours").max(0.1)) * 3.6e6,
            catalog,
            policy,
            gpus: BTreeMap::new(),
            nodes: BTreeMap::new(),
            data_ms: 0,
        }
    }

    /// The built-in rule pack with the config's policy and overrides.
    pub fn from_config(config: &SecurityConfig) -> Result<SecurityEngine, SecurityError> {
        let catalog = Catalog::builtin().with_overrides(&config.rules)?;
        Ok(SecurityEngine::new(catalog, Policy::from_config(config)?))
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// GPUs currently remembered.
    pub fn gpu_count(&self) -> usize {
        self.gpus.len()
    }

    fn enabled_rules(&self) -> impl Iterator<Item = &Rule> {
        let on = self.policy.enabled;
        self.catalog.rules().iter().filter(move |r| on && r.enabled)
    }

    fn node_mut(&mut self, node: &str) -> &mut NodeState {
        let now = self.data_ms;
        self.nodes.entry(node.to_string()).or_insert_with(|| NodeState {
            first_seen_ms: now,
            attributed: false,
        })
    }
}

fn stale_copy(f: &Finding, now: TimestampMs, freshness: Freshness, since: TimestampMs) -> Finding {
    let mut f = f.clone();
    f.ts_ms = now;
    f.summary = format!(
        "{} (telemetry {:?} since {} s: not re-checked, still reported)",
        f.summary,
        freshness,
        (now - since).max(0) / 1000
    );
    f.labels.insert("gpuwarden.data".into(), "stale".into());
    f
}

impl Analyzer for SecurityEngine {
    fn name(&self) -> &'static str {
        "security"
    }

    fn observe_identity(&mut self, identity: &GpuIdentity) {
        let now = self.data_ms;
        let attributed = !identity.workload.is_empty();
        let node = self.node_mut(&identity.node);
        node.attributed |= attributed;
        match self.gpus.get_mut(&identity.uuid) {
            Some(g) => g.set_identity(identity, now),
            None => {
                self.gpus
                    .insert(identity.uuid.clone(), GpuState::new(identity.clone(), now));
            }
        }
    }

    fn observe_row(&mut self, row: &GpuSamples) {
        if row.ts_ms > self.data_ms {
            let first = self.data_ms == 0;
            self.data_ms = row.ts_ms;
            if first {
                // Identities seen before any row got time 0: move them to the first data time.
                for n in self.nodes.values_mut().filter(|n| n.first_seen_ms == 0) {
                    n.first_seen_ms = row.ts_ms;
                }
                for g in self.gpus.values_mut().filter(|g| g.first_seen_ms == 0) {
                    g.first_seen_ms = row.ts_ms;
                    g.workload_changed_ms = row.ts_ms;
                }
            }
        }
        // A row for a GPU never identified still counts: its node is unknown ("").
        let g = self
            .gpus
            .entry(row.gpu.clone())
            .or_insert_with(|| GpuState::new(GpuIdentity::new(row.gpu.clone(), ""), row.ts_ms));
        g.observe_row(row, self.lookback_ms, self.tau_ms, BASELINE_MAX_GAP_MS);
    }

    fn observe_event(&mut self, event: &Event) {
        let Some(g) = self.gpus.get_mut(&event.gpu) else { return };
        match &event.kind {
            EventKind::GpuDisappeared => g.gone_since_ms = Some(event.ts_ms),
            EventKind::GpuAppeared => g.gone_since_ms = None,
            EventKind::ProcessStart { pid, name } => {
                g.process = Some(ProcessSeen {
                    pid: Some(*pid),
                    name: name.clone(),
                    ts_ms: event.ts_ms,
                })
            }
            EventKind::Xid { pid, process, .. } if pid.is_some() || process.is_some() => {
                g.process = Some(ProcessSeen {
                    pid: *pid,
                    name: process.clone(),
                    ts_ms: event.ts_ms,
                })
            }
            _ => {}
        }
    }

    fn evaluate(&mut self, now_ms: TimestampMs, freshness: &dyn Fn(&GpuUuid) -> Freshness) -> Vec<Finding> {
        self.gpus
            .retain(|_, g| now_ms - g.last_row_ms.unwrap_or(g.first_seen_ms) <= FORGET_AFTER_MS);
        let rules: Vec<Rule> = self.enabled_rules().cloned().collect();
        let default_node = NodeState::default();
        let mut out = Vec::new();
        let mut latches: Vec<(GpuUuid, Vec<Finding>)> = Vec::new();
        for (uuid, g) in &self.gpus {
            let fresh = freshness(uuid);
            let node = self.nodes.get(&g.identity.node).unwrap_or(&default_node);
            let ctx = Ctx {
                now: now_ms,
                policy: &self.policy,
                gpu: g,
                node,
                freshness: fresh,
            };
            if fresh == Freshness::Fresh && g.last_row_ms.is_some() && g.gone_since_ms.is_none() {
                let found: Vec<Finding> = rules
                    .iter()
                    .filter_map(|r| rules::evaluate(r, &ctx).map(|h| finding::build(r, h, g, &self.policy, now_ms)))
                    .collect();
                out.extend(found.iter().cloned());
                latches.push((uuid.clone(), found));
                continue;
            }
            // Not fresh: the inventory rule judges the absence; everything else keeps
            // its last conclusion.
            if let Some(r) = rules.iter().find(|r| r.id() == drift::INVENTORY_ID) {
                if let Some(h) = rules::evaluate(r, &ctx) {
                    out.push(finding::build(r, h, g, &self.policy, now_ms));
                }
            }
            if now_ms - g.latched_ms <= LATCH_MAX_MS {
                let since = g.last_row_ms.unwrap_or(g.latched_ms);
                out.extend(
                    g.latched
                        .iter()
                        .filter(|f| f.rule != drift::INVENTORY_ID)
                        .map(|f| stale_copy(f, now_ms, fresh, since)),
                );
            }
        }
        for (uuid, found) in latches {
            if let Some(g) = self.gpus.get_mut(&uuid) {
                g.latched = found;
                g.latched_ms = now_ms;
            }
        }
        out.extend(self.node_inventory(&rules, now_ms, freshness));
        out
    }
}

impl SecurityEngine {
    /// Node-level inventory: a configured GPU count that the node's present GPUs do not
    /// match.
    fn node_inventory(
        &self,
        rules: &[Rule],
        now: TimestampMs,
        freshness: &dyn Fn(&GpuUuid) -> Freshness,
    ) -> Vec<Finding> {
        let Some(rule) = rules.iter().find(|r| r.id() == drift::INVENTORY_ID) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for node in self.nodes.keys() {
            let Some(want) = self.policy.baseline_for(node).and_then(|b| b.gpu_count) else {
                continue;
            };
            let gpus: Vec<&GpuState> = self
                .gpus
                .values()
                .filter(|g| &g.identity.node == node && g.identity.mig.is_none())
                .collect();
            // Only judge a node whose scrape answers: a down target is not missing GPUs.
            if gpus
                .iter()
                .any(|g| matches!(freshness(&g.identity.uuid), Freshness::TargetDown | Freshness::TooOld))
            {
                continue;
            }
            let present = gpus
                .iter()
                .filter(|g| freshness(&g.identity.uuid) == Freshness::Fresh)
                .count();
            if present == want {
                continue;
            }
            let mut labels = finding::rule_labels(rule);
            labels.insert("gpuwarden.inventory.change".into(), "count".into());
            out.push(Finding {
                kind: FindingKind::Security,
                rule: rule.spec.id.clone(),
                severity: rule.severity,
                gpu: None,
                node: node.clone(),
                ts_ms: now,
                summary: format!(
                    "{} [{}]: node shows {present} GPUs, its baseline says {want}",
                    rule.spec.title, rule.spec.mitre[0].id
                ),
                evidence: vec![rules::ev("inventory.gpus", present as f64, Some(want as f64), now)],
                action: rule.spec.action,
                dimension: None,
                labels,
            });
        }
        out
    }
}
