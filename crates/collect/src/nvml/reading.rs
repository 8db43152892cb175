//! One GPU's NVML readings in NVML's own units, and their mapping to the model.
//!
//! This struct is also the fixture format (`testdata/nvml/*.json`), so a recorded or
//! hand-made reading goes through exactly the mapping a live GPU does. Every field is
//! optional: `None` means "not supported or not readable", and it maps to an absent
//! value, never 0.
//!
//! Units follow dcgm-exporter (which reads the same NVML calls): W not mW, MiB not bytes,
//! so a GPU looks the same whether its data came from the agent or from dcgm-exporter and
//! the health rules need one set of thresholds.

use gpuwarden_model::{DcgmField, FieldName, GpuIdentity, GpuSamples, GpuUuid, TimestampMs};
use serde::{Deserialize, Serialize};

/// Per-link NVLink state and error counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NvLinkReading {
    pub link: u32,
    pub active: Option<bool>,
    pub crc_flit_errors: Option<u64>,
    pub crc_data_errors: Option<u64>,
    pub replay_errors: Option<u64>,
    pub recovery_errors: Option<u64>,
}

/// Everything read from one GPU at one time. Field comments name the NVML call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceReading {
    /// `nvmlDeviceGetUUID`; the only required field.
    pub uuid: String,
    /// `nvmlDeviceGetIndex`.
    pub index: Option<u32>,
    /// `nvmlDeviceGetName`.
    pub name: Option<String>,
    /// `nvmlDeviceGetPciInfo().busId` (`00000000:3B:00.0`).
    pub pci_bus_id: Option<String>,
    /// `nvmlDeviceGetMinorNumber` → `nvidia<N>`.
    pub minor_number: Option<u32>,
    pub serial: Option<String>,
    pub board_part_number: Option<String>,
    pub vbios_version: Option<String>,
    /// `nvmlSystemGetDriverVersion`.
    pub driver_version: Option<String>,

    /// `nvmlDeviceGetUtilizationRates` (%).
    pub utilization_gpu: Option<u32>,
    pub utilization_memory: Option<u32>,
    /// `nvmlDeviceGetEncoderUtilization` / `DecoderUtilization` (%).
    pub utilization_encoder: Option<u32>,
    pub utilization_decoder: Option<u32>,
    /// `nvmlDeviceGetMemoryInfo_v2` (bytes).
    pub memory_total_bytes: Option<u64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_free_bytes: Option<u64>,
    pub memory_reserved_bytes: Option<u64>,

    /// `nvmlDeviceGetTemperature(GPU)` (°C).
    pub temperature_gpu: Option<u32>,
    /// Memory (HBM) temperature, `NVML_FI_DEV_MEMORY_TEMP` (°C).
    pub temperature_memory: Option<u32>,
    /// `nvmlDeviceGetTemperatureThreshold` (°C).
    pub temperature_slowdown: Option<u32>,
    pub temperature_shutdown: Option<u32>,
    pub temperature_gpu_max: Option<u32>,
    /// `nvmlDeviceGetFanSpeed(0)` (%); datacenter boards have none.
    pub fan_speed: Option<u32>,

    /// `nvmlDeviceGetPowerUsage` (mW).
    pub power_usage_mw: Option<u32>,
    /// `nvmlDeviceGetPowerManagementLimit` (mW).
    pub power_limit_mw: Option<u32>,
    /// `nvmlDeviceGetEnforcedPowerLimit` (mW).
    pub enforced_power_limit_mw: Option<u32>,
    /// `nvmlDeviceGetTotalEnergyConsumption` (mJ since driver load).
    pub total_energy_mj: Option<u64>,
    /// `nvmlDeviceGetPerformanceState` (0 = P0).
    pub pstate: Option<u32>,

    /// `nvmlDeviceGetClockInfo` / `GetMaxClockInfo` (MHz).
    pub clock_sm_mhz: Option<u32>,
    pub clock_mem_mhz: Option<u32>,
    pub max_clock_sm_mhz: Option<u32>,
    pub max_clock_mem_mhz: Option<u32>,
    /// `nvmlDeviceGetCurrentClocksEventReasons` bitmask (same bits as DCGM's).
    pub clocks_event_reasons: Option<u64>,

    /// `nvmlDeviceGetTotalEccErrors` (corrected = SBE, uncorrected = DBE).
    pub ecc_sbe_volatile: Option<u64>,
    pub ecc_dbe_volatile: Option<u64>,
    pub ecc_sbe_aggregate: Option<u64>,
    pub ecc_dbe_aggregate: Option<u64>,
    /// `nvmlDeviceGetRetiredPages` counts per cause, and `GetRetiredPagesPendingStatus`.
    /// Not supported on Hopper (row remapping replaced page retirement): `None` there.
    pub retired_pages_sbe: Option<u64>,
    pub retired_pages_dbe: Option<u64>,
    pub retired_pages_pending: Option<bool>,
    /// `nvmlDeviceGetRemappedRows` (Ampere and later).
    pub remapped_rows_correctable: Option<u64>,
    pub remapped_rows_uncorrectable: Option<u64>,
    pub remapped_rows_pending: Option<bool>,
    pub remapped_rows_failure: Option<bool>,

    /// `nvmlDeviceGetPcieReplayCounter`.
    pub pcie_replay_count: Option<u64>,
    /// `nvmlDeviceGetPcieThroughput(TX/RX)` (KB/s over the last 20 ms).
    pub pcie_tx_kbps: Option<u32>,
    pub pcie_rx_kbps: Option<u32>,
    pub pcie_link_gen: Option<u32>,
    pub pcie_link_width: Option<u32>,
    /// `nvmlDeviceGetNvLinkState` and `GetNvLinkErrorCounter`, per link.
    pub nvlinks: Vec<NvLinkReading>,

    /// `nvmlDeviceGetPersistenceMode`.
    pub persistence_mode: Option<bool>,
    /// `nvmlDeviceGetEccMode` (current).
    pub ecc_mode: Option<bool>,
    /// `nvmlDeviceGetMigMode` (current).
    pub mig_mode: Option<bool>,
    /// `nvmlDeviceGetComputeMode` (0 default, 2 exclusive-process, 3 prohibited).
    pub compute_mode: Option<u32>,
}

