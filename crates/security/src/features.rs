//! Turns a row of samples into the few numbers the rules look at, with exporter
//! differences folded in (DCP profiling fields when exported, the older device fields
//! otherwise; PCIe/NVLink as rates from gauges or from cumulative counters).
//!
//! Missing is not zero: a field that is absent or NaN is `None`, and every rule treats
//! `None` as "cannot tell", never as idle or clean.

use gpuwarden_model::{DcgmField as F, FieldName, GpuSamples, TimestampMs};

/// Field under which the anomaly analyzer may publish a per-GPU score (0..1).
pub const ANOMALY_SCORE_FIELD: &str = "gpuwarden_anomaly_score";

/// The per-row numbers the rules use. Compact on purpose: a bounded window of these is
/// all the history a GPU costs.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Feat {
    pub ts_ms: TimestampMs,
    /// SM active ratio (0..1); from GPU utilisation when profiling fields are missing.
    pub sm: Option<f64>,
    /// DRAM active ratio (0..1); from memory copy utilisation otherwise.
    pub dram: Option<f64>,
    pub power_w: Option<f64>,
    /// Largest of PCIe TX and RX, bytes per second.
    pub pcie_bps: Option<f64>,
    /// Largest of NVLink TX and RX, bytes per second. `Some(0)` when the board has no
    /// NVLink fields but PCIe is known (nothing can cross a link that is not there).
    pub nvlink_bps: Option<f64>,
    /// Whether this row carried any NVLink series at all. When false, `nvlink_bps` is
    /// an inferred `Some(0)`, which findings must not print as a measured "0 B/s".
    pub nvlink_measured: bool,
    pub anomaly: Option<f64>,
}

/// Cumulative counters kept between rows to turn them into rates.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Counters {
    ts_ms: TimestampMs,
    pcie_tx_kb: Option<f64>,
    pcie_rx_kb: Option<f64>,
    nvlink_total: Option<f64>,
}

fn finite(x: Option<f64>) -> Option<f64> {
    x.filter(|v| v.is_finite())
}

fn get(row: &GpuSamples, f: F) -> Option<f64> {
    finite(row.get(&FieldName::Dcgm(f)))
}

/// Rate of a counter between two readings; `None` across a reset or without history.
fn rate(prev: Option<f64>, cur: Option<f64>, dt_s: f64, unit_bytes: f64) -> Option<f64> {
    let (p, c) = (prev?, cur?);
    (dt_s > 0.0 && c >= p).then(|| (c - p) * unit_bytes / dt_s)
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) | (None, x) => x,
    }
}

/// Extracts a row's features, updating the counter memory.
pub fn extract(row: &GpuSamples, counters: &mut Counters) -> Feat {
    let ratio = |x: Option<f64>| x.map(|v| v.clamp(0.0, 1.0));
    let sm = ratio(get(row, F::ProfSmActive).or_else(|| get(row, F::GpuUtil).map(|u| u / 100.0)));
    let dram = ratio(get(row, F::ProfDramActive).or_else(|| get(row, F::MemCopyUtil).map(|u| u / 100.0)));

    let dt_s = (row.ts_ms - counters.ts_ms) as f64 / 1000.0;
    let tx_kb = get(row, F::PcieTxThroughput);
    let rx_kb = get(row, F::PcieRxThroughput);
    let nv_total = get(row, F::NvlinkBandwidthTotal);
    // DCP gauges are rates already; the device counters are cumulative KB (PCIe) and,
    // for NVLink, taken as MiB: the larger unit errs towards "traffic seen", i.e. away
    // from a mining conclusion, when an exporter's unit is unclear.
    let pcie = max_opt(get(row, F::ProfPcieTxBytes), get(row, F::ProfPcieRxBytes)).or_else(|| {
        max_opt(
            rate(counters.pcie_tx_kb, tx_kb, dt_s, 1024.0),
            rate(counters.pcie_rx_kb, rx_kb, dt_s, 1024.0),
        )
    });
    let nvlink = max_opt(get(row, F::ProfNvlinkTxBytes), get(row, F::ProfNvlinkRxBytes))
        .or_else(|| rate(counters.nvlink_total, nv_total, dt_s, 1_048_576.0));
    let has_nvlink_fields = [F::ProfNvlinkTxBytes, F::ProfNvlinkRxBytes, F::NvlinkBandwidthTotal]
        .iter()
        .any(|f| row.get(&FieldName::Dcgm(*f)).is_some());
    *counters = Counters {
        ts_ms: row.ts_ms,
        pcie_tx_kb: tx_kb,
        pcie_rx_kb: rx_kb,
        nvlink_total: nv_total,
    };
    Feat {
        ts_ms: row.ts_ms,
        sm,
        dram,
        power_w: get(row, F::PowerUsage).filter(|p| *p >= 0.0),
        pcie_bps: pcie,
        nvlink_bps: match (nvlink, has_nvlink_fields) {
            (Some(v), _) => Some(v),
            (None, false) if pcie.is_some() => Some(0.0),
            (None, _) => None,
        },
        nvlink_measured: has_nvlink_fields,
        anomaly: finite(row.get(&FieldName::Other(ANOMALY_SCORE_FIELD.into()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpuwarden_model::GpuUuid;

    fn row(ts: i64, vals: &[(F, f64)]) -> GpuSamples {
        GpuSamples {
            gpu: GpuUuid::new("GPU-1"),
            ts_ms: ts,
            values: vals.iter().map(|(f, v)| (FieldName::Dcgm(*f), *v)).collect(),
        }
    }

    #[test]
    fn prof_fields_win_and_nan_is_missing_not_zero() {
        let mut c = Counters::default();
        let f = extract(
            &row(
                1000,
                &[
                    (F::ProfSmActive, 0.9),
                    (F::GpuUtil, 10.0),
                    (F::ProfDramActive, f64::NAN),
                ],
            ),
            &mut c,
        );
        assert_eq!(f.sm, Some(0.9));
        assert_eq!(f.dram, None);
        assert_eq!(f.pcie_bps, None);
        assert_eq!(f.nvlink_bps, None, "no PCIe either: interconnect unknown");
    }

    #[test]
    fn counters_become_rates_and_resets_give_none() {
        let mut c = Counters::default();
        extract(
            &row(0, &[(F::PcieTxThroughput, 1000.0), (F::PcieRxThroughput, 0.0)]),
            &mut c,
        );
        let f = extract(
            &row(10_000, &[(F::PcieTxThroughput, 2000.0), (F::PcieRxThroughput, 0.0)]),
            &mut c,
        );
        assert_eq!(f.pcie_bps, Some(1000.0 * 1024.0 / 10.0));
        assert_eq!(
            f.nvlink_bps,
            Some(0.0),
            "a board without NVLink fields moves nothing over NVLink"
        );
        let f = extract(
            &row(20_000, &[(F::PcieTxThroughput, 5.0), (F::PcieRxThroughput, 0.0)]),
            &mut c,
        );
        assert_eq!(f.pcie_bps, Some(0.0), "RX still gives a rate; TX reset gives none");
        let f = extract(&row(30_000, &[(F::ProfNvlinkTxBytes, 5e9)]), &mut c);
        assert_eq!(f.nvlink_bps, Some(5e9));
    }
}
