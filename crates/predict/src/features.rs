//! Per-GPU features over sliding windows (1 h, 6 h, 24 h, 7 d), computed incrementally.
//!
//! **One code path for training and live scoring.** [`FeatureBank`] is fed rows of
//! samples and events one at a time — by the trainer replaying a history (simulated or
//! from the store) and by the live analyzer — and [`FeatureBank::snapshot`] turns its
//! state into feature vectors. Nothing else computes features, so the model is scored on
//! exactly what it was trained on (`tests/features_identity.rs` checks it, through the
//! exporter text the live path reads, at the training step and coarser ones).
//!
//! **Bounded memory.** Each GPU keeps a fixed-size array of cumulative quantities
//! (counter increases, XIDs by class, seconds throttled, integrals of temperature margin)
//! and snapshots of that array at bucket boundaries in three rings: 5-minute buckets for
//! 1 h, hourly for 24 h, 6-hourly for 7 d. A window's value is "cumulative now minus the
//! snapshot at the window's start bucket", so windows are aligned to buckets (a 6 h window
//! is 5–6 h of data) and cost O(1) memory per GPU whatever the sample rate: about
//! 68 snapshots × 20 values ≈ 11 KB per GPU.
//!
//! **Persistence.** Beside totals per window, the hourly and 6-hourly snapshots give the
//! increase in each bucket, so for SBEs and PCIe replays the features also count the
//! buckets with any increase (hours of the last 24, 6 h blocks of the last 7 d) and take
//! the median 6 h block: a worn board leaks errors hour after hour, while a burst (a
//! benign episode, a bad job) fills a few buckets however many errors it throws.
//!
//! Counters are read as increases between consecutive samples; a counter that goes
//! down (volatile counters reset by a reboot or a driver reload) counts from zero again.
//! NaN and infinite values are ignored (a missing sample is not a zero).

use crate::failure::HardFailureCodes;
use gpuwarden_detect::{Cause, XidCatalog};
use gpuwarden_model::{DcgmField, Event, EventKind, FieldName, GpuIdentity, GpuSamples, GpuUuid, TimestampMs};
use std::collections::{HashMap, VecDeque};

const MIN_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MIN_MS;
/// Longest gap between two samples that still counts as observed time (a GPU that was
/// off the scrape for an hour was not "throttled for an hour").
const MAX_GAP_MS: i64 = 15 * MIN_MS;

// Indices into the cumulative array.
const C_SBE: usize = 0;
const C_DBE: usize = 1;
const C_RETIRED: usize = 2;
const C_ROWS_CORR: usize = 3;
const C_ROWS_UNCORR: usize = 4;
const C_PCIE: usize = 5;
const C_NVL_CRC: usize = 6;
const C_NVL_REPLAY: usize = 7;
const C_XID_HW: usize = 8;
const C_XID_APP: usize = 9;
const C_XID_OTHER: usize = 10;
const C_XID_HARD: usize = 11;
const C_THROTTLE_THERMAL_S: usize = 12;
const C_THROTTLE_POWER_S: usize = 13;
const C_POWER_EXCURSION_S: usize = 14;
const C_MARGIN_S: usize = 15;
const C_OBSERVED_S: usize = 16;
const C_CLOCK_BUSY_S: usize = 17;
const C_BUSY_S: usize = 18;
const C_PENDING_S: usize = 19;
const NC: usize = 20;

/// The windowed counters, in feature order: (cumulative index, name stem).
const WINDOWED: &[(usize, &str)] = &[
    (C_SBE, "ecc_sbe"),
    (C_DBE, "ecc_dbe"),
    (C_RETIRED, "retired_pages"),
    (C_ROWS_CORR, "remapped_rows_correctable"),
    (C_ROWS_UNCORR, "remapped_rows_uncorrectable"),
    (C_PCIE, "pcie_replays"),
    (C_NVL_CRC, "nvlink_crc_errors"),
    (C_NVL_REPLAY, "nvlink_replays"),
    (C_XID_HW, "xid_hardware"),
    (C_XID_APP, "xid_application"),
    (C_XID_OTHER, "xid_driver_or_unknown"),
];

/// Windows, in feature order: (name suffix, length in ms).
pub const WINDOWS: &[(&str, i64)] = &[
    ("1h", HOUR_MS),
    ("6h", 6 * HOUR_MS),
    ("24h", 24 * HOUR_MS),
    ("7d", 168 * HOUR_MS),
];

