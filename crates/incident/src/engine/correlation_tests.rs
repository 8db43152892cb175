//! Tests of correlation in the engine: grouping by cause, escalation, links between
//! security and health incidents, node incidents, the clearing state and restarts.

use super::*;
use crate::change::ChangeKind;
use gpuwarden_model::{Action, Finding, FindingKind, GpuUuid};

const S: i64 = 10_000;

fn finding(kind: FindingKind, rule: &str, gpu: &str, severity: Severity, action: Action) -> Finding {
    Finding {
        kind,
        rule: rule.to_string(),
        severity,
        gpu: Some(GpuUuid::new(gpu)),
        node: "node-a".to_string(),
        ts_ms: 0,
        summary: format!("{rule} on {gpu} at {severity}"),
        evidence: Vec::new(),
        action,
        dimension: None,
        labels: Default::default(),
    }
}

fn health(rule: &str, gpu: &str, severity: Severity, action: Action) -> Finding {
    finding(FindingKind::Health, rule, gpu, severity, action)
}

fn engine() -> IncidentEngine {
    IncidentEngine::new(IncidentConfig::default(), Vec::new())
}

fn active(e: &IncidentEngine) -> Vec<&Incident> {
    e.list(&IncidentFilter::active())
}

#[test]
fn a_thermal_chain_is_one_incident_that_escalates_as_worse_signals_join() {
    let mut e = engine();
    let temp = finding(
        FindingKind::Anomaly,
        "anomaly.series.gpu_temp",
        "GPU-1",
        Severity::Warning,
        Action::None,
    );
    let margin = health("thermal.margin", "GPU-1", Severity::Warning, Action::None);
    let throttle = health("throttle.thermal", "GPU-1", Severity::Warning, Action::DrainNode);
    let slowdown = health("thermal.slowdown", "GPU-1", Severity::Critical, Action::DrainNode);

    let c = e.apply_changes(0, std::slice::from_ref(&temp));
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].kinds, vec![ChangeKind::Opened]);
    let id = c[0].incident.id.clone();
    e.apply(S, &[temp.clone(), margin.clone()]);
    e.apply(2 * S, &[temp.clone(), margin.clone(), throttle.clone()]);
    let c = e.apply_changes(3 * S, &[temp.clone(), margin, throttle, slowdown]);
    assert_eq!(c.len(), 1, "{c:?}");
    assert!(c[0].kinds.contains(&ChangeKind::Escalated), "{:?}", c[0].kinds);

    let all = active(&e);
    assert_eq!(all.len(), 1, "one incident for the whole chain");
    let inc = all[0];
    assert_eq!(inc.id, id);
    assert_eq!(inc.rule, "cause.thermal");
    assert_eq!(inc.dedup_key, "cause.thermal@GPU-1");
    assert_eq!(inc.severity, Severity::Critical, "worst contributor");
    assert_eq!(inc.action, Action::DrainNode);
    let rc = inc.correlation.root_cause.as_ref().expect("root cause");
    assert_eq!(rc.title, "GPU overheating");
    assert_eq!(rc.first_signal, "anomaly.series.gpu_temp");
    let rules: Vec<&str> = inc.correlation.contributors.iter().map(|c| c.rule.as_str()).collect();
    assert_eq!(
        rules,
        [
            "anomaly.series.gpu_temp",
            "thermal.margin",
            "throttle.thermal",
            "thermal.slowdown"
        ]
    );
    let t = &inc.correlation.contributors[0];
    assert_eq!((t.first_seen_ms, t.last_seen_ms, t.findings), (0, 3 * S, 4));
    assert_eq!(
        inc.timeline.iter().filter(|t| t.what == "joined").count(),
        3,
        "each later signal is noted once"
    );
    // Filtering by a contributing rule finds the correlated incident.
    let by_rule = IncidentFilter {
        rule: Some("thermal.slowdown".into()),
        ..Default::default()
    };
    assert_eq!(e.list(&by_rule).len(), 1);
}

#[test]
fn the_first_domino_is_the_earliest_signal_of_the_chain_even_if_it_arrives_later() {
    let mut e = engine();
    e.apply(
        0,
        &[health(
            "thermal.slowdown",
            "GPU-1",
            Severity::Critical,
            Action::DrainNode,
        )],
    );
    e.apply(S, &[health("thermal.margin", "GPU-1", Severity::Warning, Action::None)]);
    let inc = active(&e)[0];
    assert_eq!(
        inc.correlation.root_cause.as_ref().map(|r| r.first_signal.as_str()),
        Some("thermal.margin")
    );
    // Severity never goes down when a milder signal joins.
    assert_eq!(inc.severity, Severity::Critical);
}

