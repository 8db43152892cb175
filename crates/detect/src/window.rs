//! A counter's recent history in bounded memory: how much it rose over a trailing window.
//!
//! DCGM counters (ECC totals, NVLink and PCIe error totals, remapped rows) only go up,
//! except when the driver reloads or the GPU is reset, when they restart from zero.
//! [`CounterWindow`] folds raw readings into a monotone running total of increases, and
//! keeps snapshots of
//! that total at most once per `bucket_ms`. A window of W with buckets of W/60 holds about
//! 61 snapshots whatever the scrape interval, so memory per GPU is bounded; the price is
//! that "the last hour" may reach back up to one bucket further.
//!
//! ## Decreases
//!
//! Prometheus's `rate()`/`increase()` read any decrease as a reset and count the new
//! value as the increase since it (the counter restarted from 0). We keep that for a
//! real restart, and only for it: a reading that fell to at most half of the previous
//! one is a restart, and its value is the increase since (a volatile DBE total that
//! read 5, then 1 after a driver reload, had one new error). A reading that fell by less
//! than that cannot be a restart from 0 (it would have had to climb back to more than
//! half of the old total within one scrape interval, e.g. 110 million ECC errors in
//! 55 s): it is a counter that went backwards (exporter bug, wrapped or rewritten
//! value), and that step counts 0, re-basing on the new reading. Either way a decrease
//! never yields a negative increase, and a counter sliding down 1,000 per scrape never
//! yields a burst of errors.

use gpuwarden_model::TimestampMs;
use std::collections::VecDeque;

/// Buckets per window: the resolution of "the trailing window".
const BUCKETS: i64 = 60;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Snap {
    ts: TimestampMs,
    /// Running total of increases at `ts`.
    acc: f64,
    /// The raw reading at `ts` (for evidence: "0→2").
    raw: f64,
}

/// How much a counter rose over a trailing window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Increase {
    /// Sum of increases (resets handled).
    pub amount: f64,
    /// Time the window actually covers, ms (shorter than the window early on).
    pub span_ms: i64,
    /// Raw reading at the start of the covered span, and now.
    pub from_raw: f64,
    pub to_raw: f64,
    /// When the latest reading was taken.
    pub ts_ms: TimestampMs,
}

impl Increase {
    /// Rate per minute, dividing by at least `min_span_ms` so that one event in a short
    /// span is not extrapolated into a storm.
    pub fn per_minute(&self, min_span_ms: i64) -> f64 {
        let span = self.span_ms.max(min_span_ms).max(1) as f64;
        self.amount / span * 60_000.0
    }
}

/// The increase from `prev` to `raw` of a counter that only goes up except at a restart
/// from zero (see the module doc, "Decreases"). Both are finite and non-negative.
pub fn reset_aware_delta(prev: f64, raw: f64) -> f64 {
    if raw >= prev {
        raw - prev
    } else if raw <= prev / 2.0 {
        // Restarted from zero and has counted `raw` since.
        raw
    } else {
        // Went backwards without restarting: no increase for this step.
        0.0
    }
}

/// A counter's history over a trailing window of `window_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct CounterWindow {
    window_ms: i64,
    bucket_ms: i64,
    /// A non-zero first reading counts as an increase (for counters that restart at
    /// driver load, where any non-zero value is recent enough to matter).
    first_sight_counts: bool,
    last: Option<Snap>,
    snaps: VecDeque<Snap>,
}

impl CounterWindow {
    pub fn new(window_ms: i64, first_sight_counts: bool) -> Self {
        let window_ms = window_ms.max(1);
        CounterWindow {
            window_ms,
            bucket_ms: (window_ms / BUCKETS).max(1),
            first_sight_counts,
            last: None,
            snaps: VecDeque::new(),
        }
    }

    /// Folds in a reading. NaN, infinite and negative readings are ignored, and so are
    /// readings older than the latest one (out of order).
    pub fn observe(&mut self, ts: TimestampMs, raw: f64) {
        if !(raw.is_finite() && raw >= 0.0) {
            return;
        }
        let Some(last) = self.last else {
            let acc = if self.first_sight_counts { raw } else { 0.0 };
            if self.first_sight_counts && raw > 0.0 {
                // The increase happened at some unknown time before: place a zero just
                // before the first reading so the window reports "0→raw".
                self.snaps.push_back(Snap {
                    ts: ts.saturating_sub(1),
                    acc: 0.0,
                    raw: 0.0,
                });
            }
            let s = Snap { ts, acc, raw };
            self.snaps.push_back(s);
            self.last = Some(s);
            return;
        };
        if ts <= last.ts {
            return;
        }
        let delta = reset_aware_delta(last.raw, raw);
        let s = Snap {
            ts,
            acc: last.acc + delta,
            raw,
        };
        self.last = Some(s);
        if self
            .snaps
            .back()
            .is_none_or(|b| ts.saturating_sub(b.ts) >= self.bucket_ms)
        {
            self.snaps.push_back(s);
        }
        self.prune(ts);
    }

