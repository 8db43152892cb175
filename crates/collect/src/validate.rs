//! Physical bounds of the mapped fields: a value no GPU can report is refused at mapping
//! time, with a reason, so it never reaches the store or the analyzers.
//!
//! An exporter bug, a corrupted page or a hostile push can carry "9,253 % utilisation"
//! or "−300 °C". Stored, such a value poisons every consumer: a chart's scale, an anomaly
//! model's baseline, a mining rule's "SM pinned". The bounds here are deliberately
//! generous (they refuse the impossible, not the unusual): a value inside them is data,
//! however odd, and the analyzers judge it.
//!
//! NaN is not refused: it is an exporter's "no reading" (blank field), which analyzers
//! read as "not measured". ±Inf is refused: it is never a reading of anything.
//!
//! Refusals are recorded on the mapped page ([`crate::dcgm::PageSummary::refused`],
//! capped at [`MAX_REFUSED_KEPT`] entries; [`crate::dcgm::PageSummary::refused_total`]
//! counts them all) so the pipeline can count them per target.

use gpuwarden_model::{DcgmField, FieldName, GpuSamples, GpuUuid};
use serde::{Deserialize, Serialize};

/// Refusals kept in detail per page; the rest are only counted. A hostile page of a
/// million bad values must not turn into a million-entry list.
pub const MAX_REFUSED_KEPT: usize = 64;

/// The physical range of a field: `min ..= max`, and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    pub min: f64,
    pub max: f64,
    /// The physical reason for the range, for the refusal's text.
    pub why: &'static str,
}

const fn b(min: f64, max: f64, why: &'static str) -> Option<Bounds> {
    Some(Bounds { min, max, why })
}

// Shared reasons.
const PERCENT: &str = "a utilisation or duty cycle is a share of time: 0 to 100 %";
const RATIO: &str = "a DCP activity ratio is a share of cycles: 0 to 1";
const TEMP: &str =
    "a running die reads between -40 °C (cold-start rating of the parts) and 150 °C (the die has shut down before that)";
const CLOCK: &str = "no GPU core clock runs above 10,000 MHz, and a clock is never negative";
const MEM_CLOCK: &str =
    "a memory clock is never negative, and none (GDDR data-rate clocks included) reaches 40,000 MHz";
const COUNTER: &str = "a count of events or bytes is never negative";
const MEMORY: &str = "memory sizes are never negative, and no GPU has more than 16 TiB of framebuffer";
const FLAG: &str = "a flag is 0 or 1";