#[test]
fn an_ecc_fault_is_one_memory_incident_and_other_gpus_and_causes_stay_apart() {
    let mut e = engine();
    let chain = [
        health("ecc.sbe_rate", "GPU-1", Severity::Warning, Action::None),
        health("remap.correctable_rows", "GPU-1", Severity::Info, Action::None),
        health("ecc.dbe", "GPU-1", Severity::Critical, Action::ResetGpu),
        health("xid.48", "GPU-1", Severity::Critical, Action::ResetGpu),
        health(
            "remap.uncorrectable_rows",
            "GPU-1",
            Severity::Critical,
            Action::HardwareInspection,
        ),
        health("xid.63", "GPU-1", Severity::Warning, Action::ResetGpu),
    ];
    for (i, f) in chain.iter().enumerate() {
        e.apply(i as i64 * S, &chain[..=i]);
        let _ = f;
    }
    // An unrelated application XID on the same GPU and the same cause on another GPU.
    e.apply(
        6 * S,
        &[
            chain[5].clone(),
            health("xid.13", "GPU-1", Severity::Warning, Action::RestartApp),
            health("ecc.dbe", "GPU-2", Severity::Critical, Action::ResetGpu),
        ],
    );
    let keys: Vec<&str> = active(&e).iter().map(|i| i.dedup_key.as_str()).collect::<Vec<_>>();
    let mut keys = keys;
    keys.sort();
    assert_eq!(keys, ["cause.memory@GPU-1", "cause.memory@GPU-2", "xid.13@GPU-1"]);
    let mem = e
        .list(&IncidentFilter::active())
        .into_iter()
        .find(|i| i.dedup_key == "cause.memory@GPU-1")
        .expect("memory incident");
    assert_eq!(mem.correlation.contributors.len(), 6);
    assert_eq!(mem.action, Action::HardwareInspection);
    assert_eq!(
        mem.correlation.root_cause.as_ref().map(|r| r.first_signal.as_str()),
        Some("ecc.sbe_rate")
    );
}

#[test]
fn inventory_change_after_a_bus_loss_links_to_it_and_says_so() {
    let mut e = engine();
    let xid79 = health("xid.79", "GPU-3", Severity::Critical, Action::Reboot);
    let gone = health("gpu.fallen_off_bus", "GPU-3", Severity::Critical, Action::Reboot);
    let inventory = finding(
        FindingKind::Security,
        "sec.drift.inventory",
        "GPU-3",
        Severity::Warning,
        Action::None,
    );
    e.apply(0, std::slice::from_ref(&xid79));
    // The GPU vanishes: the bus incident gains a signal, the inventory change arrives in
    // the same evaluation.
    e.apply(S, &[xid79.clone(), gone.clone(), inventory.clone()]);
    let all: Vec<Incident> = active(&e).into_iter().cloned().collect();
    assert_eq!(all.len(), 2, "one health incident, one security incident");
    let bus = all.iter().find(|i| i.kind == FindingKind::Health).expect("bus");
    let sec = all.iter().find(|i| i.kind == FindingKind::Security).expect("security");
    assert_eq!(bus.rule, "cause.bus");
    assert_eq!(bus.correlation.contributors.len(), 2);
    assert_eq!(sec.rule, "sec.drift.inventory", "security stays its own incident");
    assert_eq!(sec.correlation.related.len(), 1);
    assert_eq!(sec.correlation.related[0].id, bus.id);
    assert!(
        sec.summary.starts_with("follows the GPU falling off the bus"),
        "{}",
        sec.summary
    );
    assert!(bus.correlation.related.iter().any(|r| r.id == sec.id));
    // The note survives later folds of the security finding, and is added once.
    e.apply(2 * S, &[xid79, gone, inventory]);
    let sec = e.get(&sec.id).expect("sec").clone();
    assert_eq!(sec.summary.matches("follows the GPU").count(), 1, "{}", sec.summary);
    assert_eq!(sec.correlation.related.len(), 1);
}

