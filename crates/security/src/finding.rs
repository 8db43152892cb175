//! Turns a rule's [`Hit`] into a [`Finding`] with the context a SOC needs: rule id and
//! name, MITRE technique, GPU, node, namespace / pod / job, process when known, the
//! playbook, and the rule's evidence. Label names follow ECS where ECS has one
//! (`rule.name`, `threat.technique.id`) and `gpuwarden.*` otherwise, so notifiers can
//! forward them unchanged (see `docs/detections/README.md`).

use crate::catalog::Rule;
use crate::policy::Policy;
use crate::rules::{usage, Hit};
use crate::state::GpuState;
use gpuwarden_model::{Finding, FindingKind, TimestampMs};
use std::collections::BTreeMap;

/// How long a process seen on a GPU is still attributed to it in findings.
const PROCESS_TTL_MS: i64 = 3_600_000;

/// The common labels of every security finding.
pub fn rule_labels(rule: &Rule) -> BTreeMap<String, String> {
    let s = &rule.spec;
    let mut l = BTreeMap::new();
    l.insert("rule.name".into(), s.title.clone());
    l.insert("threat.framework".into(), "MITRE ATT&CK".into());
    l.insert("threat.technique.id".into(), s.mitre[0].id.clone());
    l.insert("threat.technique.name".into(), s.mitre[0].name.clone());
    l.insert("threat.tactic.name".into(), s.mitre[0].tactic.clone());
    l.insert(
        "gpuwarden.mitre.techniques".into(),
        s.mitre.iter().map(|t| t.id.as_str()).collect::<Vec<_>>().join(","),
    );
    l.insert("gpuwarden.playbook".into(), rule.playbook_path());
    l
}

/// Builds the finding for `hit` of `rule` on GPU `g`.
pub fn build(rule: &Rule, hit: Hit, g: &GpuState, policy: &Policy, now: TimestampMs) -> Finding {
    let id = &g.identity;
    let w = &id.workload;
    let mut labels = rule_labels(rule);
    let mut put = |k: &str, v: Option<&str>| {
        if let Some(v) = v {
            labels.insert(k.to_string(), v.to_string());
        }
    };
    put("gpuwarden.namespace", w.namespace.as_deref());
    put("gpuwarden.pod", w.pod.as_deref());
    put("gpuwarden.container", w.container.as_deref());
    put("gpuwarden.job", w.job.as_deref());
    put("gpuwarden.account", usage::account(g));
    put("gpuwarden.gpu.model", id.model.as_deref());
    put("gpuwarden.gpu.pci_bus_id", id.pci_bus_id.as_deref());
    put("gpuwarden.driver_version", id.driver_version.as_deref());
    put(
        "gpuwarden.mig.instance",
        id.mig.as_ref().map(|m| m.instance_id.as_str()),
    );
    let process = g
        .process
        .as_ref()
        .filter(|p| now - p.ts_ms <= PROCESS_TTL_MS)
        .map(|p| match (&p.name, p.pid) {
            (Some(n), Some(pid)) => format!("{n} (pid {pid})"),
            (Some(n), None) => n.clone(),
            (None, Some(pid)) => format!("pid {pid}"),
            (None, None) => String::new(),
        });
    put("gpuwarden.process", process.as_deref().filter(|p| !p.is_empty()));
    put(
        "gpuwarden.workload.approval",
        Some(policy.approval(w, usage::account(g)).as_str()),
    );
    for (k, v) in hit.labels {
        labels.insert(k, v);
    }
    let who = match (&w.namespace, &w.pod, &w.job) {
        (Some(ns), Some(pod), _) => format!("pod {ns}/{pod}"),
        (Some(ns), None, _) => format!("namespace {ns}"),
        (None, _, Some(job)) => format!("job {job}"),
        _ => "no pod or job".to_string(),
    };
    Finding {
        kind: FindingKind::Security,
        rule: rule.spec.id.clone(),
        severity: rule.severity,
        gpu: Some(id.uuid.clone()),
        node: id.node.clone(),
        ts_ms: now,
        summary: format!(
            "{} [{}]: {}; {who}",
            rule.spec.title, rule.spec.mitre[0].id, hit.summary
        ),
        evidence: hit.evidence,
        action: rule.spec.action,
        dimension: None,
        labels,
    }
}
