//! Interconnect rules: NVLink CRC, replay and recovery error rates, PCIe replay rate.

use super::{human_span, num, Ctx};
use crate::hit::{ev, Hit};
use crate::rules::{ids, RateRule};
use crate::state::GpuState;
use crate::window::CounterWindow;

/// Rates are never extrapolated from less than a minute of data.
const MIN_SPAN_MS: i64 = 60_000;

pub fn check(s: &GpuState, ctx: &Ctx<'_>, out: &mut Vec<Hit>) {
    let r = ctx.rules;
    let c = &s.counters;
    rate(
        &r.nvlink.crc,
        ids::NVLINK_CRC,
        &c.nvlink_crc,
        "NVLink CRC errors",
        "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL+DATA",
        out,
    );
    rate(
        &r.nvlink.replay,
        ids::NVLINK_REPLAY,
        &c.nvlink_replay,
        "NVLink replays",
        "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL",
        out,
    );
    rate(
        &r.nvlink.recovery,
        ids::NVLINK_RECOVERY,
        &c.nvlink_recovery,
        "NVLink link recoveries",
        "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL",
        out,
    );
    rate(
        &r.pcie.replay,
        ids::PCIE_REPLAY,
        &c.pcie_replay,
        "PCIe replays",
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
        out,
    );
}

fn rate(rule: &RateRule, id: &'static str, w: &CounterWindow, what: &str, signal: &str, out: &mut Vec<Hit>) {
    if !rule.enabled {
        return;
    }
    let Some(i) = w.increase() else { return };
    let per_min = i.per_minute(MIN_SPAN_MS);
    if i.amount > 0.0 && per_min > rule.max_per_minute {
        out.push(Hit::of(
            &rule.meta(id),
            format!(
                "{} {what} in the last {} ({:.1}/min, above {}/min; {signal} {}\u{2192}{})",
                num(i.amount),
                human_span(i.span_ms),
                per_min,
                num(rule.max_per_minute),
                num(i.from_raw),
                num(i.to_raw)
            ),
            vec![ev(
                signal,
                i.to_raw,
                Some(i.from_raw),
                Some(rule.max_per_minute),
                i.ts_ms,
            )],
        ));
    }
}