#[test]
fn inventory_change_without_a_bus_loss_is_not_linked() {
    let mut e = engine();
    let inventory = finding(
        FindingKind::Security,
        "sec.drift.inventory",
        "GPU-9",
        Severity::Warning,
        Action::None,
    );
    // A bus loss on another GPU of the same node does not explain this one... unless it
    // is a node incident; a GPU incident elsewhere is not.
    e.apply(0, &[health("xid.79", "GPU-3", Severity::Critical, Action::Reboot)]);
    e.apply(S, std::slice::from_ref(&inventory));
    let sec = active(&e)
        .into_iter()
        .find(|i| i.kind == FindingKind::Security)
        .expect("sec")
        .clone();
    assert!(sec.correlation.related.is_empty());
    assert_eq!(sec.summary, inventory.summary);

    // Long after the bus incident on the same GPU resolved: not linked either.
    let mut e = engine();
    e.apply(0, &[health("xid.79", "GPU-9", Severity::Critical, Action::Reboot)]);
    let mut t = S;
    while active(&e).iter().any(|i| i.kind == FindingKind::Health) {
        t += 60 * S;
        e.apply(t, &[]);
    }
    e.apply(t + 6 * 60 * 60 * 1000, std::slice::from_ref(&inventory));
    let sec = active(&e)
        .into_iter()
        .find(|i| i.kind == FindingKind::Security)
        .expect("sec")
        .clone();
    assert!(sec.correlation.related.is_empty(), "{:?}", sec.correlation.related);
}

fn labelled(rule: &str, gpu: &str, severity: Severity, technique: &str) -> Finding {
    let mut f = finding(FindingKind::Security, rule, gpu, severity, Action::None);
    f.labels.insert("threat.technique.id".into(), technique.into());
    f.labels.insert(TECHNIQUES_LABEL.into(), technique.into());
    f
}

#[test]
fn a_miner_in_an_unapproved_namespace_is_one_security_incident_with_both_techniques() {
    let mut e = engine();
    let namespace = labelled("sec.use.unapproved_namespace", "GPU-4", Severity::Warning, "T1078");
    let mining = labelled("sec.mining.telemetry", "GPU-4", Severity::Critical, "T1496");
    let thermal = health("thermal.margin", "GPU-4", Severity::Warning, Action::None);
    e.apply(0, &[namespace.clone(), thermal.clone()]);
    e.apply(S, &[namespace.clone(), mining.clone(), thermal.clone()]);
    // The milder signal alone later must not relabel the incident.
    e.apply(2 * S, std::slice::from_ref(&namespace));

    let all = active(&e);
    assert_eq!(all.len(), 2, "one security incident, one health incident: {all:?}");
    let sec = all.iter().find(|i| i.kind == FindingKind::Security).expect("security");
    let heat = all.iter().find(|i| i.kind == FindingKind::Health).expect("health");
    assert_eq!(sec.rule, "cause.unauthorized_workload");
    assert_eq!(sec.severity, Severity::Critical, "worst contributor: mining");
    assert_eq!(
        sec.labels["threat.technique.id"], "T1496",
        "the worst finding's technique"
    );
    assert_eq!(sec.labels[TECHNIQUES_LABEL], "T1078,T1496");
    let rc = sec.correlation.root_cause.as_ref().expect("root cause");
    assert_eq!(rc.first_signal, "sec.use.unapproved_namespace");
    assert_eq!(heat.rule, "cause.thermal", "health never joins a security cause");

    // Another GPU's miner is its own incident; configuration drift stays apart.
    e.apply(
        3 * S,
        &[labelled("sec.mining.telemetry", "GPU-5", Severity::Critical, "T1496")],
    );
    e.apply(
        4 * S,
        &[labelled("sec.drift.power_limit", "GPU-4", Severity::Warning, "T1562")],
    );
    let keys: Vec<String> = e
        .list(&IncidentFilter::default())
        .iter()
        .map(|i| i.dedup_key.clone())
        .collect();
    assert!(
        keys.contains(&"cause.unauthorized_workload@GPU-5".to_string()),
        "{keys:?}"
    );
    assert!(keys.contains(&"sec.drift.power_limit@GPU-4".to_string()), "{keys:?}");
}

#[test]
fn a_node_wide_cause_is_one_node_incident_that_takes_over_gpu_incidents() {
    let mut e = engine();
    let hot = |g: &str| health("thermal.margin", g, Severity::Warning, Action::None);
    e.apply(0, &[hot("GPU-1")]);
    let gpu_incident = active(&e)[0].id.clone();
    let c = e.apply_changes(S, &[hot("GPU-1"), hot("GPU-2"), hot("GPU-3")]);
    let all: Vec<Incident> = active(&e).into_iter().cloned().collect();
    assert_eq!(all.len(), 1, "{all:?}");
    let node = &all[0];
    assert_eq!(node.dedup_key, "cause.thermal@node:node-a");
    assert_eq!(node.gpu, None);
    assert_eq!(node.correlation.gpus.len(), 3);
    assert!(node.correlation.related.iter().any(|r| r.id == gpu_incident));
    let merged = e.get(&gpu_incident).expect("merged");
    assert_eq!(merged.state, IncidentState::Resolved);
    assert!(merged.timeline.iter().any(|t| t.what == "merged"));
    assert!(c
        .iter()
        .any(|c| c.incident.id == gpu_incident && c.kinds.contains(&ChangeKind::Resolved)));
    // As GPUs recover one by one, the rest stay in the node incident.
    e.apply(2 * S, &[hot("GPU-2")]);
    assert_eq!(active(&e).len(), 1);
    assert_eq!(active(&e)[0].id, node.id);
}

