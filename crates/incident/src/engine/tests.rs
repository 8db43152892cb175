//! Tests of the engine: lifecycle, dedup, flaps, manual operations, restart, queries.

use super::*;
use crate::change::ChangeKind;
use crate::correlate::CorrelationRules;
use gpuwarden_model::{Action, Finding, FindingKind, GpuUuid};
use proptest::prelude::*;
use std::time::Duration;

const MIN: i64 = 60_000;

fn finding(rule: &str, gpu: Option<&str>, severity: Severity, action: Action) -> Finding {
    Finding {
        kind: FindingKind::Health,
        rule: rule.to_string(),
        severity,
        gpu: gpu.map(GpuUuid::new),
        node: "node-a".to_string(),
        ts_ms: 0,
        summary: format!("{rule} at {severity}"),
        evidence: Vec::new(),
        action,
        dimension: None,
        labels: Default::default(),
    }
}

fn xid(gpu: &str) -> Finding {
    finding("xid.79", Some(gpu), Severity::Critical, Action::ResetGpu)
}

/// Lifecycle tests run without correlation (one incident per rule and GPU); grouping is
/// tested in `correlation_tests`.
fn engine() -> IncidentEngine {
    IncidentEngine::new(IncidentConfig::default(), Vec::new()).with_correlation(CorrelationRules::none())
}

/// The id of the incident findings of `key` go to.
fn id(e: &IncidentEngine, key: &str) -> String {
    e.by_key
        .get(key)
        .cloned()
        .unwrap_or_else(|| panic!("no incident for {key}"))
}

/// A new-style id: `inc-` and 26 Crockford base32 characters.
fn is_new_id(id: &str) -> bool {
    id.strip_prefix("inc-")
        .is_some_and(|u| u.len() == 26 && u.bytes().all(|b| b"0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(&b)))
}

fn active(e: &IncidentEngine) -> Vec<&Incident> {
    e.list(&IncidentFilter::active())
}

#[test]
fn first_finding_opens_an_incident() {
    let mut e = engine();
    let changed = e.apply(1_000, &[xid("GPU-1")]);
    assert_eq!(changed.len(), 1);
    let inc = &changed[0];
    assert!(is_new_id(&inc.id), "{}", inc.id);
    assert_eq!(inc.dedup_key, "xid.79@GPU-1");
    assert_eq!(inc.state, IncidentState::Open);
    assert_eq!(inc.severity, Severity::Critical);
    assert_eq!(inc.action, Action::ResetGpu);
    assert_eq!(inc.finding_count, 1);
    assert_eq!(inc.timeline.len(), 1);
    assert_eq!(inc.timeline[0].what, "opened");
    assert_eq!(e.get(&inc.id), Some(inc));
}

#[test]
fn node_finding_key_has_node_prefix() {
    let mut e = engine();
    let f = finding("drift.driver", None, Severity::Warning, Action::None);
    let changed = e.apply(0, &[f]);
    assert_eq!(changed[0].dedup_key, "drift.driver@node:node-a");
}

#[test]
fn same_rule_and_gpu_dedups_different_gpu_opens_another() {
    let mut e = engine();
    e.apply(0, &[xid("GPU-1")]);
    let changed = e.apply(30_000, &[xid("GPU-1"), xid("GPU-1")]);
    assert!(changed.is_empty(), "repeats are bookkeeping only: {changed:?}");
    assert_eq!(active(&e).len(), 1);
    let first = id(&e, "xid.79@GPU-1");
    assert_eq!(e.get(&first).map(|i| i.finding_count), Some(3));
    assert_eq!(e.get(&first).map(|i| i.timeline.len()), Some(1));

    let changed = e.apply(2 * MIN, &[xid("GPU-1"), xid("GPU-2")]);
    assert_eq!(changed.len(), 2, "new incident for GPU-2, refresh of GPU-1");
    assert_eq!(active(&e).len(), 2);
    let second = id(&e, "xid.79@GPU-2");
    assert_ne!(second, first);
    assert_eq!(e.get(&second).map(|i| i.dedup_key.as_str()), Some("xid.79@GPU-2"));
}

#[test]
fn repeated_findings_are_refreshed_at_most_every_refresh_interval() {
    let mut e = engine();
    e.apply(0, &[xid("GPU-1")]);
    let mut refreshes = 0;
    for t in 1..=20 {
        let changes = e.apply_changes(t * 10_000, &[xid("GPU-1")]);
        for c in &changes {
            assert_eq!(c.kinds, vec![ChangeKind::Refreshed]);
            assert!(!c.is_notable());
        }
        refreshes += changes.len();
    }
    // 200 s of data with a 60 s refresh interval.
    assert_eq!(refreshes, 3);
}

#[test]
fn severity_and_action_escalate_and_never_decrease() {
    let mut e = engine();
    e.apply(0, &[finding("ecc", Some("GPU-1"), Severity::Warning, Action::None)]);
    let up = e.apply_changes(
        MIN,
        &[finding("ecc", Some("GPU-1"), Severity::Critical, Action::ResetGpu)],
    );
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].kinds, vec![ChangeKind::Escalated]);
    assert_eq!(up[0].incident.severity, Severity::Critical);
    assert_eq!(up[0].incident.action, Action::ResetGpu);
    assert_eq!(
        up[0].incident.timeline.last().map(|t| t.what.as_str()),
        Some("escalated")
    );

    e.apply(2 * MIN, &[finding("ecc", Some("GPU-1"), Severity::Info, Action::None)]);
    let inc = e.get(&id(&e, "ecc@GPU-1")).expect("incident");
    assert_eq!(inc.severity, Severity::Critical);
    assert_eq!(inc.action, Action::ResetGpu);
    assert_eq!(inc.timeline.len(), 2, "opened + one escalation");

    // The action alone can escalate too.
    let up = e.apply_changes(
        3 * MIN,
        &[finding("ecc", Some("GPU-1"), Severity::Warning, Action::DrainNode)],
    );
    assert_eq!(up[0].kinds, vec![ChangeKind::Escalated]);
    assert_eq!(up[0].incident.action, Action::DrainNode);
    assert_eq!(up[0].incident.severity, Severity::Critical);
}

