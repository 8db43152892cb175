//! Turns dcgm-exporter's XID fields into XID events.
//!
//! dcgm-exporter has no XID event stream. It exports `DCGM_FI_DEV_XID_ERRORS`, a gauge
//! holding the *last* XID code seen on the GPU, which never resets on its own, and (newer
//! versions) `DCGM_EXP_XID_ERRORS_COUNT`, the number of XIDs in a sliding window, broken
//! down by an `xid` label (the mapping sums it per GPU). [`XidTracker`] remembers the last
//! value of both per GPU and emits events on changes:
//!
//! | observation | event |
//! |---|---|
//! | first sight of a GPU, gauge ≠ 0 | one `Xid { code }` |
//! | first sight of a GPU, gauge = 0 | none |
//! | gauge changes to another non-zero code | `Xid { code }` (one, even if the window count rose by more: only the last code is known) |
//! | gauge changes to 0 | `XidCleared { previous_code }` |
//! | gauge unchanged, window count rose by k | k × `Xid { code }` (capped at [`MAX_REPEATS_PER_OBSERVATION`]): the same XID repeating must not be lost |
//! | gauge unchanged, count unchanged, fell or absent | none |
//!
//! First sight with a non-zero gauge: we cannot tell whether the XID is new or years old.
//! We emit it, so that a restart of gpuwarden (or a GPU it has never seen) does not hide
//! an active XID, and we emit it once: the state is then remembered, and persisted if the
//! caller serializes the tracker, so a restart with saved state emits nothing new.
//!
//! A gauge value that is not a whole number in `0..=u32::MAX` (NaN, negative) is ignored
//! and leaves the state unchanged.

use crate::dcgm::ExporterPage;
use gpuwarden_model::{DcgmField, Event, EventKind, FieldName, GpuSamples, GpuUuid};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most `Xid` events one rise of the window counter produces in one observation, so a
/// broken counter cannot flood the event store.
pub const MAX_REPEATS_PER_OBSERVATION: u64 = 32;

/// Per-GPU memory of the XID gauge and window counter. Serializable so it survives
/// restarts (see the module docs for why that matters).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct XidTracker {
    gpus: BTreeMap<GpuUuid, XidState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct XidState {
    /// Last value of the last-XID gauge (0: none).
    code: u32,
    /// Last value of `DCGM_EXP_XID_ERRORS_COUNT`, when the exporter has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    window_count: Option<f64>,
}

const GAUGE: FieldName = FieldName::Dcgm(DcgmField::XidErrors);
const WINDOW_COUNT: FieldName = FieldName::Dcgm(DcgmField::ExpXidErrorsCount);

impl XidTracker {
    pub fn new() -> Self {
        XidTracker::default()
    }

    /// Observes every row of a mapped page, in time order per GPU, and returns the events.
    pub fn observe_page(&mut self, page: &ExporterPage) -> Vec<Event> {
        let mut order: Vec<&GpuSamples> = page.rows.iter().collect();
        order.sort_by_key(|r| r.ts_ms);
        // One map instead of a search per row: a page can list thousands of GPUs.
        let nodes: std::collections::HashMap<&GpuUuid, &str> =
            page.gpus.iter().map(|g| (&g.uuid, g.node.as_str())).collect();
        let mut events = Vec::new();
        for row in order {
            let node = nodes.get(&row.gpu).copied().unwrap_or("");
            self.observe(node, row, &mut events);
        }
        events
    }

    /// As [`observe_page`](Self::observe_page) without changing this tracker: returns the
    /// events and the page's GPUs' new state, to [`commit`](Self::commit) once the events
    /// are stored. A page whose write failed then leaves no trace, and its retry reports
    /// the same XIDs again instead of nothing.
    pub fn stage_page(&self, page: &ExporterPage) -> (Vec<Event>, XidTracker) {
        let mut staged = XidTracker {
            gpus: page
                .rows
                .iter()
                .filter_map(|r| self.gpus.get_key_value(&r.gpu))
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
        };
        let events = staged.observe_page(page);
        (events, staged)
    }

    /// Applies state returned by [`stage_page`](Self::stage_page).
    pub fn commit(&mut self, staged: XidTracker) {
        self.gpus.extend(staged.gpus);
    }

    /// Observes one row of one GPU on `node`, appending any events to `out`.
    pub fn observe(&mut self, node: &str, row: &GpuSamples, out: &mut Vec<Event>) {
        let window_count = row.get(&WINDOW_COUNT).filter(|c| c.is_finite() && *c >= 0.0);
        let Some(code) = row.get(&GAUGE).and_then(xid_code) else {
            return;
        };
        let event = |kind| Event {
            gpu: row.gpu.clone(),
            node: node.to_owned(),
            ts_ms: row.ts_ms,
            kind,
        };
        let xid = |code| EventKind::Xid {
            code,
            message: None,
            pid: None,
            process: None,
        };
        let Some(state) = self.gpus.get_mut(&row.gpu) else {
            if code != 0 {
                out.push(event(xid(code)));
            }
            self.gpus.insert(row.gpu.clone(), XidState { code, window_count });
            return;
        };
        if code != state.code {
            if code == 0 {
                out.push(event(EventKind::XidCleared {
                    previous_code: state.code,
                }));
            } else {
                out.push(event(xid(code)));
            }
        } else if code != 0 {
            if let (Some(now), Some(before)) = (window_count, state.window_count) {
                if now > before {
                    let repeats = ((now - before).ceil() as u64).min(MAX_REPEATS_PER_OBSERVATION);
                    for _ in 0..repeats {
                        out.push(event(xid(code)));
                    }
                }
            }
        }
        state.code = code;
        // A count that vanished must not serve as the baseline when it comes back.
        state.window_count = window_count;
    }

