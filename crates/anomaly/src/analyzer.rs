//! `AnomalyAnalyzer`: the per-series and cohort detectors run on GPU telemetry, turned
//! into grouped findings (`anomaly.series.<field>`, `anomaly.cohort.<field>`).
//!
//! # What it watches, and why this way
//!
//! * **Per series** ([`SeriesDetector`], the NAB-scored detector with its product
//!   defaults) on temperatures, power, clocks, utilizations, framebuffer use, PCIe/NVLink
//!   throughput, and the *rates* of the error counters (PCIe replays, ECC, NVLink CRC /
//!   replay / recovery). Counters are turned into per-second rates first: a monotone
//!   counter is a trend, its rate is the signal.
//! * **Per cohort** ([`CohortDetector`]): GPUs of the same model on the same node running
//!   the same workload (job / pod labels; unlabelled GPUs form their own group) are
//!   compared at every evaluation on SM clock, temperatures, power and utilization.
//!   Temperatures are compared on what their peers and their power do not explain: a
//!   GPU's difference from the peers' median, less the model's °C-per-W times its
//!   (thermally smoothed) power difference, less its own slowly learned offset. A GPU at
//!   the back of the chassis that always runs 4 °C warmer is how it is built in; one whose
//!   die climbs 5 °C past that in a minute at the same power has a cooling fault. A
//!   temperature streak may only start after five minutes of steady load (dies and HBM
//!   take minutes to reach a new level, and a GPU just back from a hot job is warmer than
//!   the idle peers it joins), but once started it is followed through the throttling it
//!   causes.
//! * **Die heating at no rise in power**: a GPU whose die temperature keeps climbing
//!   (no reading lower than the last) while its smoothed power does not rise, by 8 °C
//!   in all, has lost cooling. It needs neither peers (a GPU alone in its job has
//!   none) nor settled load (throttling, which the heat itself causes, moves power),
//!   and it is seen within about three intervals of a cooling failure. It counts once the
//!   die is within 20 °C of slowdown, or earlier when the first readings of the climb
//!   project (first-order lag: each climb a fixed fraction of the one before) an end
//!   past slowdown: a healthy die settling after a load change heads for a level its
//!   power explains. The claim "power did not rise" needs power to judge by: a rise of
//!   the one-minute smoothed draw or of its 5-minute average (the heat input under an
//!   on/off load such as a throttled miner at 95 ↔ 616 W: the one-minute value at a peak
//!   says nothing) restarts the climb; without power readings, or in the first ten
//!   minutes of a GPU's power history, nothing is concluded. The finding names the
//!   average, the range of the readings and the time the climb took.
//!
//! GPU telemetry is dominated by load changes: a job starting moves power, clocks,
//! temperature and utilization by tens of percent in one scrape. A per-series detector
//! sees that as a surprise, and would raise an incident on every job boundary. So series
//! findings on *load-following* fields are only raised while the GPU's load is steady
//! (utilization and workload labels unchanged for `settle_samples`): "the temperature
//! climbs while the work did not change" is an anomaly, "the temperature climbs because a
//! job started" is not. Error-counter rates do not follow load and are never gated.
//! The cohort detector needs no such gate: a load change hits the whole cohort.
//!
//! Findings are conditions, not samples: a condition must persist (`series_persistence`
//! samples, or the cohort detector's persistence in evaluations) before it is reported,
//! and is held `hold_evaluations` evaluations after it clears so one excursion that
//! flickers around the threshold stays one incident. Severity is `warning`; `critical`
//! only when the deviation is strong (calibrated score ≥ 0.99 or cohort |z| ≥ 2× the
//! threshold) *and* has lasted `critical_after_evaluations`.
//! The series checks read the detector's `calibrated` score, not its `score`: `score` is
//! held at 0 for a while after an alarm (one alarm per excursion, which is what NAB
//! scores), while here the grouping is done by the conditions and the incident engine,
//! and a real fault right after a harmless spike must not be hidden by that hold. A
//! series condition also needs the value outside the detector's expected range (what its
//! summary says): a sample can be surprising by its jump or its shape while inside the
//! range, and on fault-free simulated fleets those were all false incidents (clocks
//! during job phases).
//!
//! Memory: one [`SeriesDetector`] per (GPU, watched field) that the GPU reports, plus a
//! few dozen bytes of state per GPU; GPUs not seen for `forget_after_ms` are dropped, so
//! memory is bounded by the live fleet. Work per row is O(watched fields).

use crate::cohort::{median_mad, CohortConfig, CohortDetector, CohortVerdict};
use crate::series::{SeriesConfig, SeriesDetector};
use gpuwarden_model::{
    Action, Analyzer, DcgmField, Dimension, Event, EventKind, Evidence, FieldName, Finding, FindingKind, Freshness,
    GpuIdentity, GpuSamples, GpuUuid, Severity, TimestampMs,
};
use std::collections::{BTreeMap, HashMap};

/// How a watched field is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A gauge that follows load (series findings only while load is steady).
    Load,
    /// A counter of errors: its per-second rate is scored, never gated.
    ErrorRate,
}

/// One watched field.
#[derive(Debug, Clone, Copy)]
struct Watched {
    field: DcgmField,
    short: &'static str,
    kind: Kind,
    dimension: Dimension,
    /// Cohort scale floors (absolute in the field's unit, relative to the median), or
    /// `None` when peers are not expected to agree on it (bursty traffic, footprints).
    cohort: Option<(f64, f64)>,
    action: Action,
}

const fn w(
    field: DcgmField,
    short: &'static str,
    kind: Kind,
    dimension: Dimension,
    cohort: Option<(f64, f64)>,
    action: Action,
) -> Watched {
    Watched {
        field,
        short,
        kind,
        dimension,
        cohort,
        action,
    }
}

/// Fields whose level the workload chooses: how busy the GPU is, how much memory the
/// application holds, how much it moves over PCIe and NVLink. A change in them is a change
/// of work (a model swapped, traffic shifting, a job's phase), not of the GPU's health;
/// on real serving traffic (GenTD26) a memory-use series flagged a pod that unloaded a
/// model "while the load was steady". They are tracked (their steadiness is part of
/// "steady load") but never a finding on their own; what physics ties to the load —
/// temperatures, power, clocks — and error rates are.
const WORKLOAD_SET: &[DcgmField] = &[
    DcgmField::GpuUtil,
    DcgmField::MemCopyUtil,
    DcgmField::FbUsed,
    DcgmField::ProfPcieTxBytes,
    DcgmField::ProfPcieRxBytes,
    DcgmField::ProfNvlinkTxBytes,
    DcgmField::ProfNvlinkRxBytes,
];

