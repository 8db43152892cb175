//! How the findings of one evaluation change incidents: open, fold, escalate, flap,
//! reopen, clear, auto-resolve.

use super::{is_active, IncidentEngine, Pending};
use crate::change::{ChangeKind, IncidentChange};
use crate::key::dedup_key;
use crate::timeline;
use gpuwarden_model::{Finding, Incident, IncidentState, Resolution, Severity, TimestampMs};
use std::collections::{BTreeMap, BTreeSet};

/// The findings of one dedup key at one evaluation, folded.
struct Group<'a> {
    /// The first finding (rule, kind, GPU, node are the same for the whole key).
    first: &'a Finding,
    /// The most severe finding (the latest of equals): its summary describes the incident.
    worst: &'a Finding,
    action: gpuwarden_model::Action,
    count: u64,
}

impl<'a> Group<'a> {
    fn new(f: &'a Finding) -> Self {
        Group {
            first: f,
            worst: f,
            action: f.action,
            count: 1,
        }
    }

    fn add(&mut self, f: &'a Finding) {
        if f.severity >= self.worst.severity {
            self.worst = f;
        }
        self.action = self.action.max(f.action);
        self.count += 1;
    }

    fn severity(&self) -> Severity {
        self.worst.severity
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
        let mut groups: BTreeMap<String, Group<'_>> = BTreeMap::new();
        for f in findings {
            groups
                .entry(dedup_key(f))
                .and_modify(|g| g.add(f))
                .or_insert_with(|| Group::new(f));
        }
        let mut changes = Changes::new();
        for (key, group) in &groups {
            self.present(now_ms, key, group, &mut changes);
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
        let mut detail = group.worst.summary.clone();
        if since < now_ms {
            detail.push_str(&format!(" (present since {since})"));
        }
        let inc = Incident {
            id: id.clone(),
            dedup_key: key.to_string(),
            rule: f.rule.clone(),
            kind: f.kind,
            severity: group.severity(),
            gpu: f.gpu.clone(),
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
        };
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
    for (k, v) in &group.worst.labels {
        if inc.labels.get(k) != Some(v) {
            inc.labels.insert(k.clone(), v.clone());
        }
    }
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
