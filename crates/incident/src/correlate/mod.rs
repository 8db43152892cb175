//! Correlation: which findings share a cause and so become one incident.
//!
//! Sits between detection and the incident lifecycle: every finding of an evaluation is
//! given the key of the incident it belongs to. Findings a cause of the rule file
//! (`rules/correlation.toml`) lists go to `"{cause}@{gpu}"` (or `"{cause}@node:{node}"`
//! when the cause shows on many GPUs of one node at once); every other finding keeps its
//! own key, `"{rule}@{gpu}"` (see [`crate::dedup_key`]). Security findings are never
//! grouped with health ones; link rules relate them instead (applied by the engine).
//!
//! The rules are data, so operators can read and change them, and every built-in cause
//! is tested with the signals it must and must not claim.

mod changed;
mod rules;

pub use changed::{changed_before, SeriesWindow, MAX_ENTRIES as MAX_CHANGED_BEFORE};
pub use rules::{glob_match, Cause, CorrelationError, CorrelationRules, Link, BUILTIN};

use crate::key::dedup_key;
use gpuwarden_model::Finding;
use std::collections::{BTreeMap, BTreeSet};

/// Where one finding goes.
#[derive(Debug, Clone)]
pub struct Assigned<'a> {
    /// The incident key: `"{cause}@{gpu}"`, `"{cause}@node:{node}"` or `"{rule}@{gpu}"`.
    pub key: String,
    pub finding: &'a Finding,
    /// The cause, when a rule groups it.
    pub cause: Option<&'a Cause>,
}

/// The key of a cause on one GPU.
pub fn gpu_key(cause: &str, gpu: &str) -> String {
    format!("{cause}@{gpu}")
}

/// The key of a cause on a whole node.
pub fn node_key(cause: &str, node: &str) -> String {
    format!("{cause}@node:{node}")
}

