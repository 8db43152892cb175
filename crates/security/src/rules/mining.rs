//! `sec.mining.telemetry`: the cryptomining signature, as time in state over a sliding
//! window, so continuous, duty-cycled (throttled) and intermittent miners all qualify
//! once they have accumulated enough "on" time with no interconnect traffic.

use super::{bps, ev, ms, time_in_state, Ctx, Hit};
use crate::catalog::Rule;
use crate::features::Feat;

pub const ID: &str = "sec.mining.telemetry";
pub const PARAMS: &[&str] = &[
    "window_minutes",
    "max_gap_seconds",
    "sm_active_min",
    "dram_active_min",
    "idle_sm_max",
    "min_on_samples",
    "min_on_seconds",
    "max_other_fraction",
    "pcie_max_bytes_per_s",
    "nvlink_max_bytes_per_s",
    "power_cv_max",
    "sm_std_max",
    "segment_min_seconds",
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    On,
    Idle,
    Other,
}

fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n;
    let v = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n;
    (m, v.sqrt())
}

fn state(rule: &Rule, f: &Feat) -> State {
    match (f.sm, f.dram) {
        (Some(sm), Some(d)) if sm >= rule.p("sm_active_min") && d >= rule.p("dram_active_min") => State::On,
        (Some(sm), _) if sm <= rule.p("idle_sm_max") => State::Idle,
        _ => State::Other,
    }
}

pub fn evaluate(rule: &Rule, ctx: &Ctx) -> Option<Hit> {
    let g = ctx.gpu;
    if ctx.policy.allowlisted(g.workload()) {
        return None;
    }
    let gap = ms(rule.p("max_gap_seconds"), 1e3);
    let run = g.recent_run(ctx.now, ms(rule.p("window_minutes"), 60e3), gap);
    if let Some(hit) = judge(rule, &run, gap, ctx.now) {
        return Some(hit);
    }
    // A change of behaviour under the same labels is a new segment: a miner started
    // inside a running job's pod must not wait for the job's earlier samples (data
    // loader traffic, varying load) to leave the window. The segment is what follows the
    // last sample that no miner produces (interconnect traffic above the limits, or load
    // that is neither pinned nor idle); because it is a suffix chosen after the fact, it
    // must have lasted `segment_min_seconds` before it may condemn.
    let cut = run.iter().rposition(|f| {
        state(rule, f) == State::Other
            || f.pcie_bps.is_some_and(|b| b > rule.p("pcie_max_bytes_per_s"))
            || f.nvlink_bps.is_some_and(|b| b > rule.p("nvlink_max_bytes_per_s"))
    })?;
    let segment = &run[cut + 1..];
    let (first, last) = (segment.first()?, segment.last()?);
    if ((last.ts_ms - first.ts_ms) as f64) < rule.p("segment_min_seconds") * 1e3 {
        return None;
    }
    let mut hit = judge(rule, segment, gap, ctx.now)?;
    let changed_s = (ctx.now - first.ts_ms) / 1000;
    hit.summary.push_str(&format!(
        "; the GPU's behaviour changed {changed_s} s ago under the same workload labels (the samples before had \
         interconnect traffic or varying load), so only the {} samples since then are judged",
        segment.len()
    ));
    hit.labels
        .push(("gpuwarden.mining.segment".into(), "behaviour-change".into()));
    Some(hit)
}

