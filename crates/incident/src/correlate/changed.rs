//! "What changed before": a short, readable timeline of what moved on a GPU in the
//! window before its incident opened — errors and driver events, workload starts,
//! configuration (power limit), temperature — so the first question of on-call ("what
//! changed?") is answered on the incident itself.
//!
//! Pure: the caller reads the events and series from the store and passes them in.

use gpuwarden_model::{Event, EventKind, Severity, TimelineEntry, TimestampMs};

/// Most entries kept (the most recent ones; the series summaries always stay).
pub const MAX_ENTRIES: usize = 24;

/// One series over the window, oldest first, to summarise as one entry.
#[derive(Debug, Clone)]
pub struct SeriesWindow<'a> {
    /// What the series is, in people's words: `temperature`, `power limit`.
    pub what: &'a str,
    pub unit: &'a str,
    /// How the change is filed: `temperature`, `config`, `errors`.
    pub category: &'a str,
    /// The smallest change worth mentioning (below it: noise, not a change).
    pub min_change: f64,
    pub points: Vec<(TimestampMs, f64)>,
}

/// Builds the timeline from the window's events and series, oldest first.
pub fn changed_before(events: &[Event], series: &[SeriesWindow<'_>]) -> Vec<TimelineEntry> {
    let mut out: Vec<TimelineEntry> = Vec::new();
    for e in events {
        let (what, detail, severity) = match &e.kind {
            EventKind::Xid { code, message, .. } => (
                "errors",
                match message {
                    Some(m) => format!("XID {code}: {m}"),
                    None => format!("XID {code}"),
                },
                Some(Severity::Warning),
            ),
            EventKind::XidCleared { previous_code } => {
                ("errors", format!("XID {previous_code} no longer reported"), None)
            }
            EventKind::GpuDisappeared => (
                "inventory",
                "GPU missing from its node's scrape".to_string(),
                Some(Severity::Critical),
            ),
            EventKind::GpuAppeared => ("inventory", "GPU appeared in its node's scrape".to_string(), None),
            EventKind::EccDbe { count } => (
                "errors",
                format!("uncorrectable (double-bit) ECC errors rose to {count}"),
                Some(Severity::Critical),
            ),
            EventKind::RemapFailure => ("errors", "row remapping failed".to_string(), Some(Severity::Critical)),
            EventKind::ThrottleStart { reasons } => (
                "clocks",
                format!("clock throttling started (reasons 0x{reasons:x})"),
                None,
            ),
            EventKind::ProcessStart { pid, name } => (
                "workload",
                match name {
                    Some(n) => format!("process {n} (pid {pid}) started"),
                    None => format!("process pid {pid} started"),
                },
                None,
            ),
        };
        out.push(TimelineEntry {
            ts_ms: e.ts_ms,
            what: what.to_string(),
            detail,
            severity,
        });
    }
    // Events are the discrete changes; keep the latest ones when there are many.
    if out.len() > MAX_ENTRIES {
        out.drain(..out.len() - MAX_ENTRIES);
    }
    for s in series {
        if let Some(e) = summarise(s) {
            out.push(e);
        }
    }
    out.sort_by_key(|e| e.ts_ms);
    out
}

/// One entry for a series that moved by at least its `min_change`: where it started, its
/// extreme and where it ended; `None` for a flat or empty series.
fn summarise(s: &SeriesWindow<'_>) -> Option<TimelineEntry> {
    let pts: Vec<(TimestampMs, f64)> = s.points.iter().copied().filter(|(_, v)| v.is_finite()).collect();
    let (&(t0, first), &(_, last)) = (pts.first()?, pts.last()?);
    let (tmax, max) = pts
        .iter()
        .copied()
        .fold((t0, first), |a, b| if b.1 > a.1 { b } else { a });
    let (tmin, min) = pts
        .iter()
        .copied()
        .fold((t0, first), |a, b| if b.1 < a.1 { b } else { a });
    if max - min < s.min_change {
        return None;
    }
    // Stamp the entry where the move started: the extreme furthest from the first value.
    let rising = (max - first) >= (first - min);
    let (ts, detail) = if rising {
        (
            first_move(&pts, first, s.min_change).unwrap_or(tmax),
            format!(
                "{} rose {:.0} → {:.0} {} (peak {:.0} {})",
                s.what, first, last, s.unit, max, s.unit
            ),
        )
    } else {
        (
            first_move(&pts, first, s.min_change).unwrap_or(tmin),
            format!(
                "{} fell {:.0} → {:.0} {} (lowest {:.0} {})",
                s.what, first, last, s.unit, min, s.unit
            ),
        )
    };
    Some(TimelineEntry {
        ts_ms: ts,
        what: s.category.to_string(),
        detail,
        severity: None,
    })
}

/// When the series first left `first` by at least half of `min_change`.
fn first_move(pts: &[(TimestampMs, f64)], first: f64, min_change: f64) -> Option<TimestampMs> {
    pts.iter()
        .find(|(_, v)| (v - first).abs() >= min_change / 2.0)
        .map(|(t, _)| *t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpuwarden_model::GpuUuid;

    fn ev(ts: TimestampMs, kind: EventKind) -> Event {
        Event {
            gpu: GpuUuid::new("GPU-1"),
            node: "n1".into(),
            ts_ms: ts,
            kind,
        }
    }

    fn temp(points: Vec<(TimestampMs, f64)>) -> SeriesWindow<'static> {
        SeriesWindow {
            what: "GPU temperature",
            unit: "°C",
            category: "temperature",
            min_change: 5.0,
            points,
        }
    }

    #[test]
    fn a_temperature_climb_and_events_make_an_ordered_timeline() {
        let events = [
            ev(
                1_000,
                EventKind::ProcessStart {
                    pid: 7,
                    name: Some("train".into()),
                },
            ),
            ev(
                50_000,
                EventKind::Xid {
                    code: 79,
                    message: None,
                    pid: None,
                    process: None,
                },
            ),
        ];
        let series = [temp(vec![
            (0, 45.0),
            (10_000, 46.0),
            (20_000, 60.0),
            (30_000, 88.0),
            (40_000, 87.0),
        ])];
        let tl = changed_before(&events, &series);
        let whats: Vec<&str> = tl.iter().map(|e| e.what.as_str()).collect();
        assert_eq!(whats, ["workload", "temperature", "errors"]);
        assert!(
            tl[1].detail.contains("rose 45 → 87") && tl[1].detail.contains("peak 88"),
            "{}",
            tl[1].detail
        );
        assert_eq!(tl[1].ts_ms, 20_000, "stamped where the climb started");
        assert!(tl[2].detail.contains("XID 79"));
    }

    #[test]
    fn flat_or_noisy_series_are_not_changes() {
        let series = [temp(vec![(0, 45.0), (10_000, 47.0), (20_000, 44.0)]), temp(vec![])];
        assert!(changed_before(&[], &series).is_empty());
        let nan = [temp(vec![(0, f64::NAN), (10_000, 45.0)])];
        assert!(changed_before(&[], &nan).is_empty());
    }

    #[test]
    fn a_lowered_power_limit_is_a_config_change() {
        let s = SeriesWindow {
            what: "power limit",
            unit: "W",
            category: "config",
            min_change: 1.0,
            points: vec![(0, 700.0), (10_000, 700.0), (20_000, 400.0)],
        };
        let tl = changed_before(&[], &[s]);
        assert_eq!(tl.len(), 1);
        assert_eq!(tl[0].what, "config");
        assert!(tl[0].detail.contains("fell 700 → 400 W"), "{}", tl[0].detail);
    }

    #[test]
    fn many_events_keep_the_latest() {
        let events: Vec<Event> = (0..100)
            .map(|i| ev(i * 1000, EventKind::ThrottleStart { reasons: 0x40 }))
            .collect();
        let tl = changed_before(&events, &[]);
        assert_eq!(tl.len(), MAX_ENTRIES);
        assert_eq!(tl.last().map(|e| e.ts_ms), Some(99_000));
    }
}
