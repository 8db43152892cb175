//! The fault and abuse scenario library: default rates, durations, and what each
//! [`FaultKind`] does to a GPU's telemetry while active.
//!
//! Rates are per GPU-year and derived from failure-statistics.md (Llama 3's 16,384-H100
//! run for hardware, Titan's DBE vs off-the-bus split); abuse rates have no published
//! figure and are set low. The derivation is in `docs/simulator.md`.

use crate::models::ModelSpec;
use gpuwarden_model::{FaultKind, TimestampMs};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Poisson};
use serde::{Deserialize, Serialize};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

/// How long an XID 79 GPU stays in the scrape (showing XID 79) before it vanishes.
/// Short on purpose: on a real host the GPU is unreachable through NVML almost at once,
/// so dcgm-exporter stops reporting it and the XID itself is mostly seen in the kernel
/// log. A 1 s scraper may catch the XID; a 5 s one usually sees only the disappearance,
/// which is what operators see with dcgm-exporter too.
pub const FALLEN_OFF_VISIBLE_MS: i64 = 1_000;
/// How long the single-bit storm lasts before the double-bit error.
pub const ECC_STORM_MS: i64 = 120_000;

/// Default random rate of each fault, per GPU-year (before `fault_rate_multiplier`).
///
/// Llama 3 (2,422 H100 GPU-years, 419 unexpected interruptions): faulty GPU 148,
/// HBM3 72, SRAM 19, GSP 17, thermal 6, software bug 54, network 35.
pub const fn default_rate_per_gpu_year(kind: FaultKind) -> f64 {
    match kind {
        // (HBM3 72 + SRAM 19) × 90% that remap successfully / 2,422.
        FaultKind::EccDbe => 0.0338,
        // The other 10% of memory faults: remapping fails.
        FaultKind::RowRemapFailure => 0.0038,
        // Half of "faulty GPU" (74) + GSP (17) / 2,422.
        FaultKind::FallenOffBus => 0.0376,
        // Software bugs 54 / 2,422.
        FaultKind::AppXid => 0.0223,
        // Thermal interface + sensor 6 / 2,422.
        FaultKind::Thermal => 0.0025,
        // 15% of "faulty GPU" each for power brake and PCIe, 20% for stragglers.
        FaultKind::PowerBrake => 0.0092,
        FaultKind::PcieReplay => 0.0092,
        FaultKind::Straggler => 0.0122,
        // Network switch / cable 35 / 2,422 (used as the NVLink fabric's share).
        FaultKind::NvlinkErrors => 0.0144,
        // Abuse: no published rate; low enough that a real-rate fleet rarely sees one.
        FaultKind::Miner | FaultKind::MinerThrottled | FaultKind::UnapprovedNamespace => 0.01,
        // Planted on purpose only: it needs a running job to hide in.
        FaultKind::MinerInJob => 0.0,
    }
}

/// Whether `kind` can happen on a board of this model.
pub fn applicable(kind: FaultKind, spec: &ModelSpec) -> Result<(), &'static str> {
    match kind {
        FaultKind::NvlinkErrors if spec.nvlink_links == 0 => Err("the GPU model has no NVLink"),
        _ => Ok(()),
    }
}

/// How long a randomly drawn fault lasts. `None`: it persists (nothing in the simulation
/// repairs a dead GPU or a failed remap).
pub fn random_duration_ms(kind: FaultKind, rng: &mut ChaCha8Rng) -> Option<i64> {
    let (lo, hi) = match kind {
        FaultKind::EccDbe | FaultKind::RowRemapFailure | FaultKind::FallenOffBus => return None,
        FaultKind::AppXid => return Some(5 * MIN),
        FaultKind::Thermal => (10 * MIN, 30 * MIN),
        FaultKind::PowerBrake => (2 * MIN, 10 * MIN),
        FaultKind::NvlinkErrors => (10 * MIN, HOUR),
        FaultKind::PcieReplay => (5 * MIN, 30 * MIN),
        FaultKind::Straggler => (30 * MIN, 2 * HOUR),
        FaultKind::Miner | FaultKind::MinerThrottled | FaultKind::MinerInJob => (HOUR, 6 * HOUR),
        FaultKind::UnapprovedNamespace => (30 * MIN, 3 * HOUR),
    };
    Some(rng.random_range(lo..hi))
}

