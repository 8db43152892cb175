//! Which fields measure each health dimension, so that a dimension with no input on a
//! GPU is "not measured" instead of a full-marks 100.
//!
//! A score of 100 means "we looked and found nothing wrong". An exporter that exposes
//! only utilisation gives no temperature, power, ECC, link or clock reading: the rules
//! for those dimensions then find nothing because they saw nothing, and reporting 100
//! would turn missing telemetry into a clean bill of health. A dimension counts as
//! measured when the GPU's latest row has a finite value of at least one of its input
//! fields (NaN and ±Inf are "not measured", never a value), or when a rule fired
//! against it (a finding is evidence that something was looked at, e.g. an XID event
//! from the kernel log on a GPU whose exporter has no XID gauge).

use crate::state::GpuState;
use gpuwarden_model::{DcgmField, Dimension};

/// The fields whose presence makes a dimension measured.
pub fn inputs(d: Dimension) -> &'static [DcgmField] {
    use DcgmField as F;
    match d {
        // The die and the HBM stacks are what overheat; the slowdown/shutdown limits
        // are constants, not measurements.
        Dimension::Thermal => &[F::GpuTemp, F::MemoryTemp],
        // Board power drawn now; the limit fields are settings, not readings.
        Dimension::Power => &[F::PowerUsage],
        // ECC error totals, row remapping and page retirement are the memory-health
        // signals; framebuffer used/free is occupancy, not health.
        Dimension::Memory => &[
            F::EccSbeVolTotal,
            F::EccDbeVolTotal,
            F::EccSbeAggTotal,
            F::EccDbeAggTotal,
            F::UncorrectableRemappedRows,
            F::CorrectableRemappedRows,
            F::RowRemapFailure,
            F::RowRemapPending,
            F::RetiredSbe,
            F::RetiredDbe,
            F::RetiredPending,
        ],
        // Link-level error counters: PCIe replays and NVLink CRC/replay/recovery.
        Dimension::Interconnect => &[
            F::PcieReplayCounter,
            F::NvlinkCrcFlitErrorCountTotal,
            F::NvlinkCrcDataErrorCountTotal,
            F::NvlinkReplayErrorCountTotal,
            F::NvlinkRecoveryErrorCountTotal,
        ],
        // Clocks against peers, the clock-event (throttle) reasons, and the XID gauge.
        Dimension::Compute => &[F::SmClock, F::ClockEventReasons, F::ClockThrottleReasons, F::XidErrors],
    }
}

/// True when the GPU's latest row has a finite value for one of `d`'s inputs, or (for
/// compute) XID events were recorded for it.
pub fn is_measured(s: &GpuState, d: Dimension) -> bool {
    inputs(d).iter().any(|f| s.get(*f).is_some()) || (d == Dimension::Compute && !s.xids.records().is_empty())
}

/// The dimensions measured on this GPU now.
pub fn measured(s: &GpuState) -> Vec<Dimension> {
    Dimension::ALL.iter().copied().filter(|d| is_measured(s, *d)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::HealthRules;
    use gpuwarden_model::{FieldName, GpuSamples, GpuUuid};

    fn state(vals: &[(DcgmField, f64)]) -> GpuState {
        let mut s = GpuState::new("n".into(), &HealthRules::builtin());
        s.observe_row(&GpuSamples {
            gpu: GpuUuid::new("GPU-1"),
            ts_ms: 1_000,
            values: vals.iter().map(|(f, v)| (FieldName::Dcgm(*f), *v)).collect(),
        });
        s
    }

    #[test]
    fn every_dimension_has_inputs() {
        for d in Dimension::ALL {
            assert!(!inputs(d).is_empty(), "{d}");
        }
    }

    #[test]
    fn utilisation_alone_measures_nothing() {
        assert!(measured(&state(&[(DcgmField::GpuUtil, 50.0)])).is_empty());
    }

    #[test]
    fn nan_and_inf_are_not_measured() {
        let s = state(&[
            (DcgmField::GpuTemp, f64::NAN),
            (DcgmField::PowerUsage, f64::INFINITY),
            (DcgmField::EccDbeVolTotal, f64::NEG_INFINITY),
            (DcgmField::PcieReplayCounter, f64::NAN),
            (DcgmField::SmClock, f64::NAN),
        ]);
        assert!(measured(&s).is_empty());
    }

    #[test]
    fn temperature_and_power_measure_only_their_dimensions() {
        let s = state(&[(DcgmField::GpuTemp, 50.0), (DcgmField::PowerUsage, 300.0)]);
        assert_eq!(measured(&s), vec![Dimension::Thermal, Dimension::Power]);
    }
}