/// Scalar features after the windowed counters, in order.
const SCALARS: &[&str] = &[
    "ecc_sbe_trend_1h_vs_24h",
    "ecc_sbe_trend_24h_vs_7d",
    "pcie_replay_slope_per_h",
    "nvlink_crc_trend_1h_vs_24h",
    "xid_application_trend_6h_vs_7d",
    "remap_pending",
    "remap_pending_hours_24h",
    "row_remap_failure",
    "remapped_rows_correctable_total",
    "remapped_rows_uncorrectable_total",
    "retired_pages_total",
    "ecc_sbe_total",
    "temp_margin_c",
    "temp_margin_mean_24h_c",
    "throttle_thermal_share_24h",
    "throttle_power_share_24h",
    "power_over_limit_share_24h",
    "clock_ratio_busy_24h",
    "clock_vs_peers_24h",
    "age_h_capped_7d",
    "ecc_sbe_active_hours_24h",
    "pcie_replays_active_hours_24h",
    "ecc_sbe_active_blocks_7d",
    "pcie_replays_active_blocks_7d",
    "ecc_sbe_median_block_7d",
    "pcie_replays_median_block_7d",
];

/// Names of the features, in vector order. Stable: the model file stores them and a
/// model whose names differ is refused.
pub fn feature_names() -> Vec<String> {
    let mut names = Vec::with_capacity(feature_count());
    for (_, stem) in WINDOWED {
        for (w, _) in WINDOWS {
            names.push(format!("{stem}_{w}"));
        }
    }
    names.extend(SCALARS.iter().map(|s| s.to_string()));
    names
}

/// Length of a feature vector.
pub const fn feature_count() -> usize {
    WINDOWED.len() * WINDOWS.len() + SCALARS.len()
}

/// Index of a named feature (for the rule baseline and tests).
pub fn feature_index(name: &str) -> Option<usize> {
    feature_names().iter().position(|n| n == name)
}

/// Class of an XID for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum XidClass {
    Hard,
    Hardware,
    Application,
    Other,
}

/// Snapshots of the cumulative array at bucket starts, newest at the back.
#[derive(Debug, Clone)]
struct Ring {
    period_ms: i64,
    cap: usize,
    snaps: VecDeque<(i64, [f64; NC])>,
}

impl Ring {
    fn new(period_ms: i64, buckets: usize) -> Self {
        Ring {
            period_ms,
            cap: buckets + 1,
            snaps: VecDeque::with_capacity(buckets + 1),
        }
    }

    /// Records `cum` as the value at the start of `ts`'s bucket, if it is a new bucket.
    fn note(&mut self, ts: TimestampMs, cum: &[f64; NC]) {
        let b = ts.div_euclid(self.period_ms);
        if self.snaps.back().is_none_or(|(last, _)| *last < b) {
            self.snaps.push_back((b, *cum));
            while self.snaps.len() > self.cap {
                self.snaps.pop_front();
            }
        }
    }

    /// The snapshot at the start of the window of `n` buckets ending with `now`'s bucket
    /// (the oldest one held when history is shorter).
    fn start_of(&self, now: TimestampMs, n: i64) -> Option<&[f64; NC]> {
        let first = now.div_euclid(self.period_ms) - (n - 1);
        self.snaps
            .iter()
            .find(|(b, _)| *b >= first)
            .or(self.snaps.back())
            .map(|(_, s)| s)
    }

    /// Increases of slot `i` in each bucket of the window of `n` buckets ending with
    /// `now`'s bucket that held data, oldest first: complete buckets from consecutive
    /// snapshots, then the current (partial) one up to `cum`. Returns how many of them
    /// are complete (all but the last).
    fn bucket_increases(&self, now: TimestampMs, n: i64, cum: &[f64; NC], i: usize, out: &mut Vec<f64>) -> usize {
        out.clear();
        let first = now.div_euclid(self.period_ms) - (n - 1);
        let mut prev: Option<f64> = None;
        for (b, s) in &self.snaps {
            if *b < first {
                continue;
            }
            if let Some(p) = prev {
                out.push((s[i] - p).max(0.0));
            }
            prev = Some(s[i]);
        }
        let complete = out.len();
        if let Some(p) = prev {
            out.push((cum[i] - p).max(0.0));
        }
        complete
    }
}