#[test]
fn auto_resolves_after_configured_absence_and_not_before() {
    let config = IncidentConfig {
        auto_resolve_after: Duration::from_secs(5 * 60),
        ..Default::default()
    };
    let mut e = IncidentEngine::new(config, Vec::new()).with_correlation(CorrelationRules::none());
    e.apply(0, &[xid("GPU-1")]);
    e.apply(MIN, &[xid("GPU-1")]);
    let cleared = e.apply_changes(2 * MIN, &[]);
    assert_eq!(cleared[0].kinds, vec![ChangeKind::Cleared]);
    // Absent but not yet resolved: clearing, not open.
    assert_eq!(cleared[0].incident.state, IncidentState::Clearing);
    for t in 3..6 {
        assert!(e.apply(t * MIN, &[]).is_empty());
        assert_eq!(
            e.get(&id(&e, "xid.79@GPU-1")).map(|i| i.state),
            Some(IncidentState::Clearing)
        );
    }
    // Last seen at 1 min: absent for 5 min at 6 min.
    let resolved = e.apply_changes(6 * MIN, &[]);
    assert_eq!(resolved[0].kinds, vec![ChangeKind::Resolved]);
    let inc = &resolved[0].incident;
    assert_eq!(inc.state, IncidentState::Resolved);
    assert_eq!(inc.resolved_ms, Some(6 * MIN));
    assert_eq!(
        inc.resolution,
        Some(Resolution::Automatic {
            cleared_since_ms: 2 * MIN
        })
    );
    assert!(active(&e).is_empty());
}

/// After a restart, an incident whose GPU has sent no data yet is held: no "cleared", no
/// resolution, however long; once the GPU is judged again, absence counts as usual.
#[test]
fn incidents_whose_condition_cannot_be_judged_do_not_resolve() {
    let config = IncidentConfig {
        auto_resolve_after: Duration::from_secs(2 * 60),
        ..Default::default()
    };
    let mut e = IncidentEngine::new(config, Vec::new()).with_correlation(CorrelationRules::none());
    e.apply(0, &[xid("GPU-1"), xid("GPU-2")]);
    let gpu1_unknown = |i: &Incident| i.gpu.as_ref().is_some_and(|g| g.as_str() == "GPU-1");
    for t in 1..10 {
        e.apply_changes_holding(t * MIN, &[], &gpu1_unknown);
    }
    let state = |e: &IncidentEngine, g: &str| {
        e.list(&IncidentFilter::default())
            .into_iter()
            .find(|i| i.gpu.as_ref().is_some_and(|u| u.as_str() == g))
            .map(|i| (i.state, i.timeline.iter().any(|t| t.what == "cleared")))
    };
    assert_eq!(state(&e, "GPU-1"), Some((IncidentState::Open, false)));
    assert_eq!(state(&e, "GPU-2").map(|s| s.0), Some(IncidentState::Resolved));
    // Judged again and absent: cleared, then resolved after the usual absence.
    e.apply_changes(10 * MIN, &[]);
    assert_eq!(state(&e, "GPU-1"), Some((IncidentState::Resolved, true)));
}

