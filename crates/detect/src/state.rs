//! What the engine remembers about one GPU between evaluations, and nothing more: its
//! identity, the latest value of each known field, windows over the counters the rules
//! rate, streak counters for "sustained" rules, and its XID history.
//!
//! Memory per GPU is bounded: one `f64` per known field, about 61 snapshots per counter
//! window (see [`crate::window`]), a fixed number of streaks, and an XID history capped
//! in [`crate::xid`].

use crate::rules::HealthRules;
use crate::window::CounterWindow;
use crate::xid::XidHistory;
use gpuwarden_model::{DcgmField, FieldName, GpuIdentity, GpuSamples, TimestampMs};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

/// Counters the rules rate, with their windows.
#[derive(Debug, Clone)]
pub struct Counters {
    pub sbe: CounterWindow,
    pub dbe: CounterWindow,
    pub uncorrectable_rows: CounterWindow,
    pub correctable_rows: CounterWindow,
    pub nvlink_crc: CounterWindow,
    pub nvlink_replay: CounterWindow,
    pub nvlink_recovery: CounterWindow,
    pub pcie_replay: CounterWindow,
}

impl Counters {
    fn new(r: &HealthRules) -> Self {
        let m = |minutes: u32| i64::from(minutes) * MIN;
        Counters {
            // The SBE rule is "per hour": a one-hour window.
            sbe: CounterWindow::new(HOUR, false),
            // Any non-zero volatile DBE count matters: it restarts at driver load.
            dbe: CounterWindow::new(m(r.ecc.dbe.window_minutes), true),
            uncorrectable_rows: CounterWindow::new(i64::from(r.remap.uncorrectable_rows.window_hours) * HOUR, false),
            correctable_rows: CounterWindow::new(i64::from(r.remap.correctable_rows.window_hours) * HOUR, false),
            nvlink_crc: CounterWindow::new(m(r.nvlink.crc.window_minutes), false),
            nvlink_replay: CounterWindow::new(m(r.nvlink.replay.window_minutes), false),
            nvlink_recovery: CounterWindow::new(m(r.nvlink.recovery.window_minutes), false),
            pcie_replay: CounterWindow::new(m(r.pcie.replay.window_minutes), false),
        }
    }
}

/// Rules that must hold for several evaluations in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streak {
    ThermalThrottle,
    PowerBrake,
    SwPowerCap,
    PowerOverLimit,
    Straggler,
}

const STREAKS: usize = 5;

/// Everything remembered about one GPU.
#[derive(Debug, Clone)]
pub struct GpuState {
    pub node: String,
    pub model: Option<String>,
    /// Latest value per known field (`NaN`: not in the latest row).
    latest: Box<[f64]>,
    /// Time of the latest row.
    pub last_row_ms: Option<TimestampMs>,
    /// Row time at the previous evaluation: streaks only move when a new row came in,
    /// so evaluating twice on the same data does not make a condition "sustained".
    pub last_eval_row_ms: Option<TimestampMs>,
    pub counters: Counters,
    streaks: [u32; STREAKS],
    pub xids: XidHistory,
    /// A `GpuDisappeared` event came and no `GpuAppeared` or row since.
    pub disappeared: bool,
}

impl GpuState {
    pub fn new(node: String, rules: &HealthRules) -> Self {
        GpuState {
            node,
            model: None,
            latest: vec![f64::NAN; DcgmField::ALL.len()].into_boxed_slice(),
            last_row_ms: None,
            last_eval_row_ms: None,
            counters: Counters::new(rules),
            streaks: [0; STREAKS],
            xids: XidHistory::default(),
            disappeared: false,
        }
    }

    pub fn set_identity(&mut self, id: &GpuIdentity) {
        if !id.node.is_empty() && self.node != id.node {
            self.node.clone_from(&id.node);
        }
        if id.model.is_some() && self.model != id.model {
            self.model.clone_from(&id.model);
        }
    }

