//! XID history per GPU and the XID rules: an XID finding per active code, escalation when
//! the same code keeps coming back, and the node-wide pattern that points to software.
//!
//! An XID is an event, not a level, so a finding has to stay up for a while after it:
//! `hold_minutes_*` by catalog severity, or until the last-XID gauge returns to 0
//! (`XidCleared`). Escalation approximates "came back after two resets" by counting
//! *episodes* (occurrences more than `episode_gap_minutes` apart) of one code on one GPU
//! within `repeat_window_days`; we do not see resets themselves in dcgm-exporter data.

use crate::catalog::{Cause, XidCatalog};
use crate::hit::Hit;
use crate::rules::XidRules;
use gpuwarden_model::{Action, Dimension, Evidence, Severity, TimestampMs};
use std::collections::{BTreeSet, VecDeque};

/// Codes remembered per GPU; the least recently seen is forgotten first.
const MAX_CODES: usize = 16;
/// Episodes remembered per code (more than any sane repeat_count).
const MAX_EPISODES: usize = 16;

/// One XID code's history on one GPU.
#[derive(Debug, Clone, PartialEq)]
pub struct XidRecord {
    pub code: u32,
    pub first_ms: TimestampMs,
    pub last_ms: TimestampMs,
    /// Occurrences seen (events), all time.
    pub count: u64,
    /// Start of each episode, oldest first.
    pub episodes: VecDeque<TimestampMs>,
    /// When the last-XID gauge went back to 0 after this code.
    pub cleared_ms: Option<TimestampMs>,
}

/// A GPU's XID history, bounded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct XidHistory {
    records: Vec<XidRecord>,
}

impl XidHistory {
    /// Records one occurrence of `code` at `ts`.
    pub fn record(&mut self, code: u32, ts: TimestampMs, episode_gap_ms: i64) {
        if let Some(r) = self.records.iter_mut().find(|r| r.code == code) {
            if r.episodes
                .back()
                .is_none_or(|&b| ts.saturating_sub(b) >= episode_gap_ms)
            {
                r.episodes.push_back(ts);
                if r.episodes.len() > MAX_EPISODES {
                    r.episodes.pop_front();
                }
            }
            r.last_ms = r.last_ms.max(ts);
            r.count = r.count.saturating_add(1);
            return;
        }
        if self.records.len() >= MAX_CODES {
            if let Some(i) = self
                .records
                .iter()
                .enumerate()
                .min_by_key(|(_, r)| r.last_ms)
                .map(|(i, _)| i)
            {
                self.records.swap_remove(i);
            }
        }
        self.records.push(XidRecord {
            code,
            first_ms: ts,
            last_ms: ts,
            count: 1,
            episodes: VecDeque::from([ts]),
            cleared_ms: None,
        });
    }

    /// The gauge went back to 0 after `code`.
    pub fn clear(&mut self, code: u32, ts: TimestampMs) {
        if let Some(r) = self.records.iter_mut().find(|r| r.code == code) {
            r.cleared_ms = Some(ts);
        }
    }

    pub fn records(&self) -> &[XidRecord] {
        &self.records
    }

    /// Whether `code` occurred at or after `since`.
    pub fn seen_since(&self, code: u32, since: TimestampMs) -> bool {
        self.records.iter().any(|r| r.code == code && r.last_ms >= since)
    }
}

/// The dimension an XID counts against.
pub fn dimension(code: u32, rules: &XidRules) -> Dimension {
    if rules.memory_codes.contains(&code) {
        Dimension::Memory
    } else {
        Dimension::Compute
    }
}