/// Active NVLink links (no DCGM field carries link state, so this is our own name).
pub const NVLINK_ACTIVE_FIELD: &str = "gpuwarden_nvlink_links_active";
/// NVLink links the GPU reported at all.
pub const NVLINK_LINKS_FIELD: &str = "gpuwarden_nvlink_links";

const MIB: f64 = 1024.0 * 1024.0;

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// Sum of a per-link counter, `None` unless at least one link reported it.
fn link_sum(links: &[NvLinkReading], get: impl Fn(&NvLinkReading) -> Option<u64>) -> Option<f64> {
    links
        .iter()
        .filter_map(get)
        .fold(None, |acc, v| Some(acc.unwrap_or(0.0) + v as f64))
}

impl DeviceReading {
    /// The GPU's identity on `node`. Serial, board part number and VBIOS go to
    /// `extra_labels` (the model has no typed field for them, as with dcgm-exporter labels).
    pub fn identity(&self, node: &str) -> GpuIdentity {
        let mut id = GpuIdentity::new(GpuUuid::new(&self.uuid), node);
        id.index = self.index;
        id.model = self.name.clone();
        id.pci_bus_id = self.pci_bus_id.clone();
        id.device = self.minor_number.map(|n| format!("nvidia{n}"));
        id.driver_version = self.driver_version.clone();
        for (label, value) in [
            ("serial", &self.serial),
            ("board_part_number", &self.board_part_number),
            ("vbios_version", &self.vbios_version),
        ] {
            if let Some(v) = value.as_ref().filter(|v| !v.is_empty()) {
                id.extra_labels.insert(label.to_owned(), v.clone());
            }
        }
        id
    }