/// Buckets with an increase, and the median increase of the complete buckets (NaN when
/// there are none): how *persistent* a counter's rise is. A worn board leaks errors hour
/// after hour; a burst (a benign episode, one bad job) fills a few buckets, however many
/// errors it throws.
fn persistence(incs: &mut [f64], complete: usize) -> (f64, f64) {
    let active = incs.iter().filter(|v| **v > 0.0).count() as f64;
    let done = &mut incs[..complete];
    let median = if done.is_empty() {
        f64::NAN
    } else {
        done.sort_by(f64::total_cmp);
        done[done.len() / 2]
    };
    (active, median)
}

/// The incremental state of one GPU.
#[derive(Debug, Clone)]
pub struct GpuFeatureState {
    first_seen_ms: TimestampMs,
    last_ts_ms: Option<TimestampMs>,
    cum: [f64; NC],
    /// Last raw value of each counter field, for increases.
    last_counter: [f64; COUNTERS.len()],
    fine: Ring,
    hourly: Ring,
    coarse: Ring,
    // Latest gauges.
    temp_margin: f64,
    remap_pending: f64,
    remap_failure: f64,
    rows_corr_total: f64,
    rows_uncorr_total: f64,
    retired_total: f64,
    sbe_total: f64,
    max_clock: f64,
}

/// Counter fields and the cumulative slot each increase goes to (several fields may
/// feed one slot). Aggregate ECC counters first: they survive reboots.
const COUNTERS: &[(DcgmField, usize)] = &[
    (DcgmField::EccSbeAggTotal, C_SBE),
    (DcgmField::EccDbeAggTotal, C_DBE),
    (DcgmField::RetiredSbe, C_RETIRED),
    (DcgmField::RetiredDbe, C_RETIRED),
    (DcgmField::RetiredPending, C_RETIRED),
    (DcgmField::CorrectableRemappedRows, C_ROWS_CORR),
    (DcgmField::UncorrectableRemappedRows, C_ROWS_UNCORR),
    (DcgmField::PcieReplayCounter, C_PCIE),
    (DcgmField::NvlinkCrcFlitErrorCountTotal, C_NVL_CRC),
    (DcgmField::NvlinkCrcDataErrorCountTotal, C_NVL_CRC),
    (DcgmField::NvlinkReplayErrorCountTotal, C_NVL_REPLAY),
    (DcgmField::NvlinkRecoveryErrorCountTotal, C_NVL_REPLAY),
];

/// Clock-event reason bits: thermal (SW thermal 0x20, HW thermal 0x40, HW slowdown 0x8)
/// and power (SW power cap 0x4, HW power brake 0x80).
const THERMAL_BITS: u64 = 0x20 | 0x40 | 0x8;
const POWER_BITS: u64 = 0x4 | 0x80;

fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite())
}

fn get(row: &GpuSamples, f: DcgmField) -> Option<f64> {
    finite(
        row.values
            .iter()
            .find(|(n, _)| *n == FieldName::Dcgm(f))
            .map(|(_, v)| *v),
    )
}

impl GpuFeatureState {
    fn new(first_seen_ms: TimestampMs) -> Self {
        GpuFeatureState {
            first_seen_ms,
            last_ts_ms: None,
            cum: [0.0; NC],
            last_counter: [f64::NAN; COUNTERS.len()],
            fine: Ring::new(5 * MIN_MS, 12),
            hourly: Ring::new(HOUR_MS, 24),
            coarse: Ring::new(6 * HOUR_MS, 28),
            temp_margin: f64::NAN,
            remap_pending: 0.0,
            remap_failure: 0.0,
            rows_corr_total: 0.0,
            rows_uncorr_total: 0.0,
            retired_total: 0.0,
            sbe_total: 0.0,
            max_clock: f64::NAN,
        }
    }

    fn note_buckets(&mut self, ts: TimestampMs) {
        self.fine.note(ts, &self.cum);
        self.hourly.note(ts, &self.cum);
        self.coarse.note(ts, &self.cum);
    }