/// The fields that matter. Cohort floors are what identical boards under identical load
/// legitimately differ by (power by a few percent, clocks by a boost bin); the threshold
/// multiplies them. Temperatures are judged on their residual after power and the GPU's
/// own learned offset (see `thermal_cohort_step`): the sensors read whole degrees, and
/// both the GPU and its peers' common level are rounded, so a die needs 0.75 °C × z 6 =
/// 4.5 °C of unexplained heat (HBM, which lags power by minutes more: 6 °C).
const WATCHED: &[Watched] = &[
    w(
        DcgmField::GpuTemp,
        "gpu_temp",
        Kind::Load,
        Dimension::Thermal,
        Some((0.75, 0.0)),
        Action::None,
    ),
    w(
        DcgmField::MemoryTemp,
        "memory_temp",
        Kind::Load,
        Dimension::Thermal,
        Some((1.0, 0.0)),
        Action::None,
    ),
    w(
        DcgmField::PowerUsage,
        "power_usage",
        Kind::Load,
        Dimension::Power,
        Some((15.0, 0.06)),
        Action::None,
    ),
    w(
        DcgmField::SmClock,
        "sm_clock",
        Kind::Load,
        Dimension::Compute,
        Some((30.0, 0.03)),
        Action::ResetGpu,
    ),
    w(
        DcgmField::MemClock,
        "mem_clock",
        Kind::Load,
        Dimension::Compute,
        Some((30.0, 0.03)),
        Action::None,
    ),
    // No cohort on utilisation: being busier (or idler) than your peers is not a fault.
    // Pods beside each other serve different traffic, and even in one synchronous job
    // the slow GPU is the *busy* one while its peers wait. On real production traffic
    // (Alibaba GenTD26, one pod per GPU) a utilisation cohort flagged 23% of GPUs;
    // stragglers show where physics says they must: clocks under the same load, and heat
    // for the power drawn.
    w(
        DcgmField::GpuUtil,
        "gpu_util",
        Kind::Load,
        Dimension::Compute,
        None,
        Action::None,
    ),
    w(
        DcgmField::MemCopyUtil,
        "mem_copy_util",
        Kind::Load,
        Dimension::Memory,
        None,
        Action::None,
    ),
    w(
        DcgmField::FbUsed,
        "fb_used",
        Kind::Load,
        Dimension::Memory,
        None,
        Action::None,
    ),
    w(
        DcgmField::ProfPcieTxBytes,
        "pcie_tx",
        Kind::Load,
        Dimension::Interconnect,
        None,
        Action::None,
    ),
    w(
        DcgmField::ProfPcieRxBytes,
        "pcie_rx",
        Kind::Load,
        Dimension::Interconnect,
        None,
        Action::None,
    ),
    w(
        DcgmField::ProfNvlinkTxBytes,
        "nvlink_tx",
        Kind::Load,
        Dimension::Interconnect,
        None,
        Action::None,
    ),
    w(
        DcgmField::ProfNvlinkRxBytes,
        "nvlink_rx",
        Kind::Load,
        Dimension::Interconnect,
        None,
        Action::None,
    ),
    w(
        DcgmField::PcieReplayCounter,
        "pcie_replay_rate",
        Kind::ErrorRate,
        Dimension::Interconnect,
        None,
        Action::ResetGpu,
    ),
    w(
        DcgmField::EccSbeVolTotal,
        "ecc_sbe_rate",
        Kind::ErrorRate,
        Dimension::Memory,
        None,
        Action::ResetGpu,
    ),
    w(
        DcgmField::EccDbeVolTotal,
        "ecc_dbe_rate",
        Kind::ErrorRate,
        Dimension::Memory,
        None,
        Action::ResetGpu,
    ),
    w(
        DcgmField::NvlinkCrcFlitErrorCountTotal,
        "nvlink_crc_flit_rate",
        Kind::ErrorRate,
        Dimension::Interconnect,
        None,
        Action::ResetGpu,
    ),
    w(
        DcgmField::NvlinkCrcDataErrorCountTotal,
        "nvlink_crc_data_rate",
        Kind::ErrorRate,
        Dimension::Interconnect,
        None,
        Action::ResetGpu,
    ),
    w(
        DcgmField::NvlinkReplayErrorCountTotal,
        "nvlink_replay_rate",
        Kind::ErrorRate,
        Dimension::Interconnect,
        None,
        Action::ResetGpu,
    ),
    w(
        DcgmField::NvlinkRecoveryErrorCountTotal,
        "nvlink_recovery_rate",
        Kind::ErrorRate,
        Dimension::Interconnect,
        None,
        Action::ResetGpu,
    ),
];

/// Smallest deviation from the expected value, in the field's unit, that a series finding
/// on a load-following field needs. Temperatures and clocks are integers in steps that
/// the normal thermal and boost dynamics cross all the time: a spread learned on a quiet
/// stretch makes 2 °C look like six spreads, which no operator would call an anomaly.
fn min_deviation(field: DcgmField) -> f64 {
    match field {
        DcgmField::GpuTemp | DcgmField::MemoryTemp => 6.0,
        DcgmField::PowerUsage => 60.0,
        DcgmField::SmClock | DcgmField::MemClock => 150.0,
        DcgmField::GpuUtil | DcgmField::MemCopyUtil => 30.0,
        DcgmField::FbUsed => 4096.0,
        _ => 0.0,
    }
}

/// Settings of the [`AnomalyAnalyzer`].
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyConfig {
    /// The per-series detector (the NAB-scored defaults).
    pub series: SeriesConfig,
    /// Robust z (the detector's raw surprise) a sample must exceed to count toward a
    /// series condition.
    pub series_min_surprise: f64,
    /// Calibrated score the condition must reach at least once (it is "unusual for this
    /// series", not only far from the level).
    pub series_min_score: f64,
    /// Consecutive samples a series condition needs before it is a finding.
    pub series_persistence: u32,
    /// Samples of unchanged load (utilization within `load_change_util` points, same
    /// workload labels) before load-following fields may raise series findings.
    pub settle_samples: u32,
    /// Utilization change (percentage points, sample to sample) that counts as a load change.
    pub load_change_util: f64,
    /// Relative power change (sample to sample) that counts as a load change.
    pub load_change_power: f64,
    /// Cohort |z| threshold, persistence (evaluations) and smallest judged cohort.
    pub cohort_z: f64,
    pub cohort_persistence: u32,
    pub cohort_min_members: usize,
    /// Evaluations a finding is held after its condition cleared.
    pub hold_evaluations: u32,
    /// Evaluations a strong condition must last before it is `critical`.
    pub critical_after_evaluations: u32,
    /// GPUs without a row for this long (data time) are forgotten.
    pub forget_after_ms: i64,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        Self {
            series: SeriesConfig::default(),
            series_min_surprise: 6.0,
            series_min_score: 0.4,
            series_persistence: 3,
            settle_samples: 20,
            load_change_util: 15.0,
            load_change_power: 0.1,
            cohort_z: 6.0,
            cohort_persistence: 2,
            cohort_min_members: 4,
            hold_evaluations: 3,
            critical_after_evaluations: 10,
            forget_after_ms: 3_600_000,
        }
    }
}

/// Per (GPU, field) series state.
#[derive(Debug, Clone)]
struct FieldState {
    det: SeriesDetector,
    /// Counter fields: previous raw value and time.
    prev: Option<(TimestampMs, f64)>,
    streak: u32,
    streak_peak_score: f64,
    /// The latest sample's evidence while the streak lasts.
    last: Option<(f64, f64, f64, TimestampMs)>, // observed, expected low, expected high, ts
    active_since: Option<TimestampMs>,
}

/// A GPU's own learned standing in its cohort on one temperature field: how far it runs
/// from its peers' median once their power difference is accounted for (its air-path
/// position, its thermal paste, its fan). A persistent offset is how the GPU is built
/// into its chassis, not an anomaly; a *change* in it is.
#[derive(Debug, Clone, Copy)]
struct ThermalOffset {
    offset: f64,
    /// Evaluations learned from (fast running mean while few).
    n: u32,
    last_ms: TimestampMs,
    /// Temperature and smoothed power at the previous evaluation (NaN: none).
    prev_temp: f64,
    prev_power: f64,
}

impl Default for ThermalOffset {
    fn default() -> Self {
        Self {
            offset: 0.0,
            n: 0,
            last_ms: 0,
            prev_temp: f64::NAN,
            prev_power: f64::NAN,
        }
    }
}

/// A model's temperature-per-watt slope on one temperature field, pooled over every
/// cohort of that model: exponentially weighted sums of (power difference)² and
/// (power difference × temperature difference from the peers).
#[derive(Debug, Clone, Copy, Default)]
struct Slope {
    sqq: f64,
    sqd: f64,
}

impl Slope {
    /// °C per W, clamped to what cooled silicon can plausibly do; 0 until power has
    /// differed enough between peers to say anything.
    fn value(&self) -> f64 {
        if self.sqq > 1e3 && self.sqd.is_finite() {
            (self.sqd / self.sqq).clamp(0.0, 0.5)
        } else {
            0.0
        }
    }
}

fn is_temperature(f: DcgmField) -> bool {
    matches!(f, DcgmField::GpuTemp | DcgmField::MemoryTemp)
}

