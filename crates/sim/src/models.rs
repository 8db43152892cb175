//! GPU models the simulator can field, with their real limits.
//!
//! Figures come from NVIDIA data sheets and `nvidia-smi -q` of the boards (TDP, clocks,
//! memory) and from the nvidia_gpu_exporter captures of H100 / H200 / L40S (memory
//! totals, max clocks, idle power). `docs/simulator.md` lists them with their sources.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A simulated GPU board. The serde names are the ones `SimConfig::model_mix` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GpuModel {
    /// NVIDIA A100-SXM4-80GB, 400 W.
    #[serde(rename = "a100-sxm4-80gb")]
    A100Sxm4,
    /// NVIDIA H100 80GB HBM3 (SXM5), 700 W.
    #[serde(rename = "h100-sxm5-80gb")]
    H100Sxm5,
    /// NVIDIA H200 (SXM, 141 GB HBM3e), 700 W.
    #[serde(rename = "h200-sxm-141gb")]
    H200Sxm,
    /// NVIDIA L40S (PCIe, no NVLink), 350 W.
    #[serde(rename = "l40s")]
    L40s,
}

/// Static limits of a model: what the exporter reports as limits and what the
/// workload model scales to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelSpec {
    /// `modelName` label exactly as dcgm-exporter prints it.
    pub model_name: &'static str,
    /// Default power limit (TDP), W: `DCGM_FI_DEV_POWER_MGMT_LIMIT`.
    pub tdp_w: f64,
    /// Typical idle draw with persistence mode on, W.
    pub idle_w: f64,
    /// Max SM (boost) clock, MHz.
    pub max_sm_mhz: u32,
    /// SM clock when idle, MHz.
    pub idle_sm_mhz: u32,
    /// Max (and, with persistence mode, steady) memory clock, MHz.
    pub max_mem_mhz: u32,
    /// Framebuffer size, MiB (`DCGM_FI_DEV_FB_TOTAL`).
    pub fb_total_mib: u64,
    /// Framebuffer reserved by the driver, MiB.
    pub fb_reserved_mib: u64,
    /// `DCGM_FI_DEV_SLOWDOWN_TEMP`, °C: HW slowdown starts here.
    pub slowdown_temp_c: u32,
    /// `DCGM_FI_DEV_SHUTDOWN_TEMP`, °C.
    pub shutdown_temp_c: u32,
    /// GPU max operating temperature, °C: SW thermal slowdown starts here.
    pub max_op_temp_c: u32,
    /// NVLink links (0 = none, and the NVLink fields are then not exported).
    pub nvlink_links: u32,
    /// Per-direction NVLink bandwidth, bytes/s (all links together).
    pub nvlink_bytes_per_s: f64,
    /// PCIe generation and per-direction bandwidth, bytes/s.
    pub pcie_gen: u32,
    pub pcie_bytes_per_s: f64,
    /// Steady-state thermal resistance from board power to die temperature, °C/W.
    /// Chosen so that idle and full-load temperatures match real captures.
    pub thermal_r_c_per_w: f64,
    /// Memory temperature = ambient + offset + r × power. `None`: the board reports no
    /// memory temperature (GDDR boards), so the field is not exported.
    pub mem_temp: Option<(f64, f64)>,
}

impl GpuModel {
    pub const ALL: &'static [GpuModel] = &[
        GpuModel::A100Sxm4,
        GpuModel::H100Sxm5,
        GpuModel::H200Sxm,
        GpuModel::L40s,
    ];

    /// Short kebab-case name (the serde name).
    pub const fn as_str(self) -> &'static str {
        match self {
            GpuModel::A100Sxm4 => "a100-sxm4-80gb",
            GpuModel::H100Sxm5 => "h100-sxm5-80gb",
            GpuModel::H200Sxm => "h200-sxm-141gb",
            GpuModel::L40s => "l40s",
        }
    }

    pub const fn spec(self) -> &'static ModelSpec {
        match self {
            GpuModel::A100Sxm4 => &A100,
            GpuModel::H100Sxm5 => &H100,
            GpuModel::H200Sxm => &H200,
            GpuModel::L40s => &L40S,
        }
    }
}

impl fmt::Display for GpuModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const GB: f64 = 1e9;