    fn observe_row(&mut self, row: &GpuSamples) {
        let ts = row.ts_ms;
        if self.last_ts_ms.is_some_and(|l| ts <= l) {
            return; // out of order or duplicate: counted once, in order
        }
        self.note_buckets(ts);
        // Seconds since the previous sample that count as observed.
        let dt_s = self
            .last_ts_ms
            .map_or(0.0, |l| ((ts - l).min(MAX_GAP_MS)) as f64 / 1000.0);
        self.last_ts_ms = Some(ts);

        let mut retired = 0.0;
        let mut any_retired = false;
        for (i, (field, slot)) in COUNTERS.iter().enumerate() {
            let Some(v) = get(row, *field) else { continue };
            let prev = self.last_counter[i];
            if prev.is_finite() {
                // A counter that slides back a little is a glitch, not a restart: it
                // adds nothing (a restart from zero adds what was counted since).
                let inc = gpuwarden_detect::window::reset_aware_delta(prev, v);
                self.cum[*slot] += inc;
            }
            self.last_counter[i] = v;
            if *slot == C_RETIRED {
                retired += v;
                any_retired = true;
            }
        }
        if any_retired {
            self.retired_total = retired;
        }
        if let Some(v) = get(row, DcgmField::EccSbeAggTotal).or_else(|| get(row, DcgmField::EccSbeVolTotal)) {
            self.sbe_total = v;
        }
        if let Some(v) = get(row, DcgmField::CorrectableRemappedRows) {
            self.rows_corr_total = v;
        }
        if let Some(v) = get(row, DcgmField::UncorrectableRemappedRows) {
            self.rows_uncorr_total = v;
        }
        if let Some(v) = get(row, DcgmField::RowRemapFailure) {
            self.remap_failure = v;
        }
        if let Some(v) = get(row, DcgmField::RowRemapPending) {
            self.remap_pending = v;
        }
        if self.remap_pending > 0.0 {
            self.cum[C_PENDING_S] += dt_s;
        }
        let slowdown = get(row, DcgmField::SlowdownTemp);
        if let (Some(t), Some(s)) = (get(row, DcgmField::GpuTemp), slowdown) {
            self.temp_margin = s - t;
        }
        self.cum[C_OBSERVED_S] += dt_s;
        if self.temp_margin.is_finite() {
            self.cum[C_MARGIN_S] += self.temp_margin * dt_s;
        }
        let reasons = get(row, DcgmField::ClockEventReasons).or_else(|| get(row, DcgmField::ClockThrottleReasons));
        if let Some(r) = reasons.filter(|r| *r >= 0.0) {
            let bits = r as u64;
            if bits & THERMAL_BITS != 0 {
                self.cum[C_THROTTLE_THERMAL_S] += dt_s;
            }
            if bits & POWER_BITS != 0 {
                self.cum[C_THROTTLE_POWER_S] += dt_s;
            }
        }
        if let (Some(p), Some(l)) = (get(row, DcgmField::PowerUsage), get(row, DcgmField::PowerMgmtLimit)) {
            if l > 0.0 && p > l {
                self.cum[C_POWER_EXCURSION_S] += dt_s;
            }
        }
        // Clock while busy, relative to the highest clock this GPU has shown (or its
        // advertised maximum): a GPU that cannot reach its clocks under load is ailing.
        if let Some(mx) = get(row, DcgmField::MaxSmClock) {
            self.max_clock = mx;
        }
        if let Some(c) = get(row, DcgmField::SmClock) {
            // NaN max (never reported) or a clock above it: the clock is the best bound.
            if self.max_clock.is_nan() || self.max_clock < c {
                self.max_clock = c;
            }
            let busy = get(row, DcgmField::GpuUtil).is_some_and(|u| u >= 50.0);
            if busy && self.max_clock > 0.0 {
                self.cum[C_CLOCK_BUSY_S] += c / self.max_clock * dt_s;
                self.cum[C_BUSY_S] += dt_s;
            }
        }
    }

    fn observe_xid(&mut self, ts: TimestampMs, class: XidClass) {
        self.note_buckets(ts.max(self.last_ts_ms.unwrap_or(ts)));
        let slot = match class {
            XidClass::Hard => C_XID_HARD,
            XidClass::Hardware => C_XID_HW,
            XidClass::Application => C_XID_APP,
            XidClass::Other => C_XID_OTHER,
        };
        self.cum[slot] += 1.0;
    }