/// The rule's condition on one contiguous run of samples.
fn judge(rule: &Rule, run: &[Feat], gap: i64, now: gpuwarden_model::TimestampMs) -> Option<Hit> {
    if run.is_empty() {
        return None;
    }
    let state = |f: &Feat| state(rule, f);
    let (on_n, on_ms) = time_in_state(run, gap, |f| state(f) == State::On);
    if (on_n as f64) < rule.p("min_on_samples") || (on_ms as f64) < rule.p("min_on_seconds") * 1e3 {
        return None;
    }
    let other = run.iter().filter(|f| state(f) == State::Other).count();
    let other_frac = other as f64 / run.len() as f64;
    if other_frac > rule.p("max_other_fraction") {
        return None;
    }
    // Interconnect: every on sample must show it (no conclusion from missing data), and
    // no sample of the run may exceed the limits (a checkpoint burst in an idle phase
    // is as telling as traffic while busy).
    let on: Vec<&Feat> = run.iter().filter(|f| state(f) == State::On).collect();
    if on.iter().any(|f| f.pcie_bps.is_none() || f.nvlink_bps.is_none()) {
        return None;
    }
    let max_pcie = run.iter().filter_map(|f| f.pcie_bps).fold(0.0, f64::max);
    let max_nv = run.iter().filter_map(|f| f.nvlink_bps).fold(0.0, f64::max);
    // With no NVLink series in the run, "NVLink at most 0 B/s" would be a measurement
    // nobody made: the board (or exporter) has no NVLink telemetry, and the text says so.
    let nvlink_measured = run.iter().any(|f| f.nvlink_measured);
    if !(max_pcie <= rule.p("pcie_max_bytes_per_s") && max_nv <= rule.p("nvlink_max_bytes_per_s")) {
        return None;
    }
    // Flatness of the on phase.
    let power: Vec<f64> = on.iter().filter_map(|f| f.power_w).collect();
    if power.len() < 3 {
        return None;
    }
    let (p_mean, p_std) = mean_std(&power);
    let power_cv = if p_mean > 0.0 { p_std / p_mean } else { f64::INFINITY };
    let sms: Vec<f64> = on.iter().filter_map(|f| f.sm).collect();
    let (sm_mean, sm_std) = mean_std(&sms);
    let drams: Vec<f64> = on.iter().filter_map(|f| f.dram).collect();
    let (dram_mean, _) = mean_std(&drams);
    if !(power_cv <= rule.p("power_cv_max") && sm_std <= rule.p("sm_std_max")) {
        return None;
    }
    // Periodicity: how the GPU alternates between on and idle.
    let states: Vec<State> = run.iter().map(state).filter(|s| *s != State::Other).collect();
    let switches = states.windows(2).filter(|w| w[0] != w[1]).count();
    let idle_n = states.iter().filter(|s| **s == State::Idle).count();
    let duty = on_n as f64 / (on_n + idle_n) as f64;
    let variant = if idle_n == 0 {
        "continuous"
    } else if switches >= 4 {
        "duty-cycled"
    } else {
        "intermittent"
    };
    let span_s = (run[run.len() - 1].ts_ms - run[0].ts_ms) / 1000;
    Some(Hit {
        summary: format!(
            "mining signature ({variant}): SM active {sm_mean:.2} and DRAM active {dram_mean:.2} in {on_n} of {} samples \
             over {span_s} s (duty {:.0}%, {switches} on/off switches), power flat at {p_mean:.0} W (CV {:.1}%), \
             PCIe at most {}, {}",
            run.len(),
            duty * 100.0,
            power_cv * 100.0,
            bps(max_pcie),
            if nvlink_measured {
                format!("NVLink at most {}", bps(max_nv))
            } else {
                "no NVLink telemetry".to_string()
            },
        ),
        evidence: vec![
            ev("DCGM_FI_PROF_SM_ACTIVE", sm_mean, Some(rule.p("sm_active_min")), now),
            ev("DCGM_FI_PROF_DRAM_ACTIVE", dram_mean, Some(rule.p("dram_active_min")), now),
            ev("mining.on_seconds", on_ms as f64 / 1e3, Some(rule.p("min_on_seconds")), now),
            ev("mining.duty_cycle", duty, None, now),
            ev("mining.switches", switches as f64, None, now),
            ev("DCGM_FI_DEV_POWER_USAGE.cv", power_cv, Some(rule.p("power_cv_max")), now),
            ev("pcie.max_bytes_per_s", max_pcie, Some(rule.p("pcie_max_bytes_per_s")), now),
        ]
        .into_iter()
        .chain(
            nvlink_measured
                .then(|| ev("nvlink.max_bytes_per_s", max_nv, Some(rule.p("nvlink_max_bytes_per_s")), now)),
        )
        .collect(),
        labels: vec![("gpuwarden.mining.variant".into(), variant.into())],
    })
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;

    const STEP: i64 = 30_000;

    #[test]
    fn continuous_miner_is_found_within_three_minutes() {
        let mut t = Tk::new(super::ID);
        let at = t.feed_until(6 * 60_000, STEP, miner_on);
        assert!(at.is_some_and(|ms| ms <= 3 * 60_000), "{at:?}");
        let f = t.last.clone().unwrap();
        assert!(f.summary.contains("continuous"), "{}", f.summary);
    }

    #[test]
    fn throttled_miner_at_half_duty_is_found_within_five_minutes() {
        for period_s in [45, 60, 75, 90] {
            let mut t = Tk::new(super::ID);
            let at = t.feed_until(10 * 60_000, STEP, |ts| {
                if (ts / 1000) % period_s < period_s / 2 {
                    miner_on(ts)
                } else {
                    idle(ts)
                }
            });
            assert!(at.is_some_and(|ms| ms <= 5 * 60_000), "period {period_s}: {at:?}");
        }
    }

    #[test]
    fn intermittent_miner_bursts_are_found() {
        // Five minutes on, then a long pause: the first burst is enough.
        let mut t = Tk::new(super::ID);
        let at = t.feed_until(20 * 60_000, 15_000, |ts| {
            if ts % 1_200_000 < 300_000 {
                miner_on(ts)
            } else {
                idle(ts)
            }
        });
        assert!(at.is_some_and(|ms| ms <= 3 * 60_000), "{at:?}");
    }

    /// A miner started inside a running job's pod, labels unchanged: the job's earlier
    /// samples (GB/s of PCIe and NVLink) must not hold the conclusion back for a window.
    #[test]
    fn miner_hidden_in_a_running_job_is_found_within_five_minutes() {
        for step in [10_000, 20_000, 30_000, 60_000] {
            let mut t = Tk::new(super::ID);
            t.set_workload(Some("ml-training"), Some("llm-pretrain-0"), None);
            assert_eq!(t.feed_until(20 * 60_000, step, training), None, "the job alone");
            let first = t.now + step;
            // Five minutes of mining: well inside the job's 10-minute window, so only
            // the new segment can have concluded.
            let at = t.feed_more(5 * 60_000 - step, step, miner_on);
            let delay = at.map(|a| a - first);
            assert!(delay.is_some_and(|d| d < 5 * 60_000), "step {step}: {delay:?}");
            let f = t.last.clone().unwrap();
            assert!(f.summary.contains("behaviour changed"), "{}", f.summary);
            assert_eq!(
                f.labels.get("gpuwarden.mining.segment").map(String::as_str),
                Some("behaviour-change")
            );
        }
    }

    #[test]
    fn throttled_miner_hidden_in_a_running_job_is_found_within_five_minutes() {
        let mut t = Tk::new(super::ID);
        t.set_workload(Some("inference"), Some("serve-7"), None);
        t.feed_until(20 * 60_000, STEP, training);
        let first = t.now + STEP;
        let at = t.feed_more(15 * 60_000, STEP, |ts| {
            if ((ts - first) / 1000) % 60 < 30 {
                miner_on(ts)
            } else {
                idle(ts)
            }
        });
        let delay = at.map(|a| a - first);
        assert!(delay.is_some_and(|d| d < 5 * 60_000), "{delay:?}");
    }

    /// The hard legitimate case for the segment: a memory-bound job whose data loader
    /// moves a batch every few minutes, with quiet, flat compute in between. Quiet spells
    /// shorter than `segment_min_seconds` are not a new segment.
    #[test]
    fn job_with_quiet_spells_between_transfers_is_not_mining() {
        for quiet_s in [60, 90, 120] {
            let mut t = Tk::new(super::ID);
            t.set_workload(Some("ml-training"), Some("resident-0"), None);
            let period = (quiet_s + 20) * 1000;
            let at = t.feed_until(2 * 60 * 60_000, 10_000, |ts| {
                let mut r = miner_on(ts);
                if ts % period < 20_000 {
                    set(&mut r, F::ProfPcieRxBytes, 2e9);
                }
                r
            });
            assert_eq!(at, None, "quiet spells of {quiet_s} s");
        }
    }

    /// A job that ends and leaves the GPU idle under the same labels is a change of
    /// behaviour too, but idle is not mining.
    #[test]
    fn job_going_idle_under_the_same_labels_is_not_mining() {
        let mut t = Tk::new(super::ID);
        t.set_workload(Some("ml-training"), Some("llm-pretrain-0"), None);
        t.feed_until(20 * 60_000, STEP, training);
        assert_eq!(t.feed_more(30 * 60_000, STEP, idle), None);
    }

    #[test]
    fn steady_memory_bound_training_with_a_data_loader_is_not_mining() {
        let mut t = Tk::new(super::ID);
        let at = t.feed_until(60 * 60_000, STEP, |ts| {
            let mut r = miner_on(ts);
            set(&mut r, F::ProfPcieRxBytes, 40e6);
            r
        });
        assert_eq!(at, None);
    }

    #[test]
    fn multi_gpu_training_with_nvlink_traffic_is_not_mining() {
        let mut t = Tk::new(super::ID);
        let at = t.feed_until(60 * 60_000, STEP, |ts| {
            let mut r = miner_on(ts);
            set(&mut r, F::ProfNvlinkTxBytes, 30e9);
            r
        });
        assert_eq!(at, None);
    }

    #[test]
    fn bursty_inference_without_traffic_is_not_mining() {
        // Load that wanders between 30% and 100%: "other" samples dominate.
        let mut t = Tk::new(super::ID);
        let at = t.feed_until(60 * 60_000, STEP, |ts| {
            let mut r = miner_on(ts);
            let load = 0.3 + 0.7 * (((ts / STEP) * 7919 % 100) as f64 / 100.0);
            set(&mut r, F::ProfSmActive, load);
            r
        });
        assert_eq!(at, None);
    }

    #[test]
    fn fluctuating_power_is_not_a_miner() {
        let mut t = Tk::new(super::ID);
        let at = t.feed_until(30 * 60_000, STEP, |ts| {
            let mut r = miner_on(ts);
            set(&mut r, F::PowerUsage, if (ts / STEP) % 2 == 0 { 300.0 } else { 550.0 });
            r
        });
        assert_eq!(at, None);
    }

    #[test]
    fn missing_interconnect_fields_give_no_conclusion_either_way() {
        let mut t = Tk::new(super::ID);
        let at = t.feed_until(30 * 60_000, STEP, |ts| {
            let mut r = miner_on(ts);
            r.values
                .retain(|(f, _)| !matches!(f.as_str(), "DCGM_FI_PROF_PCIE_TX_BYTES" | "DCGM_FI_PROF_PCIE_RX_BYTES"));
            r
        });
        assert_eq!(at, None);
    }

    #[test]
    fn nan_values_do_not_panic_or_conclude() {
        let mut t = Tk::new(super::ID);
        let at = t.feed_until(30 * 60_000, STEP, |ts| {
            let mut r = miner_on(ts);
            for v in r.values.iter_mut() {
                v.1 = f64::NAN;
            }
            r
        });
        assert_eq!(at, None);
    }

    #[test]
    fn allowlisted_workload_is_exempt() {
        let mut t = Tk::with_config(
            super::ID,
            crate::config::SecurityConfig {
                allowlist: vec!["ml-training/membench-*".into()],
                ..Default::default()
            },
        );
        t.set_workload(Some("ml-training"), Some("membench-0"), None);
        assert_eq!(t.feed_until(30 * 60_000, STEP, miner_on), None);
    }

    #[test]
    fn a_gap_in_the_data_restarts_the_evidence() {
        let mut t = Tk::new(super::ID);
        // Two on samples, a 10-minute gap, two more: never four contiguous.
        for ts in [0, STEP, 11 * 60_000, 11 * 60_000 + STEP] {
            t.row(miner_on(ts));
        }
        assert!(t.eval(11 * 60_000 + STEP).is_none());
    }

    /// A miner on a PCIe-only board (no NVLink series at all) is still found, and the
    /// finding says there was no NVLink telemetry instead of "NVLink at most 0 B/s".
    #[test]
    fn missing_nvlink_series_is_not_printed_as_zero() {
        let mut t = Tk::new(super::ID);
        let no_nvlink = |ts| {
            let mut r = miner_on(ts);
            r.values.retain(|(n, _)| {
                !matches!(
                    n,
                    gpuwarden_model::FieldName::Dcgm(
                        gpuwarden_model::DcgmField::ProfNvlinkTxBytes | gpuwarden_model::DcgmField::ProfNvlinkRxBytes
                    )
                )
            });
            r
        };
        let at = t.feed_until(6 * 60_000, STEP, no_nvlink);
        assert!(at.is_some(), "a PCIe-only miner is still a miner");
        let f = t.last.clone().unwrap();
        assert!(f.summary.contains("no NVLink telemetry"), "{}", f.summary);
        assert!(!f.summary.contains("NVLink at most"), "{}", f.summary);
        assert!(
            !f.evidence.iter().any(|e| e.signal.contains("nvlink")),
            "no NVLink evidence without NVLink series: {:?}",
            f.evidence
        );
    }

    #[test]
    fn measured_nvlink_is_still_printed() {
        let mut t = Tk::new(super::ID);
        t.feed_until(6 * 60_000, STEP, miner_on);
        let f = t.last.clone().unwrap();
        assert!(f.summary.contains("NVLink at most 0 B/s"), "{}", f.summary);
    }
}