    /// Folds in one row. A row older than the latest one only feeds nothing: counters
    /// ignore out-of-order readings and the latest values stay the newest.
    pub fn observe_row(&mut self, row: &GpuSamples) {
        let ts = row.ts_ms;
        match self.last_row_ms {
            Some(last) if ts < last => return,
            Some(last) if ts == last => {}
            _ => self.latest.iter_mut().for_each(|v| *v = f64::NAN),
        }
        self.last_row_ms = Some(ts);
        self.disappeared = false;
        for (name, value) in &row.values {
            let FieldName::Dcgm(f) = name else { continue };
            let v = *value;
            if let Some(slot) = self.latest.get_mut(f.index()) {
                *slot = v;
            }
            let c = &mut self.counters;
            match f {
                DcgmField::EccSbeVolTotal => c.sbe.observe(ts, v),
                DcgmField::EccDbeVolTotal => c.dbe.observe(ts, v),
                DcgmField::UncorrectableRemappedRows => c.uncorrectable_rows.observe(ts, v),
                DcgmField::CorrectableRemappedRows => c.correctable_rows.observe(ts, v),
                DcgmField::PcieReplayCounter => c.pcie_replay.observe(ts, v),
                DcgmField::NvlinkReplayErrorCountTotal => c.nvlink_replay.observe(ts, v),
                DcgmField::NvlinkRecoveryErrorCountTotal => c.nvlink_recovery.observe(ts, v),
                _ => {}
            }
        }
        // CRC flit and data errors are rated together: both mean a noisy link.
        let flit = self.get(DcgmField::NvlinkCrcFlitErrorCountTotal);
        let data = self.get(DcgmField::NvlinkCrcDataErrorCountTotal);
        if flit.is_some() || data.is_some() {
            self.counters
                .nvlink_crc
                .observe(ts, flit.unwrap_or(0.0) + data.unwrap_or(0.0));
        }
    }

    /// The latest value of `f`, if the latest row had a finite one.
    pub fn get(&self, f: DcgmField) -> Option<f64> {
        self.latest.get(f.index()).copied().filter(|v| v.is_finite())
    }

    /// The clock-event reasons bitmask (either field name).
    pub fn reasons(&self) -> Option<u64> {
        self.get(DcgmField::ClockEventReasons)
            .or_else(|| self.get(DcgmField::ClockThrottleReasons))
            .and_then(crate::throttle::bits)
    }

    pub fn has_rows(&self) -> bool {
        self.last_row_ms.is_some()
    }

    /// True when a row arrived since the previous evaluation.
    pub fn has_new_row(&self) -> bool {
        self.last_row_ms != self.last_eval_row_ms
    }

    /// Moves a streak: +1 when the condition holds on a new row, unchanged on old data,
    /// reset when it does not hold. Returns the streak length.
    pub fn streak(&mut self, which: Streak, holds: bool, new_row: bool) -> u32 {
        let s = &mut self.streaks[which as usize];
        if !holds {
            *s = 0;
        } else if new_row || *s == 0 {
            *s = s.saturating_add(1);
        }
        *s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpuwarden_model::GpuUuid;

    fn row(ts: TimestampMs, vals: &[(DcgmField, f64)]) -> GpuSamples {
        GpuSamples {
            gpu: GpuUuid::new("GPU-1"),
            ts_ms: ts,
            values: vals.iter().map(|(f, v)| (FieldName::Dcgm(*f), *v)).collect(),
        }
    }

    #[test]
    fn latest_values_come_from_the_newest_row_only() {
        let mut s = GpuState::new("n".into(), &HealthRules::builtin());
        s.observe_row(&row(
            1_000,
            &[(DcgmField::GpuTemp, 50.0), (DcgmField::PowerUsage, 100.0)],
        ));
        s.observe_row(&row(2_000, &[(DcgmField::GpuTemp, 51.0)]));
        assert_eq!(s.get(DcgmField::GpuTemp), Some(51.0));
        assert_eq!(
            s.get(DcgmField::PowerUsage),
            None,
            "a field absent from the newest row is not current"
        );
        s.observe_row(&row(1_500, &[(DcgmField::GpuTemp, 99.0)]));
        assert_eq!(s.get(DcgmField::GpuTemp), Some(51.0), "an older row does not overwrite");
    }

    #[test]
    fn nan_value_reads_as_missing() {
        let mut s = GpuState::new("n".into(), &HealthRules::builtin());
        s.observe_row(&row(1_000, &[(DcgmField::GpuTemp, f64::NAN)]));
        assert_eq!(s.get(DcgmField::GpuTemp), None);
    }

    #[test]
    fn streak_moves_only_on_new_rows() {
        let mut s = GpuState::new("n".into(), &HealthRules::builtin());
        assert_eq!(s.streak(Streak::Straggler, true, true), 1);
        assert_eq!(s.streak(Streak::Straggler, true, false), 1);
        assert_eq!(s.streak(Streak::Straggler, true, true), 2);
        assert_eq!(s.streak(Streak::Straggler, false, true), 0);
    }
}
