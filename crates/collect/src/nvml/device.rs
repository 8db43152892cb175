//! The real NVML source over `nvml-wrapper` 0.13.
//!
//! `libnvidia-ml.so.1` is loaded by [`NvmlSource::open`] (`Nvml::init()`), not linked, so
//! the same binary runs on hosts without a driver: there `open` returns
//! [`NvmlError::Unavailable`] and the agent falls back to nvidia-smi / dcgm-exporter.
//!
//! The handle is leaked once per process: NVML's event set borrows the library handle,
//! and a process reads NVML for its whole life, so a `'static` handle is simpler and
//! safer than a self-referential struct.
//!
//! Not exercised in CI (no GPU is lent to it); `docs/hardware-validation.md` lists the
//! command that checks it on a GPU host against `nvidia-smi -q`.

use super::{DeviceReading, GpuProcess, GpuSource, NvLinkReading, NvmlError, NvmlXid};
use gpuwarden_model::{GpuUuid, TimestampMs};
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::{
    Clock, EccCounter, MemoryError, PcieUtilCounter, RetirementCause, TemperatureSensor, TemperatureThreshold,
};
use nvml_wrapper::enum_wrappers::nv_link::ErrorCounter;
use nvml_wrapper::enums::device::{SampleValue, UsedGpuMemory};
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::sys_exports::field_id::{
    NVML_FI_DEV_MEMORY_TEMP, NVML_FI_DEV_REMAPPED_COR, NVML_FI_DEV_REMAPPED_FAILURE, NVML_FI_DEV_REMAPPED_PENDING,
    NVML_FI_DEV_REMAPPED_UNC,
};
use nvml_wrapper::{Device, EventSet, Nvml};

/// NVLink links probed per GPU (NVML_NVLINK_MAX_LINKS on Hopper/Blackwell).
const MAX_NVLINKS: u32 = 18;
/// Events taken per poll at most, so a storm cannot stall a collection interval.
const MAX_EVENTS_PER_POLL: usize = 1000;

/// Reads every GPU through NVML.
pub struct NvmlSource {
    nvml: &'static Nvml,
    driver: Option<String>,
    events: Option<EventSet<'static>>,
}

impl NvmlSource {
    /// Loads NVML. Fails with [`NvmlError::Unavailable`] on a host without the driver.
    pub fn open() -> Result<NvmlSource, NvmlError> {
        let nvml = Nvml::init().map_err(|e| NvmlError::Unavailable(e.to_string()))?;
        let nvml: &'static Nvml = Box::leak(Box::new(nvml));
        let driver = nvml.sys_driver_version().ok();
        let events = register_xid_events(nvml);
        Ok(NvmlSource { nvml, driver, events })
    }

    fn devices(&self) -> Result<Vec<Device<'static>>, NvmlError> {
        let count = self.nvml.device_count().map_err(|e| NvmlError::Query {
            what: "device count".into(),
            cause: e.to_string(),
        })?;
        // A GPU that cannot be opened (fallen off the bus) is skipped: it will show as
        // disappeared, which is the truth.
        Ok((0..count).filter_map(|i| self.nvml.device_by_index(i).ok()).collect())
    }
}

/// Registers XID events on every GPU that supports them; `None` when none does.
///
/// A failed registration releases the whole set (nvml-wrapper consumes it), so the set is
/// rebuilt without the GPU that failed; at most one rebuild per GPU.
fn register_xid_events(nvml: &'static Nvml) -> Option<EventSet<'static>> {
    let mut candidates: Vec<u32> = (0..nvml.device_count().ok()?).collect();
    'rebuild: loop {
        if candidates.is_empty() {
            return None;
        }
        let mut set = nvml.create_event_set().ok()?;
        for (pos, &i) in candidates.iter().enumerate() {
            let registered = nvml.device_by_index(i).map_err(|e| e.to_string()).and_then(|d| {
                d.register_events(EventTypes::CRITICAL_XID_ERROR, set)
                    .map_err(|e| e.error.to_string())
            });
            match registered {
                Ok(s) => set = s,
                Err(e) => {
                    tracing::info!(gpu = i, "NVML XID events not available: {e}");
                    candidates.remove(pos);
                    continue 'rebuild;
                }
            }
        }
        return Some(set);
    }
}

