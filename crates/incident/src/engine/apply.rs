//! How the findings of one evaluation change incidents: open, fold, escalate, flap,
//! reopen, clear, auto-resolve.

use super::{is_active, IncidentEngine, Pending};
use crate::change::{ChangeKind, IncidentChange};
use crate::correlate::{self, Cause, CorrelationRules};
use crate::timeline;
use gpuwarden_model::{
    Contributor, Correlation, Finding, FindingKind, GpuUuid, Incident, IncidentState, RelatedIncident, Resolution,
    RootCause, Severity, TimestampMs,
};
use std::collections::{BTreeMap, BTreeSet};

/// The findings of one incident key at one evaluation, folded.
struct Group<'a> {
    /// The first finding (kind and node are the same for the whole key; so is the GPU,
    /// except for a node incident of a cause).
    first: &'a Finding,
    /// The most severe finding (the latest of equals): its summary describes the incident.
    worst: &'a Finding,
    action: gpuwarden_model::Action,
    count: u64,
    /// The cause that grouped them, if any.
    cause: Option<&'a Cause>,
    /// Every finding of the key, for the contributors.
    findings: Vec<&'a Finding>,
    /// A node incident of a cause (no single GPU).
    node_wide: bool,
}

impl<'a> Group<'a> {
    fn new(key: &str, f: &'a Finding, cause: Option<&'a Cause>) -> Self {
        Group {
            first: f,
            worst: f,
            action: f.action,
            count: 1,
            cause,
            findings: vec![f],
            node_wide: cause.is_some() && key.contains("@node:"),
        }
    }

    fn add(&mut self, f: &'a Finding) {
        if f.severity >= self.worst.severity {
            self.worst = f;
        }
        self.action = self.action.max(f.action);
        self.count += 1;
        self.findings.push(f);
    }

    fn severity(&self) -> Severity {
        self.worst.severity
    }

    /// The incident's rule: the cause's id, or the finding's rule.
    fn rule(&self) -> &str {
        self.cause.map_or(self.first.rule.as_str(), |c| c.id.as_str())
    }

    fn gpu(&self) -> Option<GpuUuid> {
        if self.node_wide {
            None
        } else {
            self.first.gpu.clone()
        }
    }
}

/// Reasons collected per incident id during one call.
type Changes = BTreeMap<String, BTreeSet<ChangeKind>>;

impl IncidentEngine {
    /// Applies the findings active at `now_ms` (every condition present at this
    /// evaluation; a key missing from `findings` means its condition is absent). Returns
    /// the incidents that changed, to persist and to notify.
    pub fn apply(&mut self, now_ms: TimestampMs, findings: &[Finding]) -> Vec<Incident> {
        self.apply_changes(now_ms, findings)
            .into_iter()
            .map(|c| c.incident)
            .collect()
    }

    /// As [`apply`](Self::apply), with why each incident changed: persist all of them,
    /// notify those where [`IncidentChange::is_notable`].
    pub fn apply_changes(&mut self, now_ms: TimestampMs, findings: &[Finding]) -> Vec<IncidentChange> {
        self.apply_changes_holding(now_ms, findings, &|_| false)
    }

