//! One simulated GPU: identity, physical state (clocks, power, temperatures), counters,
//! and the physics step that turns workload activity and fault effects into readings.

use crate::faults::{ActiveFault, Effects, ErrorCounters};
use crate::models::GpuModel;
use crate::workload::{Activity, WorkloadDyn};
use gpuwarden_model::GpuUuid;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// Clock-event (throttle) reason bits, as NVML / DCGM define them.
pub mod reasons {
    pub const GPU_IDLE: u64 = 0x1;
    pub const SW_POWER_CAP: u64 = 0x4;
    pub const HW_SLOWDOWN: u64 = 0x8;
    pub const SW_THERMAL: u64 = 0x20;
    pub const HW_THERMAL: u64 = 0x40;
    pub const HW_POWER_BRAKE: u64 = 0x80;
}

/// Die temperature time constant: a loaded heatsink settles in a few minutes.
const TAU_GPU_S: f64 = 45.0;
/// HBM sits under the same cold plate but lags the die.
const TAU_MEM_S: f64 = 120.0;
/// Extra die temperature of a busy GPU over the linear power model, °C.
const BUSY_OFFSET_C: f64 = 6.0;

/// A simulated GPU.
#[derive(Debug, Clone)]
pub struct GpuSim {
    pub uuid: GpuUuid,
    pub node: usize,
    pub index: u32,
    pub model: GpuModel,
    pub pci_bus_id: String,
    /// Inlet air / coolant temperature at this slot, °C.
    pub ambient_c: f64,
    pub job: Option<u64>,
    pub dyn_state: WorkloadDyn,
    pub faults: Vec<ActiveFault>,
    /// The label set as rendered (`gpu="0",UUID=…`), rebuilt when the job changes so
    /// that rendering does not format it again for every field.
    pub label_text: String,

    pub act: Activity,
    pub sm_clock_mhz: f64,
    pub mem_clock_mhz: f64,
    pub gpu_temp_c: f64,
    pub mem_temp_c: f64,
    pub power_w: f64,
    pub reasons: u64,
    pub fb_used_mib: u64,

    pub energy_mj: f64,
    pub power_violation_ns: u64,
    pub thermal_violation_ns: u64,
    pub pcie_tx_kb: f64,
    pub pcie_rx_kb: f64,
    pub nvlink_total_mib: f64,
    pub errors: ErrorCounters,
}

impl GpuSim {
    pub fn new(uuid: GpuUuid, node: usize, index: u32, model: GpuModel, pci_bus_id: String, ambient_c: f64) -> Self {
        let spec = model.spec();
        let idle_temp = ambient_c + spec.thermal_r_c_per_w * spec.idle_w;
        GpuSim {
            uuid,
            node,
            index,
            model,
            pci_bus_id,
            ambient_c,
            job: None,
            dyn_state: WorkloadDyn::default(),
            faults: Vec::new(),
            label_text: String::new(),
            act: Activity::default(),
            sm_clock_mhz: spec.idle_sm_mhz as f64,
            mem_clock_mhz: spec.max_mem_mhz as f64,
            gpu_temp_c: idle_temp,
            mem_temp_c: spec
                .mem_temp
                .map(|(o, r)| ambient_c + o + r * spec.idle_w)
                .unwrap_or(0.0),
            power_w: spec.idle_w,
            reasons: reasons::GPU_IDLE,
            fb_used_mib: 0,
            energy_mj: 0.0,
            power_violation_ns: 0,
            thermal_violation_ns: 0,
            pcie_tx_kb: 0.0,
            pcie_rx_kb: 0.0,
            nvlink_total_mib: 0.0,
            errors: ErrorCounters::default(),
        }
    }

    /// True while the GPU is on the bus (in its node's scrape).
    pub fn present(&self) -> bool {
        !self.errors.off_bus
    }

    /// Steady-state die temperature at `power_w`.
    pub fn equilibrium_temp(&self, power_w: f64) -> f64 {
        self.ambient_c + self.model.spec().thermal_r_c_per_w * power_w
    }