/// Duration of an injected fault when the caller gives none: fixed per kind, so that
/// demos and tests know what to expect.
pub const fn default_injected_duration_ms(kind: FaultKind) -> Option<i64> {
    match kind {
        FaultKind::EccDbe | FaultKind::RowRemapFailure | FaultKind::FallenOffBus => None,
        FaultKind::AppXid => Some(5 * MIN),
        FaultKind::Thermal => Some(15 * MIN),
        FaultKind::PowerBrake => Some(5 * MIN),
        FaultKind::NvlinkErrors | FaultKind::PcieReplay => Some(30 * MIN),
        FaultKind::Straggler => Some(HOUR),
        FaultKind::Miner | FaultKind::MinerThrottled | FaultKind::MinerInJob => Some(2 * HOUR),
        FaultKind::UnapprovedNamespace => Some(HOUR),
    }
}

/// A fault in progress on one GPU.
#[derive(Debug, Clone)]
pub struct ActiveFault {
    pub kind: FaultKind,
    /// Index of its label in the fleet's label list.
    pub label: usize,
    pub start_ms: TimestampMs,
    pub end_ms: Option<TimestampMs>,
    /// Progress through the fault's stages (ECC storm → DBE → remap, …).
    pub stage: u8,
    /// Kind-specific parameter drawn at start (straggler clock factor).
    pub factor: f64,
    /// Job the fault planted (miners, unapproved pods); ended with the fault.
    pub job: Option<u64>,
}

/// What active faults do to a GPU this tick, folded together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Effects {
    pub clock_factor: f64,
    pub sm_factor: f64,
    pub thermal_runaway: bool,
    pub power_brake: bool,
}

impl Default for Effects {
    fn default() -> Self {
        Effects {
            clock_factor: 1.0,
            sm_factor: 1.0,
            thermal_runaway: false,
            power_brake: false,
        }
    }
}

/// The error counters and flags faults write to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ErrorCounters {
    pub xid: u32,
    pub sbe_vol: u64,
    pub dbe_vol: u64,
    pub sbe_agg: u64,
    pub dbe_agg: u64,
    pub retired_sbe: u64,
    pub retired_dbe: u64,
    pub retired_pending: u64,
    pub uncorrectable_rows: u64,
    pub correctable_rows: u64,
    pub remap_failure: bool,
    pub remap_pending: bool,
    pub pcie_replay: u64,
    pub nvlink_crc_flit: u64,
    pub nvlink_crc_data: u64,
    pub nvlink_replay: u64,
    pub nvlink_recovery: u64,
    /// False once the GPU has fallen off the bus: it leaves its node's scrape.
    pub off_bus: bool,
}

fn poisson(rng: &mut ChaCha8Rng, mean: f64) -> u64 {
    if mean <= 0.0 {
        return 0;
    }
    Poisson::new(mean).map(|p| p.sample(rng) as u64).unwrap_or(0)
}

/// Advances one fault by one tick of `dt_ms` ending at `now`: moves it through its
/// stages, bumps the counters it drives, and adds its effects.
pub fn tick(
    f: &mut ActiveFault,
    c: &mut ErrorCounters,
    fx: &mut Effects,
    now: TimestampMs,
    dt_ms: i64,
    rng: &mut ChaCha8Rng,
) {
    let dt = dt_ms as f64 / 1000.0;
    let age = now - f.start_ms;
    match f.kind {
        FaultKind::EccDbe => {
            match f.stage {
                // Single-bit storm: correctable errors pour in, rows get remapped.
                0 => {
                    let n = poisson(rng, 25.0 * dt);
                    c.sbe_vol += n;
                    c.sbe_agg += n;
                    if age >= ECC_STORM_MS {
                        c.dbe_vol += 1;
                        c.dbe_agg += 1;
                        c.xid = 48;
                        f.stage = 1;
                    }
                }
                // A couple of seconds later the driver remaps the row (XID 63) and
                // asks for a GPU reset to apply it.
                1 if age >= ECC_STORM_MS + 2_000 => {
                    c.xid = 63;
                    c.uncorrectable_rows += 1;
                    c.remap_pending = true;
                    f.stage = 2;
                }
                _ => {
                    let n = poisson(rng, 0.05 * dt);
                    c.sbe_vol += n;
                    c.sbe_agg += n;
                }
            }
        }
        FaultKind::RowRemapFailure => {
            if f.stage == 0 {
                c.dbe_vol += 1;
                c.dbe_agg += 1;
                c.xid = 64;
                c.remap_failure = true;
                f.stage = 1;
            }
        }
        FaultKind::FallenOffBus => {
            if f.stage == 0 {
                c.xid = 79;
                f.stage = 1;
            } else if f.stage == 1 && age >= FALLEN_OFF_VISIBLE_MS {
                c.off_bus = true;
                f.stage = 2;
            }
        }
        FaultKind::AppXid => {
            if f.stage == 0 {
                c.xid = [13, 31, 43][rng.random_range(0..3)];
                f.stage = 1;
            }
        }
        FaultKind::Thermal => fx.thermal_runaway = true,
        FaultKind::PowerBrake => fx.power_brake = true,
        FaultKind::NvlinkErrors => {
            c.nvlink_crc_flit += poisson(rng, 8.0 * dt);
            c.nvlink_crc_data += poisson(rng, 1.0 * dt);
            c.nvlink_replay += poisson(rng, 3.0 * dt);
            c.nvlink_recovery += poisson(rng, 0.02 * dt);
        }
        FaultKind::PcieReplay => c.pcie_replay += poisson(rng, 40.0 * dt),
        FaultKind::Straggler => {
            fx.clock_factor *= f.factor;
            fx.sm_factor *= 0.5 + 0.5 * f.factor;
        }
        // Abuse scenarios act through the job they planted.
        FaultKind::Miner | FaultKind::MinerThrottled | FaultKind::MinerInJob | FaultKind::UnapprovedNamespace => {}
    }
}