    /// As [`apply_changes`](Self::apply_changes), where `unknown(incident)` says that an
    /// incident's condition cannot be judged at this evaluation (its GPU has sent no data
    /// since gpuwarden started, say): without findings it is neither present nor absent,
    /// so it is not cleared and does not auto-resolve. A restart must not resolve what it
    /// merely has not looked at again yet.
    pub fn apply_changes_holding(
        &mut self,
        now_ms: TimestampMs,
        findings: &[Finding],
        unknown: &dyn Fn(&Incident) -> bool,
    ) -> Vec<IncidentChange> {
        // The rules are shared so that groups may borrow them while incidents change.
        let rules = self.rules.clone();
        let assigned = {
            let by_key = &self.by_key;
            let incidents = &self.incidents;
            let active = |key: &str| by_key.get(key).and_then(|id| incidents.get(id)).is_some_and(is_active);
            correlate::assign(&rules, findings, &active)
        };
        let mut groups: BTreeMap<String, Group<'_>> = BTreeMap::new();
        for a in assigned {
            match groups.get_mut(&a.key) {
                Some(g) => g.add(a.finding),
                None => {
                    let g = Group::new(&a.key, a.finding, a.cause);
                    groups.insert(a.key, g);
                }
            }
        }
        let mut changes = Changes::new();
        // Health causes first, so a security finding of the same evaluation can link to
        // the health incident it follows.
        for security in [false, true] {
            for (key, group) in groups
                .iter()
                .filter(|(_, g)| (g.first.kind == FindingKind::Security) == security)
            {
                self.present(now_ms, key, group, &mut changes);
                if security {
                    self.link(now_ms, key, group, &rules, &mut changes);
                }
            }
        }
        self.absent(now_ms, &groups, unknown, &mut changes);
        self.pending.retain(|key, _| groups.contains_key(key));
        self.refresh(&mut changes);

        let mut out = Vec::with_capacity(changes.len());
        for (id, kinds) in changes {
            if let Some(inc) = self.incidents.get_mut(&id) {
                inc.updated_ms = inc.updated_ms.max(now_ms);
                self.returned_seen.insert(id, inc.last_seen_ms);
                out.push(IncidentChange {
                    incident: inc.clone(),
                    kinds: kinds.into_iter().collect(),
                });
            }
        }
        out
    }

    /// The condition of `key` is present.
    fn present(&mut self, now_ms: TimestampMs, key: &str, group: &Group<'_>, changes: &mut Changes) {
        let lim = self.limits;
        let Some(inc) = self.by_key.get(key).and_then(|id| self.incidents.get_mut(id)) else {
            self.open_new(now_ms, key, group, changes);
            return;
        };
        let id = inc.id.clone();
        if is_active(inc) {
            if let Some(cleared_ms) = self.cleared.remove(&id) {
                inc.flaps = inc.flaps.saturating_add(1);
                if inc.state == IncidentState::Clearing {
                    inc.state = if inc.acknowledged_ms.is_some() {
                        IncidentState::Acknowledged
                    } else {
                        IncidentState::Open
                    };
                }
                let detail = format!("condition back (absent since {cleared_ms}); flap #{}", inc.flaps);
                let e = timeline::entry(now_ms, "reopened", detail, Some(group.severity()));
                timeline::push(&mut inc.timeline, e, lim.max_timeline);
                changes.entry(id.clone()).or_default().insert(ChangeKind::Flapped);
            }
            if fold(inc, now_ms, group, lim.max_timeline) {
                changes.entry(id).or_default().insert(ChangeKind::Escalated);
            }
            return;
        }

        // The key's latest incident is resolved: reopen it, wait, or open a new one.
        let resolved_ms = inc.resolved_ms.unwrap_or(inc.updated_ms);
        let manual = matches!(inc.resolution, Some(Resolution::Manual { .. }));
        let grace = if manual { lim.manual_resolve_grace } else { 0 };
        let since = now_ms.saturating_sub(resolved_ms);
        if since < grace {
            // Resolved by a person moments ago: respect it for the grace period.
            return;
        }
        if since >= grace.saturating_add(lim.flap_window) {
            self.open_new(now_ms, key, group, changes);
            return;
        }
        inc.state = IncidentState::Open;
        inc.resolved_ms = None;
        inc.resolution = None;
        inc.acknowledged_ms = None;
        inc.acknowledged_by = None;
        inc.flaps = inc.flaps.saturating_add(1);
        let detail = format!("condition back {}s after resolution; flap #{}", since / 1000, inc.flaps);
        let e = timeline::entry(now_ms, "reopened", detail, Some(group.severity()));
        timeline::push(&mut inc.timeline, e, lim.max_timeline);
        let escalated = fold(inc, now_ms, group, lim.max_timeline);
        let kinds = changes.entry(id).or_default();
        kinds.insert(ChangeKind::Reopened);
        if escalated {
            kinds.insert(ChangeKind::Escalated);
        }
    }