/// Per-GPU state.
#[derive(Debug, Clone)]
struct GpuState {
    node: String,
    cohort_key: Option<String>,
    last_row_ms: TimestampMs,
    latest: Vec<Option<f64>>, // by WATCHED index, latest gauge values
    fields: Vec<Option<Box<FieldState>>>,
    steady_samples: u32,
    last_util: Option<f64>,
    last_power: Option<f64>,
    workload_changed: bool,
    /// Power smoothed over the die's thermal time constant (temperature follows this,
    /// not the instantaneous draw): (time, watts).
    thermal_power: Option<(TimestampMs, f64)>,
    /// Data time of the first power reading: until `DIE_POWER_HISTORY_MS` of power
    /// history the averages start from the first
    /// reading, and a die still heating from a load that began just before it cannot be
    /// told from one losing cooling.
    power_since_ms: Option<TimestampMs>,
    /// Power averaged over `DIE_POWER_TAU_MS` (the heat input a die climb is judged
    /// against): (time, watts).
    heat_power: Option<(TimestampMs, f64)>,
    /// By WATCHED index; only temperature fields use theirs.
    thermal: Vec<ThermalOffset>,
    /// Data time since which the GPU's load has been steady (see `steady_samples`).
    steady_since_ms: TimestampMs,
    /// Die temperature climb since it last fell or power last rose. Needs no peers and
    /// no settled load.
    die_rise: DieRise,
    /// The board's slowdown temperature when the exporter says it (°C).
    slowdown_c: Option<f64>,
}

/// A reported (or about to be) condition.
#[derive(Debug, Clone)]
struct Condition {
    gpu: GpuUuid,
    node: String,
    rule: String,
    watched: usize,
    cohort: bool,
    first_ms: TimestampMs,
    hits: u32,
    misses: u32,
    strong: bool,
    summary: String,
    evidence: Vec<Evidence>,
    seen_this_round: bool,
}

/// The anomaly analyzer. See the module docs.
pub struct AnomalyAnalyzer {
    cfg: AnomalyConfig,
    slot: Vec<Option<usize>>, // DcgmField index → WATCHED index
    gpus: HashMap<GpuUuid, GpuState>,
    identities: HashMap<GpuUuid, GpuIdentity>,
    cohorts: Vec<CohortDetector<GpuUuid>>, // by WATCHED index (unused where no cohort)
    conditions: BTreeMap<(GpuUuid, usize, bool), Condition>,
    verdicts: Vec<CohortVerdict>,
    /// (GPU model, WATCHED index) → temperature-per-watt slope (bounded by the models).
    slopes: HashMap<(String, usize), Slope>,
    residuals: Vec<(GpuUuid, f64)>,
}

impl Default for AnomalyAnalyzer {
    fn default() -> Self {
        Self::new(AnomalyConfig::default())
    }
}

/// Time constant of the power smoothing that temperature is regressed on (a die's
/// thermal lag is tens of seconds; its memory's, minutes).
const THERMAL_TAU_MS: f64 = 60_000.0;
/// Time constant over which a GPU's own temperature offset from its peers is learned.
const OFFSET_TAU_MS: f64 = 1_800_000.0;
/// Steady load (data time) before a GPU's temperature may *start* an out-of-line streak:
/// after a load change a die and its memory take minutes (time constants ~45 s and
/// ~120 s) to reach their new level, and a GPU that just left a hot job and joined the
/// idle GPUs is hotter than its peers for that long without anything being wrong.
const THERMAL_SETTLE_MS: i64 = 300_000;
/// The same for memory (HBM) temperature, which lags power by minutes more.
const MEMORY_SETTLE_MS: i64 = 600_000;
/// Die temperature rise (°C, one evaluation) at unchanged or falling power that makes a
/// GPU judged even while it has not settled: no load change explains a die heating up
/// on its own.
const UNEXPLAINED_RISE_C: f64 = 2.0;
/// Evaluations of a GPU's offset before its temperature is judged against its peers.
const OFFSET_WARM: u32 = 12;
/// Die temperature climb (°C) at no rise in power that is a finding on its own.
const DIE_RISE_C: f64 = 8.0;
/// Time constant of the heat input a die climb is judged against: longer than the slowest
/// thermal lag (die ~45 s, HBM and heatsink ~120 s), so that under an on/off or swinging
/// load (a throttled miner at 95 ↔ 616 W, bursty inference) "power did not rise" means
/// the average heat input did not, not that the one-minute smoothed draw happened to be
/// at a peak when the climb started.
const DIE_POWER_TAU_MS: f64 = 300_000.0;
/// Power history needed before a die climb may be blamed on cooling: two heat-input time
/// constants, so the average is no longer the first reading.
const DIE_POWER_HISTORY_MS: i64 = 600_000;
/// How far below the slowdown temperature a die heating at flat power starts to count.
const DIE_RISE_MARGIN_C: f64 = 20.0;
/// How far below slowdown the projected end of a die's climb must reach to count before
/// the die itself is within `DIE_RISE_MARGIN_C` of it.
const DIE_PROJECTION_MARGIN_C: f64 = 3.0;
/// Smallest per-reading climb (°C) whose ratio to the next one is trusted for a
/// projection: readings are whole degrees, so smaller climbs are mostly rounding (a
/// healthy die settling at a 10 s scrape climbs 2, 3, 2, 1, 2 °C).
const DIE_PROJECTION_MIN_STEP_C: f64 = 4.0;
/// Slowdown temperature assumed when the exporter does not say (the lowest of common
/// data-centre boards).
const DEFAULT_SLOWDOWN_C: f64 = 85.0;
/// Weight of the newest evaluation in a model's temperature-per-watt sums.
const SLOPE_DECAY: f64 = 1.0 / 2000.0;

/// The GPU model part of a cohort key (`model|workload`).
fn model_of(cohort_key: &str) -> String {
    cohort_key.split('|').next().unwrap_or("").to_string()
}

fn workload_key(id: &GpuIdentity) -> String {
    let w = &id.workload;
    if let Some(job) = &w.job {
        format!("job:{job}")
    } else if let Some(pod) = &w.pod {
        format!("pod:{}/{pod}", w.namespace.as_deref().unwrap_or(""))
    } else if let Some(ns) = &w.namespace {
        format!("ns:{ns}")
    } else {
        "unlabelled".into()
    }
}

impl AnomalyAnalyzer {
    pub fn new(cfg: AnomalyConfig) -> Self {
        let mut slot = vec![None; DcgmField::ALL.len()];
        for (i, wf) in WATCHED.iter().enumerate() {
            slot[wf.field.index()] = Some(i);
        }
        let cohorts = WATCHED
            .iter()
            .map(|wf| {
                let (abs_floor, rel_floor) = wf.cohort.unwrap_or((1e-9, 0.0));
                CohortDetector::new(CohortConfig {
                    min_members: cfg.cohort_min_members,
                    z_threshold: cfg.cohort_z,
                    persistence: cfg.cohort_persistence,
                    abs_floor,
                    rel_floor,
                    one_sided: is_temperature(wf.field),
                    instant_z: if is_temperature(wf.field) {
                        2.0 * cfg.cohort_z
                    } else {
                        f64::INFINITY
                    },
                })
            })
            .collect();
        Self {
            cfg,
            slot,
            gpus: HashMap::new(),
            identities: HashMap::new(),
            cohorts,
            conditions: BTreeMap::new(),
            verdicts: Vec::new(),
            slopes: HashMap::new(),
            residuals: Vec::new(),
        }
    }

    /// Series detectors currently held, and their total bytes (for the benchmarks).
    pub fn memory(&self) -> (usize, usize) {
        let mut n = 0;
        let mut bytes = 0;
        for g in self.gpus.values() {
            bytes += std::mem::size_of::<GpuState>()
                + g.latest.capacity() * std::mem::size_of::<Option<f64>>()
                + g.fields.capacity() * std::mem::size_of::<usize>();
            for f in g.fields.iter().flatten() {
                n += 1;
                bytes +=
                    std::mem::size_of::<FieldState>() + f.det.memory_bytes() - std::mem::size_of::<SeriesDetector>();
            }
        }
        (n, bytes)
    }