/// Undoes what must be undone when a fault ends (a GPU reset clears a pending remap and
/// brings a fallen GPU back; the last-XID gauge is left as is, as DCGM does).
pub fn end(f: &ActiveFault, c: &mut ErrorCounters) {
    match f.kind {
        FaultKind::EccDbe => c.remap_pending = false,
        FaultKind::FallenOffBus => c.off_bus = false,
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// Precursors: how hard failures announce themselves (or do not), and the benign episodes
// that look like warnings but end well. See "Failure precursors" in docs/simulator.md.
// ---------------------------------------------------------------------------------------

/// The warning signs a failing (or merely unwell) GPU can show before it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PrecursorKind {
    /// Correctable (single-bit) ECC errors at a rising rate, with the odd retired page
    /// and correctable row remap: the usual run-up to a double-bit error in HBM.
    SbeStorm,
    /// Rows remapped one after another (correctable remaps, `ROW_REMAP_PENDING` = 1)
    /// until the remapper runs out of spare rows.
    RemapCreep,
    /// Clusters of XID 13 / 31 (graphics exceptions, MMU faults) that are not the
    /// application's fault: seen before some GSP / off-the-bus failures.
    XidCluster,
    /// PCIe replays at a slowly rising rate (a marginal link or riser) before the GPU
    /// falls off the bus.
    PcieRamp,
}

/// One precursor episode on one GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Precursor {
    pub kind: PrecursorKind,
    /// The hard failure it ends in; `None` for a benign episode that just stops.
    pub target: Option<FaultKind>,
    pub start_ms: TimestampMs,
    /// When it ends: the failure starts then (or the benign episode stops).
    pub end_ms: TimestampMs,
    /// Scale of the signal (failing episodes: median 1; benign ones: median 0.35).
    pub intensity: f64,
}

/// A finished or running precursor, as the fleet records it (ground truth for scoring
/// lead times: which failures had a warning, and since when).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrecursorRecord {
    pub gpu: gpuwarden_model::GpuUuid,
    #[serde(flatten)]
    pub precursor: Precursor,
}

/// Benign warning-like episodes per GPU-year (before `fault_rate_multiplier`). No
/// published figure; set at about twice the rate of warned failures so that most SBE
/// bursts, pending remaps, XID clusters and replay ramps end without a failure, as they do
/// in real fleets, and a predictor cannot treat every warning as a death sentence.
pub const BENIGN_PRECURSOR_RATE_PER_GPU_YEAR: f64 = 0.09;

fn log_uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    (rng.random_range(lo.ln()..hi.ln())).exp()
}

fn log_normal(rng: &mut ChaCha8Rng, median: f64, sigma: f64) -> f64 {
    // Box–Muller from two uniforms: keeps the dependency set as it is.
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    median * (sigma * z).exp()
}

/// Lead time of a warning: log-uniform between 1 h and 48 h, so short warnings (hard to
/// act on) are as common per decade as long ones.
fn draw_lead_ms(rng: &mut ChaCha8Rng) -> i64 {
    log_uniform(rng, HOUR as f64, 48.0 * HOUR as f64) as i64
}