    /// A condition with no incident to go to: open one, unless a warning-level one must
    /// first last `min_duration`.
    fn open_new(&mut self, now_ms: TimestampMs, key: &str, group: &Group<'_>, changes: &mut Changes) {
        let mut count = group.count;
        let mut since = now_ms;
        if group.severity() <= Severity::Warning && self.limits.min_duration > 0 {
            let p = self.pending.entry(key.to_string()).or_insert(Pending {
                first_seen_ms: now_ms,
                findings: 0,
            });
            p.findings = p.findings.saturating_add(group.count);
            if now_ms.saturating_sub(p.first_seen_ms) < self.limits.min_duration {
                return;
            }
            count = p.findings;
            since = p.first_seen_ms;
        }
        self.pending.remove(key);

        let f = group.first;
        let id = super::new_id(now_ms);
        let mut correlation = Correlation {
            root_cause: group.cause.map(|c| RootCause {
                rule: c.id.clone(),
                title: c.title.clone(),
                explanation: c.explanation_line(),
                first_signal: f.rule.clone(),
            }),
            ..Correlation::default()
        };
        // A node incident takes over the GPU incidents of the same cause on that node
        // (they are resolved as merged, and their signals come along).
        let merged = if group.node_wide {
            self.merge_gpu_incidents(now_ms, &id, group, changes)
        } else {
            Vec::new()
        };
        for m in &merged {
            correlation
                .contributors
                .extend(m.correlation.contributors.iter().cloned());
            correlation.related.push(RelatedIncident {
                id: m.id.clone(),
                link: "merged".into(),
                note: format!("GPU incident merged into this node incident ({})", m.dedup_key),
            });
        }
        let mut detail = group.worst.summary.clone();
        if since < now_ms {
            detail.push_str(&format!(" (present since {since})"));
        }
        let mut inc = Incident {
            id: id.clone(),
            dedup_key: key.to_string(),
            rule: group.rule().to_string(),
            kind: f.kind,
            severity: group.severity(),
            gpu: group.gpu(),
            node: f.node.clone(),
            state: IncidentState::Open,
            summary: group.worst.summary.clone(),
            action: group.action,
            opened_ms: now_ms,
            updated_ms: now_ms,
            last_seen_ms: now_ms,
            acknowledged_ms: None,
            acknowledged_by: None,
            resolved_ms: None,
            resolution: None,
            finding_count: count,
            labels: group.worst.labels.clone(),
            flaps: 0,
            timeline: vec![timeline::entry(now_ms, "opened", detail, Some(group.severity()))],
            correlation,
        };
        for m in &merged {
            inc.severity = inc.severity.max(m.severity);
            inc.action = inc.action.max(m.action);
            inc.finding_count = inc.finding_count.saturating_add(m.finding_count);
        }
        contribute(&mut inc, now_ms, group, self.limits.max_timeline, false);
        keep_techniques(&mut inc, group);
        self.by_key.insert(key.to_string(), id.clone());
        self.returned_seen.insert(id.clone(), now_ms);
        self.incidents.insert(id.clone(), inc);
        changes.entry(id).or_default().insert(ChangeKind::Opened);
    }