    fn update_series(&mut self, uuid: &GpuUuid, ts: TimestampMs, wi: usize, raw: f64) {
        let cfg = &self.cfg;
        let Some(g) = self.gpus.get_mut(uuid) else { return };
        let wf = WATCHED[wi];
        let steady = g.steady_samples >= cfg.settle_samples;
        let fs = g.fields[wi].get_or_insert_with(|| {
            Box::new(FieldState {
                det: SeriesDetector::new(cfg.series.clone()).unwrap_or_default(),
                prev: None,
                streak: 0,
                streak_peak_score: 0.0,
                last: None,
                active_since: None,
            })
        });
        let value = match wf.kind {
            Kind::Load => raw,
            Kind::ErrorRate => {
                let prev = fs.prev.replace((ts, raw));
                match prev {
                    // A counter that went down was reset (driver reload, GPU reset):
                    // no rate for this step.
                    Some((pt, pv)) if ts > pt && raw >= pv => (raw - pv) / ((ts - pt) as f64 / 1000.0),
                    _ => return,
                }
            }
        };
        if wf.kind == Kind::Load {
            g.latest[wi] = raw.is_finite().then_some(raw);
        }
        let a = fs.det.update(ts, value);
        let eligible = wf.kind == Kind::ErrorRate || steady;
        let mid = (a.expected_low + a.expected_high) / 2.0;
        let far_enough = match wf.kind {
            // Throughputs have no natural unit step: a quarter of the expected value.
            Kind::Load => match min_deviation(wf.field) {
                d if d > 0.0 => (value - mid).abs() >= d,
                _ => (value - mid).abs() >= 0.25 * mid.abs(),
            },
            Kind::ErrorRate => true,
        };
        // The finding says "outside its usual range": hold it to that. A sample can be
        // surprising by its jump from the previous one or by its shape while still inside
        // the range (a job phase after a level shift widened it), and that is no finding.
        let outside = value < a.expected_low || value > a.expected_high;
        if eligible && far_enough && outside && a.note.is_none() && a.surprise >= cfg.series_min_surprise {
            fs.streak = fs.streak.saturating_add(1);
            fs.streak_peak_score = fs.streak_peak_score.max(a.calibrated);
            fs.last = Some((value, a.expected_low, a.expected_high, ts));
            if fs.streak >= cfg.series_persistence && fs.streak_peak_score >= cfg.series_min_score {
                fs.active_since.get_or_insert(ts);
            }
        } else {
            fs.streak = 0;
            fs.streak_peak_score = 0.0;
            fs.active_since = None;
        }
    }

    fn hit(
        &mut self,
        key: (GpuUuid, usize, bool),
        now: TimestampMs,
        node: &str,
        strong: bool,
        summary: String,
        evidence: Vec<Evidence>,
    ) {
        let wf = WATCHED[key.1];
        let rule = format!("anomaly.{}.{}", if key.2 { "cohort" } else { "series" }, wf.short);
        let c = self.conditions.entry(key.clone()).or_insert_with(|| Condition {
            gpu: key.0.clone(),
            node: node.to_string(),
            rule,
            watched: key.1,
            cohort: key.2,
            first_ms: now,
            hits: 0,
            misses: 0,
            strong: false,
            summary: String::new(),
            evidence: Vec::new(),
            seen_this_round: false,
        });
        c.hits = c.hits.saturating_add(1);
        c.misses = 0;
        c.strong = strong;
        c.summary = summary;
        c.evidence = evidence;
        c.seen_this_round = true;
    }

    /// One cohort step on a temperature field. Raw temperatures of identical boards under
    /// identical load differ by several °C (inlet air, position in the air path, paste),
    /// and by R·ΔP where their power differs: judging raw values against a fixed
    /// allowance either misses a failing cooler or flags the GPU at the back of the
    /// chassis. So the cohort is read as a two-way additive model,
    ///
    /// `T[i,t] = common[t] + offset[i] + b·(P̄[i,t] − median P̄[t]) + noise`,
    ///
    /// with `P̄` the power smoothed over the thermal time constant, `b` the model's
    /// °C per W (pooled over all its cohorts) and `offset[i]` the GPU's own standing,
    /// learned slowly (30 min) and only while it is in line. `common[t]` is the median of
    /// the peers' offset-corrected temperatures, so peers joining or leaving the cohort do
    /// not move it. A member is judged on its residual, and only when it runs *hotter*
    /// than explained (a GPU cooler than its peers has no thermal problem). A persistent
    /// airflow offset is thereby learned away; a cooling failure (a die climbing several
    /// °C in a minute at the same power) stands out at once.
    fn thermal_cohort_step(
        &mut self,
        now: TimestampMs,
        model: &str,
        wi: usize,
        members: &[(GpuUuid, f64)],
        out: &mut Vec<CohortVerdict>,
    ) {
        let slope_key = (model.to_string(), wi);
        let mut slope = self.slopes.get(&slope_key).copied().unwrap_or_default();
        let b = slope.value();
        let mut scratch = Vec::with_capacity(members.len());
        let powers: Vec<f64> = members
            .iter()
            .map(|(u, _)| {
                self.gpus
                    .get(u)
                    .and_then(|g| g.thermal_power)
                    .map_or(f64::NAN, |(_, p)| p)
            })
            .collect();
        let med_p = median_mad(&powers, &mut scratch).map_or(f64::NAN, |x| x.0);
        // Per member: (power-corrected temperature y, power difference q, offset state,
        // settled).
        let mut rows = Vec::with_capacity(members.len());
        for (i, (u, t)) in members.iter().enumerate() {
            let q = if powers[i].is_finite() && med_p.is_finite() {
                powers[i] - med_p
            } else {
                0.0
            };
            let settle = if WATCHED[wi].field == DcgmField::MemoryTemp {
                MEMORY_SETTLE_MS
            } else {
                THERMAL_SETTLE_MS
            };
            let (th, settled) = self.gpus.get(u).map_or((ThermalOffset::default(), false), |g| {
                (g.thermal[wi], now.saturating_sub(g.steady_since_ms) >= settle)
            });
            // A die heating up while its power does not rise is no transient.
            let unexplained_rise = WATCHED[wi].field == DcgmField::GpuTemp
                && t - th.prev_temp >= UNEXPLAINED_RISE_C
                && powers[i] <= th.prev_power * 1.02;
            // A streak, once started, goes on through the load changes it causes (a die
            // at its limit throttles, and its power drops).
            let eligible = settled || unexplained_rise || self.cohorts[wi].streak(u) > 0;
            rows.push((t - b * q, q, th, eligible));
        }
        // The common level: median of the known members' offset-corrected values; while
        // too few are known, of everyone's (nothing is judged then).
        let known: Vec<f64> = rows
            .iter()
            .filter(|(y, _, th, _)| th.n >= OFFSET_WARM && y.is_finite())
            .map(|(y, _, th, _)| y - th.offset)
            .collect();
        let judged = known.len() >= self.cfg.cohort_min_members;
        let common = if judged {
            median_mad(&known, &mut scratch).map_or(f64::NAN, |x| x.0)
        } else {
            let all: Vec<f64> = rows.iter().map(|r| r.0).collect();
            median_mad(&all, &mut scratch).map_or(f64::NAN, |x| x.0)
        };
        self.residuals.clear();
        let mut mask = Vec::with_capacity(rows.len());
        for ((u, _), (y, _, th, eligible)) in members.iter().zip(&rows) {
            // Members whose offset is known are the reference; of those, ones in a
            // transient are not judged themselves.
            let r = if judged && th.n >= OFFSET_WARM {
                y - th.offset
            } else {
                f64::NAN
            };
            self.residuals.push((u.clone(), r));
            mask.push(*eligible);
        }
        let residuals = std::mem::take(&mut self.residuals);
        self.cohorts[wi].step_masked(&residuals, Some(&mask), out);
        let threshold = self.cfg.cohort_z;
        for (((u, t), v), (y, q, _, eligible)) in members.iter().zip(out.iter_mut()).zip(&rows) {
            let Some(g) = self.gpus.get_mut(u) else { continue };
            let th = &mut g.thermal[wi];
            // Show the operator temperatures: observed, and what common level, power and
            // the GPU's own offset explain.
            v.observed = *t;
            v.median = common + b * q + th.offset;
            th.prev_temp = *t;
            th.prev_power = g.thermal_power.map_or(f64::NAN, |(_, p)| p);
            if !eligible || !y.is_finite() || !common.is_finite() {
                continue; // a transient: neither judged nor learned from
            }
            let suspicious = v.streak > 0 || v.z >= threshold / 2.0;
            // Fast running mean while new, then a 30 min exponential average; eight times
            // slower while out of line, so a fault is not learned away during its
            // incident, yet a GPU moved to a warmer slot is accepted within hours.
            let dt = if th.n == 0 {
                0.0
            } else {
                (now - th.last_ms).max(0) as f64
            };
            let timed = 1.0 - (-dt / if suspicious { 8.0 * OFFSET_TAU_MS } else { OFFSET_TAU_MS }).exp();
            let a = if suspicious && th.n >= OFFSET_WARM {
                timed
            } else {
                (1.0 / f64::from(th.n + 1)).max(timed)
            };
            let target = y - common;
            if !suspicious && th.n >= OFFSET_WARM && judged && q.is_finite() {
                // The part of the deviation the power term should have explained.
                let e = target - th.offset + b * q;
                slope.sqq = slope.sqq * (1.0 - SLOPE_DECAY) + q * q;
                slope.sqd = slope.sqd * (1.0 - SLOPE_DECAY) + q * e;
            }
            th.offset += (target - th.offset) * a.clamp(0.0, 1.0);
            th.n = th.n.saturating_add(1);
            th.last_ms = now;
        }
        if slope.sqq.is_finite() && slope.sqd.is_finite() {
            self.slopes.insert(slope_key, slope);
        }
        self.residuals = residuals;
    }