fn read_device(d: &Device<'static>, driver: Option<&String>) -> Option<DeviceReading> {
    let uuid = d.uuid().ok()?;
    let mut r = DeviceReading {
        uuid,
        index: d.index().ok(),
        name: d.name().ok(),
        pci_bus_id: d.pci_info().ok().map(|p| p.bus_id),
        minor_number: d.minor_number().ok(),
        serial: d.serial().ok(),
        board_part_number: d.board_part_number().ok(),
        vbios_version: d.vbios_version().ok(),
        driver_version: driver.cloned(),
        ..DeviceReading::default()
    };
    if let Ok(u) = d.utilization_rates() {
        r.utilization_gpu = Some(u.gpu);
        r.utilization_memory = Some(u.memory);
    }
    r.utilization_encoder = d.encoder_utilization().ok().map(|u| u.utilization);
    r.utilization_decoder = d.decoder_utilization().ok().map(|u| u.utilization);
    if let Ok(m) = d.memory_info() {
        r.memory_total_bytes = Some(m.total);
        r.memory_used_bytes = Some(m.used);
        r.memory_free_bytes = Some(m.free);
        r.memory_reserved_bytes = Some(m.reserved);
    }
    r.temperature_gpu = d.temperature(TemperatureSensor::Gpu).ok();
    r.temperature_slowdown = d.temperature_threshold(TemperatureThreshold::Slowdown).ok();
    r.temperature_shutdown = d.temperature_threshold(TemperatureThreshold::Shutdown).ok();
    r.temperature_gpu_max = d.temperature_threshold(TemperatureThreshold::GpuMax).ok();
    r.fan_speed = d.fan_speed(0).ok();
    r.power_usage_mw = d.power_usage().ok();
    r.power_limit_mw = d.power_management_limit().ok();
    r.enforced_power_limit_mw = d.enforced_power_limit().ok();
    r.total_energy_mj = d.total_energy_consumption().ok();
    r.pstate = d.performance_state().ok().map(|p| p as u32);
    r.clock_sm_mhz = d.clock_info(Clock::SM).ok();
    r.clock_mem_mhz = d.clock_info(Clock::Memory).ok();
    r.max_clock_sm_mhz = d.max_clock_info(Clock::SM).ok();
    r.max_clock_mem_mhz = d.max_clock_info(Clock::Memory).ok();
    r.clocks_event_reasons = d.current_throttle_reasons().ok().map(|t| t.bits());
    r.ecc_sbe_volatile = d.total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile).ok();
    r.ecc_dbe_volatile = d.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile).ok();
    r.ecc_sbe_aggregate = d.total_ecc_errors(MemoryError::Corrected, EccCounter::Aggregate).ok();
    r.ecc_dbe_aggregate = d.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Aggregate).ok();
    r.retired_pages_sbe = d
        .retired_pages(RetirementCause::MultipleSingleBitEccErrors)
        .ok()
        .map(|p| p.len() as u64);
    r.retired_pages_dbe = d
        .retired_pages(RetirementCause::DoubleBitEccError)
        .ok()
        .map(|p| p.len() as u64);
    r.retired_pages_pending = d.are_pages_pending_retired().ok();
    read_fields(d, &mut r);
    r.pcie_replay_count = d.pcie_replay_counter().ok().map(u64::from);
    r.pcie_tx_kbps = d.pcie_throughput(PcieUtilCounter::Send).ok();
    r.pcie_rx_kbps = d.pcie_throughput(PcieUtilCounter::Receive).ok();
    r.pcie_link_gen = d.current_pcie_link_gen().ok();
    r.pcie_link_width = d.current_pcie_link_width().ok();
    r.nvlinks = (0..MAX_NVLINKS)
        .filter_map(|link| {
            let l = d.link_wrapper_for(link);
            // A link index the GPU does not have answers NotSupported/InvalidArg.
            let active = l.is_active().ok()?;
            Some(NvLinkReading {
                link,
                active: Some(active),
                crc_flit_errors: l.error_counter(ErrorCounter::DlCrcFlit).ok(),
                crc_data_errors: l.error_counter(ErrorCounter::DlCrcData).ok(),
                replay_errors: l.error_counter(ErrorCounter::DlReplay).ok(),
                recovery_errors: l.error_counter(ErrorCounter::DlRecovery).ok(),
            })
        })
        .collect();
    r.persistence_mode = d.is_in_persistent_mode().ok();
    r.ecc_mode = d.is_ecc_enabled().ok().map(|m| m.currently_enabled);
    r.mig_mode = d.mig_mode().ok().map(|m| m.current == 1);
    r.compute_mode = d.compute_mode().ok().map(|m| m as u32);
    Some(r)
}

