//! Renders a node's page exactly as dcgm-exporter does: one `# HELP` / `# TYPE` pair per
//! family, then one line per GPU, `NAME{gpu="0",UUID=…,pci_bus_id=…,device=…,modelName=…,
//! Hostname=…,DCGM_FI_DRIVER_VERSION=…[,container=…,namespace=…,pod=…]} VALUE`.
//!
//! Integer DCGM fields print as integers and floating-point ones with Go's `%f` (six
//! decimals). Fields a board does not support (NVLink on an L40S, memory temperature on
//! GDDR) are left out, as dcgm-exporter skips blank values. Renders sit on the scrape
//! path, so everything is written with `fmt::Write` into the caller's `String` and the
//! per-GPU label set is pre-rendered.

use crate::fleet::{Fleet, DRIVER_VERSION};
use crate::gpu::GpuSim;
use gpuwarden_model::{DcgmField, TimestampMs, Workload};
use std::fmt::Write;

/// A value as DCGM types it: integer fields print as `%d`, doubles as `%f`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    pub fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

/// One exported family: field, Prometheus type and help text as in dcgm-exporter's
/// counter CSVs (`default-counters.csv`, `dcp-metrics-included.csv`).
pub struct Family {
    pub field: DcgmField,
    pub prom_type: &'static str,
    pub help: &'static str,
}

macro_rules! families {
    ($( $f:ident, $t:literal, $h:literal; )*) => {
        /// Every family the simulator exports, in dcgm-exporter's CSV order, then the
        /// extra fields (limits, remap pending, NVLink rates) at the end.
        pub static FAMILIES: &[Family] = &[ $( Family { field: DcgmField::$f, prom_type: $t, help: $h }, )* ];
    };
}

families! {
    SmClock, "gauge", "SM clock frequency (in MHz).";
    MemClock, "gauge", "Memory clock frequency (in MHz).";
    MemoryTemp, "gauge", "Memory temperature (in C).";
    GpuTemp, "gauge", "GPU temperature (in C).";
    PowerUsage, "gauge", "Power draw (in W).";
    TotalEnergyConsumption, "counter", "Total energy consumption since boot (in mJ).";
    PcieReplayCounter, "counter", "Total number of PCIe retries.";
    GpuUtil, "gauge", "GPU utilization (in %).";
    MemCopyUtil, "gauge", "Memory utilization (in %).";
    EncUtil, "gauge", "Encoder utilization (in %).";
    DecUtil, "gauge", "Decoder utilization (in %).";
    XidErrors, "gauge", "Value of the last XID error encountered.";
    PowerViolation, "counter", "Throttling duration due to power constraints (in ns).";
    ThermalViolation, "counter", "Throttling duration due to thermal constraints (in ns).";
    FbFree, "gauge", "Framebuffer memory free (in MiB).";
    FbUsed, "gauge", "Framebuffer memory used (in MiB).";
    FbReserved, "gauge", "Framebuffer memory reserved (in MiB).";
    EccSbeVolTotal, "counter", "Total number of single-bit volatile ECC errors.";
    EccDbeVolTotal, "counter", "Total number of double-bit volatile ECC errors.";
    EccSbeAggTotal, "counter", "Total number of single-bit persistent ECC errors.";
    EccDbeAggTotal, "counter", "Total number of double-bit persistent ECC errors.";
    RetiredSbe, "counter", "Total number of retired pages due to single-bit errors.";
    RetiredDbe, "counter", "Total number of retired pages due to double-bit errors.";
    RetiredPending, "counter", "Total number of pages pending retirement.";
    NvlinkCrcFlitErrorCountTotal, "counter", "Total number of NVLink flow-control CRC errors.";
    NvlinkCrcDataErrorCountTotal, "counter", "Total number of NVLink data CRC errors.";
    NvlinkReplayErrorCountTotal, "counter", "Total number of NVLink retries.";
    NvlinkRecoveryErrorCountTotal, "counter", "Total number of NVLink recovery errors.";
    NvlinkBandwidthTotal, "counter", "Total number of NVLink bandwidth counters for all lanes.";
    VgpuLicenseStatus, "gauge", "vGPU License status";
    UncorrectableRemappedRows, "counter", "Number of remapped rows for uncorrectable errors";
    CorrectableRemappedRows, "counter", "Number of remapped rows for correctable errors";
    RowRemapFailure, "gauge", "Whether remapping of rows has failed";
    RowRemapPending, "gauge", "Whether remapping of rows is pending a GPU reset";
    ProfGrEngineActive, "gauge", "Ratio of time the graphics engine is active.";
    ProfSmActive, "gauge", "The ratio of cycles an SM has at least 1 warp assigned.";
    ProfSmOccupancy, "gauge", "The ratio of number of warps resident on an SM.";
    ProfPipeTensorActive, "gauge", "Ratio of cycles the tensor (HMMA) pipe is active.";
    ProfDramActive, "gauge", "Ratio of cycles the device memory interface is active sending or receiving data.";
    ProfPipeFp64Active, "gauge", "Ratio of cycles the fp64 pipes are active.";
    ProfPipeFp32Active, "gauge", "Ratio of cycles the fp32 pipes are active.";
    ProfPipeFp16Active, "gauge", "Ratio of cycles the fp16 pipes are active.";
    ProfPcieTxBytes, "gauge", "The rate of data transmitted over the PCIe bus - including both protocol headers and data payloads - in bytes per second.";
    ProfPcieRxBytes, "gauge", "The rate of data received over the PCIe bus - including both protocol headers and data payloads - in bytes per second.";
    ProfNvlinkTxBytes, "gauge", "The rate of data transmitted over NVLink, not including protocol headers, in bytes per second.";
    ProfNvlinkRxBytes, "gauge", "The rate of data received over NVLink, not including protocol headers, in bytes per second.";
    ClockThrottleReasons, "gauge", "Current clock throttle reasons.";
    SlowdownTemp, "gauge", "Slowdown temperature for the device.";
    ShutdownTemp, "gauge", "Shutdown temperature for the device.";
    PowerMgmtLimit, "gauge", "Current power limit for the device.";
    PcieTxThroughput, "counter", "Total number of bytes transmitted through PCIe TX (in KB) via NVML.";
    PcieRxThroughput, "counter", "Total number of bytes received through PCIe RX (in KB) via NVML.";
}