    /// Drops snapshots no longer needed: keep one at or before the window's start.
    fn prune(&mut self, now: TimestampMs) {
        let start = now.saturating_sub(self.window_ms);
        while self.snaps.len() >= 2 && self.snaps[1].ts <= start {
            self.snaps.pop_front();
        }
    }

    /// The increase over the trailing window ending at the latest reading, if there is a
    /// baseline to compare with (two readings, or a first reading that counts).
    pub fn increase(&self) -> Option<Increase> {
        let last = self.last?;
        let start = last.ts.saturating_sub(self.window_ms);
        // Latest snapshot at or before the window start, else the oldest we have.
        let base = self
            .snaps
            .iter()
            .rev()
            .find(|s| s.ts <= start)
            .or(self.snaps.front())
            .copied()?;
        if base.ts >= last.ts {
            return None;
        }
        Some(Increase {
            amount: last.acc - base.acc,
            span_ms: last.ts.saturating_sub(base.ts),
            from_raw: base.raw,
            to_raw: last.raw,
            ts_ms: last.ts,
        })
    }

    /// The latest raw reading.
    pub fn latest(&self) -> Option<f64> {
        self.last.map(|s| s.raw)
    }

    /// Snapshots held (for memory tests).
    pub fn len(&self) -> usize {
        self.snaps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.snaps.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn increase_over_window() {
        let mut w = CounterWindow::new(60 * MIN, false);
        w.observe(0, 5.0);
        assert!(w.increase().is_none(), "one reading is no baseline");
        w.observe(5_000, 7.0);
        let i = w.increase().unwrap();
        assert_eq!(i.amount, 2.0);
        assert_eq!((i.from_raw, i.to_raw), (5.0, 7.0));
    }

    #[test]
    fn decrease_is_a_reset_not_a_negative_rate() {
        let mut w = CounterWindow::new(60 * MIN, false);
        w.observe(0, 100.0);
        w.observe(5_000, 3.0);
        assert_eq!(w.increase().unwrap().amount, 3.0);
    }

    #[test]
    fn counter_sliding_down_is_not_an_error_burst() {
        let mut w = CounterWindow::new(60 * MIN, false);
        let mut v = 110_000_000.0;
        for i in 0..20 {
            w.observe(i * 55_000, v);
            v -= 1_000.0;
        }
        assert_eq!(w.increase().unwrap().amount, 0.0);
    }

    #[test]
    fn reset_then_real_increase_is_counted() {
        let mut w = CounterWindow::new(60 * MIN, false);
        w.observe(0, 5_000.0);
        w.observe(5_000, 0.0);
        assert_eq!(w.increase().unwrap().amount, 0.0);
        w.observe(10_000, 4.0);
        assert_eq!(w.increase().unwrap().amount, 4.0);
        // Slid down, then rose again: only the rise counts.
        let mut w = CounterWindow::new(60 * MIN, false);
        w.observe(0, 1_000_000.0);
        w.observe(5_000, 999_000.0);
        w.observe(10_000, 999_003.0);
        assert_eq!(w.increase().unwrap().amount, 3.0);
    }

    #[test]
    fn old_increases_leave_the_window() {
        let mut w = CounterWindow::new(10 * MIN, false);
        w.observe(0, 0.0);
        w.observe(5_000, 10.0);
        for i in 2..300 {
            w.observe(i * 5_000, 10.0);
        }
        assert_eq!(w.increase().unwrap().amount, 0.0);
        assert!(w.len() <= 62, "bounded: {}", w.len());
    }

    #[test]
    fn first_sight_counts_when_asked() {
        let mut w = CounterWindow::new(60 * MIN, true);
        w.observe(1_000, 2.0);
        let i = w.increase().unwrap();
        assert_eq!(i.amount, 2.0);
        assert_eq!(i.from_raw, 0.0);
        let mut w = CounterWindow::new(60 * MIN, true);
        w.observe(1_000, 0.0);
        assert!(w.increase().is_none());
    }

    #[test]
    fn nan_negative_and_out_of_order_readings_are_ignored() {
        let mut w = CounterWindow::new(60 * MIN, false);
        w.observe(0, 1.0);
        w.observe(1_000, f64::NAN);
        w.observe(2_000, -4.0);
        w.observe(3_000, f64::INFINITY);
        w.observe(4_000, 2.0);
        w.observe(3_500, 50.0);
        assert_eq!(w.increase().unwrap().amount, 1.0);
    }

    #[test]
    fn rate_per_minute_uses_a_floor_on_the_span() {
        let mut w = CounterWindow::new(5 * MIN, false);
        w.observe(0, 0.0);
        w.observe(5_000, 1.0);
        assert_eq!(w.increase().unwrap().per_minute(MIN), 1.0);
    }
}
