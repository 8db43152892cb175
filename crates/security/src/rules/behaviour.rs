//! `sec.behaviour.off_hours_change`: off-hours, a GPU's recent SM activity or power
//! rises far above its own slow baseline while its workload attribution stayed the same
//! (a new job resets the baseline, see [`crate::state::GpuState::set_identity`]).
//! Works from telemetry alone; uses an anomaly score when one is published.

use super::{ev, ms, Ctx, Hit};
use crate::catalog::Rule;
use gpuwarden_model::DcgmField;

pub const ID: &str = "sec.behaviour.off_hours_change";
pub const PARAMS: &[&str] = &[
    "baseline_hours",
    "min_baseline_hours",
    "recent_minutes",
    "sm_delta_min",
    "power_delta_min",
    "anomaly_score_min",
];

const MAX_GAP_MS: i64 = 120_000;

pub fn evaluate(rule: &Rule, ctx: &Ctx) -> Option<Hit> {
    let g = ctx.gpu;
    if !ctx.policy.off_hours(ctx.now) || ctx.policy.allowlisted(g.workload()) {
        return None;
    }
    let b = &g.baseline;
    if (b.covered_ms as f64) < rule.p("min_baseline_hours") * 3.6e6 {
        return None;
    }
    let run = g.recent_run(ctx.now, ms(rule.p("recent_minutes"), 60e3), MAX_GAP_MS);
    let sms: Vec<f64> = run.iter().filter_map(|f| f.sm).collect();
    if sms.len() < 3 {
        return None;
    }
    let sm = sms.iter().sum::<f64>() / sms.len() as f64;
    // Power as a fraction of the limit first seen: a changed limit is the drift rule's
    // business, not a change of behaviour.
    let limit = g
        .config_first
        .get(&DcgmField::PowerMgmtLimit)
        .copied()
        .filter(|l| *l > 0.0);
    let ws: Vec<f64> = run.iter().filter_map(|f| f.power_w).collect();
    let pf = limit
        .filter(|_| !ws.is_empty())
        .map(|l| ws.iter().sum::<f64>() / ws.len() as f64 / l);
    let base_pf = limit.zip(b.power_w).map(|(l, w)| w / l);
    let anomaly = run.iter().filter_map(|f| f.anomaly).fold(f64::NAN, f64::max);
    let d_sm = sm - b.sm;
    let d_pf = pf.zip(base_pf).map(|(p, base)| p - base);
    let changed = d_sm >= rule.p("sm_delta_min")
        || d_pf.is_some_and(|d| d >= rule.p("power_delta_min"))
        || anomaly >= rule.p("anomaly_score_min");
    if !changed {
        return None;
    }
    let (day, minute) = crate::policy::local_time(ctx.now, ctx.policy.utc_offset_minutes);
    let mut evidence = vec![
        Some(ev("DCGM_FI_PROF_SM_ACTIVE.recent_mean", sm, Some(b.sm), ctx.now)),
        pf.map(|p| ev("power_fraction.recent_mean", p, base_pf, ctx.now)),
    ];
    if anomaly.is_finite() {
        evidence.push(Some(ev(
            "gpuwarden_anomaly_score",
            anomaly,
            Some(rule.p("anomaly_score_min")),
            ctx.now,
        )));
    }
    Some(Hit {
        summary: format!(
            "off-hours change at {} {:02}:{:02} local: SM active {sm:.2} over the last {} min vs a baseline of {:.2}{} with the same workload",
            ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][day],
            minute / 60,
            minute % 60,
            rule.p("recent_minutes"),
            b.sm,
            match pf.zip(base_pf) {
                Some((p, base)) => format!(", power {:.0}% of the limit vs {:.0}%", p * 100.0, base * 100.0),
                None => String::new(),
            }
        ),
        evidence: evidence.into_iter().flatten().collect(),
        labels: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use crate::config::SecurityConfig;

    const STEP: i64 = 30_000;
    const H: i64 = 3_600_000;

    fn cfg() -> SecurityConfig {
        SecurityConfig {
            business_hours: vec!["mon-fri 07:00-20:00".into()],
            ..SecurityConfig::default()
        }
    }

    #[test]
    fn same_pod_turning_into_a_miner_at_night_is_a_change() {
        // Tuesday 17:00 UTC: three quiet hours of a light notebook, then at 20:00+ it
        // starts hashing under the same pod.
        let mut t = Tk::with_config(super::ID, cfg()).starting_at(START - 7 * H);
        t.set_workload(Some("research"), Some("notebook-7"), None);
        let at = t.feed_until(5 * H, STEP, |ts| {
            if ts < 3 * H + 30 * 60_000 {
                light(ts)
            } else {
                miner_on(ts)
            }
        });
        assert!(
            at.is_some_and(|ms| ms > 3 * H + 30 * 60_000 && ms <= 3 * H + 45 * 60_000),
            "{at:?}"
        );
    }

    #[test]
    fn the_same_change_during_business_hours_is_not_flagged() {
        // Wednesday 07:00 UTC start: the jump happens at 10:30.
        let mut t = Tk::with_config(super::ID, cfg()).starting_at(START + 7 * H);
        t.set_workload(Some("research"), Some("notebook-7"), None);
        assert_eq!(
            t.feed_until(5 * H, STEP, |ts| if ts < 3 * H + 30 * 60_000 {
                light(ts)
            } else {
                miner_on(ts)
            }),
            None
        );
    }

    #[test]
    fn a_new_job_starting_at_night_is_not_a_change() {
        let mut t = Tk::with_config(super::ID, cfg()).starting_at(START - 7 * H);
        t.set_workload(Some("research"), Some("notebook-7"), None);
        let at = t.feed_until(3 * H + 30 * 60_000, STEP, light);
        assert_eq!(at, None);
        t.set_workload(Some("ml-training"), Some("train-99"), None);
        assert_eq!(t.feed_more(3 * H, STEP, training), None);
    }

    #[test]
    fn without_enough_baseline_nothing_is_concluded() {
        let mut t = Tk::with_config(super::ID, cfg()).starting_at(START - 60 * 60_000);
        t.set_workload(Some("research"), Some("notebook-7"), None);
        assert_eq!(
            t.feed_until(110 * 60_000, STEP, |ts| if ts < 70 * 60_000 {
                light(ts)
            } else {
                miner_on(ts)
            }),
            None
        );
    }

    #[test]
    fn a_high_anomaly_score_counts_as_a_change() {
        let mut t = Tk::with_config(super::ID, cfg()).starting_at(START - 7 * H);
        t.set_workload(Some("research"), Some("notebook-7"), None);
        let at = t.feed_until(5 * H, STEP, |ts| {
            let mut r = light(ts);
            if ts > 4 * H {
                r.values.push((
                    gpuwarden_model::FieldName::Other(crate::features::ANOMALY_SCORE_FIELD.into()),
                    0.97,
                ));
            }
            r
        });
        assert!(at.is_some_and(|ms| ms > 4 * H), "{at:?}");
    }
}
