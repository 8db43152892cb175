//! What the engine remembers per GPU and per node, bounded: a window of compact
//! features, the latest configuration values and the ones first seen, a slow baseline of
//! the GPU's behaviour, and when its workload attribution last changed.

use crate::features::{self, Counters, Feat};
use gpuwarden_model::{DcgmField, FieldName, Finding, GpuIdentity, GpuSamples, TimestampMs, Workload};
use std::collections::{BTreeMap, VecDeque};

/// Most features kept per GPU, whatever the scrape interval: at a 1 s interval the
/// effective window shrinks to 12 minutes rather than memory growing.
pub const MAX_FEATS: usize = 720;

/// Configuration values tracked for drift.
pub const CONFIG_FIELDS: [DcgmField; 5] = [
    DcgmField::EccCurrent,
    DcgmField::PersistenceMode,
    DcgmField::MigMode,
    DcgmField::ComputeMode,
    DcgmField::PowerMgmtLimit,
];

/// A slow, time-weighted baseline of a GPU's behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Baseline {
    pub sm: f64,
    /// Board power in watts (compared as a fraction of the first-seen power limit, so a
    /// changed limit is drift, not a behaviour change).
    pub power_w: Option<f64>,
    /// Data time covered so far (gaps count up to the gap limit only).
    pub covered_ms: i64,
    last_ts: Option<TimestampMs>,
}

impl Baseline {
    /// Folds one sample in, with time constant `tau_ms`.
    pub fn update(&mut self, ts: TimestampMs, sm: Option<f64>, power_w: Option<f64>, tau_ms: f64, max_gap_ms: i64) {
        let Some(sm) = sm else { return };
        let Some(last) = self.last_ts else {
            self.sm = sm;
            self.power_w = power_w;
            self.last_ts = Some(ts);
            return;
        };
        let dt = (ts - last).clamp(0, max_gap_ms);
        if dt == 0 {
            return;
        }
        // Bias-corrected: while less than a time constant is covered, the weight of a
        // sample is its share of the time so far (a plain mean), so the first value seen
        // (perhaps a checkpoint dip) does not linger as the "baseline" for hours.
        let a = (1.0 - (-(dt as f64) / tau_ms.max(1.0)).exp()).max(dt as f64 / (self.covered_ms + dt) as f64);
        self.sm += a * (sm - self.sm);
        self.power_w = match (self.power_w, power_w) {
            (Some(b), Some(p)) => Some(b + a * (p - b)),
            (b, p) => b.or(p),
        };
        self.covered_ms += dt;
        self.last_ts = Some(ts);
    }
}

/// The last process seen on a GPU (from process-start or XID events).
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSeen {
    pub pid: Option<u32>,
    pub name: Option<String>,
    pub ts_ms: TimestampMs,
}

/// Everything remembered about one GPU.
#[derive(Debug, Clone)]
pub struct GpuState {
    pub identity: GpuIdentity,
    pub first_seen_ms: TimestampMs,
    pub last_row_ms: Option<TimestampMs>,
    /// Features, oldest first, within the engine's lookback and [`MAX_FEATS`].
    pub window: VecDeque<Feat>,
    counters: Counters,
    /// Latest value of each tracked configuration field.
    pub config_now: BTreeMap<DcgmField, f64>,
    /// First value seen of each (the learned baseline).
    pub config_first: BTreeMap<DcgmField, f64>,
    pub driver_first: Option<String>,
    /// When the workload labels last changed (first sight counts as a change).
    pub workload_changed_ms: TimestampMs,
    pub baseline: Baseline,
    pub process: Option<ProcessSeen>,
    /// Set by a GPU-disappeared event, cleared by the next row.
    pub gone_since_ms: Option<TimestampMs>,
    /// Findings of the last evaluation on fresh data, re-reported while data is stale so
    /// that losing telemetry never clears an alert.
    pub latched: Vec<Finding>,
    pub latched_ms: TimestampMs,
}

impl GpuState {
    pub fn new(identity: GpuIdentity, now: TimestampMs) -> GpuState {
        GpuState {
            driver_first: identity.driver_version.clone(),
            identity,
            first_seen_ms: now,
            last_row_ms: None,
            window: VecDeque::new(),
            counters: Counters::default(),
            config_now: BTreeMap::new(),
            config_first: BTreeMap::new(),
            workload_changed_ms: now,
            baseline: Baseline::default(),
            process: None,
            gone_since_ms: None,
            latched: Vec::new(),
            latched_ms: now,
        }
    }

    /// Takes a new identity; notes when the workload changed.
    pub fn set_identity(&mut self, identity: &GpuIdentity, now: TimestampMs) {
        if identity.workload != self.identity.workload {
            self.workload_changed_ms = now;
            // A new job brings new behaviour: learn it afresh instead of calling it a
            // change (a job that ends, leaving no labels, keeps the baseline).
            if !identity.workload.is_empty() {
                self.baseline = Baseline::default();
            }
        }
        if self.driver_first.is_none() {
            self.driver_first = identity.driver_version.clone();
        }
        self.identity = identity.clone();
    }

    pub fn workload(&self) -> &Workload {
        &self.identity.workload
    }

    /// Folds a row in. `lookback_ms` bounds the window; `tau_ms` is the behaviour
    /// baseline's time constant.
    pub fn observe_row(&mut self, row: &GpuSamples, lookback_ms: i64, tau_ms: f64, max_gap_ms: i64) {
        if self.last_row_ms.is_some_and(|t| row.ts_ms <= t) {
            // Out-of-order or repeated rows would corrupt rates and time-in-state.
            return;
        }
        let f = features::extract(row, &mut self.counters);
        for field in CONFIG_FIELDS {
            if let Some(v) = row.get(&FieldName::Dcgm(field)).filter(|v| v.is_finite()) {
                self.config_now.insert(field, v);
                self.config_first.entry(field).or_insert(v);
            }
        }
        self.baseline.update(row.ts_ms, f.sm, f.power_w, tau_ms, max_gap_ms);
        self.window.push_back(f);
        while self.window.len() > MAX_FEATS || self.window.front().is_some_and(|o| o.ts_ms < row.ts_ms - lookback_ms) {
            self.window.pop_front();
        }
        self.last_row_ms = Some(row.ts_ms);
        self.gone_since_ms = None;
    }

    /// The most recent contiguous run of features within `lookback_ms` of `now` and since
    /// the workload last changed (no gap longer than `max_gap_ms`, and the newest no older
    /// than `max_gap_ms`). Empty when the data is older than that.
    pub fn recent_run(&self, now: TimestampMs, lookback_ms: i64, max_gap_ms: i64) -> Vec<Feat> {
        let mut out: Vec<Feat> = Vec::new();
        let mut next_ts = now;
        // Evidence is about the current workload: what ran before its labels changed
        // (another job's traffic) neither condemns nor excuses it.
        let since = (now - lookback_ms).max(self.workload_changed_ms);
        for f in self.window.iter().rev() {
            if f.ts_ms < since || next_ts - f.ts_ms > max_gap_ms {
                break;
            }
            out.push(*f);
            next_ts = f.ts_ms;
        }
        out.reverse();
        out
    }
}

/// What is remembered per node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeState {
    pub first_seen_ms: TimestampMs,
    /// Some GPU of the node has shown workload labels: the exporter attributes work here.
    pub attributed: bool,
}