#[test]
fn flap_before_resolution_is_counted_in_the_same_incident() {
    let mut e = engine();
    let first = e.apply(0, &[xid("GPU-1")])[0].id.clone();
    e.apply(MIN, &[]);
    let back = e.apply_changes(2 * MIN, &[xid("GPU-1")]);
    assert_eq!(back[0].kinds, vec![ChangeKind::Flapped]);
    assert_eq!(back[0].incident.id, first);
    assert_eq!(back[0].incident.flaps, 1);
    assert_eq!(
        back[0].incident.timeline.last().map(|t| t.what.as_str()),
        Some("reopened")
    );
    assert_eq!(e.list(&IncidentFilter::default()).len(), 1);
}

#[test]
fn return_within_flap_window_after_resolution_reopens_same_incident() {
    let mut e = engine();
    let first = e.apply(0, &[xid("GPU-1")])[0].id.clone();
    e.apply(10 * MIN, &[]);
    assert_eq!(e.get(&first).map(|i| i.state), Some(IncidentState::Resolved));
    let back = e.apply_changes(35 * MIN, &[xid("GPU-1")]);
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].kinds, vec![ChangeKind::Reopened]);
    let inc = &back[0].incident;
    assert_eq!(inc.id, first);
    assert_eq!(inc.state, IncidentState::Open);
    assert_eq!(inc.flaps, 1);
    assert_eq!(inc.resolved_ms, None);
    assert_eq!(inc.resolution, None);
    assert_eq!(e.list(&IncidentFilter::default()).len(), 1);
}

#[test]
fn return_after_flap_window_opens_a_new_incident() {
    let mut e = engine();
    let first = e.apply(0, &[xid("GPU-1")])[0].id.clone();
    e.apply(10 * MIN, &[]);
    let back = e.apply(40 * MIN, &[xid("GPU-1")]);
    assert_eq!(back.len(), 1);
    assert!(is_new_id(&back[0].id) && back[0].id != first, "{}", back[0].id);
    assert_eq!(back[0].flaps, 0);
    assert_eq!(e.get(&first).map(|i| i.state), Some(IncidentState::Resolved));
    assert_eq!(active(&e).len(), 1);
}

#[test]
fn acknowledge_is_idempotent_and_refused_when_resolved() {
    let mut e = engine();
    let first = e.apply(0, &[xid("GPU-1")])[0].id.clone();
    let ack = e.acknowledge(&first, "alice", Some("looking"), MIN).expect("ack");
    assert_eq!(ack.state, IncidentState::Acknowledged);
    assert_eq!(ack.acknowledged_by.as_deref(), Some("alice"));
    assert_eq!(ack.acknowledged_ms, Some(MIN));
    assert_eq!(
        ack.timeline.last().map(|t| t.detail.as_str()),
        Some("by alice: looking")
    );
    let again = e.acknowledge(&first, "bob", None, 2 * MIN).expect("idempotent");
    assert_eq!(again, ack);

    e.resolve(&first, "alice", None, 3 * MIN).expect("resolve");
    let err = e.acknowledge(&first, "bob", None, 4 * MIN).unwrap_err();
    assert_eq!(
        err,
        IncidentError::InvalidTransition {
            id: first.clone(),
            from: IncidentState::Resolved,
            to: IncidentState::Acknowledged
        }
    );
    assert_eq!(
        err.to_string(),
        format!("incident {first} cannot go from resolved to acknowledged")
    );
}

