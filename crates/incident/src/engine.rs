//! The incident engine: state, manual operations and queries. How findings change
//! incidents lives in `engine/apply.rs`.

mod apply;
#[cfg(test)]
mod tests;

use crate::config::{IncidentConfig, Limits};
use crate::error::IncidentError;
use crate::filter::IncidentFilter;
use crate::timeline;
use gpuwarden_model::{Incident, IncidentState, Resolution, Severity, TimestampMs};
use std::collections::{BTreeMap, HashMap};

/// Groups findings into incidents and runs their lifecycle. See the crate docs.
///
/// Invariant: at most one active (open or acknowledged) incident per dedup key.
#[derive(Debug)]
pub struct IncidentEngine {
    config: IncidentConfig,
    limits: Limits,
    /// Every incident known, by id.
    incidents: BTreeMap<String, Incident>,
    /// Dedup key → id of the incident that findings with this key go to: the active one,
    /// or else the most recent resolved one (which a returning condition may reopen).
    by_key: HashMap<String, String>,
    /// Active incident id → when its condition was first seen absent (it is "cleared"
    /// but not yet auto-resolved). Its return is a flap.
    cleared: HashMap<String, TimestampMs>,
    /// Dedup key → a warning-level condition waiting out `min_duration` before opening.
    pending: HashMap<String, Pending>,
    /// Incident id → `last_seen_ms` as last returned to the caller (to bound how stale
    /// the persisted copy gets; see `refresh_interval`).
    returned_seen: HashMap<String, TimestampMs>,
    /// Sequence number of the next incident id.
    next_seq: u64,
}

/// A condition not yet old enough to open an incident.
#[derive(Debug, Clone, Copy)]
struct Pending {
    first_seen_ms: TimestampMs,
    findings: u64,
}