    fn evaluate_cohorts(&mut self, now: TimestampMs, freshness: &dyn Fn(&GpuUuid) -> Freshness) {
        // Group fresh GPUs by (node, cohort key); BTreeMap for a deterministic order.
        let mut groups: BTreeMap<(String, String), Vec<GpuUuid>> = BTreeMap::new();
        for (uuid, g) in &self.gpus {
            if freshness(uuid) != Freshness::Fresh {
                continue;
            }
            if let Some(k) = &g.cohort_key {
                groups
                    .entry((g.node.clone(), k.clone()))
                    .or_default()
                    .push(uuid.clone());
            }
        }
        let mut members: Vec<(GpuUuid, f64)> = Vec::new();
        let mut hits = Vec::new();
        for ((node, cohort), uuids) in &groups {
            for (wi, wf) in WATCHED.iter().enumerate() {
                if wf.cohort.is_none() {
                    continue;
                }
                members.clear();
                for u in uuids {
                    if let Some(v) = self.gpus.get(u).and_then(|g| g.latest[wi]) {
                        members.push((u.clone(), v));
                    }
                }
                if members.len() < self.cfg.cohort_min_members {
                    continue;
                }
                let mut out = std::mem::take(&mut self.verdicts);
                if is_temperature(wf.field) {
                    self.thermal_cohort_step(now, &model_of(cohort), wi, &members, &mut out);
                } else {
                    self.cohorts[wi].step(&members, &mut out);
                }
                for ((u, _), v) in members.iter().zip(&out) {
                    if v.flagged {
                        hits.push((u.clone(), wi, node.clone(), *v));
                    }
                }
                self.verdicts = out;
            }
        }
        for (u, wi, node, v) in hits {
            let wf = WATCHED[wi];
            let strong = v.z.abs() >= 2.0 * self.cfg.cohort_z;
            let summary = format!(
                "{} {:.1} is {} its peers (median {:.1} of the GPUs of the same model and workload on {node}; robust z {:+.1})",
                wf.field.as_str(),
                v.observed,
                if v.z > 0.0 { "above" } else { "below" },
                v.median,
                v.z
            );
            let evidence = vec![
                Evidence {
                    signal: wf.field.as_str().to_string(),
                    observed: v.observed,
                    previous: None,
                    expected: Some(v.median),
                    ts_ms: now,
                },
                Evidence {
                    signal: format!("{}:peer_median", wf.field.as_str()),
                    observed: v.median,
                    previous: None,
                    expected: None,
                    ts_ms: now,
                },
            ];
            self.hit((u, wi, true), now, &node, strong, summary, evidence);
        }
        // Members that left every cohort: forget their streaks.
        let gpus = &self.gpus;
        for c in &mut self.cohorts {
            c.retain(|u| gpus.get(u).is_some_and(|g| g.cohort_key.is_some()));
        }
    }
}