    /// Forgets a GPU (e.g. removed from the inventory); its next sight is a first sight.
    pub fn forget(&mut self, gpu: &GpuUuid) {
        self.gpus.remove(gpu);
    }

    /// Number of GPUs remembered.
    pub fn len(&self) -> usize {
        self.gpus.len()
    }

    pub fn is_empty(&self) -> bool {
        self.gpus.is_empty()
    }
}

/// The gauge's value as an XID code, if it is one.
fn xid_code(value: f64) -> Option<u32> {
    (value.is_finite() && value >= 0.0 && value.fract() == 0.0 && value <= f64::from(u32::MAX)).then_some(value as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ts: i64, gauge: Option<f64>, count: Option<f64>) -> GpuSamples {
        let mut r = GpuSamples::new(GpuUuid::new("GPU-a"), ts);
        if let Some(g) = gauge {
            r.values.push((GAUGE, g));
        }
        if let Some(c) = count {
            r.values.push((WINDOW_COUNT, c));
        }
        r
    }

    fn kinds(t: &mut XidTracker, r: GpuSamples) -> Vec<EventKind> {
        let mut out = Vec::new();
        t.observe("n1", &r, &mut out);
        out.into_iter().map(|e| e.kind).collect()
    }

    fn xid(code: u32) -> EventKind {
        EventKind::Xid {
            code,
            message: None,
            pid: None,
            process: None,
        }
    }

    #[test]
    fn first_sight_with_nonzero_gauge_emits_once() {
        let mut t = XidTracker::new();
        assert_eq!(kinds(&mut t, row(1, Some(79.0), None)), [xid(79)]);
        assert_eq!(kinds(&mut t, row(2, Some(79.0), None)), []);
        assert_eq!(kinds(&mut t, row(3, Some(79.0), None)), []);
    }

    #[test]
    fn first_sight_with_zero_gauge_emits_nothing() {
        let mut t = XidTracker::new();
        assert_eq!(kinds(&mut t, row(1, Some(0.0), None)), []);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn change_to_another_code_is_a_new_xid() {
        let mut t = XidTracker::new();
        kinds(&mut t, row(1, Some(0.0), None));
        assert_eq!(kinds(&mut t, row(2, Some(31.0), None)), [xid(31)]);
        assert_eq!(kinds(&mut t, row(3, Some(43.0), None)), [xid(43)]);
    }

    #[test]
    fn change_to_zero_is_cleared() {
        let mut t = XidTracker::new();
        kinds(&mut t, row(1, Some(48.0), None));
        assert_eq!(
            kinds(&mut t, row(2, Some(0.0), None)),
            [EventKind::XidCleared { previous_code: 48 }]
        );
        assert_eq!(kinds(&mut t, row(3, Some(0.0), None)), []);
    }

    #[test]
    fn same_code_repeating_is_caught_by_the_window_count() {
        let mut t = XidTracker::new();
        assert_eq!(kinds(&mut t, row(1, Some(13.0), Some(1.0))), [xid(13)]);
        assert_eq!(kinds(&mut t, row(2, Some(13.0), Some(1.0))), []);
        assert_eq!(kinds(&mut t, row(3, Some(13.0), Some(3.0))), [xid(13), xid(13)]);
        // The window slides: the count falls, nothing new happened.
        assert_eq!(kinds(&mut t, row(4, Some(13.0), Some(0.0))), []);
        assert_eq!(
            kinds(&mut t, row(5, Some(13.0), Some(1e12))).len() as u64,
            MAX_REPEATS_PER_OBSERVATION
        );
    }

    #[test]
    fn vanished_count_is_not_a_baseline() {
        let mut t = XidTracker::new();
        kinds(&mut t, row(1, Some(13.0), Some(5.0)));
        kinds(&mut t, row(2, Some(13.0), None));
        assert_eq!(kinds(&mut t, row(3, Some(13.0), Some(9.0))), []);
    }

    #[test]
    fn garbage_gauge_and_missing_gauge_are_ignored() {
        let mut t = XidTracker::new();
        assert_eq!(kinds(&mut t, row(1, Some(f64::NAN), None)), []);
        assert_eq!(kinds(&mut t, row(1, Some(-1.0), None)), []);
        assert_eq!(kinds(&mut t, row(1, Some(1.5), None)), []);
        assert_eq!(kinds(&mut t, row(1, None, Some(3.0))), []);
        assert!(t.is_empty());
    }

    #[test]
    fn state_survives_a_serde_round_trip_so_restarts_do_not_re_emit() {
        let mut t = XidTracker::new();
        kinds(&mut t, row(1, Some(79.0), Some(2.0)));
        let json = serde_json::to_string(&t).unwrap();
        let mut restored: XidTracker = serde_json::from_str(&json).unwrap();
        assert_eq!(restored, t);
        assert_eq!(kinds(&mut restored, row(2, Some(79.0), Some(2.0))), []);
    }

    #[test]
    fn events_carry_gpu_node_and_row_time() {
        let mut t = XidTracker::new();
        let mut out = Vec::new();
        t.observe("n1", &row(1234, Some(94.0), None), &mut out);
        assert_eq!(out[0].gpu.as_str(), "GPU-a");
        assert_eq!(out[0].node, "n1");
        assert_eq!(out[0].ts_ms, 1234);
    }
}