    /// The typed values at `ts_ms`, in dcgm-exporter's names and units.
    pub fn row(&self, ts_ms: TimestampMs) -> GpuSamples {
        use DcgmField as F;
        let u32f = |v: Option<u32>| v.map(f64::from);
        let u64f = |v: Option<u64>| v.map(|v| v as f64);
        let mib = |v: Option<u64>| v.map(|b| (b as f64 / MIB).floor());
        let watts = |v: Option<u32>| v.map(|mw| f64::from(mw) / 1000.0);
        let fields: [(F, Option<f64>); 48] = [
            (F::GpuUtil, u32f(self.utilization_gpu)),
            (F::MemCopyUtil, u32f(self.utilization_memory)),
            (F::EncUtil, u32f(self.utilization_encoder)),
            (F::DecUtil, u32f(self.utilization_decoder)),
            (F::FbTotal, mib(self.memory_total_bytes)),
            (F::FbUsed, mib(self.memory_used_bytes)),
            (F::FbFree, mib(self.memory_free_bytes)),
            (F::FbReserved, mib(self.memory_reserved_bytes)),
            (
                F::FbUsedPercent,
                match (self.memory_used_bytes, self.memory_total_bytes) {
                    (Some(u), Some(t)) if t > 0 => Some(u as f64 / t as f64),
                    _ => None,
                },
            ),
            (F::GpuTemp, u32f(self.temperature_gpu)),
            (F::MemoryTemp, u32f(self.temperature_memory)),
            (F::SlowdownTemp, u32f(self.temperature_slowdown)),
            (F::ShutdownTemp, u32f(self.temperature_shutdown)),
            (F::GpuMaxOpTemp, u32f(self.temperature_gpu_max)),
            (F::FanSpeed, u32f(self.fan_speed)),
            (F::PowerUsage, watts(self.power_usage_mw)),
            (F::PowerMgmtLimit, watts(self.power_limit_mw)),
            (F::EnforcedPowerLimit, watts(self.enforced_power_limit_mw)),
            (F::TotalEnergyConsumption, u64f(self.total_energy_mj)),
            (F::Pstate, u32f(self.pstate)),
            (F::SmClock, u32f(self.clock_sm_mhz)),
            (F::MemClock, u32f(self.clock_mem_mhz)),
            (F::MaxSmClock, u32f(self.max_clock_sm_mhz)),
            (F::MaxMemClock, u32f(self.max_clock_mem_mhz)),
            (F::ClockEventReasons, u64f(self.clocks_event_reasons)),
            (F::EccSbeVolTotal, u64f(self.ecc_sbe_volatile)),
            (F::EccDbeVolTotal, u64f(self.ecc_dbe_volatile)),
            (F::EccSbeAggTotal, u64f(self.ecc_sbe_aggregate)),
            (F::EccDbeAggTotal, u64f(self.ecc_dbe_aggregate)),
            (F::RetiredSbe, u64f(self.retired_pages_sbe)),
            (F::RetiredDbe, u64f(self.retired_pages_dbe)),
            (F::RetiredPending, self.retired_pages_pending.map(flag)),
            (F::CorrectableRemappedRows, u64f(self.remapped_rows_correctable)),
            (F::UncorrectableRemappedRows, u64f(self.remapped_rows_uncorrectable)),
            (F::RowRemapPending, self.remapped_rows_pending.map(flag)),
            (F::RowRemapFailure, self.remapped_rows_failure.map(flag)),
            (F::PcieReplayCounter, u64f(self.pcie_replay_count)),
            (F::PcieTxThroughput, u32f(self.pcie_tx_kbps)),
            (F::PcieRxThroughput, u32f(self.pcie_rx_kbps)),
            (F::PcieLinkGen, u32f(self.pcie_link_gen)),
            (F::PcieLinkWidth, u32f(self.pcie_link_width)),
            (
                F::NvlinkCrcFlitErrorCountTotal,
                link_sum(&self.nvlinks, |l| l.crc_flit_errors),
            ),
            (
                F::NvlinkCrcDataErrorCountTotal,
                link_sum(&self.nvlinks, |l| l.crc_data_errors),
            ),
            (
                F::NvlinkReplayErrorCountTotal,
                link_sum(&self.nvlinks, |l| l.replay_errors),
            ),
            (
                F::NvlinkRecoveryErrorCountTotal,
                link_sum(&self.nvlinks, |l| l.recovery_errors),
            ),
            (F::PersistenceMode, self.persistence_mode.map(flag)),
            (F::EccCurrent, self.ecc_mode.map(flag)),
            (F::MigMode, self.mig_mode.map(flag)),
        ];
        let mut row = GpuSamples::new(GpuUuid::new(&self.uuid), ts_ms);
        row.values.extend(
            fields
                .into_iter()
                .filter_map(|(f, v)| v.filter(|v| v.is_finite()).map(|v| (FieldName::Dcgm(f), v))),
        );
        if let Some(mode) = self.compute_mode {
            row.values.push((F::ComputeMode.into(), f64::from(mode)));
        }
        if !self.nvlinks.is_empty() {
            let states: Vec<bool> = self.nvlinks.iter().filter_map(|l| l.active).collect();
            if !states.is_empty() {
                let active = states.iter().filter(|a| **a).count();
                row.values
                    .push((FieldName::Other(NVLINK_ACTIVE_FIELD.into()), active as f64));
                row.values
                    .push((FieldName::Other(NVLINK_LINKS_FIELD.into()), states.len() as f64));
            }
        }
        row
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_values_are_absent_not_zero() {
        let r = DeviceReading {
            uuid: "GPU-x".into(),
            temperature_gpu: Some(0),
            ..DeviceReading::default()
        };
        let row = r.row(5);
        assert_eq!(row.values, [(FieldName::Dcgm(DcgmField::GpuTemp), 0.0)]);
        let id = r.identity("n");
        assert!(id.model.is_none() && id.extra_labels.is_empty());
    }

    #[test]
    fn units_match_dcgm_exporter() {
        let r = DeviceReading {
            uuid: "GPU-x".into(),
            power_usage_mw: Some(588_390),
            memory_used_bytes: Some(19_818 * 1024 * 1024),
            memory_total_bytes: Some(81_559 * 1024 * 1024),
            nvlinks: vec![
                NvLinkReading {
                    link: 0,
                    active: Some(true),
                    crc_flit_errors: Some(2),
                    ..Default::default()
                },
                NvLinkReading {
                    link: 1,
                    active: Some(false),
                    crc_flit_errors: None,
                    ..Default::default()
                },
            ],
            ..DeviceReading::default()
        };
        let row = r.row(0);
        assert_eq!(row.get(&DcgmField::PowerUsage.into()), Some(588.39));
        assert_eq!(row.get(&DcgmField::FbUsed.into()), Some(19_818.0));
        assert_eq!(row.get(&DcgmField::NvlinkCrcFlitErrorCountTotal.into()), Some(2.0));
        assert_eq!(row.get(&DcgmField::NvlinkReplayErrorCountTotal.into()), None);
        assert_eq!(row.get(&FieldName::Other(NVLINK_ACTIVE_FIELD.into())), Some(1.0));
    }
}