#[test]
fn resolve_from_open_or_acknowledged_and_errors() {
    let mut e = engine();
    e.apply(0, &[xid("GPU-1"), xid("GPU-2")]);
    let (first, second) = (id(&e, "xid.79@GPU-1"), id(&e, "xid.79@GPU-2"));
    e.acknowledge(&second, "alice", None, MIN).expect("ack");
    for id in [&first, &second] {
        let r = e.resolve(id, "bob", Some("fixed"), 2 * MIN).expect("resolve");
        assert_eq!(r.state, IncidentState::Resolved);
        assert_eq!(
            r.resolution,
            Some(Resolution::Manual {
                actor: "bob".into(),
                comment: Some("fixed".into())
            })
        );
    }
    assert!(matches!(
        e.resolve(&first, "bob", None, 3 * MIN),
        Err(IncidentError::InvalidTransition { .. })
    ));
    let missing = e.resolve("inc-999999", "bob", None, 3 * MIN).unwrap_err();
    assert_eq!(
        missing,
        IncidentError::NotFound {
            id: "inc-999999".into()
        }
    );
    assert_eq!(missing.to_string(), "incident inc-999999 not found");
    assert!(matches!(
        e.acknowledge("nope", "bob", None, 3 * MIN),
        Err(IncidentError::NotFound { .. })
    ));
}

#[test]
fn manually_resolved_incident_still_present_reopens_after_grace() {
    let mut e = engine();
    let first = e.apply(0, &[xid("GPU-1")])[0].id.clone();
    e.resolve(&first, "bob", None, MIN).expect("resolve");
    // Still present every minute: stays resolved for the 30 min grace.
    for t in 2..31 {
        assert!(e.apply(t * MIN, &[xid("GPU-1")]).is_empty(), "t={t}");
    }
    let back = e.apply_changes(31 * MIN, &[xid("GPU-1")]);
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].kinds, vec![ChangeKind::Reopened]);
    assert_eq!(back[0].incident.id, first);
    assert_eq!(back[0].incident.state, IncidentState::Open);
    assert_eq!(back[0].incident.flaps, 1);
    assert_eq!(back[0].incident.acknowledged_by, None);
}

#[test]
fn min_duration_delays_warnings_but_not_critical() {
    let config = IncidentConfig {
        min_duration: Duration::from_secs(120),
        ..Default::default()
    };
    let mut e = IncidentEngine::new(config, Vec::new()).with_correlation(CorrelationRules::none());
    let warn = || finding("thermal", Some("GPU-1"), Severity::Warning, Action::None);
    assert!(e.apply(0, &[warn(), xid("GPU-2")]).iter().all(|i| i.rule == "xid.79"));
    assert!(e
        .apply(MIN, &[warn(), xid("GPU-2")])
        .iter()
        .all(|i| i.rule != "thermal"));
    let opened: Vec<_> = e
        .apply(2 * MIN, &[warn(), xid("GPU-2")])
        .into_iter()
        .filter(|i| i.rule != "xid.79")
        .collect();
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0].rule, "thermal");
    assert_eq!(opened[0].finding_count, 3);

    // A warning that goes away before min_duration never opens.
    let other = || finding("power", Some("GPU-1"), Severity::Warning, Action::None);
    e.apply(3 * MIN, &[warn(), other(), xid("GPU-2")]);
    e.apply(4 * MIN, &[warn(), xid("GPU-2")]);
    assert!(e
        .apply(5 * MIN, &[warn(), other(), xid("GPU-2")])
        .iter()
        .all(|i| i.rule != "power"));
    assert!(e
        .list(&IncidentFilter {
            rule: Some("power".into()),
            ..Default::default()
        })
        .is_empty());
}

#[test]
fn ids_stay_after_restart_and_state_is_kept() {
    let mut e = engine();
    e.apply(0, &[xid("GPU-1"), xid("GPU-2"), xid("GPU-3")]);
    e.apply(MIN, &[xid("GPU-1"), xid("GPU-2")]); // GPU-3 cleared
    let saved: Vec<Incident> = e.list(&IncidentFilter::default()).into_iter().cloned().collect();

    let mut e = IncidentEngine::new(IncidentConfig::default(), saved).with_correlation(CorrelationRules::none());
    let changed = e.apply_changes(2 * MIN, &[xid("GPU-1"), xid("GPU-3"), xid("GPU-4")]);
    let by_id: BTreeMap<_, _> = changed.iter().map(|c| (c.incident.id.clone(), &c.kinds)).collect();
    assert_eq!(by_id.get(&id(&e, "xid.79@GPU-4")), Some(&&vec![ChangeKind::Opened]));
    // GPU-3 was cleared before the restart: its return is a flap.
    assert_eq!(by_id.get(&id(&e, "xid.79@GPU-3")), Some(&&vec![ChangeKind::Flapped]));
    assert_eq!(by_id.get(&id(&e, "xid.79@GPU-2")), Some(&&vec![ChangeKind::Cleared]));
    assert_eq!(active(&e).len(), 4);
}