/// Whether a hard failure of `kind` drawn at `now` announces itself, and how. `None`: it
/// strikes without warning (the fault starts now). Shares: DBE 65% (SBE storm), remap
/// failure 75% (remap creep), off the bus 35% PCIe ramp + 20% XID cluster.
pub fn warning_before(kind: FaultKind, now: TimestampMs, rng: &mut ChaCha8Rng) -> Option<Precursor> {
    let u: f64 = rng.random();
    let pk = match kind {
        FaultKind::EccDbe if u < 0.65 => PrecursorKind::SbeStorm,
        FaultKind::RowRemapFailure if u < 0.75 => PrecursorKind::RemapCreep,
        FaultKind::FallenOffBus if u < 0.35 => PrecursorKind::PcieRamp,
        FaultKind::FallenOffBus if u < 0.55 => PrecursorKind::XidCluster,
        _ => return None,
    };
    let lead = draw_lead_ms(rng);
    Some(Precursor {
        kind: pk,
        target: Some(kind),
        start_ms: now,
        end_ms: now + lead,
        intensity: log_normal(rng, 1.0, 0.6),
    })
}

/// A benign episode starting at `now`: same signals as a warning, weaker on average
/// (the distributions overlap), and no failure at the end.
pub fn benign_precursor(now: TimestampMs, rng: &mut ChaCha8Rng) -> Precursor {
    let kind = match rng.random_range(0..4) {
        0 => PrecursorKind::SbeStorm,
        1 => PrecursorKind::RemapCreep,
        2 => PrecursorKind::XidCluster,
        _ => PrecursorKind::PcieRamp,
    };
    let lead = draw_lead_ms(rng);
    Precursor {
        kind,
        target: None,
        start_ms: now,
        end_ms: now + lead,
        intensity: log_normal(rng, 0.35, 0.8),
    }
}

/// Advances a precursor by `dt_ms` ending at `now`. Signals ramp up as exp(4(x − 1)) of
/// the episode's progress x: faint at first (2% of the final rate), strongest just
/// before the end, so an early warning is genuinely harder to see than a late one.
pub fn tick_precursor(p: &Precursor, c: &mut ErrorCounters, now: TimestampMs, dt_ms: i64, rng: &mut ChaCha8Rng) {
    let span = (p.end_ms - p.start_ms).max(1) as f64;
    let x = ((now - p.start_ms) as f64 / span).clamp(0.0, 1.0);
    let level = p.intensity * (4.0 * (x - 1.0)).exp();
    let dt = dt_ms as f64 / 1000.0;
    match p.kind {
        PrecursorKind::SbeStorm => {
            // Up to ~180 SBE/h at the end (intensity 1).
            let n = poisson(rng, 0.05 * level * dt);
            c.sbe_vol += n;
            c.sbe_agg += n;
            c.retired_sbe += poisson(rng, n as f64 * 0.002);
            let rows = poisson(rng, n as f64 * 0.001);
            if rows > 0 {
                c.correctable_rows += rows;
                c.remap_pending = true;
            }
        }
        PrecursorKind::RemapCreep => {
            // Up to ~3 remapped rows per hour, each asking for a reset to take effect.
            let rows = poisson(rng, 3.0 / 3600.0 * level * dt);
            if rows > 0 {
                c.correctable_rows += rows;
                c.remap_pending = true;
            }
            let n = poisson(rng, 0.004 * level * dt);
            c.sbe_vol += n;
            c.sbe_agg += n;
        }
        PrecursorKind::XidCluster => {
            // Up to ~6 XIDs per hour; the gauge alternates so each one is a change.
            if poisson(rng, 6.0 / 3600.0 * level * dt) > 0 {
                c.xid = if c.xid == 13 { 31 } else { 13 };
            }
        }
        PrecursorKind::PcieRamp => c.pcie_replay += poisson(rng, 1.5 * level * dt),
    }
}

/// Ends a benign episode: a pending remap is applied by the maintenance reset that
/// usually follows one.
pub fn end_precursor(p: &Precursor, c: &mut ErrorCounters) {
    if p.target.is_none() {
        c.remap_pending = false;
    }
}

// ---------------------------------------------------------------------------------------
// Wear-out (opt-in, `Fleet::set_wear_out`): a GPU's hardware slowly degrades, its hard
// failure hazard rises, and it leaks a chronic trickle of correctable errors for days
// before it fails. Field studies of large fleets see exactly this concentration: a few
// percent of boards ("repeat offenders") account for most hard failures. Without it the
// only signal is the hours-long precursor episodes above, and 40% of failures come out of
// nowhere, so no predictor can rank a GPU-day better than ~0.6 ROC-AUC.
// ---------------------------------------------------------------------------------------