impl Analyzer for AnomalyAnalyzer {
    fn name(&self) -> &'static str {
        "anomaly"
    }

    fn observe_identity(&mut self, identity: &GpuIdentity) {
        let key = if identity.mig.is_some() {
            None // MIG slices of different sizes are not peers.
        } else {
            Some(format!(
                "{}|{}",
                identity.model.as_deref().unwrap_or("?"),
                workload_key(identity)
            ))
        };
        let n = WATCHED.len();
        let g = self.gpus.entry(identity.uuid.clone()).or_insert_with(|| GpuState {
            node: identity.node.clone(),
            cohort_key: key.clone(),
            last_row_ms: 0,
            latest: vec![None; n],
            fields: vec![None; n],
            steady_samples: 0,
            last_util: None,
            last_power: None,
            workload_changed: false,
            thermal_power: None,
            power_since_ms: None,
            heat_power: None,
            thermal: vec![ThermalOffset::default(); n],
            steady_since_ms: TimestampMs::MAX,
            die_rise: DieRise::default(),
            slowdown_c: None,
        });
        if g.cohort_key != key {
            g.workload_changed = true;
            g.cohort_key = key;
            // Offsets are relative to the peers they were learned among.
            g.thermal.iter_mut().for_each(|t| t.n = 0);
        }
        g.node.clone_from(&identity.node);
        self.identities.insert(identity.uuid.clone(), identity.clone());
    }

    fn observe_row(&mut self, row: &GpuSamples) {
        if !self.gpus.contains_key(&row.gpu) {
            // A row before its identity: judge it on its own (no cohort).
            let mut id = GpuIdentity::new(row.gpu.clone(), "");
            id.mig = None;
            self.observe_identity(&id);
            if let Some(g) = self.gpus.get_mut(&row.gpu) {
                g.cohort_key = None;
            }
        }
        let ts = row.ts_ms;
        // Load steadiness first, so this row's findings know whether its load just changed.
        if let Some(g) = self.gpus.get_mut(&row.gpu) {
            if ts < g.last_row_ms {
                return; // out of order: counters and streaks assume time order
            }
            g.last_row_ms = ts;
            let util = row.get(&FieldName::Dcgm(DcgmField::GpuUtil)).filter(|u| u.is_finite());
            let power = row
                .get(&FieldName::Dcgm(DcgmField::PowerUsage))
                .filter(|p| p.is_finite());
            // Power is the best single measure of load (utilization is coarse: 100% while
            // a starved job idles the SMs), so a power step also counts as a load change.
            let changed = g.workload_changed
                || match (util, g.last_util) {
                    (Some(u), Some(p)) => (u - p).abs() > self.cfg.load_change_util,
                    _ => false,
                }
                || match (power, g.last_power) {
                    (Some(u), Some(p)) => (u - p).abs() > self.cfg.load_change_power * p.abs().max(50.0),
                    _ => false,
                };
            g.workload_changed = false;
            if util.is_some() {
                g.last_util = util;
            }
            if power.is_some() {
                g.last_power = power;
            }
            if let Some(p) = power {
                g.power_since_ms.get_or_insert(ts);
                g.heat_power = Some(match g.heat_power {
                    Some((pt, s)) if ts > pt => {
                        let a = 1.0 - (-((ts - pt) as f64) / DIE_POWER_TAU_MS).exp();
                        (ts, s + (p - s) * a)
                    }
                    Some(prev) => prev,
                    None => (ts, p),
                });
                g.thermal_power = Some(match g.thermal_power {
                    Some((pt, s)) if ts > pt => {
                        let a = 1.0 - (-((ts - pt) as f64) / THERMAL_TAU_MS).exp();
                        (ts, s + (p - s) * a)
                    }
                    Some(prev) => prev,
                    None => (ts, p),
                });
            }
            g.steady_samples = if changed { 0 } else { g.steady_samples.saturating_add(1) };
            if changed || g.steady_since_ms == TimestampMs::MAX {
                g.steady_since_ms = ts;
            }
            if let Some(sd) = row
                .get(&FieldName::Dcgm(DcgmField::SlowdownTemp))
                .filter(|t| t.is_finite() && *t > 0.0)
            {
                g.slowdown_c = Some(sd);
            }
            // A die that keeps heating while its (smoothed) power does not rise has lost
            // cooling; no load change explains it, and it needs no peers to see.
            if let Some(t) = row.get(&FieldName::Dcgm(DcgmField::GpuTemp)).filter(|t| t.is_finite()) {
                let history = g.power_since_ms.is_some_and(|s| ts - s >= DIE_POWER_HISTORY_MS);
                let (p, heat) = match (g.thermal_power, g.heat_power) {
                    (Some((_, p)), Some((_, h))) if history => (p, h),
                    _ => (f64::NAN, f64::NAN),
                };
                g.die_rise.observe(ts, t, p, heat, power.unwrap_or(f64::NAN));
            }
        }
        for (name, v) in &row.values {
            let Some(f) = name.dcgm() else { continue };
            if let Some(wi) = self.slot[f.index()] {
                self.update_series(&row.gpu, ts, wi, *v);
            }
        }
    }

    fn observe_event(&mut self, event: &Event) {
        if matches!(event.kind, EventKind::GpuDisappeared) {
            if let Some(g) = self.gpus.get_mut(&event.gpu) {
                g.latest.iter_mut().for_each(|v| *v = None);
            }
        }
    }

    fn evaluate(&mut self, now_ms: TimestampMs, freshness: &dyn Fn(&GpuUuid) -> Freshness) -> Vec<Finding> {
        for c in self.conditions.values_mut() {
            c.seen_this_round = false;
        }
        // Forget GPUs long gone (bounded memory).
        let forget = self.cfg.forget_after_ms;
        self.gpus.retain(|_, g| now_ms - g.last_row_ms <= forget);
        let gpus = &self.gpus;
        self.identities.retain(|u, _| gpus.contains_key(u));

        // Series conditions.
        let mut series_hits = Vec::new();
        for (uuid, g) in &self.gpus {
            if freshness(uuid) != Freshness::Fresh {
                continue;
            }
            for (wi, fs) in g.fields.iter().enumerate() {
                let Some(fs) = fs else { continue };
                if WORKLOAD_SET.contains(&WATCHED[wi].field) {
                    continue;
                }
                if fs.active_since.is_none() {
                    continue;
                }
                let Some((obs, lo, hi, ts)) = fs.last else { continue };
                series_hits.push((uuid.clone(), wi, g.node.clone(), obs, lo, hi, ts, fs.streak_peak_score));
            }
        }
        // Dies heating at no rise in power (see `GpuState::die_rise`).
        let mut rises = Vec::new();
        if let Some(wi) = self.slot[DcgmField::GpuTemp.index()] {
            for (uuid, g) in &self.gpus {
                // Only while the die is getting near its limit: with coarse scrapes a
                // healthy die can still be settling toward a cool equilibrium after a load
                // step, and that is no loss of cooling (a fault-free hour at one-minute
                // samples showed such climbs from 53 °C to 67 °C).
                let slowdown = g.slowdown_c.unwrap_or(DEFAULT_SLOWDOWN_C);
                let near_limit = g.die_rise.last_t >= slowdown - DIE_RISE_MARGIN_C;
                // Or heading there: a die settling after a load step approaches an
                // equilibrium its power explains; one that lost cooling approaches one
                // past slowdown, and that shows in the first few readings of the climb.
                let heading_past = g.die_rise.projected() >= slowdown - DIE_PROJECTION_MARGIN_C;
                if freshness(uuid) == Freshness::Fresh && g.die_rise.acc >= DIE_RISE_C && (near_limit || heading_past) {
                    rises.push((uuid.clone(), wi, g.node.clone(), g.die_rise));
                }
            }
        }
        for (uuid, wi, node, rise) in rises {
            let DieRise {
                acc,
                last_t: t,
                start_ms,
                start_heat,
                power_lo,
                power_hi,
                ..
            } = rise;
            let summary = format!(
                "{} climbed {acc:.0} °C to {t:.0} over {} s while the GPU's power, averaged over 5 minutes, did not \
                 rise ({start_heat:.0} W at the start; readings between {power_lo:.0} and {power_hi:.0} W): the die \
                 heats with no more power to explain it, so cooling is not keeping up",
                DcgmField::GpuTemp.as_str(),
                (now_ms - start_ms).max(0) / 1000,
            );
            let evidence = vec![Evidence {
                signal: DcgmField::GpuTemp.as_str().to_string(),
                observed: t,
                previous: Some(t - acc),
                expected: Some(t - acc),
                ts_ms: now_ms,
            }];
            // Critical only once within a few degrees of slowdown; earlier it is a warning.
            let strong = t >= self_slowdown(&self.gpus, &uuid) - 5.0;
            self.hit((uuid, wi, false), now_ms, &node, strong, summary, evidence);
        }
        for (uuid, wi, node, obs, lo, hi, ts, peak) in series_hits {
            let wf = WATCHED[wi];
            let expected = (lo + hi) / 2.0;
            let unit = if wf.kind == Kind::ErrorRate { "/s" } else { "" };
            let summary = format!(
                "{} {}{unit} {obs:.3} is outside its usual range {lo:.3} … {hi:.3}{}",
                wf.field.as_str(),
                if wf.kind == Kind::ErrorRate { "rate" } else { "value" },
                if wf.kind == Kind::Load {
                    " while the GPU's load is steady"
                } else {
                    ""
                }
            );
            let evidence = vec![Evidence {
                signal: if wf.kind == Kind::ErrorRate {
                    format!("rate({})", wf.field.as_str())
                } else {
                    wf.field.as_str().to_string()
                },
                observed: obs,
                previous: None,
                expected: Some(expected),
                ts_ms: ts,
            }];
            self.hit((uuid, wi, false), now_ms, &node, peak >= 0.99, summary, evidence);
        }

        self.evaluate_cohorts(now_ms, freshness);

        // Hold, age out, and report.
        let hold = self.cfg.hold_evaluations;
        self.conditions.retain(|_, c| {
            if !c.seen_this_round {
                c.misses = c.misses.saturating_add(1);
            }
            c.misses <= hold && freshness(&c.gpu) == Freshness::Fresh
        });
        let critical_after = self.cfg.critical_after_evaluations;
        self.conditions
            .values()
            .map(|c| {
                let wf = WATCHED[c.watched];
                let severity = if c.strong && c.hits >= critical_after {
                    Severity::Critical
                } else {
                    Severity::Warning
                };
                let mut labels = BTreeMap::new();
                labels.insert("detector".into(), if c.cohort { "cohort" } else { "series" }.into());
                labels.insert("since_ms".into(), c.first_ms.to_string());
                Finding {
                    kind: FindingKind::Anomaly,
                    rule: c.rule.clone(),
                    severity,
                    gpu: Some(c.gpu.clone()),
                    node: c.node.clone(),
                    ts_ms: now_ms,
                    summary: c.summary.clone(),
                    evidence: c.evidence.clone(),
                    action: if c.cohort || wf.kind == Kind::ErrorRate {
                        wf.action
                    } else {
                        Action::None
                    },
                    dimension: Some(wf.dimension),
                    labels,
                }
            })
            .collect()
    }
}

/// A die's climb at no rise in power, and where it is heading.
#[derive(Debug, Clone, Copy)]
struct DieRise {
    /// °C climbed so far.
    acc: f64,
    /// The last reading (°C).
    last_t: f64,
    /// Smoothed power when the climb started (W).
    start_power: f64,
    /// Heat input (long average of power) when the climb started (W).
    start_heat: f64,
    /// Data time of the climb's first reading.
    start_ms: TimestampMs,
    /// Lowest and highest raw board power read during the climb (W).
    power_lo: f64,
    power_hi: f64,
    /// The last two per-reading climbs (older first), for the projection.
    steps: (f64, f64),
}