#[test]
fn list_filters_and_sorts_newest_first() {
    let mut e = engine();
    e.apply(0, &[xid("GPU-1")]);
    e.apply(
        MIN,
        &[
            xid("GPU-1"),
            finding("thermal", Some("GPU-2"), Severity::Warning, Action::None),
        ],
    );
    let mut sec = finding("mining", None, Severity::Fatal, Action::DrainNode);
    sec.kind = FindingKind::Security;
    sec.node = "node-b".into();
    e.apply(2 * MIN, &[xid("GPU-1"), sec]);
    let (i1, i2, i3) = (
        id(&e, "xid.79@GPU-1"),
        id(&e, "thermal@GPU-2"),
        id(&e, "mining@node:node-b"),
    );
    e.acknowledge(&i1, "a", None, 2 * MIN).expect("ack");

    let ids = |f: IncidentFilter| -> Vec<String> { e.list(&f).iter().map(|i| i.id.clone()).collect() };
    assert_eq!(ids(IncidentFilter::default()), [i3.as_str(), &i2, &i1]);
    let acked = IncidentFilter {
        states: vec![IncidentState::Acknowledged],
        ..Default::default()
    };
    assert_eq!(ids(acked), [i1.as_str()]);
    let crit = IncidentFilter {
        min_severity: Some(Severity::Critical),
        ..Default::default()
    };
    assert_eq!(ids(crit), [i3.as_str(), &i1]);
    let node = IncidentFilter {
        node: Some("node-b".into()),
        ..Default::default()
    };
    assert_eq!(ids(node), [i3.as_str()]);
    let gpu = IncidentFilter {
        gpu: Some(GpuUuid::new("GPU-2")),
        ..Default::default()
    };
    assert_eq!(ids(gpu), [i2.as_str()]);
    let kind = IncidentFilter {
        kind: Some(FindingKind::Security),
        ..Default::default()
    };
    assert_eq!(ids(kind), [i3.as_str()]);
    let rule = IncidentFilter {
        rule: Some("thermal".into()),
        ..Default::default()
    };
    assert_eq!(ids(rule), [i2.as_str()]);
}

#[test]
fn open_counts_by_severity_cover_active_only() {
    let mut e = engine();
    e.apply(
        0,
        &[
            xid("GPU-1"),
            xid("GPU-2"),
            finding("thermal", Some("GPU-1"), Severity::Warning, Action::None),
        ],
    );
    let id_of = |e: &IncidentEngine, key: &str| {
        e.list(&IncidentFilter::default())
            .iter()
            .find(|i| i.dedup_key == key)
            .map(|i| i.id.clone())
            .expect("incident")
    };
    let gpu2 = id_of(&e, "xid.79@GPU-2");
    let gpu1 = id_of(&e, "xid.79@GPU-1");
    e.acknowledge(&gpu2, "a", None, 0).expect("ack");
    e.resolve(&gpu1, "a", None, 0).expect("resolve");
    let counts = e.open_count_by_severity();
    assert_eq!(counts.get(&Severity::Critical), Some(&1));
    assert_eq!(counts.get(&Severity::Warning), Some(&1));
    assert_eq!(counts.get(&Severity::Info), Some(&0));
    assert_eq!(counts.get(&Severity::Fatal), Some(&0));
}

#[test]
fn flapping_incident_timeline_stays_bounded() {
    let mut e = engine();
    for t in 0..2_000 {
        let findings = if t % 2 == 0 { vec![xid("GPU-1")] } else { vec![] };
        e.apply(t * 1_000, &findings);
    }
    let inc = e.get(&id(&e, "xid.79@GPU-1")).expect("incident");
    assert_eq!(inc.flaps, 999);
    assert!(inc.timeline.len() <= 200);
    assert_eq!(inc.timeline[0].what, "opened");
}