/// Gives each finding its incident key. `active(key)` says whether an incident with that
/// key is active: findings of a cause on a node whose node incident is active keep going
/// to it even when fewer GPUs show the cause now (a node incident must not split into
/// GPU incidents as its GPUs recover one by one).
pub fn assign<'a>(
    rules: &'a CorrelationRules,
    findings: &'a [Finding],
    active: &dyn Fn(&str) -> bool,
) -> Vec<Assigned<'a>> {
    let causes: Vec<Option<&Cause>> = findings.iter().map(|f| rules.cause_of(&f.rule)).collect();
    // GPUs per (cause, node) at this evaluation, for node-wide causes.
    let mut gpus: BTreeMap<(&str, &str), BTreeSet<&str>> = BTreeMap::new();
    for (f, c) in findings.iter().zip(&causes) {
        if let (Some(c), Some(g)) = (c, &f.gpu) {
            if c.node_wide_min_gpus.is_some() {
                gpus.entry((c.id.as_str(), f.node.as_str()))
                    .or_default()
                    .insert(g.as_str());
            }
        }
    }
    // Causes present per GPU at this evaluation (for consequences).
    let mut present: BTreeSet<(&str, &str)> = BTreeSet::new();
    for (f, c) in findings.iter().zip(&causes) {
        if let (Some(c), Some(g)) = (c, &f.gpu) {
            present.insert((c.id.as_str(), g.as_str()));
        }
    }
    findings
        .iter()
        .zip(causes)
        .map(|(f, cause)| {
            // A consequence joins its cause's incident on the GPU when there is one.
            if let Some(g) = &f.gpu {
                for c in rules.causes.iter().filter(|c| c.has_consequence(&f.rule)) {
                    let node = node_key(&c.id, &f.node);
                    if active(&node) {
                        return Assigned {
                            key: node,
                            finding: f,
                            cause: Some(c),
                        };
                    }
                    let key = gpu_key(&c.id, g.as_str());
                    if present.contains(&(c.id.as_str(), g.as_str())) || active(&key) {
                        return Assigned {
                            key,
                            finding: f,
                            cause: Some(c),
                        };
                    }
                }
            }
            let key = match (cause, &f.gpu) {
                (None, _) => dedup_key(f),
                (Some(c), None) => node_key(&c.id, &f.node),
                (Some(c), Some(g)) => {
                    let node = node_key(&c.id, &f.node);
                    let wide = c.node_wide_min_gpus.is_some_and(|n| {
                        let seen = gpus.get(&(c.id.as_str(), f.node.as_str())).map_or(0, BTreeSet::len);
                        seen >= n as usize || active(&node)
                    });
                    if wide {
                        node
                    } else {
                        gpu_key(&c.id, g.as_str())
                    }
                }
            };
            Assigned { key, finding: f, cause }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpuwarden_model::{Action, FindingKind, GpuUuid, Severity};

    fn f(rule: &str, gpu: &str, node: &str) -> Finding {
        Finding {
            kind: FindingKind::Health,
            rule: rule.into(),
            severity: Severity::Warning,
            gpu: Some(GpuUuid::new(gpu)),
            node: node.into(),
            ts_ms: 0,
            summary: String::new(),
            evidence: vec![],
            action: Action::None,
            dimension: None,
            labels: Default::default(),
        }
    }

    fn keys(findings: &[Finding], active: &dyn Fn(&str) -> bool) -> Vec<String> {
        let rules = CorrelationRules::builtin();
        assign(&rules, findings, active).into_iter().map(|a| a.key).collect()
    }

    #[test]
    fn a_thermal_chain_on_one_gpu_is_one_key() {
        let fs = [
            f("anomaly.series.gpu_temp", "GPU-1", "n1"),
            f("thermal.margin", "GPU-1", "n1"),
            f("throttle.thermal", "GPU-1", "n1"),
            f("thermal.slowdown", "GPU-1", "n1"),
            f("thermal.memory", "GPU-1", "n1"),
        ];
        let k = keys(&fs, &|_| false);
        assert!(k.iter().all(|x| x == "cause.thermal@GPU-1"), "{k:?}");
    }

    #[test]
    fn different_gpus_and_unrelated_rules_stay_apart() {
        let fs = [
            f("thermal.margin", "GPU-1", "n1"),
            f("thermal.margin", "GPU-2", "n1"),
            f("xid.13", "GPU-1", "n1"),
            f("ecc.dbe", "GPU-1", "n1"),
        ];
        let k = keys(&fs, &|_| false);
        assert_eq!(
            k,
            [
                "cause.thermal@GPU-1",
                "cause.thermal@GPU-2",
                "xid.13@GPU-1",
                "cause.memory@GPU-1"
            ]
        );
    }

    #[test]
    fn a_node_wide_cause_becomes_one_node_key_and_stays_while_active() {
        let hot: Vec<Finding> = (1..=3)
            .map(|i| f("thermal.margin", &format!("GPU-{i}"), "n1"))
            .collect();
        let k = keys(&hot, &|_| false);
        assert!(k.iter().all(|x| x == "cause.thermal@node:n1"), "{k:?}");
        // Two GPUs (below the threshold of 3): per GPU, unless the node incident is active.
        let k = keys(&hot[..2], &|_| false);
        assert_eq!(k, ["cause.thermal@GPU-1", "cause.thermal@GPU-2"]);
        let k = keys(&hot[..1], &|key| key == "cause.thermal@node:n1");
        assert_eq!(k, ["cause.thermal@node:n1"]);
        // Another node's active incident does not pull these in.
        let k = keys(&hot[..1], &|key| key == "cause.thermal@node:n2");
        assert_eq!(k, ["cause.thermal@GPU-1"]);
    }

    #[test]
    fn causes_without_node_wide_stay_per_gpu() {
        let fs: Vec<Finding> = (1..=8).map(|i| f("ecc.dbe", &format!("GPU-{i}"), "n1")).collect();
        let k = keys(&fs, &|_| false);
        assert_eq!(k[0], "cause.memory@GPU-1");
        assert_eq!(k.iter().collect::<BTreeSet<_>>().len(), 8);
    }

    #[test]
    fn clock_and_power_consequences_join_a_thermal_or_power_incident_only() {
        // True: throttling lowers the clock, so the clock anomaly joins the thermal
        // incident present at the same evaluation, or one already active.
        let fs = [
            f("thermal.margin", "GPU-1", "n1"),
            f("anomaly.series.sm_clock", "GPU-1", "n1"),
        ];
        assert_eq!(keys(&fs, &|_| false), ["cause.thermal@GPU-1", "cause.thermal@GPU-1"]);
        let fs = [f("anomaly.cohort.power_usage", "GPU-1", "n1")];
        assert_eq!(keys(&fs, &|k| k == "cause.power@GPU-1"), ["cause.power@GPU-1"]);
        // False: alone, a slow clock is its own cause; another GPU's heat explains nothing.
        let fs = [f("anomaly.cohort.sm_clock", "GPU-1", "n1")];
        assert_eq!(keys(&fs, &|_| false), ["cause.slow_clocks@GPU-1"]);
        let fs = [
            f("thermal.margin", "GPU-2", "n1"),
            f("anomaly.cohort.sm_clock", "GPU-1", "n1"),
        ];
        assert_eq!(
            keys(&fs, &|_| false),
            ["cause.thermal@GPU-2", "cause.slow_clocks@GPU-1"]
        );
        // Utilisation is no consequence of anything here.
        let fs = [
            f("thermal.margin", "GPU-1", "n1"),
            f("anomaly.cohort.gpu_util", "GPU-1", "n1"),
        ];
        assert_eq!(keys(&fs, &|_| false)[1], "anomaly.cohort.gpu_util@GPU-1");
    }

    #[test]
    fn without_rules_every_finding_keeps_its_own_key() {
        let rules = CorrelationRules::none();
        let fs = [f("thermal.margin", "GPU-1", "n1"), f("thermal.slowdown", "GPU-1", "n1")];
        let k: Vec<String> = assign(&rules, &fs, &|_| false).into_iter().map(|a| a.key).collect();
        assert_eq!(k, ["thermal.margin@GPU-1", "thermal.slowdown@GPU-1"]);
    }
}