/// The value `field` of `g` is exported with, or `None` when the board has no such
/// sensor (the line is then absent, as in dcgm-exporter).
pub fn field_value(g: &GpuSim, field: DcgmField) -> Option<Num> {
    use DcgmField as F;
    use Num::{Float, Int};
    let spec = g.model.spec();
    let a = &g.act;
    let e = &g.errors;
    let nvlink = spec.nvlink_links > 0;
    let ratio = |x: f64| Float((x.clamp(0.0, 1.0) * 1e6).round() / 1e6);
    let int = |x: f64| Int(x.round() as i64);
    let cnt = |x: u64| Int(x.min(i64::MAX as u64) as i64);
    Some(match field {
        F::SmClock => int(g.sm_clock_mhz),
        F::MemClock => int(g.mem_clock_mhz),
        F::MemoryTemp => {
            spec.mem_temp?;
            int(g.mem_temp_c)
        }
        F::GpuTemp => int(g.gpu_temp_c),
        // DCGM reads power in milliwatts.
        F::PowerUsage => Float((g.power_w * 1000.0).round() / 1000.0),
        F::TotalEnergyConsumption => int(g.energy_mj),
        F::PcieReplayCounter => cnt(e.pcie_replay),
        F::GpuUtil => int(a.gpu_util.clamp(0.0, 100.0)),
        F::MemCopyUtil => int((a.dram * 100.0).clamp(0.0, 100.0)),
        F::EncUtil | F::DecUtil | F::VgpuLicenseStatus => Int(0),
        F::XidErrors => Int(e.xid as i64),
        F::PowerViolation => cnt(g.power_violation_ns),
        F::ThermalViolation => cnt(g.thermal_violation_ns),
        F::FbFree => cnt(spec.fb_total_mib - spec.fb_reserved_mib - g.fb_used_mib),
        F::FbUsed => cnt(g.fb_used_mib),
        F::FbReserved => cnt(spec.fb_reserved_mib),
        F::EccSbeVolTotal => cnt(e.sbe_vol),
        F::EccDbeVolTotal => cnt(e.dbe_vol),
        F::EccSbeAggTotal => cnt(e.sbe_agg),
        F::EccDbeAggTotal => cnt(e.dbe_agg),
        F::RetiredSbe => cnt(e.retired_sbe),
        F::RetiredDbe => cnt(e.retired_dbe),
        F::RetiredPending => cnt(e.retired_pending),
        F::NvlinkCrcFlitErrorCountTotal if nvlink => cnt(e.nvlink_crc_flit),
        F::NvlinkCrcDataErrorCountTotal if nvlink => cnt(e.nvlink_crc_data),
        F::NvlinkReplayErrorCountTotal if nvlink => cnt(e.nvlink_replay),
        F::NvlinkRecoveryErrorCountTotal if nvlink => cnt(e.nvlink_recovery),
        F::NvlinkBandwidthTotal if nvlink => int(g.nvlink_total_mib),
        F::UncorrectableRemappedRows => cnt(e.uncorrectable_rows),
        F::CorrectableRemappedRows => cnt(e.correctable_rows),
        F::RowRemapFailure => Int(e.remap_failure as i64),
        F::RowRemapPending => Int(e.remap_pending as i64),
        F::ProfGrEngineActive => ratio(if a.busy {
            (a.sm_active * 1.05 + 0.01).min(1.0)
        } else {
            0.0
        }),
        F::ProfSmActive => ratio(a.sm_active),
        F::ProfSmOccupancy => ratio(a.sm_occupancy),
        F::ProfPipeTensorActive => ratio(a.tensor),
        F::ProfDramActive => ratio(a.dram),
        F::ProfPipeFp64Active => ratio(a.fp64),
        F::ProfPipeFp32Active => ratio(a.fp32),
        F::ProfPipeFp16Active => ratio(a.fp16),
        F::ProfPcieTxBytes => int(a.pcie_tx_bps),
        F::ProfPcieRxBytes => int(a.pcie_rx_bps),
        F::ProfNvlinkTxBytes if nvlink => int(a.nvlink_tx_bps),
        F::ProfNvlinkRxBytes if nvlink => int(a.nvlink_rx_bps),
        F::ClockThrottleReasons | F::ClockEventReasons => Int(g.reasons as i64),
        F::SlowdownTemp => Int(spec.slowdown_temp_c as i64),
        F::ShutdownTemp => Int(spec.shutdown_temp_c as i64),
        F::GpuMaxOpTemp => Int(spec.max_op_temp_c as i64),
        F::PowerMgmtLimit | F::EnforcedPowerLimit => Float(spec.tdp_w),
        F::PcieTxThroughput => int(g.pcie_tx_kb),
        F::PcieRxThroughput => int(g.pcie_rx_kb),
        F::MaxSmClock => Int(spec.max_sm_mhz as i64),
        F::MaxMemClock => Int(spec.max_mem_mhz as i64),
        F::FbTotal => cnt(spec.fb_total_mib),
        _ => return None,
    })
}