impl Default for DieRise {
    fn default() -> Self {
        Self {
            acc: 0.0,
            last_t: f64::NAN,
            start_power: f64::NAN,
            start_heat: f64::NAN,
            start_ms: 0,
            power_lo: f64::NAN,
            power_hi: f64::NAN,
            steps: (f64::NAN, f64::NAN),
        }
    }
}

impl DieRise {
    /// One die reading `t` (°C) at `ts`, with power smoothed over the die's lag `p`, power
    /// averaged over `DIE_POWER_TAU_MS` `heat`, and the raw reading `raw` (W; NaN when
    /// unknown).
    fn observe(&mut self, ts: TimestampMs, t: f64, p: f64, heat: f64, raw: f64) {
        // Without power readings nothing can be said about what the power did; a rise of
        // either the short or the long average explains heating.
        let power_rose = p.is_nan()
            || raw.is_nan()
            || heat.is_nan()
            || self.start_power.is_nan()
            || p > self.start_power * 1.02
            || heat > self.start_heat * 1.02;
        let (lo, hi) = (self.power_lo.min(raw), self.power_hi.max(raw));
        if t < self.last_t || power_rose || self.last_t.is_nan() {
            *self = Self {
                acc: 0.0,
                last_t: t,
                start_power: p,
                start_heat: heat,
                start_ms: ts,
                power_lo: raw,
                power_hi: raw,
                steps: (f64::NAN, f64::NAN),
            };
        } else {
            self.power_lo = lo;
            self.power_hi = hi;
            let step = t - self.last_t;
            self.acc += step;
            self.last_t = t;
            self.steps = (self.steps.1, step);
        }
    }

    /// Where the climb ends if it is a first-order approach (each climb a fixed fraction
    /// of the previous one, as a die's lag makes it at a steady scrape interval):
    /// `last + step·r/(1−r)`. A climb that does not slow down heads on past any limit.
    /// NaN when there are too few or too small steps to tell.
    fn projected(&self) -> f64 {
        let (a, b) = self.steps;
        if !(a >= DIE_PROJECTION_MIN_STEP_C && b > 0.0) {
            return f64::NAN;
        }
        let r = b / a;
        if r >= 0.95 {
            return f64::INFINITY;
        }
        self.last_t + b * r / (1.0 - r)
    }
}