    /// Active incidents whose condition is not among this evaluation's findings: mark
    /// them cleared, and resolve those absent for `auto_resolve_after`.
    fn absent(
        &mut self,
        now_ms: TimestampMs,
        groups: &BTreeMap<String, Group<'_>>,
        unknown: &dyn Fn(&Incident) -> bool,
        changes: &mut Changes,
    ) {
        let lim = self.limits;
        for inc in self.incidents.values_mut().filter(|i| is_active(i)) {
            // Present only if findings came for its key *and* they went to it (an extra
            // active incident of the same key, e.g. from a damaged store, just ages out).
            let fed = groups.contains_key(&inc.dedup_key) && self.by_key.get(&inc.dedup_key) == Some(&inc.id);
            if fed || unknown(inc) {
                continue;
            }
            let cleared_ms = match self.cleared.get(&inc.id) {
                Some(&ms) => ms,
                None => {
                    self.cleared.insert(inc.id.clone(), now_ms);
                    inc.state = IncidentState::Clearing;
                    let e = timeline::entry(now_ms, "cleared", "condition absent".to_string(), None);
                    timeline::push(&mut inc.timeline, e, lim.max_timeline);
                    changes.entry(inc.id.clone()).or_default().insert(ChangeKind::Cleared);
                    now_ms
                }
            };
            let absent_for = now_ms.saturating_sub(inc.last_seen_ms);
            if absent_for < lim.auto_resolve_after {
                continue;
            }
            self.cleared.remove(&inc.id);
            inc.state = IncidentState::Resolved;
            inc.resolved_ms = Some(now_ms);
            inc.resolution = Some(Resolution::Automatic {
                cleared_since_ms: cleared_ms,
            });
            let detail = format!("condition absent for {}s", absent_for / 1000);
            let e = timeline::entry(now_ms, "resolved", detail, None);
            timeline::push(&mut inc.timeline, e, lim.max_timeline);
            changes.entry(inc.id.clone()).or_default().insert(ChangeKind::Resolved);
        }
    }

    /// Active incidents whose only news is bookkeeping are returned once their
    /// `last_seen_ms` is `refresh_interval` ahead of the copy last returned.
    fn refresh(&self, changes: &mut Changes) {
        for inc in self.incidents.values().filter(|i| is_active(i)) {
            if changes.contains_key(&inc.id) {
                continue;
            }
            let returned = self.returned_seen.get(&inc.id).copied().unwrap_or(i64::MIN);
            if inc.last_seen_ms.saturating_sub(returned) >= self.limits.refresh_interval.max(1) {
                changes.entry(inc.id.clone()).or_default().insert(ChangeKind::Refreshed);
            }
        }
    }
}

/// Folds a present condition into its active incident. Severity and action only go up.
/// Returns whether either went up (one timeline entry then, never one per finding).
fn fold(inc: &mut Incident, now_ms: TimestampMs, group: &Group<'_>, cap: usize) -> bool {
    inc.finding_count = inc.finding_count.saturating_add(group.count);
    contribute(inc, now_ms, group, cap, true);
    // The labels describe the worst finding, like the summary: a milder signal joining
    // later (a warning beside a critical one) must not relabel the incident.
    if group.severity() >= inc.severity {
        for (k, v) in &group.worst.labels {
            if inc.labels.get(k) != Some(v) {
                inc.labels.insert(k.clone(), v.clone());
            }
        }
    }
    keep_techniques(inc, group);
    inc.last_seen_ms = inc.last_seen_ms.max(now_ms);
    let severity = group.severity();
    let mut what = Vec::new();
    if severity > inc.severity {
        what.push(format!("severity {} → {}", inc.severity, severity));
        inc.severity = severity;
    }
    if group.action > inc.action {
        what.push(format!("action {} → {}", inc.action, group.action));
        inc.action = group.action;
    }
    if severity >= inc.severity {
        inc.summary = group.worst.summary.clone();
        annotate_links(inc);
    }
    if what.is_empty() {
        return false;
    }
    let detail = format!("{}: {}", what.join(", "), group.worst.summary);
    timeline::push(
        &mut inc.timeline,
        timeline::entry(now_ms, "escalated", detail, Some(severity)),
        cap,
    );
    true
}