/// Onsets of wear-out per GPU-year (before `fault_rate_multiplier`). With
/// [`WORN_HAZARD`] this keeps about 5% of the fleet worn at any time.
pub const WEAR_ONSET_PER_GPU_YEAR: f64 = 0.06;
/// Hard-failure hazard of a worn GPU, relative to the fleet-average rates.
pub const WORN_HAZARD: f64 = 16.0;
/// Hard-failure hazard of a sound GPU: the rest of the fleet-average rate, so the fleet's
/// total hard-failure rate stays about what [`default_rate_per_gpu_year`] says.
pub const SOUND_HAZARD: f64 = 0.21;

/// The hard failures (a GPU's useful life ends) that wear-out makes likelier.
pub const fn is_hard(kind: FaultKind) -> bool {
    matches!(
        kind,
        FaultKind::EccDbe | FaultKind::RowRemapFailure | FaultKind::FallenOffBus
    )
}

/// One GPU's wear state.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Wear {
    /// Chronic error scale once worn (median 1), 0 while sound.
    pub worn: f64,
    /// Correctable errors per hour every board shows (log-normal, median 0.05/h, wide):
    /// some sound boards are noisy, so a trickle of SBEs is evidence, not proof.
    pub baseline_sbe_per_h: f64,
    /// Hard failures so far (see [`repair_ms`]).
    pub hard_failures: u32,
}

/// A fresh board's wear state.
pub fn new_wear(rng: &mut ChaCha8Rng) -> Wear {
    Wear {
        worn: 0.0,
        baseline_sbe_per_h: log_normal(rng, 0.05, 1.5),
        hard_failures: 0,
    }
}

/// The board starts wearing out.
pub fn begin_wear(w: &mut Wear, rng: &mut ChaCha8Rng) {
    w.worn = log_normal(rng, 1.0, 0.6);
}

/// Hazard multiplier of hard failures for this board.
pub fn wear_hazard(w: &Wear) -> f64 {
    if w.worn > 0.0 {
        WORN_HAZARD * w.worn.sqrt()
    } else {
        SOUND_HAZARD
    }
}

/// Advances the chronic signals by `dt_ms`: a worn board leaks ~1.5 SBE/h, an odd
/// retired page and PCIe replays (~2/h) on top of its baseline.
pub fn tick_wear(w: &Wear, c: &mut ErrorCounters, dt_ms: i64, rng: &mut ChaCha8Rng) {
    let h = dt_ms as f64 / 3_600_000.0;
    let n = poisson(rng, (w.baseline_sbe_per_h + 1.5 * w.worn) * h);
    c.sbe_vol += n;
    c.sbe_agg += n;
    if w.worn > 0.0 {
        c.retired_sbe += poisson(rng, 0.01 * w.worn * h);
        c.pcie_replay += poisson(rng, 2.0 * w.worn * h);
    }
}

// ---------------------------------------------------------------------------------------
// Repairs (opt-in with wear-out). A hard failure ends a GPU's useful life *until someone
// acts*: after a double-bit error the GPU is reset (the app died, the row is remapped at
// the reset), after falling off the bus the node is rebooted or the board reseated. The
// board then goes back into service, its wear unchanged, and may fail again: Titan saw
// 91 DBEs in 21 months on 18,688 K20X boards, a quarter of them on 6 boards (GTC 2015).
// Operators stop putting a board back after repeated failures (RMA), and a failed row
// remap (no spare rows left) is an RMA at once.
// ---------------------------------------------------------------------------------------

/// The hard failure that sends a board to RMA instead of back into service: the second
/// (two strikes, as the XID catalog's note for XID 79 has it: "if it falls off again,
/// inspect the board").
pub const RMA_AT_HARD_FAILURE: u32 = 2;

/// How long a hard failure keeps the GPU out of service before it is back, or `None`
/// when it does not come back (RMA). `previous` is how many hard failures the board had
/// before this one.
pub fn repair_ms(kind: FaultKind, previous: u32, rng: &mut ChaCha8Rng) -> Option<i64> {
    match kind {
        FaultKind::EccDbe | FaultKind::FallenOffBus if previous + 1 < RMA_AT_HARD_FAILURE => {
            // A reset or reboot once someone (or automation) drains the node: 1–24 h.
            Some(log_uniform(rng, HOUR as f64, 24.0 * HOUR as f64) as i64)
        }
        _ => None,
    }
}
