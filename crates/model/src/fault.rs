//! Fault and abuse kinds the simulator can inject, and the ground-truth labels it records
//! so that detectors can be scored.

use crate::gpu::GpuUuid;
use crate::time::TimestampMs;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A fault or abuse scenario. The kebab-case names are a public API
/// (`POST /api/v1/simulation/faults`, `--inject`): they stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// Single-bit ECC storm leading to a double-bit error (XID 48), then row remapping.
    EccDbe,
    /// Row remapping fails (XID 64, `ROW_REMAP_FAILURE` = 1).
    RowRemapFailure,
    /// XID 79: the GPU falls off the bus and vanishes from its node's scrape.
    FallenOffBus,
    /// Application XIDs 13 / 31 / 43.
    AppXid,
    /// Thermal runaway with HW slowdown / thermal clock events.
    Thermal,
    /// External power brake (HW power brake slowdown).
    PowerBrake,
    /// NVLink CRC / replay / recovery errors rising.
    NvlinkErrors,
    /// PCIe replay storm.
    PcieReplay,
    /// A GPU with low clocks among healthy peers.
    Straggler,
    /// A cryptominer: steady full activity, flat power, no PCIe/NVLink traffic.
    Miner,
    /// A miner throttled to ~50% duty cycle to hide.
    MinerThrottled,
    /// GPU used by a Kubernetes namespace that is not approved.
    UnapprovedNamespace,
    /// A miner started inside a running job's pod: the GPU keeps the job's workload
    /// labels while its telemetry turns into a hashing loop. Only injected on purpose
    /// (no random rate), on a GPU that runs a job.
    MinerInJob,
}

impl FaultKind {
    pub const ALL: &'static [FaultKind] = &[
        FaultKind::EccDbe,
        FaultKind::RowRemapFailure,
        FaultKind::FallenOffBus,
        FaultKind::AppXid,
        FaultKind::Thermal,
        FaultKind::PowerBrake,
        FaultKind::NvlinkErrors,
        FaultKind::PcieReplay,
        FaultKind::Straggler,
        FaultKind::Miner,
        FaultKind::MinerThrottled,
        FaultKind::UnapprovedNamespace,
        FaultKind::MinerInJob,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            FaultKind::EccDbe => "ecc-dbe",
            FaultKind::RowRemapFailure => "row-remap-failure",
            FaultKind::FallenOffBus => "fallen-off-bus",
            FaultKind::AppXid => "app-xid",
            FaultKind::Thermal => "thermal",
            FaultKind::PowerBrake => "power-brake",
            FaultKind::NvlinkErrors => "nvlink-errors",
            FaultKind::PcieReplay => "pcie-replay",
            FaultKind::Straggler => "straggler",
            FaultKind::Miner => "miner",
            FaultKind::MinerThrottled => "miner-throttled",
            FaultKind::UnapprovedNamespace => "unapproved-namespace",
            FaultKind::MinerInJob => "miner-in-job",
        }
    }

    /// True for faults of the GPU's hardware (as opposed to software or abuse).
    pub const fn is_hardware(self) -> bool {
        matches!(
            self,
            FaultKind::EccDbe
                | FaultKind::RowRemapFailure
                | FaultKind::FallenOffBus
                | FaultKind::Thermal
                | FaultKind::PowerBrake
                | FaultKind::NvlinkErrors
                | FaultKind::PcieReplay
                | FaultKind::Straggler
        )
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a fault name that is not one of [`FaultKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown fault kind '{0}': expected one of ecc-dbe, row-remap-failure, fallen-off-bus, app-xid, thermal, power-brake, nvlink-errors, pcie-replay, straggler, miner, miner-throttled, unapproved-namespace, miner-in-job")]
pub struct UnknownFaultKind(pub String);

impl FromStr for FaultKind {
    type Err = UnknownFaultKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FaultKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownFaultKind(s.to_string()))
    }
}

/// Ground truth: this fault was active on this GPU from `start_ms` until `end_ms`
/// (`None` while still active).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FaultLabel {
    pub gpu: GpuUuid,
    pub node: String,
    pub kind: FaultKind,
    pub start_ms: TimestampMs,
    pub end_ms: Option<TimestampMs>,
    /// True when injected on demand, false when drawn at random by the fault model.
    pub injected: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_names_round_trip_and_match_serde() {
        for k in FaultKind::ALL {
            assert_eq!(k.as_str().parse::<FaultKind>().unwrap(), *k);
            assert_eq!(serde_json::to_string(k).unwrap(), format!("\"{}\"", k.as_str()));
        }
        assert!("melted".parse::<FaultKind>().is_err());
    }
}