#[test]
fn a_cleared_condition_is_clearing_and_its_return_is_the_same_open_incident() {
    let mut e = engine();
    let dbe = health("ecc.dbe", "GPU-1", Severity::Critical, Action::ResetGpu);
    e.apply(0, std::slice::from_ref(&dbe));
    let id = active(&e)[0].id.clone();
    let c = e.apply_changes(S, &[]);
    assert_eq!(c[0].incident.state, IncidentState::Clearing);
    assert!(!c[0].is_notable(), "clearing alone notifies nobody");
    // Clearing incidents are active: listed, counted.
    assert_eq!(active(&e).len(), 1);
    assert_eq!(e.open_count_by_severity()[&Severity::Critical], 1);
    // Back: open again, same incident, one flap.
    let c = e.apply_changes(2 * S, std::slice::from_ref(&dbe));
    assert_eq!(c[0].incident.id, id);
    assert_eq!(c[0].incident.state, IncidentState::Open);
    assert_eq!(c[0].incident.flaps, 1);
    // Acknowledged while clearing: stays clearing, and returns as acknowledged.
    e.apply(3 * S, &[]);
    let acked = e.acknowledge(&id, "ops", None, 3 * S).expect("ack");
    assert_eq!(acked.state, IncidentState::Clearing);
    assert!(acked.acknowledged_ms.is_some());
    e.apply(4 * S, std::slice::from_ref(&dbe));
    assert_eq!(e.get(&id).map(|i| i.state), Some(IncidentState::Acknowledged));
}

#[test]
fn clearing_survives_a_restart_and_then_resolves_or_returns() {
    let mut e = engine();
    let dbe = health("ecc.dbe", "GPU-1", Severity::Critical, Action::ResetGpu);
    e.apply(0, std::slice::from_ref(&dbe));
    let saved: Vec<Incident> = e.apply(S, &[]);
    assert_eq!(saved[0].state, IncidentState::Clearing);
    // Through JSON, as the store keeps it.
    let text = serde_json::to_string(&saved).expect("json");
    let back: Vec<Incident> = serde_json::from_str(&text).expect("parse");
    assert_eq!(back, saved, "correlation and state round-trip");

    let mut e2 = IncidentEngine::new(IncidentConfig::default(), back.clone());
    let id = saved[0].id.clone();
    assert_eq!(e2.get(&id).map(|i| i.state), Some(IncidentState::Clearing));
    // A return after the restart is a flap of the same incident.
    let c = e2.apply_changes(2 * S, std::slice::from_ref(&dbe));
    assert_eq!(c[0].incident.id, id);
    assert_eq!(c[0].incident.state, IncidentState::Open);
    assert!(c[0].kinds.contains(&ChangeKind::Flapped));
    // Without a return it resolves on time.
    let mut e3 = IncidentEngine::new(IncidentConfig::default(), back);
    let c = e3.apply_changes(11 * 60_000, &[]);
    assert_eq!(c[0].incident.state, IncidentState::Resolved);
}

#[test]
fn an_old_cleared_open_incident_loads_as_clearing() {
    // Written before the clearing state existed: open, last condition entry "cleared".
    let mut e = engine().with_correlation(CorrelationRules::none());
    e.apply(0, &[health("xid.13", "GPU-1", Severity::Warning, Action::RestartApp)]);
    let mut saved = e.apply(S, &[]);
    saved[0].state = IncidentState::Open;
    let e2 = IncidentEngine::new(IncidentConfig::default(), saved.clone());
    assert_eq!(e2.get(&saved[0].id).map(|i| i.state), Some(IncidentState::Clearing));
}

#[test]
fn set_changed_before_attaches_the_timeline() {
    let mut e = engine();
    e.apply(0, &[health("ecc.dbe", "GPU-1", Severity::Critical, Action::ResetGpu)]);
    let id = active(&e)[0].id.clone();
    let entry = gpuwarden_model::TimelineEntry {
        ts_ms: -S,
        what: "temperature".into(),
        detail: "GPU temperature rose 40 → 90 °C".into(),
        severity: None,
    };
    let inc = e.set_changed_before(&id, vec![entry.clone()]).expect("known id");
    assert_eq!(inc.correlation.changed_before, vec![entry]);
    assert!(e.set_changed_before("inc-nope", vec![]).is_none());
}