/// Values only available as NVML field ids: remapped rows and HBM temperature.
fn read_fields(d: &Device<'static>, r: &mut DeviceReading) {
    let ids = [
        NVML_FI_DEV_REMAPPED_COR,
        NVML_FI_DEV_REMAPPED_UNC,
        NVML_FI_DEV_REMAPPED_PENDING,
        NVML_FI_DEV_REMAPPED_FAILURE,
        NVML_FI_DEV_MEMORY_TEMP,
    ]
    .map(FieldId);
    let Ok(values) = d.field_values_for(&ids) else { return };
    for v in values.into_iter().flatten() {
        let Ok(value) = v.value else { continue };
        let n = match value {
            SampleValue::F64(f) if f.is_finite() && f >= 0.0 => f as u64,
            SampleValue::U32(x) => u64::from(x),
            SampleValue::U64(x) => x,
            SampleValue::I64(x) if x >= 0 => x as u64,
            _ => continue,
        };
        match v.field.0 {
            NVML_FI_DEV_REMAPPED_COR => r.remapped_rows_correctable = Some(n),
            NVML_FI_DEV_REMAPPED_UNC => r.remapped_rows_uncorrectable = Some(n),
            NVML_FI_DEV_REMAPPED_PENDING => r.remapped_rows_pending = Some(n != 0),
            NVML_FI_DEV_REMAPPED_FAILURE => r.remapped_rows_failure = Some(n != 0),
            NVML_FI_DEV_MEMORY_TEMP => r.temperature_memory = u32::try_from(n).ok(),
            _ => {}
        }
    }
}

impl GpuSource for NvmlSource {
    fn describe(&self) -> String {
        match &self.driver {
            Some(d) => format!("NVML (driver {d})"),
            None => "NVML".into(),
        }
    }

    fn read(&mut self, _now_ms: TimestampMs) -> Result<Vec<DeviceReading>, NvmlError> {
        Ok(self
            .devices()?
            .iter()
            .filter_map(|d| read_device(d, self.driver.as_ref()))
            .collect())
    }

    fn xid_events(&mut self, now_ms: TimestampMs) -> Result<Vec<NvmlXid>, NvmlError> {
        let Some(set) = &self.events else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        // wait(0) returns at once: a Timeout error means "no more events now".
        while out.len() < MAX_EVENTS_PER_POLL {
            let Ok(e) = set.wait(0) else { break };
            let Ok(uuid) = e.device.uuid() else { continue };
            if let Some(XidError::Value(code)) = e.event_data {
                out.push(NvmlXid {
                    gpu: GpuUuid::new(&uuid),
                    code: u32::try_from(code).unwrap_or(u32::MAX),
                    ts_ms: now_ms,
                });
            }
        }
        Ok(out)
    }

    fn processes(&mut self) -> Result<Vec<GpuProcess>, NvmlError> {
        let mut out = Vec::new();
        for d in self.devices()? {
            let Ok(uuid) = d.uuid() else { continue };
            let Ok(procs) = d.running_compute_processes() else {
                continue;
            };
            for p in procs {
                out.push(GpuProcess {
                    gpu: GpuUuid::new(&uuid),
                    pid: p.pid,
                    used_memory_bytes: match p.used_gpu_memory {
                        UsedGpuMemory::Used(b) => Some(b),
                        UsedGpuMemory::Unavailable => None,
                    },
                });
            }
        }
        Ok(out)
    }
}
