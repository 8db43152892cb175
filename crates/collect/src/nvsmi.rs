//! utkuozdemir/nvidia_gpu_exporter support: maps its `nvidia_smi_*` metrics onto the
//! typed DCGM fields, so a host without DCGM (a workstation, a Windows box, a Slurm node
//! with only the driver) feeds the same analyzers as a dcgm-exporter one.
//!
//! The exporter converts nvidia-smi units to Prometheus base units (`[MiB]` → `_bytes`,
//! `[MHz]` → `_hz`, `[%]` → `_ratio`, `[us]` → `_seconds`), so each mapping carries the
//! factor that converts back to the DCGM field's unit. Metrics without a DCGM
//! counterpart are kept under their own name ([`FieldName::Other`]), never dropped.
//!
//! Identity comes from `nvidia_smi_gpu_info{uuid, name, driver_version, pci_bus_id,
//! index, …}`; every other per-GPU series carries only `uuid`. The page builder lives in
//! [`crate::dcgm`], which dispatches here by the `nvidia_smi_` prefix.
//!
//! [`FieldName::Other`]: gpuwarden_model::FieldName::Other

use crate::prom::Label;
use gpuwarden_model::{DcgmField, GpuIdentity};

/// Prefix of every metric the exporter publishes.
pub const PREFIX: &str = "nvidia_smi_";
/// The info metric (value 1) whose labels describe the GPU.
pub const GPU_INFO: &str = "nvidia_smi_gpu_info";
/// The label that identifies the GPU on every per-GPU series. Note that the captures in
/// `testdata/exporters/` mask it as all zeros.
pub const UUID_LABEL: &str = "uuid";

const MIB: f64 = 1024.0 * 1024.0;
const MHZ: f64 = 1.0e6;