    /// One physics tick: clocks, power limit, temperatures, counters.
    pub fn step(&mut self, mut act: Activity, fx: &Effects, dt_ms: i64, rng: &mut ChaCha8Rng) {
        let spec = self.model.spec();
        let dt = dt_ms as f64 / 1000.0;
        let dt_ns = dt_ms as u64 * 1_000_000;
        let n: f64 = rng.sample(StandardNormal);
        let mut bits = 0u64;

        act.sm_active *= fx.sm_factor;
        act.sm_occupancy *= fx.sm_factor;
        // Clock as a fraction of max: boost when busy, idle clock otherwise.
        let idle_clk = spec.idle_sm_mhz as f64 / spec.max_sm_mhz as f64;
        let mut clk = if act.busy { 1.0 } else { idle_clk };
        if !act.busy {
            bits |= reasons::GPU_IDLE;
        }
        clk *= fx.clock_factor;
        // Thermal protection acts on the temperature reached so far.
        let thermal = self.gpu_temp_c >= spec.max_op_temp_c as f64;
        if thermal {
            bits |= reasons::SW_THERMAL;
            clk *= 0.85;
        }
        if self.gpu_temp_c >= spec.slowdown_temp_c as f64 {
            bits |= reasons::HW_SLOWDOWN | reasons::HW_THERMAL;
            clk *= 0.6;
        }
        if fx.power_brake {
            bits |= reasons::HW_POWER_BRAKE | reasons::HW_SLOWDOWN;
            clk = clk.min(0.3);
        }

        // Board power: static idle draw plus a dynamic part that follows activity and
        // scales with clock (f·V², V tracking f: roughly clock^1.3 over the DVFS range).
        let limit = spec.tdp_w;
        let busy_clk = if act.busy { clk } else { 0.0 };
        // Power follows the math pipes far more than SM occupancy: AcmeTrace's A100s
        // show a median SM_ACTIVE of 33–50% at a median draw of only ~100 W.
        let load = 0.35 * act.sm_active
            + 0.8 * act.tensor
            + 0.6 * act.fp64
            + 0.2 * act.dram
            + if act.busy { 0.04 } else { 0.0 };
        let mut p = match act.power_frac {
            Some(f) => limit * f * busy_clk.max(0.3).powf(1.3),
            None => spec.idle_w + (limit - spec.idle_w) * load * busy_clk.powf(1.3),
        };
        p *= 1.0 + 0.012 * n;
        p = p.max(spec.idle_w * 0.9);
        if p > limit {
            // SW power cap: the driver lowers clocks until draw fits the limit.
            bits |= reasons::SW_POWER_CAP;
            clk *= (limit / p).powf(1.0 / 1.3);
            p = limit * (0.99 + 0.005 * n);
            self.power_violation_ns += dt_ns;
        }
        if fx.power_brake {
            self.power_violation_ns += dt_ns;
        }
        if bits & (reasons::SW_THERMAL | reasons::HW_THERMAL) != 0 {
            self.thermal_violation_ns += dt_ns;
        }

        // First-order thermal lag towards ambient + R·P.
        // A busy die runs hotter than its average power says (hot spots, leakage at
        // boost voltage); without this, AcmeTrace's 39-40 °C median at ~100 W is
        // out of reach of a linear model that also fits its idle and full-load ends.
        let busy_offset = if act.busy { BUSY_OFFSET_C } else { 0.0 };
        let mut target = self.equilibrium_temp(p) + busy_offset;
        if fx.thermal_runaway {
            // Cooling has failed (pump, fan, cold plate): the die heads past slowdown
            // whatever it draws, and throttling holds it just below shutdown.
            target = target.max(spec.slowdown_temp_c as f64 + 2.4);
        }
        self.gpu_temp_c += (target - self.gpu_temp_c) * (1.0 - (-dt / TAU_GPU_S).exp());
        if let Some((off, r)) = spec.mem_temp {
            let mut mt = self.ambient_c + off + r * p + busy_offset / 2.0;
            if fx.thermal_runaway {
                mt += 15.0;
            }
            self.mem_temp_c += (mt - self.mem_temp_c) * (1.0 - (-dt / TAU_MEM_S).exp());
        }

        self.sm_clock_mhz = (spec.max_sm_mhz as f64 * clk).max(spec.idle_sm_mhz as f64 * 0.5);
        self.mem_clock_mhz = spec.max_mem_mhz as f64;
        self.power_w = p;
        self.reasons = bits;
        self.fb_used_mib = ((spec.fb_total_mib - spec.fb_reserved_mib) as f64 * act.fb_frac) as u64;
        self.energy_mj += p * dt * 1000.0;
        self.pcie_tx_kb += act.pcie_tx_bps * dt / 1000.0;
        self.pcie_rx_kb += act.pcie_rx_bps * dt / 1000.0;
        self.nvlink_total_mib += (act.nvlink_tx_bps + act.nvlink_rx_bps) * dt / 1_048_576.0;
        self.act = act;
    }
}