/// Records every finding of `group` in the incident's contributors (one per rule and
/// GPU), names the earliest signal of the cause's chain as the first domino, and — when
/// `announce` — notes each new signal in the timeline.
fn contribute(inc: &mut Incident, now_ms: TimestampMs, group: &Group<'_>, cap: usize, announce: bool) {
    for f in &group.findings {
        let c = inc
            .correlation
            .contributors
            .iter_mut()
            .find(|c| c.rule == f.rule && c.gpu == f.gpu);
        match c {
            Some(c) => {
                c.severity = c.severity.max(f.severity);
                c.action = c.action.max(f.action);
                c.last_seen_ms = c.last_seen_ms.max(now_ms);
                c.findings = c.findings.saturating_add(1);
                c.summary = f.summary.clone();
                c.evidence = f.evidence.clone();
            }
            None => {
                inc.correlation.contributors.push(Contributor {
                    rule: f.rule.clone(),
                    kind: f.kind,
                    gpu: f.gpu.clone(),
                    severity: f.severity,
                    action: f.action,
                    first_seen_ms: now_ms,
                    last_seen_ms: now_ms,
                    findings: 1,
                    first_summary: f.summary.clone(),
                    summary: f.summary.clone(),
                    evidence: f.evidence.clone(),
                });
                if announce {
                    let who = f.gpu.as_ref().map(|g| format!(" on {g}")).unwrap_or_default();
                    let detail = format!("signal {}{who} joined: {}", f.rule, f.summary);
                    timeline::push(
                        &mut inc.timeline,
                        timeline::entry(now_ms, "joined", detail, Some(f.severity)),
                        cap,
                    );
                }
            }
        }
        if group.node_wide {
            if let Some(g) = &f.gpu {
                if !inc.correlation.gpus.contains(g) {
                    inc.correlation.gpus.push(g.clone());
                }
            }
        }
    }
    if let Some(cause) = group.cause {
        let first = inc
            .correlation
            .contributors
            .iter()
            .filter_map(|c| cause.position(&c.rule).map(|p| (p, c.first_seen_ms, c.rule.clone())))
            .min();
        if let (Some(rc), Some((_, _, rule))) = (inc.correlation.root_cause.as_mut(), first) {
            rc.first_signal = rule;
        }
    }
}

/// The label that lists a security finding's MITRE ATT&CK techniques (comma-separated;
/// `threat.technique.id` is the primary one). An incident that groups several security
/// findings keeps the union of theirs here, so a SIEM sees every technique, while
/// `threat.technique.id` stays the worst finding's.
pub const TECHNIQUES_LABEL: &str = "gpuwarden.mitre.techniques";

/// Records in [`TECHNIQUES_LABEL`] the techniques of every finding the incident has
/// grouped so far (sorted, comma-separated).
fn keep_techniques(inc: &mut Incident, group: &Group<'_>) {
    let own = inc.labels.get(TECHNIQUES_LABEL).into_iter();
    let theirs = group.findings.iter().filter_map(|f| f.labels.get(TECHNIQUES_LABEL));
    let all: BTreeSet<&str> = own
        .chain(theirs)
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if all.is_empty() {
        return;
    }
    let joined = all.into_iter().collect::<Vec<_>>().join(",");
    inc.labels.insert(TECHNIQUES_LABEL.to_string(), joined);
}

/// A security incident that follows a health cause says so first in its summary, so it
/// is never read as an attack on its own.
fn annotate_links(inc: &mut Incident) {
    if inc.kind != FindingKind::Security {
        return;
    }
    if let Some(r) = inc.correlation.related.iter().find(|r| r.link != "merged") {
        let prefix = format!("{} ({}): ", r.note, r.id);
        if !inc.summary.starts_with(&prefix) {
            inc.summary = format!("{prefix}{}", inc.summary);
        }
    }
}