static A100: ModelSpec = ModelSpec {
    model_name: "NVIDIA A100-SXM4-80GB",
    tdp_w: 400.0,
    idle_w: 62.0,
    max_sm_mhz: 1410,
    idle_sm_mhz: 210,
    max_mem_mhz: 1593,
    fb_total_mib: 81920,
    fb_reserved_mib: 563,
    slowdown_temp_c: 89,
    shutdown_temp_c: 92,
    max_op_temp_c: 85,
    nvlink_links: 12,
    nvlink_bytes_per_s: 300.0 * GB,
    pcie_gen: 4,
    pcie_bytes_per_s: 32.0 * GB,
    thermal_r_c_per_w: 0.085,
    mem_temp: Some((18.0, 0.065)),
};

static H100: ModelSpec = ModelSpec {
    model_name: "NVIDIA H100 80GB HBM3",
    tdp_w: 700.0,
    idle_w: 70.0,
    max_sm_mhz: 1980,
    idle_sm_mhz: 345,
    max_mem_mhz: 2619,
    fb_total_mib: 81559,
    fb_reserved_mib: 590,
    slowdown_temp_c: 90,
    shutdown_temp_c: 92,
    max_op_temp_c: 87,
    nvlink_links: 18,
    nvlink_bytes_per_s: 450.0 * GB,
    pcie_gen: 5,
    pcie_bytes_per_s: 64.0 * GB,
    thermal_r_c_per_w: 0.055,
    mem_temp: Some((8.0, 0.035)),
};

static H200: ModelSpec = ModelSpec {
    model_name: "NVIDIA H200",
    tdp_w: 700.0,
    idle_w: 78.0,
    max_sm_mhz: 1980,
    idle_sm_mhz: 345,
    max_mem_mhz: 3201,
    fb_total_mib: 143771,
    fb_reserved_mib: 640,
    slowdown_temp_c: 90,
    shutdown_temp_c: 92,
    max_op_temp_c: 87,
    nvlink_links: 18,
    nvlink_bytes_per_s: 450.0 * GB,
    pcie_gen: 5,
    pcie_bytes_per_s: 64.0 * GB,
    thermal_r_c_per_w: 0.050,
    mem_temp: Some((5.0, 0.025)),
};

static L40S: ModelSpec = ModelSpec {
    model_name: "NVIDIA L40S",
    tdp_w: 350.0,
    idle_w: 36.0,
    max_sm_mhz: 2520,
    idle_sm_mhz: 210,
    max_mem_mhz: 9001,
    fb_total_mib: 46068,
    fb_reserved_mib: 475,
    slowdown_temp_c: 92,
    shutdown_temp_c: 95,
    max_op_temp_c: 89,
    nvlink_links: 0,
    nvlink_bytes_per_s: 0.0,
    pcie_gen: 4,
    pcie_bytes_per_s: 32.0 * GB,
    thermal_r_c_per_w: 0.11,
    mem_temp: None,
};

/// The share of nodes of each model in a fleet.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelShare {
    pub model: GpuModel,
    pub weight: f64,
}

/// Picks the model of each node: whole nodes are homogeneous, as real servers are, and
/// node `i` gets the model at quantile `(i + 0.5) / nodes` of the cumulative weights, so
/// the split is exact and does not depend on the seed.
pub fn node_models(mix: &[ModelShare], nodes: usize) -> Vec<GpuModel> {
    let total: f64 = mix.iter().filter(|s| s.weight > 0.0).map(|s| s.weight).sum();
    (0..nodes)
        .map(|i| {
            if total <= 0.0 || !total.is_finite() {
                return GpuModel::A100Sxm4;
            }
            let q = (i as f64 + 0.5) / nodes as f64 * total;
            let mut acc = 0.0;
            for s in mix.iter().filter(|s| s.weight > 0.0) {
                acc += s.weight;
                if q < acc {
                    return s.model;
                }
            }
            mix.iter()
                .rev()
                .find(|s| s.weight > 0.0)
                .map(|s| s.model)
                .unwrap_or(GpuModel::A100Sxm4)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_mix_gives_each_model_a_node() {
        let mix: Vec<_> = GpuModel::ALL
            .iter()
            .map(|&model| ModelShare { model, weight: 1.0 })
            .collect();
        assert_eq!(node_models(&mix, 4), GpuModel::ALL.to_vec());
    }

    #[test]
    fn empty_mix_falls_back_to_a100() {
        assert_eq!(node_models(&[], 2), vec![GpuModel::A100Sxm4; 2]);
    }
}