/// The physical bounds of `f`, `None` for a field without a checked range (modes,
/// bitmasks, identifiers, dcgm-exporter's own status gauges).
pub fn bounds(f: DcgmField) -> Option<Bounds> {
    use DcgmField as F;
    const MIB_16_TIB: f64 = 16.0 * 1024.0 * 1024.0;
    match f {
        F::GpuUtil | F::MemCopyUtil | F::EncUtil | F::DecUtil => b(0.0, 100.0, PERCENT),
        // The fan's duty cycle; some boards report a little over 100 % while spinning up,
        // so the ceiling allows 255 (the NVML byte) rather than refusing a real reading.
        F::FanSpeed => b(0.0, 255.0, "a fan duty cycle is 0 to 100 % (NVML reports at most 255)"),
        F::GpuTemp | F::MemoryTemp => b(-40.0, 150.0, TEMP),
        // The limits are the board's settings: the same physical range.
        F::SlowdownTemp | F::ShutdownTemp | F::GpuMaxOpTemp => b(-40.0, 150.0, TEMP),
        // The largest boards (GB200 superchip modules) draw about 2.7 kW; 5 kW leaves
        // room for anything shipped and refuses only nonsense.
        F::PowerUsage | F::PowerMgmtLimit | F::EnforcedPowerLimit => b(
            0.0,
            5_000.0,
            "board power is drawn, never negative, and no GPU board draws 5 kW",
        ),
        F::SmClock | F::MaxSmClock => b(0.0, 10_000.0, CLOCK),
        // GDDR boards report the memory clock at the data-rate scale: an RTX 4080 Super
        // reads 11,501 MHz (testdata/exporters), GDDR7 about 14,000 MHz. So the memory
        // clock gets its own, higher ceiling.
        F::MemClock | F::MaxMemClock => b(0.0, 40_000.0, MEM_CLOCK),
        F::Pstate => b(0.0, 32.0, "performance states are P0 to P15 (32: unknown)"),
        F::PcieLinkGen => b(0.0, 16.0, "PCIe generations are 1 to 7 (0: unknown)"),
        F::PcieLinkWidth => b(0.0, 64.0, "a PCIe link has at most 32 lanes"),
        F::FbFree | F::FbUsed | F::FbReserved | F::FbTotal => b(0.0, MIB_16_TIB, MEMORY),
        // "ratio" by unit, but exporters differ on 0..1 against 0..100: accept both.
        F::FbUsedPercent => b(0.0, 100.0, "a share of memory used: 0 to 100 %"),
        F::ProfGrEngineActive
        | F::ProfSmActive
        | F::ProfSmOccupancy
        | F::ProfPipeTensorActive
        | F::ProfDramActive
        | F::ProfPipeFp64Active
        | F::ProfPipeFp32Active
        | F::ProfPipeFp16Active => b(0.0, 1.0, RATIO),
        F::RowRemapFailure | F::RowRemapPending => b(0.0, 1.0, FLAG),
        F::XidErrors => b(0.0, u32::MAX as f64, "an XID code is a non-negative 32-bit number"),
        F::TotalEnergyConsumption
        | F::PcieReplayCounter
        | F::PcieTxThroughput
        | F::PcieRxThroughput
        | F::PowerViolation
        | F::ThermalViolation
        | F::SyncBoostViolation
        | F::BoardLimitViolation
        | F::LowUtilViolation
        | F::ReliabilityViolation
        | F::EccSbeVolTotal
        | F::EccDbeVolTotal
        | F::EccSbeAggTotal
        | F::EccDbeAggTotal
        | F::RetiredSbe
        | F::RetiredDbe
        | F::RetiredPending
        | F::UncorrectableRemappedRows
        | F::CorrectableRemappedRows
        | F::NvlinkCrcFlitErrorCountTotal
        | F::NvlinkCrcDataErrorCountTotal
        | F::NvlinkReplayErrorCountTotal
        | F::NvlinkRecoveryErrorCountTotal
        | F::NvlinkBandwidthTotal
        | F::NvlinkBandwidthL0
        | F::ProfPcieTxBytes
        | F::ProfPcieRxBytes
        | F::ProfNvlinkTxBytes
        | F::ProfNvlinkRxBytes
        | F::ExpClockEventsCount
        | F::ExpXidErrorsCount
        | F::DevCount => b(0.0, f64::INFINITY, COUNTER),
        _ => None,
    }
}

/// Why a value was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field} = {value} is outside its physical range {min} to {max} ({why})")]
pub struct OutOfBounds {
    pub field: DcgmField,
    pub value: f64,
    pub min: f64,
    pub max: f64,
    pub why: &'static str,
}

/// Checks one mapped value. NaN passes (no reading); ±Inf and finite values outside the
/// field's bounds are refused.
pub fn check(field: DcgmField, value: f64) -> Result<(), OutOfBounds> {
    let Some(bd) = bounds(field) else {
        return if value.is_infinite() {
            Err(OutOfBounds {
                field,
                value,
                min: f64::NEG_INFINITY,
                max: f64::INFINITY,
                why: "an infinite value is never a reading",
            })
        } else {
            Ok(())
        };
    };
    if value.is_nan() || (value.is_finite() && value >= bd.min && value <= bd.max) {
        return Ok(());
    }
    Err(OutOfBounds {
        field,
        value,
        min: bd.min,
        max: bd.max,
        why: if value.is_infinite() {
            "an infinite value is never a reading"
        } else {
            bd.why
        },
    })
}

/// One value refused at mapping time, as recorded on the mapped page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefusedValue {
    /// The GPU (or MIG slice key) the series named.
    pub gpu: GpuUuid,
    /// dcgm-exporter's field name, e.g. `DCGM_FI_DEV_GPU_UTIL` (nvidia_gpu_exporter
    /// series are named by the field they map to).
    pub field: String,
    /// The value as mapped (after unit scaling); `Inf` serialises as `null`.
    pub value: f64,
    /// Why it was refused, e.g. "DCGM_FI_DEV_GPU_UTIL = 9253 is outside its physical
    /// range 0 to 100 (a utilisation … 0 to 100 %)".
    pub reason: String,
}

impl RefusedValue {
    pub fn new(gpu: GpuUuid, e: &OutOfBounds) -> Self {
        RefusedValue {
            gpu,
            field: e.field.as_str().to_string(),
            value: e.value,
            reason: e.to_string(),
        }
    }
}