impl IncidentEngine {
    /// Resolves the active GPU incidents of `group`'s cause on its GPUs as merged into
    /// the node incident `into`; returns them.
    fn merge_gpu_incidents(
        &mut self,
        now_ms: TimestampMs,
        into: &str,
        group: &Group<'_>,
        changes: &mut Changes,
    ) -> Vec<Incident> {
        let Some(cause) = group.cause else {
            return Vec::new();
        };
        let gpus: BTreeSet<&GpuUuid> = group.findings.iter().filter_map(|f| f.gpu.as_ref()).collect();
        let mut out = Vec::new();
        for g in gpus {
            let key = correlate::gpu_key(&cause.id, g.as_str());
            let Some(inc) = self.by_key.get(&key).and_then(|id| self.incidents.get_mut(id)) else {
                continue;
            };
            if !is_active(inc) {
                continue;
            }
            inc.state = IncidentState::Resolved;
            inc.resolved_ms = Some(now_ms);
            inc.resolution = Some(Resolution::Automatic {
                cleared_since_ms: now_ms,
            });
            inc.correlation.related.push(RelatedIncident {
                id: into.to_string(),
                link: "merged".into(),
                note: "merged into the node incident: the cause shows on several GPUs of the node".into(),
            });
            let e = timeline::entry(now_ms, "merged", format!("merged into node incident {into}"), None);
            timeline::push(&mut inc.timeline, e, self.limits.max_timeline);
            self.cleared.remove(&inc.id);
            changes.entry(inc.id.clone()).or_default().insert(ChangeKind::Resolved);
            out.push(inc.clone());
        }
        out
    }

    /// Relates the security incident of `key` to the health incident its link rules say
    /// it follows (same GPU, else same node; active, or resolved within the link's
    /// window), both ways, once.
    fn link(
        &mut self,
        now_ms: TimestampMs,
        key: &str,
        group: &Group<'_>,
        rules: &CorrelationRules,
        changes: &mut Changes,
    ) {
        let Some(sec_id) = self.by_key.get(key).cloned() else {
            return; // still pending (min_duration)
        };
        let f = group.first;
        for l in rules.links_of(&f.rule) {
            let mut keys = Vec::new();
            if let Some(g) = &f.gpu {
                keys.push(correlate::gpu_key(&l.after_cause, g.as_str()));
            }
            keys.push(correlate::node_key(&l.after_cause, &f.node));
            let within = crate::duration_serde::as_ms(l.within);
            let target = keys.iter().filter_map(|k| self.by_key.get(k)).find_map(|id| {
                let h = self.incidents.get(id)?;
                let recent = is_active(h) || h.resolved_ms.is_some_and(|r| now_ms.saturating_sub(r) <= within);
                recent.then(|| id.clone())
            });
            let Some(health_id) = target else {
                continue;
            };
            let cap = self.limits.max_timeline;
            let Some(sec) = self.incidents.get_mut(&sec_id) else {
                return;
            };
            if sec.correlation.related.iter().any(|r| r.id == health_id) {
                annotate_links(sec);
                continue;
            }
            sec.correlation.related.push(RelatedIncident {
                id: health_id.clone(),
                link: l.id.clone(),
                note: l.note.clone(),
            });
            annotate_links(sec);
            let e = timeline::entry(now_ms, "linked", format!("{}: {}", health_id, l.note), None);
            timeline::push(&mut sec.timeline, e, cap);
            changes.entry(sec_id.clone()).or_default().insert(ChangeKind::Refreshed);
            if let Some(h) = self.incidents.get_mut(&health_id) {
                h.correlation.related.push(RelatedIncident {
                    id: sec_id.clone(),
                    link: l.id.clone(),
                    note: format!(
                        "security finding {} on the same hardware follows from this incident",
                        f.rule
                    ),
                });
                let e = timeline::entry(
                    now_ms,
                    "linked",
                    format!("{sec_id}: {} follows from this", f.rule),
                    None,
                );
                timeline::push(&mut h.timeline, e, cap);
                changes.entry(health_id).or_default().insert(ChangeKind::Refreshed);
            }
        }
    }
}
