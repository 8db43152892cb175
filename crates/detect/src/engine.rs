//! The health engine: keeps a little state per GPU, and on `evaluate` runs every rule,
//! scores every GPU and node, and lists the findings active right now.
//!
//! Pure and synchronous: no clock (time is the data's time, passed in as `now_ms`), no
//! I/O, no async. The caller (the pipeline) feeds rows and events as they come and
//! evaluates on its own schedule; `gpuwarden scrape` uses [`crate::evaluate_snapshot`].
//!
//! Findings are *conditions*, not notifications: each evaluation lists every rule that
//! holds now (one finding per rule per GPU or node, `rule` stable), and a condition that
//! cleared simply stops appearing. The incident engine turns that into open/resolve.

use crate::catalog::XidCatalog;
use crate::checks::{self, Ctx};
use crate::cohort::Cohorts;
use crate::hit::{ev, Deduction, Hit};
use crate::rules::{ids, HealthRules};
use crate::score;
use crate::state::GpuState;
use crate::xid;
use gpuwarden_model::{
    Dimension, Event, EventKind, Finding, Freshness, GpuIdentity, GpuSamples, GpuUuid, HealthState, Severity,
    TimestampMs,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Health of one GPU at one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuHealth {
    pub uuid: GpuUuid,
    pub node: String,
    /// `modelName`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// 0–100, the minimum over measured dimensions; `None` when the data is stale or
    /// missing, or no dimension is measured (then `state` is `unknown`).
    pub score: Option<f64>,
    pub state: HealthState,
    /// Per-dimension scores (all five keys; `None` when unknown or not measured: no
    /// input field for it on this GPU, see [`crate::measured`]).
    pub dimensions: BTreeMap<Dimension, Option<f64>>,
    /// Every point taken off, and why.
    pub deductions: Vec<Deduction>,
    pub freshness: Freshness,
    /// Things the engine could not judge, and why (e.g. a model without known limits).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Health of one node: its worst GPU, plus node-level findings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeHealth {
    pub node: String,
    /// Worst known GPU's score; `None` when every GPU is unknown.
    pub score: Option<f64>,
    pub state: HealthState,
    /// Per dimension, the worst known GPU's value.
    pub dimensions: BTreeMap<Dimension, Option<f64>>,
    pub gpus: usize,
    pub gpus_unknown: usize,
    /// The GPU that sets the node's score (lowest score; ties by UUID).
    pub worst_gpu: Option<GpuUuid>,
    /// E.g. "2 of 8 GPUs unknown (stale or missing data)".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The result of one evaluation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Data time the evaluation is for.
    pub ts_ms: TimestampMs,
    /// GPUs by node, then UUID.
    pub gpus: Vec<GpuHealth>,
    /// Nodes by name.
    pub nodes: Vec<NodeHealth>,
    /// Conditions active now, by node, GPU, rule.
    pub findings: Vec<Finding>,
    /// Evaluation-wide notes (e.g. what a single-page evaluation could not judge).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The health engine. See the module docs.
#[derive(Debug, Clone)]
pub struct HealthEngine {
    rules: HealthRules,
    catalog: XidCatalog,
    gpus: BTreeMap<GpuUuid, GpuState>,
    /// Scoring a single page: sustained rules count from one sample.
    snapshot: bool,
}

impl HealthEngine {
    pub fn new(rules: HealthRules, catalog: XidCatalog) -> Self {
        HealthEngine {
            rules,
            catalog,
            gpus: BTreeMap::new(),
            snapshot: false,
        }
    }

    /// An engine that judges a single page (see [`crate::evaluate_snapshot`]).
    pub(crate) fn for_snapshot(rules: HealthRules, catalog: XidCatalog) -> Self {
        HealthEngine {
            snapshot: true,
            ..Self::new(rules, catalog)
        }
    }

    pub fn rules(&self) -> &HealthRules {
        &self.rules
    }

    pub fn catalog(&self) -> &XidCatalog {
        &self.catalog
    }

    /// Number of GPUs tracked.
    pub fn len(&self) -> usize {
        self.gpus.len()
    }

    pub fn is_empty(&self) -> bool {
        self.gpus.is_empty()
    }

    fn state_mut(&mut self, gpu: &GpuUuid, node: &str) -> &mut GpuState {
        let rules = &self.rules;
        let s = self
            .gpus
            .entry(gpu.clone())
            .or_insert_with(|| GpuState::new(node.to_string(), rules));
        if s.node.is_empty() && !node.is_empty() {
            s.node = node.to_string();
        }
        s
    }

    /// Records a GPU's identity (node, model). Cheap when nothing changed.
    pub fn observe_identity(&mut self, id: &GpuIdentity) {
        self.state_mut(&id.uuid, &id.node).set_identity(id);
    }

    /// Folds in one row of samples. Time is `row.ts_ms` (data time).
    pub fn observe_row(&mut self, row: &GpuSamples) {
        self.state_mut(&row.gpu, "").observe_row(row);
    }

    /// Folds in one event (XID, XidCleared, GpuDisappeared, GpuAppeared; others ignored:
    /// the counters and flags they mirror are read from the samples).
    pub fn observe_event(&mut self, e: &Event) {
        let gap = i64::from(self.rules.xid.episode_gap_minutes) * 60_000;
        let s = self.state_mut(&e.gpu, &e.node);
        match &e.kind {
            EventKind::Xid { code, .. } => s.xids.record(*code, e.ts_ms, gap),
            EventKind::XidCleared { previous_code } => s.xids.clear(*previous_code, e.ts_ms),
            EventKind::GpuDisappeared => s.disappeared = true,
            EventKind::GpuAppeared => s.disappeared = false,
            _ => {}
        }
    }

    /// One scrape's worth, in the analysis stage's order: identities, rows, then the
    /// events derived from the page (as `Analyzer::observe_page` for the other analyzers).
    pub fn observe_page(&mut self, identities: &[GpuIdentity], rows: &[GpuSamples], events: &[Event]) {
        for id in identities {
            self.observe_identity(id);
        }
        for row in rows {
            self.observe_row(row);
        }
        for e in events {
            self.observe_event(e);
        }
    }

    /// Forgets a GPU (removed from the inventory).
    pub fn forget(&mut self, gpu: &GpuUuid) {
        self.gpus.remove(gpu);
    }

    /// Evaluates every GPU and node at data time `now_ms`. `freshness` says whether each
    /// GPU's data can be trusted; anything but `Fresh` scores `unknown`.
    pub fn evaluate(&mut self, now_ms: TimestampMs, freshness: &dyn Fn(&GpuUuid) -> Freshness) -> Evaluation {
        let fresh: Vec<Freshness> = self.gpus.keys().map(freshness).collect();
        let node_wide = self.node_wide_xids(now_ms);

        let mut cohorts = Cohorts::default();
        let min_util = self.rules.clocks.straggler.min_utilization;
        for (s, f) in self.gpus.values().zip(&fresh) {
            if *f == Freshness::Fresh {
                cohorts.add(s, min_util);
            }
        }
        cohorts.finish();

        let mut out = Evaluation {
            ts_ms: now_ms,
            ..Evaluation::default()
        };
        let no_codes = BTreeSet::new();
        let mut hits = Vec::new();
        for ((uuid, s), f) in self.gpus.iter_mut().zip(fresh) {
            hits.clear();
            let mut notes = Vec::new();
            let known = f == Freshness::Fresh && s.has_rows();
            if known {
                let ctx = Ctx {
                    rules: &self.rules,
                    snapshot: self.snapshot,
                    new_row: s.has_new_row(),
                };
                checks::run_all(s, &ctx, &mut hits, &mut notes);
                cohorts.check(s, &ctx, &mut hits);
            }
            let codes = node_wide.get(&s.node).map_or(&no_codes, |(c, _)| c);
            xid::gpu_hits(&s.xids, now_ms, &self.rules.xid, &self.catalog, codes, &mut hits);
            let fob = &self.rules.gpu.fallen_off_bus;
            let vanished =
                (f == Freshness::MissingFromScrape && s.has_rows()) || (s.disappeared && f != Freshness::Fresh);
            if fob.enabled && vanished {
                let xid79 = s.xids.seen_since(79, now_ms.saturating_sub(86_400_000));
                hits.push(Hit::of(
                    &fob.meta(ids::GPU_FALLEN_OFF_BUS),
                    format!(
                        "GPU vanished from its node's scrape while the node still answers{}",
                        if xid79 {
                            " after XID 79 (fallen off the bus)"
                        } else {
                            "; XID 79 (fallen off the bus) is the usual cause"
                        }
                    ),
                    vec![ev(
                        "scrape_presence",
                        0.0,
                        Some(1.0),
                        Some(1.0),
                        s.last_row_ms.unwrap_or(now_ms),
                    )],
                ));
            }
            s.last_eval_row_ms = s.last_row_ms;

            for h in &hits {
                out.findings.push(h.finding(Some(uuid), &s.node, now_ms));
            }
            let health = if known {
                let dims = score::dimensions(&hits, &crate::measured::measured(s));
                let total = score::overall(&dims);
                let worst = hits.iter().map(|h| h.severity).max();
                let unmeasured: Vec<&str> = dims
                    .iter()
                    .filter(|(_, v)| v.is_none())
                    .map(|(d, _)| d.as_str())
                    .collect();
                if total.is_none() {
                    notes.push(
                        "score unknown: the data has no measured value for any health dimension \
                         (no temperature, power, ECC/remap, PCIe/NVLink error or clock/XID field)"
                            .to_string(),
                    );
                } else if !unmeasured.is_empty() {
                    notes.push(format!(
                        "not measured (no input on this GPU): {}",
                        unmeasured.join(", ")
                    ));
                }
                GpuHealth {
                    uuid: uuid.clone(),
                    node: s.node.clone(),
                    model: s.model.clone(),
                    score: total,
                    state: total.map_or(HealthState::Unknown, |t| score::state(t, worst, &self.rules.score)),
                    dimensions: dims,
                    deductions: hits.iter().filter(|h| h.points > 0.0).map(Hit::deduction).collect(),
                    freshness: f,
                    notes,
                }
            } else {
                let why = if s.has_rows() {
                    format!("score unknown: data is not fresh ({f:?})")
                } else {
                    "score unknown: no samples yet".to_string()
                };
                GpuHealth {
                    uuid: uuid.clone(),
                    node: s.node.clone(),
                    model: s.model.clone(),
                    score: None,
                    state: HealthState::Unknown,
                    dimensions: Dimension::ALL.iter().map(|d| (*d, None)).collect(),
                    deductions: Vec::new(),
                    freshness: f,
                    notes: vec![why],
                }
            };
            out.gpus.push(health);
        }

        for (node, (codes, gpus)) in &node_wide {
            out.findings.push(self.node_wide_finding(node, codes, *gpus, now_ms));
        }
        out.gpus.sort_by(|a, b| (&a.node, &a.uuid).cmp(&(&b.node, &b.uuid)));
        out.nodes = nodes(&out.gpus, &out.findings);
        out.findings
            .sort_by(|a, b| (&a.node, &a.gpu, &a.rule).cmp(&(&b.node, &b.gpu, &b.rule)));
        out
    }

    /// Per node: the XID codes seen on many of its GPUs within the node-wide window,
    /// and how many GPUs the node has.
    fn node_wide_xids(&self, now: TimestampMs) -> BTreeMap<String, (BTreeSet<u32>, usize)> {
        let r = &self.rules.xid;
        let mut out = BTreeMap::new();
        if !r.enabled {
            return out;
        }
        let since = now.saturating_sub(i64::from(r.node_wide_window_minutes) * 60_000);
        // node → (gpus, code → gpus with it)
        let mut per_node: BTreeMap<&str, (usize, BTreeMap<u32, usize>)> = BTreeMap::new();
        for s in self.gpus.values() {
            let e = per_node.entry(s.node.as_str()).or_default();
            e.0 += 1;
            for rec in s.xids.records() {
                if rec.last_ms >= since && rec.last_ms <= now && rec.cleared_ms.is_none_or(|c| c < rec.last_ms) {
                    *e.1.entry(rec.code).or_default() += 1;
                }
            }
        }
        for (node, (total, codes)) in per_node {
            let wide: BTreeSet<u32> = codes
                .into_iter()
                .filter(|&(_, n)| {
                    n >= r.node_wide_min_gpus as usize && n as f64 >= r.node_wide_min_fraction * total as f64
                })
                .map(|(c, _)| c)
                .collect();
            if !wide.is_empty() {
                out.insert(node.to_string(), (wide, total));
            }
        }
        out
    }

    fn node_wide_finding(&self, node: &str, codes: &BTreeSet<u32>, gpus: usize, now: TimestampMs) -> Finding {
        let since = now.saturating_sub(i64::from(self.rules.xid.node_wide_window_minutes) * 60_000);
        let mut severity = Severity::Info;
        let mut app_only = true;
        let mut parts = Vec::new();
        let mut evidence = Vec::new();
        for &code in codes {
            let e = self.catalog.lookup_or_default(code);
            severity = severity.max(e.severity);
            app_only &= e.cause == crate::catalog::Cause::Application;
            let n = self
                .gpus
                .values()
                .filter(|s| s.node == node && s.xids.seen_since(code, since))
                .count();
            parts.push(format!("XID {code} ({}) on {n} of {gpus} GPUs", e.name));
            evidence.push(ev(&format!("xid.{code}.gpus"), n as f64, None, Some(gpus as f64), now));
        }
        let action = if app_only {
            gpuwarden_model::Action::RestartApp
        } else {
            gpuwarden_model::Action::Reboot
        };
        Finding {
            kind: gpuwarden_model::FindingKind::Health,
            rule: ids::XID_NODE_WIDE.to_string(),
            severity,
            gpu: None,
            node: node.to_string(),
            ts_ms: now,
            summary: format!(
                "{} within {} minutes: the same error on many GPUs at once points to the software or driver, not to each board; {}",
                parts.join(", "),
                self.rules.xid.node_wide_window_minutes,
                if app_only {
                    "restart the application"
                } else {
                    "reboot the node (and check the driver) before suspecting the hardware"
                }
            ),
            evidence,
            action,
            dimension: Some(Dimension::Compute),
            labels: Default::default(),
        }
    }
}

/// Node health from its GPUs' health and the findings on the node. `gpus` must be
/// sorted by node. Public so that a view of part of a node (a tenant's GPUs on it) is
/// aggregated exactly like the whole.
pub fn nodes(gpus: &[GpuHealth], findings: &[Finding]) -> Vec<NodeHealth> {
    let mut out: Vec<NodeHealth> = Vec::new();
    // Nodes with a critical finding, collected once: asking every finding for every node
    // made this nodes × findings, the larger part of an evaluation at 10,000 GPUs.
    let serious_nodes: std::collections::HashSet<&str> = findings
        .iter()
        .filter(|f| f.severity >= Severity::Critical)
        .map(|f| f.node.as_str())
        .collect();
    // `gpus` is sorted by node: consecutive runs are one node.
    let mut i = 0;
    while i < gpus.len() {
        let node = &gpus[i].node;
        let end = i + gpus[i..].iter().take_while(|g| &g.node == node).count();
        let group = &gpus[i..end];
        let known: Vec<&GpuHealth> = group.iter().filter(|g| g.score.is_some()).collect();
        let unknown = group.len() - known.len();
        let worst = known
            .iter()
            .min_by(|a, b| {
                a.score
                    .unwrap_or(0.0)
                    .total_cmp(&b.score.unwrap_or(0.0))
                    .then(score::rank(b.state).cmp(&score::rank(a.state)))
            })
            .copied();
        let dimensions = Dimension::ALL
            .iter()
            .map(|d| {
                let v = known
                    .iter()
                    .filter_map(|g| g.dimensions.get(d).copied().flatten())
                    .reduce(f64::min);
                (*d, v)
            })
            .collect();
        let state = if known.is_empty() {
            HealthState::Unknown
        } else {
            let worst_state = known
                .iter()
                .map(|g| g.state)
                .max_by_key(|s| score::rank(*s))
                .unwrap_or(HealthState::Unknown);
            // A critical finding on an unknown GPU (e.g. fallen off the bus) or on the
            // node itself still makes the node unhealthy.
            if serious_nodes.contains(node.as_str()) {
                HealthState::Unhealthy
            } else {
                worst_state
            }
        };
        out.push(NodeHealth {
            node: node.clone(),
            score: worst.and_then(|g| g.score),
            state,
            dimensions,
            gpus: group.len(),
            gpus_unknown: unknown,
            worst_gpu: worst.map(|g| g.uuid.clone()),
            note: (unknown > 0).then(|| format!("{unknown} of {} GPUs unknown (stale or missing data)", group.len())),
        });
        i = end;
    }
    out
}