/// Applies the bounds to rows that did not come through [`crate::dcgm`]'s mapping (an
/// agent's push, Prometheus remote-write): removes every refused value from `rows`,
/// appends up to [`MAX_REFUSED_KEPT`] of them (in total, counting what `refused`
/// already holds) to `refused`, and returns how many were refused.
pub fn refuse_impossible(rows: &mut [GpuSamples], refused: &mut Vec<RefusedValue>) -> usize {
    let mut n = 0;
    for row in rows {
        let gpu = &row.gpu;
        row.values.retain(|(name, v)| {
            let FieldName::Dcgm(f) = name else { return true };
            match check(*f, *v) {
                Ok(()) => true,
                Err(e) => {
                    n += 1;
                    if refused.len() < MAX_REFUSED_KEPT {
                        refused.push(RefusedValue::new(gpu.clone(), &e));
                    }
                    false
                }
            }
        });
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use DcgmField as F;

    fn refused(f: DcgmField, v: f64) -> bool {
        check(f, v).is_err()
    }

    #[test]
    fn utilisation_is_0_to_100_percent() {
        assert!(!refused(F::GpuUtil, 0.0));
        assert!(!refused(F::GpuUtil, 100.0));
        assert!(refused(F::GpuUtil, 9_253.0));
        assert!(refused(F::GpuUtil, -1.0));
        assert!(refused(F::MemCopyUtil, 100.5));
        let e = check(F::GpuUtil, 9_253.0).unwrap_err();
        assert!(e.to_string().contains("DCGM_FI_DEV_GPU_UTIL = 9253"), "{e}");
    }

    #[test]
    fn temperatures_are_minus_40_to_150_c() {
        assert!(!refused(F::GpuTemp, -40.0));
        assert!(!refused(F::GpuTemp, 150.0));
        assert!(refused(F::GpuTemp, 151.0));
        assert!(refused(F::MemoryTemp, -41.0));
        assert!(refused(F::GpuTemp, -300.0));
    }

    #[test]
    fn power_is_0_to_5000_w() {
        assert!(!refused(F::PowerUsage, 0.0));
        assert!(!refused(F::PowerUsage, 1_200.0));
        assert!(refused(F::PowerUsage, -5.0));
        assert!(refused(F::PowerUsage, 5_001.0));
    }

    #[test]
    fn clocks_are_0_to_10000_mhz() {
        assert!(!refused(F::SmClock, 1_980.0));
        assert!(refused(F::SmClock, -1.0));
        assert!(refused(F::SmClock, 10_001.0));
        assert!(!refused(F::MaxMemClock, 11_501.0), "a GDDR6X board's memory clock");
        assert!(refused(F::MemClock, 40_001.0));
    }

    #[test]
    fn counters_are_never_negative_but_unbounded_above() {
        assert!(!refused(F::EccSbeVolTotal, 1e15));
        assert!(refused(F::EccSbeVolTotal, -1.0));
        assert!(refused(F::PcieReplayCounter, -0.5));
        assert!(refused(F::NvlinkCrcFlitErrorCountTotal, f64::INFINITY));
    }

    #[test]
    fn memory_sizes_fan_and_ratios() {
        assert!(refused(F::FbUsed, -1.0));
        assert!(!refused(F::FbFree, 81_000.0));
        assert!(!refused(F::FanSpeed, 100.0));
        assert!(refused(F::FanSpeed, -3.0));
        assert!(refused(F::FanSpeed, 1_000.0));
        assert!(!refused(F::ProfSmActive, 0.98));
        assert!(refused(F::ProfSmActive, 1.5));
    }

    #[test]
    fn refuse_impossible_cleans_pushed_rows() {
        let mut rows = vec![GpuSamples {
            gpu: GpuUuid::new("GPU-1"),
            ts_ms: 1,
            values: vec![
                (F::GpuUtil.into(), 9_253.0),
                (F::GpuTemp.into(), 50.0),
                (FieldName::Other("custom".into()), -5.0),
            ],
        }];
        let mut refused = Vec::new();
        assert_eq!(refuse_impossible(&mut rows, &mut refused), 1);
        assert_eq!(rows[0].values.len(), 2, "the valid and the unknown field stay");
        assert_eq!(refused[0].field, "DCGM_FI_DEV_GPU_UTIL");
    }

    #[test]
    fn nan_passes_infinity_is_refused() {
        assert!(!refused(F::GpuTemp, f64::NAN));
        assert!(refused(F::GpuTemp, f64::INFINITY));
        assert!(refused(F::GpuTemp, f64::NEG_INFINITY));
        // Even a field without bounds refuses infinity.
        assert!(refused(F::ClockEventReasons, f64::INFINITY));
        assert!(!refused(F::ClockEventReasons, 64.0));
    }
}