    /// Increase of slot `i` over the window `w_ms` ending at `now`.
    fn window(&self, now: TimestampMs, i: usize, w_ms: i64) -> f64 {
        let ring = if w_ms <= HOUR_MS {
            &self.fine
        } else if w_ms <= 24 * HOUR_MS {
            &self.hourly
        } else {
            &self.coarse
        };
        let n = (w_ms / ring.period_ms).max(1);
        ring.start_of(now, n).map_or(0.0, |s| (self.cum[i] - s[i]).max(0.0))
    }

    /// The feature vector at `now`, with `peer_clock` the median busy clock ratio of the
    /// GPU's peers (NaN when unknown).
    fn vector(&self, now: TimestampMs, peer_clock: f64, out: &mut Vec<f64>) {
        out.clear();
        for (slot, _) in WINDOWED {
            for (_, w) in WINDOWS {
                out.push(self.window(now, *slot, *w));
            }
        }
        let sbe_1h = self.window(now, C_SBE, HOUR_MS);
        let sbe_24h = self.window(now, C_SBE, 24 * HOUR_MS);
        let sbe_7d = self.window(now, C_SBE, 168 * HOUR_MS);
        // Trends as ratios of hourly rates, damped by +1 so that 0 → 1 is not infinite.
        out.push((sbe_1h + 1.0) / (sbe_24h / 24.0 + 1.0));
        out.push((sbe_24h / 24.0 + 1.0) / (sbe_7d / 168.0 + 1.0));
        let pcie_1h = self.window(now, C_PCIE, HOUR_MS);
        let pcie_6h = self.window(now, C_PCIE, 6 * HOUR_MS);
        out.push(pcie_1h - pcie_6h / 6.0);
        let crc_1h = self.window(now, C_NVL_CRC, HOUR_MS);
        let crc_24h = self.window(now, C_NVL_CRC, 24 * HOUR_MS);
        out.push((crc_1h + 1.0) / (crc_24h / 24.0 + 1.0));
        let app_6h = self.window(now, C_XID_APP, 6 * HOUR_MS);
        let app_7d = self.window(now, C_XID_APP, 168 * HOUR_MS);
        out.push((app_6h / 6.0 + 0.01) / (app_7d / 168.0 + 0.01));
        out.push(self.remap_pending);
        out.push(self.window(now, C_PENDING_S, 24 * HOUR_MS) / 3600.0);
        out.push(self.remap_failure);
        out.push(self.rows_corr_total);
        out.push(self.rows_uncorr_total);
        out.push(self.retired_total);
        out.push(self.sbe_total);
        out.push(self.temp_margin);
        let obs = self.window(now, C_OBSERVED_S, 24 * HOUR_MS);
        let share = |slot| {
            if obs > 0.0 {
                self.window(now, slot, 24 * HOUR_MS) / obs
            } else {
                f64::NAN
            }
        };
        out.push(share(C_MARGIN_S));
        out.push(share(C_THROTTLE_THERMAL_S));
        out.push(share(C_THROTTLE_POWER_S));
        out.push(share(C_POWER_EXCURSION_S));
        let busy = self.window(now, C_BUSY_S, 24 * HOUR_MS);
        let clock = if busy > 0.0 {
            self.window(now, C_CLOCK_BUSY_S, 24 * HOUR_MS) / busy
        } else {
            f64::NAN
        };
        out.push(clock);
        // NaN when either is unknown: the model handles it.
        out.push(clock - peer_clock);
        // Capped at a week: beyond that, age says more about when the history started
        // than about the GPU, and a time-split model would extrapolate on it.
        out.push(((now - self.first_seen_ms).max(0) as f64 / HOUR_MS as f64).min(168.0));
        let mut incs = Vec::with_capacity(32);
        let mut hourly = [0.0; 2];
        let mut blocks = [(0.0, 0.0); 2];
        for (k, slot) in [C_SBE, C_PCIE].into_iter().enumerate() {
            let complete = self.hourly.bucket_increases(now, 24, &self.cum, slot, &mut incs);
            hourly[k] = persistence(&mut incs, complete).0;
            let complete = self.coarse.bucket_increases(now, 28, &self.cum, slot, &mut incs);
            blocks[k] = persistence(&mut incs, complete);
        }
        out.push(hourly[0]);
        out.push(hourly[1]);
        out.push(blocks[0].0);
        out.push(blocks[1].0);
        out.push(blocks[0].1);
        out.push(blocks[1].1);
        debug_assert_eq!(out.len(), feature_count());
    }

