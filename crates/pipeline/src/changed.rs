//! The "what changed before" timeline of a newly opened incident, read from the store:
//! the events (XIDs, GPUs appearing or vanishing, ECC and remap events, throttling,
//! process starts) and the series that move before faults (temperatures, the power
//! limit, error counters) of the incident's GPUs in the window before it opened, plus
//! the other incidents (configuration drift, driver, workload) opened there meanwhile.

use gpuwarden_incident::correlate::{changed_before, SeriesWindow, MAX_CHANGED_BEFORE};
use gpuwarden_model::{DcgmField, FieldName, GpuUuid, Incident, TimelineEntry};
use gpuwarden_store::{Store, StoreError};

/// How far back "before" reaches.
pub const WINDOW_MS: i64 = 30 * 60 * 1000;

/// GPUs of a node incident looked at (its first ones): enough to see a pattern, bounded
/// so a large node cannot make one evaluation read much.
const MAX_GPUS: usize = 4;

/// Points per series read from the store (downsampled beyond it).
const MAX_POINTS: usize = 120;

/// The series worth summarising, with what counts as a change (below it: noise).
const SERIES: &[(DcgmField, &str, &str, &str, f64)] = &[
    (DcgmField::GpuTemp, "GPU temperature", "°C", "temperature", 8.0),
    (DcgmField::MemoryTemp, "memory temperature", "°C", "temperature", 8.0),
    (DcgmField::EnforcedPowerLimit, "power limit", "W", "config", 1.0),
    (DcgmField::EccSbeVolTotal, "correctable ECC errors", "", "errors", 1.0),
    (DcgmField::EccDbeVolTotal, "uncorrectable ECC errors", "", "errors", 1.0),
];

/// The timeline for `inc` (opened at `inc.opened_ms`); `others` are every known incident,
/// from which those opened on the same GPUs (or node) in the window are listed.
pub fn for_incident(store: &dyn Store, inc: &Incident, others: &[&Incident]) -> Result<Vec<TimelineEntry>, StoreError> {
    let to = inc.opened_ms;
    let from = to.saturating_sub(WINDOW_MS);
    let gpus: Vec<GpuUuid> = match &inc.gpu {
        Some(g) => vec![g.clone()],
        None => inc.correlation.gpus.iter().take(MAX_GPUS).cloned().collect(),
    };
    let mut events = Vec::new();
    let mut entries = Vec::new();
    for g in &gpus {
        events.extend(store.events(Some(g), from, to.saturating_add(1))?);
        let mut series = Vec::new();
        for &(field, what, unit, category, min_change) in SERIES {
            let points = store
                .range(g, &FieldName::Dcgm(field), from, to.saturating_add(1), MAX_POINTS)?
                .into_iter()
                .map(|p| (p.ts_ms, p.value))
                .collect();
            series.push(SeriesWindow {
                what,
                unit,
                category,
                min_change,
                points,
            });
        }
        let mut mine = changed_before(&[], &series);
        if gpus.len() > 1 {
            for e in &mut mine {
                e.detail = format!("{g}: {}", e.detail);
            }
        }
        entries.extend(mine);
    }
    events.sort_by_key(|e| e.ts_ms);
    entries.extend(changed_before(&events, &[]));
    for o in others {
        let same_place = match (&inc.gpu, &o.gpu) {
            (Some(a), Some(b)) => a == b,
            (_, None) => o.node == inc.node,
            (None, Some(b)) => gpus.contains(b),
        };
        if o.id != inc.id && same_place && o.opened_ms >= from && o.opened_ms <= to {
            entries.push(TimelineEntry {
                ts_ms: o.opened_ms,
                what: "incident".into(),
                detail: format!("{} opened ({}): {}", o.id, o.rule, o.summary),
                severity: Some(o.severity),
            });
        }
    }
    entries.sort_by_key(|e| e.ts_ms);
    if entries.len() > MAX_CHANGED_BEFORE {
        entries.drain(..entries.len() - MAX_CHANGED_BEFORE);
    }
    Ok(entries)
}