/// The XID findings of one GPU at `now`. `node_wide` holds the codes that are node-wide
/// on this GPU's node right now (their actions are capped, never escalated).
pub fn gpu_hits(
    history: &XidHistory,
    now: TimestampMs,
    rules: &XidRules,
    catalog: &XidCatalog,
    node_wide: &BTreeSet<u32>,
    out: &mut Vec<Hit>,
) {
    if !rules.enabled {
        return;
    }
    let day = 86_400_000i64;
    for r in history.records() {
        let entry = catalog.lookup_or_default(r.code);
        if now.saturating_sub(r.last_ms) > rules.hold_ms(entry.severity) || r.last_ms > now.saturating_add(day) {
            continue;
        }
        if r.cleared_ms.is_some_and(|c| c >= r.last_ms) {
            continue;
        }
        let mut severity = entry.severity;
        let mut action = entry.action;
        let since = now.saturating_sub(i64::from(rules.repeat_window_days) * day);
        let episodes = r.episodes.iter().filter(|&&t| t >= since).count();
        let mut why = String::new();
        if node_wide.contains(&r.code) {
            // Many GPUs of one node at once: software or driver, not every board.
            action = if entry.cause == Cause::Application {
                Action::RestartApp
            } else {
                action.min(Action::Reboot)
            };
            why = "; seen on many GPUs of this node at once, so software or driver is more likely than this board"
                .to_string();
        } else if episodes >= rules.repeat_count as usize
            && matches!(action, Action::ResetGpu | Action::DrainNode | Action::Reboot)
        {
            action = Action::HardwareInspection;
            severity = severity.max(Severity::Critical);
            why = format!(
                "; came back: episode {episodes} in {} days (repeat_count {}), escalated to hardware inspection",
                rules.repeat_window_days, rules.repeat_count
            );
        }
        let dim = dimension(r.code, rules);
        let times = if r.count == 1 {
            "once".to_string()
        } else {
            format!("{} times", r.count)
        };
        out.push(Hit {
            rule: format!("xid.{}", r.code),
            dimension: dim,
            severity,
            action,
            points: rules.points(severity),
            summary: format!(
                "XID {} ({}), {} cause, seen {times}: {}{why}",
                r.code,
                entry.name,
                entry.cause.as_str(),
                entry.description
            ),
            evidence: vec![Evidence {
                signal: "xid".to_string(),
                observed: f64::from(r.code),
                previous: None,
                expected: None,
                ts_ms: r.last_ms,
            }],
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::HealthRules;

    const MIN: i64 = 60_000;

    fn hits(h: &XidHistory, now: TimestampMs, node_wide: &[u32]) -> Vec<Hit> {
        let rules = HealthRules::builtin();
        let mut out = Vec::new();
        let nw = node_wide.iter().copied().collect();
        gpu_hits(h, now, &rules.xid, &XidCatalog::builtin(), &nw, &mut out);
        out
    }

    #[test]
    fn xid_finding_holds_then_expires() {
        let mut h = XidHistory::default();
        h.record(13, 0, 30 * MIN);
        assert_eq!(hits(&h, 10 * MIN, &[]).len(), 1);
        assert!(hits(&h, 31 * MIN, &[]).is_empty(), "warning XIDs hold 30 minutes");
    }

    #[test]
    fn cleared_gauge_ends_the_finding() {
        let mut h = XidHistory::default();
        h.record(48, 0, 30 * MIN);
        h.clear(48, 5_000);
        assert!(hits(&h, 10_000, &[]).is_empty());
    }

    #[test]
    fn third_episode_escalates_to_hardware_inspection() {
        let mut h = XidHistory::default();
        h.record(79, 0, 30 * MIN);
        h.record(79, 10_000, 30 * MIN); // same burst: same episode
        assert_eq!(hits(&h, 20_000, &[])[0].action, Action::Reboot);
        h.record(79, 2 * 60 * MIN, 30 * MIN);
        assert_eq!(hits(&h, 2 * 60 * MIN, &[])[0].action, Action::Reboot);
        h.record(79, 4 * 60 * MIN, 30 * MIN);
        let x = hits(&h, 4 * 60 * MIN, &[]);
        assert_eq!(x[0].action, Action::HardwareInspection);
        assert!(x[0].summary.contains("escalated"));
    }

    #[test]
    fn repeats_outside_the_window_do_not_escalate() {
        let mut h = XidHistory::default();
        let day = 24 * 60 * MIN;
        h.record(48, 0, 30 * MIN);
        h.record(48, 5 * day, 30 * MIN);
        h.record(48, 10 * day, 30 * MIN);
        assert_eq!(hits(&h, 10 * day, &[])[0].action, Action::ResetGpu);
    }

    #[test]
    fn node_wide_caps_the_action_and_never_escalates() {
        let mut h = XidHistory::default();
        for i in 0..3 {
            h.record(64, i * 2 * 60 * MIN, 30 * MIN);
        }
        let x = hits(&h, 4 * 60 * MIN, &[64]);
        assert_eq!(x[0].action, Action::Reboot);
        let mut h = XidHistory::default();
        h.record(31, 0, 30 * MIN);
        assert_eq!(hits(&h, 1, &[31])[0].action, Action::RestartApp);
    }

    #[test]
    fn ecc_xids_count_against_memory() {
        let mut h = XidHistory::default();
        h.record(48, 0, 30 * MIN);
        h.record(13, 0, 30 * MIN);
        let x = hits(&h, 1, &[]);
        assert_eq!(
            x.iter().find(|h| h.rule == "xid.48").unwrap().dimension,
            Dimension::Memory
        );
        assert_eq!(
            x.iter().find(|h| h.rule == "xid.13").unwrap().dimension,
            Dimension::Compute
        );
    }

    #[test]
    fn history_is_bounded() {
        let mut h = XidHistory::default();
        for c in 0..100 {
            h.record(c, i64::from(c), 1);
        }
        assert_eq!(h.records().len(), MAX_CODES);
        for t in 0..100 {
            h.record(5000, t * 10, 1);
        }
        assert!(h.records().iter().all(|r| r.episodes.len() <= MAX_EPISODES));
    }
}