    fn busy_clock_24h(&self, now: TimestampMs) -> f64 {
        let busy = self.window(now, C_BUSY_S, 24 * HOUR_MS);
        if busy > 0.0 {
            self.window(now, C_CLOCK_BUSY_S, 24 * HOUR_MS) / busy
        } else {
            f64::NAN
        }
    }
}

/// Feature vectors of many GPUs at one time, row-major.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub ts_ms: TimestampMs,
    pub gpus: Vec<GpuUuid>,
    /// `gpus.len() × feature_count()` values, GPU after GPU.
    pub values: Vec<f64>,
}

impl Snapshot {
    /// The features of the `i`th GPU.
    pub fn row(&self, i: usize) -> &[f64] {
        let n = feature_count();
        &self.values[i * n..(i + 1) * n]
    }
}

/// The features of a fleet: one [`GpuFeatureState`] per GPU, plus the node each GPU is
/// on (its peer group for "clocks vs peers").
#[derive(Debug, Clone)]
pub struct FeatureBank {
    xid_class: HashMap<u32, XidClass>,
    gpus: HashMap<GpuUuid, GpuFeatureState>,
    node: HashMap<GpuUuid, String>,
}

impl FeatureBank {
    pub fn new(catalog: &XidCatalog) -> Self {
        let hard = HardFailureCodes::new(catalog);
        let mut xid_class = HashMap::new();
        for e in catalog.entries() {
            let class = if hard.is_hard(e.code) {
                XidClass::Hard
            } else {
                match e.cause {
                    Cause::Hardware => XidClass::Hardware,
                    Cause::Application => XidClass::Application,
                    Cause::Driver | Cause::Unknown => XidClass::Other,
                }
            };
            xid_class.insert(e.code, class);
        }
        for c in hard.codes() {
            xid_class.insert(*c, XidClass::Hard);
        }
        FeatureBank {
            xid_class,
            gpus: HashMap::new(),
            node: HashMap::new(),
        }
    }

    pub fn observe_identity(&mut self, id: &GpuIdentity) {
        if self.node.get(&id.uuid) != Some(&id.node) {
            self.node.insert(id.uuid.clone(), id.node.clone());
        }
    }

    pub fn observe_row(&mut self, row: &GpuSamples) {
        self.gpus
            .entry(row.gpu.clone())
            .or_insert_with(|| GpuFeatureState::new(row.ts_ms))
            .observe_row(row);
    }

    pub fn observe_event(&mut self, event: &Event) {
        if let EventKind::Xid { code, .. } = &event.kind {
            let class = self.xid_class.get(code).copied().unwrap_or(XidClass::Other);
            self.gpus
                .entry(event.gpu.clone())
                .or_insert_with(|| GpuFeatureState::new(event.ts_ms))
                .observe_xid(event.ts_ms, class);
        }
    }

    /// Forgets a GPU (removed from the inventory).
    pub fn forget(&mut self, gpu: &GpuUuid) {
        self.gpus.remove(gpu);
        self.node.remove(gpu);
    }

    pub fn len(&self) -> usize {
        self.gpus.len()
    }

    pub fn is_empty(&self) -> bool {
        self.gpus.is_empty()
    }

    /// Time of the GPU's latest row, if any.
    pub fn last_seen(&self, gpu: &GpuUuid) -> Option<TimestampMs> {
        self.gpus.get(gpu).and_then(|s| s.last_ts_ms)
    }