#[test]
fn prune_resolved_forgets_old_resolved_incidents() {
    let mut e = engine();
    e.apply(0, &[xid("GPU-1"), xid("GPU-2")]);
    let (first, second) = (id(&e, "xid.79@GPU-1"), id(&e, "xid.79@GPU-2"));
    e.apply(20 * MIN, &[xid("GPU-2")]);
    assert_eq!(e.prune_resolved(30 * MIN), 1);
    assert!(e.get(&first).is_none());
    assert!(e.get(&second).is_some());
    // The key is free again: a new incident, with a new id.
    let changed = e.apply_changes(31 * MIN, &[xid("GPU-1"), xid("GPU-2")]);
    let opened: Vec<_> = changed
        .iter()
        .filter(|c| c.kinds.contains(&ChangeKind::Opened))
        .collect();
    assert_eq!(opened.len(), 1);
    assert!(is_new_id(&opened[0].incident.id));
    assert!(opened[0].incident.id != first && opened[0].incident.id != second);
}

/// One step of a random history: time advance, which keys are present, manual actions.
#[derive(Debug, Clone)]
struct Step {
    advance_s: i64,
    present: Vec<(u8, u8)>,
    ack: Option<u8>,
    resolve: Option<u8>,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0i64..900,
        proptest::collection::vec((0u8..3, 0u8..4), 0..6),
        proptest::option::of(0u8..10),
        proptest::option::of(0u8..10),
    )
        .prop_map(|(advance_s, present, ack, resolve)| Step {
            advance_s,
            present,
            ack,
            resolve,
        })
}

proptest! {
    #[test]
    fn at_most_one_active_incident_per_dedup_key(
        steps in proptest::collection::vec(step(), 1..80),
        restart_at in 0usize..80,
        min_duration_s in prop_oneof![Just(0u64), Just(120u64)],
    ) {
        let config = IncidentConfig { min_duration: Duration::from_secs(min_duration_s), ..Default::default() };
        let mut e = IncidentEngine::new(config.clone(), Vec::new()).with_correlation(CorrelationRules::none());
        let mut now = 0;
        for (i, s) in steps.iter().enumerate() {
            if i == restart_at {
                let saved = e.list(&IncidentFilter::default()).into_iter().cloned().collect();
                e = IncidentEngine::new(config.clone(), saved).with_correlation(CorrelationRules::none());
            }
            now += s.advance_s * 1000;
            let sev = [Severity::Info, Severity::Warning, Severity::Critical, Severity::Fatal];
            let findings: Vec<Finding> = s
                .present
                .iter()
                .map(|&(rule, gpu)| {
                    let gpu = format!("GPU-{gpu}");
                    let gpu = (gpu != "GPU-3").then_some(gpu.as_str());
                    finding(&format!("r{rule}"), gpu, sev[usize::from(rule)], Action::None)
                })
                .collect();
            let changed = e.apply(now, &findings);
            for c in &changed {
                prop_assert_eq!(Some(c), e.get(&c.id));
            }
            if let Some(n) = s.ack {
                let _ = e.acknowledge(&format!("inc-{n:06}"), "p", None, now);
            }
            if let Some(n) = s.resolve {
                let _ = e.resolve(&format!("inc-{n:06}"), "p", None, now);
            }
            let mut seen = std::collections::HashSet::new();
            for inc in active(&e) {
                prop_assert!(seen.insert(inc.dedup_key.clone()), "two active for {}", inc.dedup_key);
            }
        }
    }
}

#[test]
fn finding_labels_travel_to_the_incident_and_update() {
    let mut e = engine();
    let mut f = finding(
        "sec.mining.telemetry",
        Some("GPU-1"),
        Severity::Critical,
        Action::RestartApp,
    );
    f.labels.insert("threat.technique.id".into(), "T1496".into());
    f.labels.insert("gpuwarden.pod".into(), "miner-1".into());
    e.apply(1_000, std::slice::from_ref(&f));
    f.labels.insert("gpuwarden.pod".into(), "miner-2".into());
    e.apply(2_000, std::slice::from_ref(&f));
    let inc = active(&e)[0];
    assert_eq!(inc.labels.get("threat.technique.id").map(String::as_str), Some("T1496"));
    assert_eq!(inc.labels.get("gpuwarden.pod").map(String::as_str), Some("miner-2"));
}

#[test]
fn new_ids_are_random_ulids_with_the_opening_time() {
    let ids: std::collections::BTreeSet<String> = (0..1_000).map(|_| new_id(1_700_000_000_000)).collect();
    assert_eq!(ids.len(), 1_000, "no two ids alike");
    for i in &ids {
        assert!(is_new_id(i), "{i}");
        assert!(seq_of(i).is_none(), "{i} is not a sequence number");
        // The first 10 characters are the time (48 bits), the rest is random.
        assert_eq!(&i[4..14], &new_id(1_700_000_000_000)[4..14]);
    }
    // Later opening time sorts later as text.
    assert!(new_id(1_700_000_000_001) > new_id(1_700_000_000_000));
    assert!(new_id(-5).starts_with("inc-0000000000"));
}

