//! The incident engine: state, manual operations and queries. How findings change
//! incidents lives in `engine/apply.rs`.

mod apply;
pub use apply::TECHNIQUES_LABEL;
#[cfg(test)]
mod correlation_tests;
#[cfg(test)]
mod tests;

use crate::config::{IncidentConfig, Limits};
use crate::correlate::CorrelationRules;
use crate::error::IncidentError;
use crate::filter::IncidentFilter;
use crate::timeline;
use gpuwarden_model::{Incident, IncidentState, Resolution, Severity, TimestampMs};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

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
    /// Which findings share a cause (one incident per cause instead of per rule).
    rules: Arc<CorrelationRules>,
}

/// A condition not yet old enough to open an incident.
#[derive(Debug, Clone, Copy)]
struct Pending {
    first_seen_ms: TimestampMs,
    findings: u64,
}

impl IncidentEngine {
    /// Builds the engine over the incidents loaded from the store (old sequential ids,
    /// `inc-000042`, stay as they are); active incidents stay active (and auto-resolve
    /// normally once their condition is absent). New incidents get ids from [`new_id`].
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
        let cleared: HashMap<String, TimestampMs> = incidents
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
        // Written before the clearing state existed: a cleared active incident shows as
        // clearing from now on.
        for id in cleared.keys() {
            if let Some(i) = incidents.get_mut(id) {
                i.state = IncidentState::Clearing;
            }
        }

        IncidentEngine {
            config,
            limits,
            incidents,
            by_key,
            cleared,
            pending: HashMap::new(),
            returned_seen,
            rules: Arc::new(CorrelationRules::builtin()),
        }
    }

    /// Uses these correlation rules instead of the built-in ones
    /// ([`CorrelationRules::none`] for one incident per rule and GPU). Incidents already
    /// open keep their keys; new findings are grouped by the new rules.
    pub fn with_correlation(mut self, rules: CorrelationRules) -> Self {
        self.rules = Arc::new(rules);
        self
    }

    /// The correlation rules in use.
    pub fn correlation_rules(&self) -> &CorrelationRules {
        &self.rules
    }

    /// Sets the "what changed before" timeline of an incident (built by the caller from
    /// stored events and series; see [`crate::correlate::changed_before`]). Returns the
    /// incident as changed, to persist; `None` for an unknown id.
    pub fn set_changed_before(&mut self, id: &str, entries: Vec<gpuwarden_model::TimelineEntry>) -> Option<Incident> {
        let inc = self.incidents.get_mut(id)?;
        inc.correlation.changed_before = entries;
        Some(inc.clone())
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
            IncidentState::Clearing if inc.acknowledged_ms.is_some() => Ok(inc.clone()),
            // The condition is absent: it stays clearing, acknowledged (it goes back to
            // acknowledged, not open, if the condition returns).
            IncidentState::Clearing => {
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

    /// Incidents matching `filter`, newest (latest opened) first; among incidents opened
    /// in the same millisecond, by [`order_key`] of the id, descending.
    pub fn list(&self, filter: &IncidentFilter) -> Vec<&Incident> {
        let mut out: Vec<&Incident> = self.incidents.values().filter(|i| filter.matches(i)).collect();
        out.sort_by(|a, b| (b.opened_ms, order_key(&b.id)).cmp(&(a.opened_ms, order_key(&a.id))));
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

    /// Takes `winner` — the unresolved incident another instance sharing the store opened
    /// for the same condition — in place of this engine's own incident `loser_id`, which
    /// the store refused to hold beside it: the loser is forgotten (it was never stored)
    /// and findings of the key go to the winner from now on, so that instances sharing
    /// one store keep one incident per condition. Returns the winner as now held.
    pub fn adopt(&mut self, loser_id: &str, winner: Incident) -> Incident {
        if loser_id != winner.id {
            self.incidents.remove(loser_id);
            self.returned_seen.remove(loser_id);
            if let Some(cleared_ms) = self.cleared.remove(loser_id) {
                // The condition was absent here; the winner's own state says otherwise
                // only when it is not clearing.
                if winner.state == IncidentState::Clearing {
                    self.cleared.insert(winner.id.clone(), cleared_ms);
                }
            }
        }
        if winner.state == IncidentState::Clearing {
            self.cleared.entry(winner.id.clone()).or_insert(winner.updated_ms);
        }
        self.by_key.insert(winner.dedup_key.clone(), winner.id.clone());
        self.returned_seen.insert(winner.id.clone(), winner.last_seen_ms);
        self.incidents.insert(winner.id.clone(), winner.clone());
        winner
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
    i.state.is_active()
}

/// A new incident id: `inc-` and a ULID (26 Crockford base32 characters) whose time part
/// is `opened_ms` and whose other 80 bits are random, so that ids cannot be guessed (an
/// API without sign-in must not let a page that guesses `inc-000012` act on it; see
/// the server's `request_guard`). Ids used to be sequential (`inc-000042`); those stay
/// valid.
pub fn new_id(opened_ms: TimestampMs) -> String {
    const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let time = (opened_ms.max(0) as u128) & ((1 << 48) - 1);
    let random: u128 = rand::random::<u128>() & ((1 << 80) - 1);
    let mut value = (time << 80) | random;
    let mut out = [0u8; 26];
    for c in out.iter_mut().rev() {
        *c = CROCKFORD[(value & 31) as usize];
        value >>= 5;
    }
    format!("inc-{}", std::str::from_utf8(&out).expect("ASCII"))
}

/// The number in an old sequential id (`inc-000042`); `None` for ids of another form.
fn seq_of(id: &str) -> Option<u64> {
    id.strip_prefix("inc-")?.parse().ok()
}

/// How ids of incidents opened in the same millisecond are ordered (deterministic): old
/// sequential ids by number and before new ones, new ones (ULIDs, which sort as text)
/// by text.
fn order_key(id: &str) -> (bool, Option<u64>, &str) {
    let seq = seq_of(id);
    (seq.is_none(), seq, id)
}

/// Which of two incidents with one key findings should go to: active first, then latest.
fn rank(i: &Incident) -> (bool, TimestampMs, (bool, Option<u64>, &str)) {
    (is_active(i), i.opened_ms, order_key(&i.id))
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