/// The typed field for an exporter metric and the factor that converts its value to the
/// field's unit, or `None` when the metric has no DCGM counterpart.
pub fn map_metric(name: &str) -> Option<(DcgmField, f64)> {
    use DcgmField::*;
    Some(match name {
        "nvidia_smi_temperature_gpu" => (GpuTemp, 1.0),
        "nvidia_smi_temperature_memory" => (MemoryTemp, 1.0),
        "nvidia_smi_fan_speed_ratio" => (FanSpeed, 100.0),
        "nvidia_smi_power_draw_watts" => (PowerUsage, 1.0),
        "nvidia_smi_power_limit_watts" => (PowerMgmtLimit, 1.0),
        "nvidia_smi_enforced_power_limit_watts" => (EnforcedPowerLimit, 1.0),
        "nvidia_smi_pstate" => (Pstate, 1.0),
        "nvidia_smi_utilization_gpu_ratio" => (GpuUtil, 100.0),
        "nvidia_smi_utilization_memory_ratio" => (MemCopyUtil, 100.0),
        "nvidia_smi_utilization_encoder_ratio" => (EncUtil, 100.0),
        "nvidia_smi_utilization_decoder_ratio" => (DecUtil, 100.0),
        "nvidia_smi_memory_used_bytes" => (FbUsed, 1.0 / MIB),
        "nvidia_smi_memory_free_bytes" => (FbFree, 1.0 / MIB),
        "nvidia_smi_memory_total_bytes" => (FbTotal, 1.0 / MIB),
        "nvidia_smi_memory_reserved_bytes" => (FbReserved, 1.0 / MIB),
        "nvidia_smi_clocks_current_sm_clock_hz" => (SmClock, 1.0 / MHZ),
        "nvidia_smi_clocks_current_memory_clock_hz" => (MemClock, 1.0 / MHZ),
        "nvidia_smi_clocks_max_sm_clock_hz" => (MaxSmClock, 1.0 / MHZ),
        "nvidia_smi_clocks_max_memory_clock_hz" => (MaxMemClock, 1.0 / MHZ),
        // nvidia-smi's `clocks_event_reasons.active` is the same NVML bitmask as DCGM's.
        "nvidia_smi_clocks_event_reasons_active" => (ClockEventReasons, 1.0),
        // Time spent in a clock-event reason: exporter seconds, DCGM nanoseconds.
        "nvidia_smi_clocks_event_reasons_counters_sw_power_cap_seconds" => (PowerViolation, 1.0e9),
        "nvidia_smi_clocks_event_reasons_counters_sync_boost_seconds" => (SyncBoostViolation, 1.0e9),
        // Corrected = single-bit (SBE), uncorrected = double-bit (DBE).
        "nvidia_smi_ecc_errors_corrected_volatile_total" => (EccSbeVolTotal, 1.0),
        "nvidia_smi_ecc_errors_uncorrected_volatile_total" => (EccDbeVolTotal, 1.0),
        "nvidia_smi_ecc_errors_corrected_aggregate_total" => (EccSbeAggTotal, 1.0),
        "nvidia_smi_ecc_errors_uncorrected_aggregate_total" => (EccDbeAggTotal, 1.0),
        "nvidia_smi_ecc_mode_current" => (EccCurrent, 1.0),
        "nvidia_smi_remapped_rows_correctable" => (CorrectableRemappedRows, 1.0),
        "nvidia_smi_remapped_rows_uncorrectable" => (UncorrectableRemappedRows, 1.0),
        "nvidia_smi_remapped_rows_failure" => (RowRemapFailure, 1.0),
        "nvidia_smi_remapped_rows_pending" => (RowRemapPending, 1.0),
        "nvidia_smi_retired_pages_single_bit_ecc_count" => (RetiredSbe, 1.0),
        "nvidia_smi_retired_pages_double_bit_count" => (RetiredDbe, 1.0),
        "nvidia_smi_retired_pages_pending" => (RetiredPending, 1.0),
        "nvidia_smi_pcie_link_gen_current" => (PcieLinkGen, 1.0),
        "nvidia_smi_pcie_link_width_current" => (PcieLinkWidth, 1.0),
        "nvidia_smi_persistence_mode" => (PersistenceMode, 1.0),
        "nvidia_smi_mig_mode_current" => (MigMode, 1.0),
        "nvidia_smi_compute_mode" => (ComputeMode, 1.0),
        _ => return None,
    })
}

/// Fills an identity from `nvidia_smi_gpu_info`'s labels. nvidia-smi prints `[N/A]` for
/// what it cannot read; that is treated as missing, like an empty value.
pub(crate) fn apply_gpu_info(identity: &mut GpuIdentity, labels: &[Label<'_>]) {
    for label in labels {
        let value = label.value.as_ref();
        if value.is_empty() || value == "[N/A]" {
            continue;
        }
        match label.name {
            UUID_LABEL => {}
            "name" => identity.model = Some(value.to_owned()),
            "driver_version" => identity.driver_version = Some(value.to_owned()),
            "pci_bus_id" => identity.pci_bus_id = Some(value.to_owned()),
            "index" => match value.parse() {
                Ok(index) => identity.index = Some(index),
                Err(_) => {
                    identity.extra_labels.insert("index".to_owned(), value.to_owned());
                }
            },
            other => {
                identity.extra_labels.insert(other.to_owned(), value.to_owned());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_become_percent_and_bytes_become_mib() {
        let (field, scale) = map_metric("nvidia_smi_utilization_gpu_ratio").unwrap();
        assert_eq!((field, 0.07 * scale), (DcgmField::GpuUtil, 7.000000000000001));
        let (field, scale) = map_metric("nvidia_smi_memory_used_bytes").unwrap();
        assert_eq!((field, 1.1665408e10 * scale), (DcgmField::FbUsed, 11125.0));
        let (field, scale) = map_metric("nvidia_smi_clocks_current_sm_clock_hz").unwrap();
        assert_eq!((field, 1.98e9 * scale), (DcgmField::SmClock, 1980.0));
        assert_eq!(map_metric("nvidia_smi_inforom_oem"), None);
    }
}