impl IncidentEngine {
    /// Builds the engine over the incidents loaded from the store. Ids continue after the
    /// highest `inc-NNNNNN` among them; active incidents stay active (and auto-resolve
    /// normally once their condition is absent).
    pub fn new(config: IncidentConfig, existing: Vec<Incident>) -> Self {
        let limits = Limits::from(&config);
        let mut incidents: BTreeMap<String, Incident> = BTreeMap::new();
        for inc in existing {
            // Two versions of one id (should not happen): the later update wins.
            let keep_old = incidents
                .get(&inc.id)
                .is_some_and(|old| old.updated_ms > inc.updated_ms);
            if !keep_old {
                incidents.insert(inc.id.clone(), inc);
            }
        }
        let next_seq = incidents.keys().filter_map(|id| seq_of(id)).max().unwrap_or(0) + 1;

        let mut by_key: HashMap<String, String> = HashMap::new();
        for inc in incidents.values() {
            let better = match by_key.get(&inc.dedup_key).and_then(|id| incidents.get(id)) {
                None => true,
                Some(cur) => rank(inc) > rank(cur),
            };
            if better {
                by_key.insert(inc.dedup_key.clone(), inc.id.clone());
            }
        }

        // A condition that was absent when we stopped is still "cleared": its return is
        // a flap. The timeline's last condition entry tells (its tail is never truncated).
        let cleared = incidents
            .values()
            .filter(|i| is_active(i))
            .filter_map(|i| {
                let last = i
                    .timeline
                    .iter()
                    .rev()
                    .find(|t| matches!(t.what.as_str(), "opened" | "reopened" | "cleared"))?;
                (last.what == "cleared").then(|| (i.id.clone(), last.ts_ms))
            })
            .collect();
        let returned_seen = incidents.values().map(|i| (i.id.clone(), i.last_seen_ms)).collect();

        IncidentEngine {
            config,
            limits,
            incidents,
            by_key,
            cleared,
            pending: HashMap::new(),
            returned_seen,
            next_seq,
        }
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &IncidentConfig {
        &self.config
    }

    /// Open → acknowledged. Acknowledging an acknowledged incident changes nothing and
    /// succeeds; a resolved one cannot be acknowledged.
    pub fn acknowledge(
        &mut self,
        id: &str,
        actor: &str,
        comment: Option<&str>,
        now_ms: TimestampMs,
    ) -> Result<Incident, IncidentError> {
        let cap = self.limits.max_timeline;
        let inc = self.incidents.get_mut(id).ok_or_else(|| not_found(id))?;
        match inc.state {
            IncidentState::Acknowledged => Ok(inc.clone()),
            IncidentState::Resolved => Err(IncidentError::InvalidTransition {
                id: id.to_string(),
                from: inc.state,
                to: IncidentState::Acknowledged,
            }),
            IncidentState::Open => {
                inc.state = IncidentState::Acknowledged;
                inc.acknowledged_ms = Some(now_ms);
                inc.acknowledged_by = Some(actor.to_string());
                inc.updated_ms = now_ms;
                let detail = by_whom(actor, comment);
                timeline::push(
                    &mut inc.timeline,
                    timeline::entry(now_ms, "acknowledged", detail, None),
                    cap,
                );
                Ok(inc.clone())
            }
        }
    }

    /// Open or acknowledged → resolved (`Resolution::Manual`). If the condition is still
    /// present, the incident stays resolved for `manual_resolve_grace` and then reopens
    /// (same id, one more flap).
    pub fn resolve(
        &mut self,
        id: &str,
        actor: &str,
        comment: Option<&str>,
        now_ms: TimestampMs,
    ) -> Result<Incident, IncidentError> {
        let cap = self.limits.max_timeline;
        let inc = self.incidents.get_mut(id).ok_or_else(|| not_found(id))?;
        if inc.state == IncidentState::Resolved {
            return Err(IncidentError::InvalidTransition {
                id: id.to_string(),
                from: inc.state,
                to: IncidentState::Resolved,
            });
        }
        inc.state = IncidentState::Resolved;
        inc.resolved_ms = Some(now_ms);
        inc.resolution = Some(Resolution::Manual {
            actor: actor.to_string(),
            comment: comment.map(str::to_string),
        });
        inc.updated_ms = now_ms;
        let detail = by_whom(actor, comment);
        timeline::push(
            &mut inc.timeline,
            timeline::entry(now_ms, "resolved", detail, None),
            cap,
        );
        self.cleared.remove(id);
        Ok(inc.clone())
    }

    /// One incident by id.
    pub fn get(&self, id: &str) -> Option<&Incident> {
        self.incidents.get(id)
    }

    /// Incidents matching `filter`, newest (latest opened) first.
    pub fn list(&self, filter: &IncidentFilter) -> Vec<&Incident> {
        let mut out: Vec<&Incident> = self.incidents.values().filter(|i| filter.matches(i)).collect();
        out.sort_by(|a, b| (b.opened_ms, seq_of(&b.id), &b.id).cmp(&(a.opened_ms, seq_of(&a.id), &a.id)));
        out
    }

    /// Active (open or acknowledged) incidents per severity; every severity is present,
    /// with 0 when none, so metrics built from it keep a stable set of series.
    pub fn open_count_by_severity(&self) -> BTreeMap<Severity, usize> {
        let mut counts: BTreeMap<Severity, usize> =
            [Severity::Info, Severity::Warning, Severity::Critical, Severity::Fatal]
                .into_iter()
                .map(|s| (s, 0))
                .collect();
        for inc in self.incidents.values().filter(|i| is_active(i)) {
            *counts.entry(inc.severity).or_insert(0) += 1;
        }
        counts
    }

    /// Forgets resolved incidents resolved before `cutoff_ms` (retention; the store keeps
    /// its own). Returns how many were dropped.
    pub fn prune_resolved(&mut self, cutoff_ms: TimestampMs) -> usize {
        let before = self.incidents.len();
        self.incidents
            .retain(|_, i| is_active(i) || i.resolved_ms.is_none_or(|r| r >= cutoff_ms));
        let incidents = &self.incidents;
        self.by_key.retain(|_, id| incidents.contains_key(id));
        self.returned_seen.retain(|id, _| incidents.contains_key(id));
        before - self.incidents.len()
    }
}

/// Open or acknowledged.
pub(crate) fn is_active(i: &Incident) -> bool {
    i.state != IncidentState::Resolved
}

/// The number in `inc-000042`; `None` for ids of another form.
fn seq_of(id: &str) -> Option<u64> {
    id.strip_prefix("inc-")?.parse().ok()
}

/// Which of two incidents with one key findings should go to: active first, then latest.
fn rank(i: &Incident) -> (bool, TimestampMs, Option<u64>) {
    (is_active(i), i.opened_ms, seq_of(&i.id))
}

fn not_found(id: &str) -> IncidentError {
    IncidentError::NotFound { id: id.to_string() }
}

fn by_whom(actor: &str, comment: Option<&str>) -> String {
    match comment {
        Some(c) if !c.is_empty() => format!("by {actor}: {c}"),
        _ => format!("by {actor}"),
    }
}