/// Writes a label value with the escapes the text format requires.
fn write_escaped(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Writes the label set of `g` (without braces) in dcgm-exporter's order: identity
/// labels, then the pod attributes sorted by name (Go's template ranges over a map), or
/// the HPC job.
pub fn write_label_set(g: &GpuSim, hostname: &str, workload: Option<&Workload>, out: &mut String) {
    let spec = g.model.spec();
    let _ = write!(
        out,
        "gpu=\"{}\",UUID=\"{}\",pci_bus_id=\"{}\",device=\"nvidia{}\",modelName=\"{}\",Hostname=\"",
        g.index, g.uuid, g.pci_bus_id, g.index, spec.model_name
    );
    write_escaped(out, hostname);
    let _ = write!(out, "\",DCGM_FI_DRIVER_VERSION=\"{DRIVER_VERSION}\"");
    let Some(w) = workload else { return };
    for (name, value) in [
        ("container", &w.container),
        ("namespace", &w.namespace),
        ("pod", &w.pod),
    ] {
        if let Some(v) = value {
            out.push(',');
            out.push_str(name);
            out.push_str("=\"");
            write_escaped(out, v);
            out.push('"');
        }
    }
    if let Some(job) = &w.job {
        out.push_str(",hpc_job=\"");
        write_escaped(out, job);
        out.push('"');
    }
}

/// Renders node `node` of `fleet` into `out`.
pub fn render_node(fleet: &Fleet, node: usize, out: &mut String) {
    let ts: Option<TimestampMs> = (fleet.speed() != 1.0).then(|| fleet.now_ms());
    let gpus = fleet.gpus.iter().filter(|g| g.node == node && g.present());
    for fam in FAMILIES {
        let mut header = false;
        for g in gpus.clone() {
            let Some(v) = field_value(g, fam.field) else { continue };
            if !header {
                let name = fam.field.as_str();
                let _ = write!(out, "# HELP {name} {}\n# TYPE {name} {}\n", fam.help, fam.prom_type);
                header = true;
            }
            out.push_str(fam.field.as_str());
            out.push('{');
            out.push_str(&g.label_text);
            out.push_str("} ");
            let _ = match v {
                Num::Int(i) => write!(out, "{i}"),
                Num::Float(f) => write!(out, "{f:.6}"),
            };
            if let Some(ts) = ts {
                let _ = write!(out, " {ts}");
            }
            out.push('\n');
        }
    }
}