#[test]
fn old_sequential_ids_stay_readable_addressable_and_ordered() {
    let mut e = engine();
    e.apply(MIN, &[xid("GPU-1"), xid("GPU-2")]);
    let mut saved: Vec<Incident> = e.list(&IncidentFilter::default()).into_iter().cloned().collect();
    // As stored by an older version: sequential ids, inc-000009 and inc-000010.
    saved.sort_by(|a, b| a.dedup_key.cmp(&b.dedup_key));
    saved[0].id = "inc-000009".into();
    saved[1].id = "inc-000010".into();
    let mut e = IncidentEngine::new(IncidentConfig::default(), saved).with_correlation(CorrelationRules::none());
    assert_eq!(e.get("inc-000009").map(|i| i.dedup_key.as_str()), Some("xid.79@GPU-1"));
    // Findings still go to the old incident.
    e.apply(2 * MIN, &[xid("GPU-1"), xid("GPU-2"), xid("GPU-3")]);
    assert_eq!(id(&e, "xid.79@GPU-1"), "inc-000009");
    assert_eq!(e.get("inc-000009").map(|i| i.finding_count), Some(2));
    e.acknowledge("inc-000010", "a", None, 2 * MIN).expect("ack");
    // Newest opened first; same opening time: old ids by number, descending.
    let third = id(&e, "xid.79@GPU-3");
    assert!(is_new_id(&third));
    let ids: Vec<String> = e
        .list(&IncidentFilter::default())
        .iter()
        .map(|i| i.id.clone())
        .collect();
    assert_eq!(ids, [third.as_str(), "inc-000010", "inc-000009"]);
}

#[test]
fn incidents_opened_in_one_millisecond_list_in_a_stable_order() {
    let mut e = engine();
    let gpus: Vec<String> = (0..20).map(|i| format!("GPU-{i}")).collect();
    let findings: Vec<Finding> = gpus.iter().map(|g| xid(g)).collect();
    e.apply(MIN, &findings);
    let ids: Vec<String> = e
        .list(&IncidentFilter::default())
        .iter()
        .map(|i| i.id.clone())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(ids, sorted, "same opening time: by id, descending");
    // The same after a restart.
    let saved: Vec<Incident> = e.list(&IncidentFilter::default()).into_iter().cloned().collect();
    let e = IncidentEngine::new(IncidentConfig::default(), saved).with_correlation(CorrelationRules::none());
    let again: Vec<String> = e
        .list(&IncidentFilter::default())
        .iter()
        .map(|i| i.id.clone())
        .collect();
    assert_eq!(again, ids);
}

#[test]
fn adopting_another_instances_incident_replaces_ours_and_takes_its_findings() {
    // Two engines (two instances) open an incident for the same condition; the store
    // kept the first one's, and the second adopts it.
    let mut first = engine();
    let mut second = engine();
    let winner = first.apply(1_000, &[xid("GPU-1")]).remove(0);
    let loser = second.apply(1_100, &[xid("GPU-1")]).remove(0);
    assert_ne!(winner.id, loser.id);
    let held = second.adopt(&loser.id, winner.clone());
    assert_eq!(held, winner);
    assert!(second.get(&loser.id).is_none(), "the loser is forgotten");
    assert_eq!(id(&second, "xid.79@GPU-1"), winner.id);
    assert_eq!(active(&second).len(), 1);
    // Findings of the key now update the winner: no second opening.
    let changes = second.apply_changes(2_000, &[xid("GPU-1")]);
    assert!(
        changes
            .iter()
            .all(|c| c.incident.id == winner.id && !c.kinds.contains(&ChangeKind::Opened)),
        "{changes:?}"
    );
    // Its condition gone for long enough, the adopted incident resolves here too.
    let later = 2_000 + e_auto_resolve() + 1_000;
    second.apply(3_000, &[]);
    let resolved = second.apply(later, &[]);
    assert!(
        resolved
            .iter()
            .any(|i| i.id == winner.id && i.state == IncidentState::Resolved),
        "{resolved:?}"
    );
}

fn e_auto_resolve() -> i64 {
    IncidentConfig::default().auto_resolve_after.as_millis() as i64
}