    /// Feature vectors at `now` of the GPUs `filter` accepts (all with `None`), sorted by
    /// UUID so that the output does not depend on hash order.
    pub fn snapshot(&self, now: TimestampMs, filter: Option<&dyn Fn(&GpuUuid) -> bool>) -> Snapshot {
        // Peer clock: median of the busy clock ratios of the GPUs on the same node.
        let mut per_node: HashMap<&str, Vec<f64>> = HashMap::new();
        let mut own: HashMap<&GpuUuid, f64> = HashMap::with_capacity(self.gpus.len());
        for (uuid, st) in &self.gpus {
            let c = st.busy_clock_24h(now);
            own.insert(uuid, c);
            if c.is_finite() {
                let node = self.node.get(uuid).map_or("", String::as_str);
                per_node.entry(node).or_default().push(c);
            }
        }
        let medians: HashMap<&str, f64> = per_node
            .into_iter()
            .map(|(n, mut v)| {
                v.sort_by(f64::total_cmp);
                (n, v[v.len() / 2])
            })
            .collect();
        let mut uuids: Vec<&GpuUuid> = self.gpus.keys().filter(|u| filter.is_none_or(|f| f(u))).collect();
        uuids.sort();
        let mut snap = Snapshot {
            ts_ms: now,
            gpus: Vec::with_capacity(uuids.len()),
            values: Vec::with_capacity(uuids.len() * feature_count()),
        };
        let mut buf = Vec::with_capacity(feature_count());
        for uuid in uuids {
            let node = self.node.get(uuid).map_or("", String::as_str);
            let peer = medians.get(node).copied().unwrap_or(f64::NAN);
            self.gpus[uuid].vector(now, peer, &mut buf);
            snap.gpus.push(uuid.clone());
            snap.values.extend_from_slice(&buf);
        }
        snap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ts: i64, sbe: f64) -> GpuSamples {
        GpuSamples {
            gpu: GpuUuid::new("GPU-1"),
            ts_ms: ts,
            values: vec![
                (FieldName::Dcgm(DcgmField::EccSbeAggTotal), sbe),
                (FieldName::Dcgm(DcgmField::GpuTemp), f64::NAN),
            ],
        }
    }

    #[test]
    fn windows_count_increases_and_ignore_nan() {
        let mut bank = FeatureBank::new(&XidCatalog::builtin());
        let t0 = 1_735_689_600_000;
        for i in 0..=(48 * 12) {
            // +1 SBE every 5 min for the last 2 h only; NaN in between is skipped.
            let sbe = (i - (46 * 12)).max(0) as f64;
            bank.observe_row(&row(t0 + i * 5 * MIN_MS, sbe));
            bank.observe_row(&row(t0 + i * 5 * MIN_MS + 1, f64::NAN));
        }
        let now = t0 + 48 * HOUR_MS;
        let s = bank.snapshot(now, None);
        let names = feature_names();
        let v = |n: &str| s.row(0)[names.iter().position(|x| x == n).unwrap()];
        assert_eq!(v("ecc_sbe_24h"), 24.0);
        assert!((11.0..=12.0).contains(&v("ecc_sbe_1h")), "{}", v("ecc_sbe_1h"));
        assert_eq!(v("ecc_sbe_total"), 24.0);
        assert!(v("ecc_sbe_trend_1h_vs_24h") > 5.0);
        assert_eq!(names.len(), feature_count());
    }

    #[test]
    fn persistence_tells_a_steady_leak_from_a_burst() {
        let t0 = 1_735_689_600_000;
        let names = feature_names();
        let at = |n: &str| names.iter().position(|x| x == n).unwrap();
        // Two boards over 48 h: one SBE an hour, and 200 SBEs within one hour.
        let mut bank = FeatureBank::new(&XidCatalog::builtin());
        for i in 0..=(48 * 12) {
            let ts = t0 + i * 5 * MIN_MS;
            let mut steady = row(ts, (i / 12) as f64);
            steady.gpu = GpuUuid::new("GPU-steady");
            bank.observe_row(&steady);
            let burst = if i >= 40 * 12 + 6 { 200.0 } else { 0.0 };
            let mut b = row(ts, burst);
            b.gpu = GpuUuid::new("GPU-burst");
            bank.observe_row(&b);
        }
        let s = bank.snapshot(t0 + 48 * HOUR_MS, None);
        let (burst, steady) = (s.row(0), s.row(1));
        assert_eq!(s.gpus[1].as_str(), "GPU-steady");
        assert!(steady[at("ecc_sbe_active_hours_24h")] >= 23.0);
        assert_eq!(burst[at("ecc_sbe_active_hours_24h")], 1.0);
        assert_eq!(burst[at("ecc_sbe_active_blocks_7d")], 1.0);
        assert!(steady[at("ecc_sbe_active_blocks_7d")] >= 8.0);
        assert_eq!(burst[at("ecc_sbe_median_block_7d")], 0.0);
        assert_eq!(steady[at("ecc_sbe_median_block_7d")], 6.0);
        assert!(burst[at("ecc_sbe_24h")] > steady[at("ecc_sbe_24h")]);
    }
}