/// The slowdown temperature of a GPU, or the default.
fn self_slowdown(gpus: &HashMap<GpuUuid, GpuState>, uuid: &GpuUuid) -> f64 {
    gpus.get(uuid).and_then(|g| g.slowdown_c).unwrap_or(DEFAULT_SLOWDOWN_C)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpuwarden_model::Workload;

    /// Whole-degree readings of a first-order approach from `from` to `to`.
    fn approach(from: f64, to: f64, dt_s: f64, n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| (to + (from - to) * (-(i as f64) * dt_s / 45.0).exp()).trunc())
            .collect()
    }

    #[test]
    fn die_climb_projection_tells_lost_cooling_from_settling() {
        // Cooling lost on an idle die: heading for slowdown + 2 whatever it draws.
        let mut lost = DieRise::default();
        let readings = approach(35.0, 89.4, 10.0, 4);
        for &t in &readings {
            lost.observe(0, t, 60.0, 60.0, 60.0);
        }
        assert!(lost.acc >= DIE_RISE_C, "{readings:?}");
        assert!(
            lost.projected() >= 87.0 - DIE_PROJECTION_MARGIN_C,
            "{}",
            lost.projected()
        );
        assert!(
            lost.last_t < 87.0 - DIE_RISE_MARGIN_C,
            "seen before it is near the limit"
        );
        // A healthy die settling (10 s and 60 s scrapes) heads for where it settles.
        for dt in [10.0, 60.0] {
            let mut ok = DieRise::default();
            for t in approach(53.0, 68.0, dt, 6) {
                ok.observe(0, t, 300.0, 300.0, 300.0);
                let pr = ok.projected();
                assert!(pr.is_nan() || pr < 75.0, "dt {dt}: projected {pr}");
            }
        }
        // A power rise restarts the climb.
        lost.observe(0, 70.0, 200.0, 200.0, 200.0);
        assert_eq!(lost.acc, 0.0);
    }

    fn ids(n: usize) -> Vec<GpuIdentity> {
        (0..n)
            .map(|i| {
                let mut id = GpuIdentity::new(GpuUuid::new(&format!("GPU-{i:04}")), "node-a");
                id.model = Some("NVIDIA H100 80GB HBM3".into());
                id.workload = Workload {
                    namespace: Some("train".into()),
                    pod: Some("job-1".into()),
                    container: None,
                    job: None,
                    account: None,
                };
                id
            })
            .collect()
    }

    fn row(id: &GpuIdentity, ts: i64, util: f64, clock: f64, power: f64, temp: f64) -> GpuSamples {
        GpuSamples {
            gpu: id.uuid.clone(),
            ts_ms: ts,
            values: vec![
                (DcgmField::GpuUtil.into(), util),
                (DcgmField::SmClock.into(), clock),
                (DcgmField::PowerUsage.into(), power),
                (DcgmField::GpuTemp.into(), temp),
                (DcgmField::PcieReplayCounter.into(), 0.0),
            ],
        }
    }

    fn wobble(i: usize, t: i64) -> f64 {
        (((i as i64 * 7919 + t * 104_729) % 11) - 5) as f64 / 5.0
    }

    /// Runs `steps` evaluations of 8 GPUs (5 s apart); `f(step, gpu)` gives
    /// (util, clock, power, temp). Returns, per step, the anomaly rules found per GPU.
    fn run(steps: i64, f: impl Fn(i64, usize) -> (f64, f64, f64, f64)) -> Vec<Vec<(usize, String)>> {
        let ids = ids(8);
        let mut a = AnomalyAnalyzer::default();
        let mut out = Vec::new();
        for t in 0..steps {
            let ts = 1_700_000_000_000 + t * 5_000;
            for (i, id) in ids.iter().enumerate() {
                a.observe_identity(id);
                let (u, c, p, temp) = f(t, i);
                a.observe_row(&row(id, ts, u, c, p, temp));
            }
            let found = a.evaluate(ts, &|_| Freshness::Fresh);
            out.push(
                found
                    .iter()
                    .map(|x| {
                        let i = ids.iter().position(|id| Some(&id.uuid) == x.gpu.as_ref()).unwrap();
                        (i, x.rule.clone())
                    })
                    .collect(),
            );
        }
        out
    }

    /// No finding before step `start`; `rule` on GPU `victim` within 3 steps of it; no
    /// finding on any other GPU at any step.
    fn assert_only_victim_flagged(res: &[Vec<(usize, String)>], start: i64, victim: usize, rule: &str) {
        for (t, f) in res.iter().enumerate().take(start as usize) {
            assert!(f.is_empty(), "false finding before the fault at step {t}: {f:?}");
        }
        let first = res
            .iter()
            .enumerate()
            .skip(start as usize)
            .find(|(_, f)| f.iter().any(|(i, r)| *i == victim && r == rule))
            .map(|(t, _)| t as i64 - start);
        assert!(
            first.is_some_and(|d| d < 3),
            "{rule} on GPU {victim} flagged after {first:?} steps"
        );
        assert!(
            res.iter().flatten().all(|(i, _)| *i == victim),
            "a healthy peer was flagged: {:?}",
            res.iter().flatten().find(|(i, _)| *i != victim)
        );
    }

    #[test]
    fn straggler_among_eight_is_flagged_within_three_intervals() {
        let start = 200;
        let res = run(260, |t, i| {
            let w = wobble(i, t);
            let clock = if i == 3 && t >= start { 1200.0 } else { 1980.0 } + 5.0 * w;
            (98.0 + w, clock, 650.0 + 10.0 * w, 70.0 + (i % 4) as f64 + w)
        });
        assert_only_victim_flagged(&res, start, 3, "anomaly.cohort.sm_clock");
    }

    /// Peers 0–4 °C apart in inlet air and 280 W apart in draw (one job, uneven shards):
    /// raw temperatures spread over ~28 °C, none of it anomalous. Then GPU 5's cooling
    /// fails: its die heads for 91 °C with a 45 s time constant while its draw is unchanged.
    #[test]
    fn temperature_offsets_explained_by_airflow_and_power_are_not_flagged_cooling_failure_is() {
        let start = 300;
        let res = run(400, |t, i| {
            let w = wobble(i, t);
            let power = 300.0 + 40.0 * i as f64 + 6.0 * w;
            let ambient = 25.0 + (i % 4) as f64 * 0.8 + (i * 37 % 15) as f64 / 10.0;
            let eq = ambient + 0.085 * power;
            let temp = if i == 5 && t >= start {
                let k = 1.0 - (-((t - start + 1) as f64) * 5.0 / 45.0).exp();
                eq + (91.4 - eq).max(0.0) * k
            } else {
                eq
            };
            (98.0 + w, 1980.0 + 5.0 * w, power, temp.round())
        });
        assert_only_victim_flagged(&res, start, 5, "anomaly.cohort.gpu_temp");
    }

    #[test]
    fn eight_gpus_changing_load_together_are_not_flagged() {
        let res = run(400, |t, i| {
            let w = wobble(i, t);
            // Idle → full load → idle, all together.
            if (100..250).contains(&t) {
                (99.0 + w, 1980.0 + 5.0 * w, 680.0 + 10.0 * w, 75.0 + (i % 4) as f64 + w)
            } else {
                (0.0, 345.0 + w, 70.0 + w, 32.0 + (i % 4) as f64 + w)
            }
        });
        let all: Vec<_> = res.iter().flatten().collect();
        assert!(all.is_empty(), "{all:?}");
    }

    #[test]
    fn error_rate_and_steady_temperature_climb_are_series_findings() {
        let ids = ids(1);
        let mut a = AnomalyAnalyzer::default();
        let mut found = Vec::new();
        let mut counter = 0.0;
        for t in 0..400i64 {
            let ts = 1_700_000_000_000 + t * 5_000;
            let temp = if t >= 300 {
                70.0 + (t - 300) as f64 * 1.5
            } else {
                70.0 + wobble(0, t)
            };
            if t >= 350 {
                counter += 200.0;
            }
            let mut r = row(&ids[0], ts, 98.0, 1980.0, 650.0, temp);
            r.values[4].1 = counter;
            a.observe_identity(&ids[0]);
            a.observe_row(&r);
            for f in a.evaluate(ts, &|_| Freshness::Fresh) {
                assert_eq!(f.kind, FindingKind::Anomaly);
                assert!(f.evidence[0].expected.is_some());
                if t < 300 {
                    panic!("false finding at {t}: {f:?}");
                }
                found.push((t, f.rule));
            }
        }
        assert!(found.iter().any(|(_, r)| r == "anomaly.series.gpu_temp"), "{found:?}");
        let first_rate = found.iter().find(|(_, r)| r == "anomaly.series.pcie_replay_rate");
        assert!(first_rate.is_some_and(|(t, _)| *t <= 355), "{found:?}");
    }

    #[test]
    fn non_finite_values_do_not_panic_or_flag() {
        let res = run(100, |t, i| {
            let v = if t % 7 == 0 {
                f64::NAN
            } else if i == 2 {
                f64::INFINITY
            } else {
                50.0
            };
            (v, v, v, v)
        });
        assert!(res.iter().flatten().next().is_none(), "{res:?}");
    }

    /// Runs one GPU at a 10 s step; `f(step)` gives (util, power or NaN for a missing
    /// field, die temperature). Returns the summaries of the die-climb findings and how
    /// many separate runs of them there were.
    fn die_climb_findings(steps: i64, f: impl Fn(i64) -> (f64, f64, f64)) -> (Vec<String>, usize) {
        let ids = ids(1);
        let mut a = AnomalyAnalyzer::default();
        let (mut out, mut runs, mut was) = (Vec::new(), 0, false);
        for t in 0..steps {
            let ts = 1_700_000_000_000 + t * 10_000;
            let (u, p, temp) = f(t);
            let mut r = row(&ids[0], ts, u, 1980.0, p, temp);
            r.values.retain(|(_, v)| v.is_finite());
            a.observe_identity(&ids[0]);
            a.observe_row(&r);
            let now: Vec<String> = a
                .evaluate(ts, &|_| Freshness::Fresh)
                .into_iter()
                .filter(|f| f.summary.contains("climbed"))
                .map(|f| f.summary)
                .collect();
            if !now.is_empty() && !was {
                runs += 1;
            }
            was = !now.is_empty();
            out.extend(now);
        }
        (out, runs)
    }

    /// The wrong diagnosis seen on a throttled miner: power swinging 95 ↔ 616 W while the
    /// die (and its heatsink) warms up over minutes. The smoothed power at any moment
    /// says nothing about whether the load explains the heat; no "cooling is not keeping
    /// up" finding, and so no flapping one.
    #[test]
    fn die_climb_under_swinging_power_is_not_blamed_on_cooling() {
        // Whole degrees, never falling: the heatsink's warm-up (time constant `tau`
        // steps of 10 s) dominates the readings. From the GPU's first sample, and after
        // 40 minutes idle at 60 W (the miner starts at step 240).
        for (idle_steps, tau) in [(0, 30.0), (240, 15.0), (240, 30.0)] {
            for half_period in [2, 3, 5] {
                let (found, _) = die_climb_findings(idle_steps + 360, |t| {
                    if t < idle_steps {
                        return (0.0, 60.0, 40.0);
                    }
                    let k = (t - idle_steps) as f64;
                    let on = ((t - idle_steps) / half_period) % 2 == 0;
                    let temp = (45.0 + 40.0 * (1.0 - (-k / tau).exp())).trunc();
                    if on {
                        (100.0, 616.0, temp)
                    } else {
                        (0.0, 95.0, temp)
                    }
                });
                assert!(
                    found.is_empty(),
                    "idle {idle_steps}, tau {tau}, half period {half_period}: {found:?}"
                );
            }
        }
    }

    /// On/off load with long phases: the die heats after each power step and cools after
    /// each drop. Every climb follows a rise in power.
    #[test]
    fn die_climb_after_a_load_step_is_not_blamed_on_cooling() {
        let (found, _) = die_climb_findings(360, |t| {
            let phase = t % 120;
            let on = phase < 60;
            let k = (phase % 60) as f64;
            let temp = if on {
                35.0 + 45.0 * (1.0 - (-k / 4.5).exp())
            } else {
                35.0 + 45.0 * (-k / 4.5).exp()
            };
            (
                if on { 100.0 } else { 0.0 },
                if on { 600.0 } else { 80.0 },
                temp.trunc(),
            )
        });
        assert!(found.is_empty(), "{found:?}");
    }

    /// Lost cooling at a steady load: found, and the explanation states the power range
    /// it saw and over how long the die climbed, so it can be checked against the data.
    #[test]
    fn die_climb_at_flat_power_names_the_power_range_and_missing_power_says_nothing() {
        let climb = |t: i64| {
            let temp = if t < 100 {
                62.0 + wobble(0, t)
            } else {
                (62.0 + 30.0 * (1.0 - (-((t - 100) as f64) / 12.0).exp())).trunc()
            };
            (98.0, 400.0 + 4.0 * wobble(1, t), temp)
        };
        let (found, runs) = die_climb_findings(160, climb);
        assert!(!found.is_empty(), "lost cooling at flat power must be found");
        let s = &found[0];
        assert!(
            s.contains("between 39") && s.contains(" and 40") && s.contains("averaged over 5 minutes"),
            "{s}"
        );
        assert!(s.contains(" s while"), "{s}");
        assert_eq!(runs, 1, "one finding, not a flapping one: {found:?}");
        // The same climb without any power field: "power did not rise" cannot be said.
        let (found, _) = die_climb_findings(160, |t| {
            let (u, _, temp) = climb(t);
            (u, f64::NAN, temp)
        });
        assert!(found.is_empty(), "{found:?}");
    }
}
