//! Who may use GPUs, and when: `sec.use.unapproved_namespace` (namespace or Slurm
//! account not approved), `sec.use.off_hours` (hours-restricted namespace busy outside
//! business hours) and `sec.use.ghost` (busy with no workload at all).

use super::{ev, ms, time_in_state, Ctx, Hit};
use crate::catalog::Rule;
use crate::policy::Approval;
use crate::state::GpuState;

pub const UNAPPROVED_ID: &str = "sec.use.unapproved_namespace";
pub const UNAPPROVED_PARAMS: &[&str] = &["min_seconds"];
pub const OFF_HOURS_ID: &str = "sec.use.off_hours";
pub const OFF_HOURS_PARAMS: &[&str] = &["window_minutes", "busy_sm_min", "min_busy_seconds"];
pub const GHOST_ID: &str = "sec.use.ghost";
pub const GHOST_PARAMS: &[&str] = &["window_minutes", "busy_sm_min", "min_busy_samples", "min_busy_seconds"];

/// Generous gap for busy-time accounting: these rules judge use, not a signature.
const MAX_GAP_MS: i64 = 120_000;

/// The Slurm account, when known: the workload's (the exporter's `slurm_account` /
/// `account` label, or the agent's `SLURM_JOB_ACCOUNT`), else such a label kept among
/// the identity's other labels (identities built before the workload carried it).
pub fn account(g: &GpuState) -> Option<&str> {
    let l = &g.identity.extra_labels;
    g.identity
        .workload
        .account
        .as_deref()
        .or_else(|| l.get("account").or_else(|| l.get("slurm_account")).map(String::as_str))
}

pub fn unapproved(rule: &Rule, ctx: &Ctx) -> Option<Hit> {
    let g = ctx.gpu;
    let w = g.workload();
    if ctx.policy.approval(w, account(g)) != Approval::Unapproved {
        return None;
    }
    let held_ms = ctx.now - g.workload_changed_ms;
    if (held_ms as f64) < rule.p("min_seconds") * 1e3 {
        return None;
    }
    let who = match (&w.namespace, account(g)) {
        (Some(ns), _)
            if !ctx.policy.approved_namespaces.iter().any(|p| p.matches(ns))
                && !ctx.policy.approved_namespaces.is_empty() =>
        {
            format!(
                "namespace '{ns}' (pod '{}') is not approved (approved: {})",
                w.pod.as_deref().unwrap_or("?"),
                ctx.policy
                    .approved_namespaces
                    .iter()
                    .map(|p| p.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
        (_, Some(acct)) => format!(
            "Slurm account '{acct}' (job '{}') is not approved",
            w.job.as_deref().unwrap_or("?")
        ),
        _ => "the workload is not approved".to_string(),
    };
    Some(Hit {
        summary: format!("GPU held for {} s by an unapproved workload: {who}", held_ms / 1000),
        evidence: vec![ev(
            "workload.held_seconds",
            held_ms as f64 / 1e3,
            Some(rule.p("min_seconds")),
            ctx.now,
        )],
        labels: Vec::new(),
    })
}

fn busy(rule: &Rule, ctx: &Ctx) -> (usize, i64) {
    let run = ctx
        .gpu
        .recent_run(ctx.now, ms(rule.p("window_minutes"), 60e3), MAX_GAP_MS);
    time_in_state(&run, MAX_GAP_MS, |f| f.sm.is_some_and(|s| s >= rule.p("busy_sm_min")))
}

pub fn off_hours(rule: &Rule, ctx: &Ctx) -> Option<Hit> {
    let ns = ctx.gpu.workload().namespace.as_deref()?;
    if !ctx.policy.hours_restricted(ns) || !ctx.policy.off_hours(ctx.now) {
        return None;
    }
    let (_, busy_ms) = busy(rule, ctx);
    if (busy_ms as f64) < rule.p("min_busy_seconds") * 1e3 {
        return None;
    }
    let (day, minute) = crate::policy::local_time(ctx.now, ctx.policy.utc_offset_minutes);
    Some(Hit {
        summary: format!(
            "namespace '{ns}' may use GPUs only in business hours, but the GPU was busy {} s of the last {} min at {} {:02}:{:02} local time",
            busy_ms / 1000,
            rule.p("window_minutes"),
            ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][day],
            minute / 60,
            minute % 60
        ),
        evidence: vec![ev("busy_seconds", busy_ms as f64 / 1e3, Some(rule.p("min_busy_seconds")), ctx.now)],
        labels: Vec::new(),
    })
}

pub fn ghost(rule: &Rule, ctx: &Ctx) -> Option<Hit> {
    let g = ctx.gpu;
    if !g.workload().is_empty() || !(ctx.node.attributed || ctx.policy.attribution_expected) {
        return None;
    }
    let (n, busy_ms) = busy(rule, ctx);
    if (n as f64) < rule.p("min_busy_samples") || (busy_ms as f64) < rule.p("min_busy_seconds") * 1e3 {
        return None;
    }
    let last_sm = g.window.back().and_then(|f| f.sm).unwrap_or(f64::NAN);
    Some(Hit {
        summary: format!(
            "GPU busy {} s of the last {} min (SM active now {last_sm:.2}) but no pod and no job holds it: work that bypassed the scheduler",
            busy_ms / 1000,
            rule.p("window_minutes"),
        ),
        evidence: vec![
            ev("busy_seconds", busy_ms as f64 / 1e3, Some(rule.p("min_busy_seconds")), ctx.now),
            ev("DCGM_FI_PROF_SM_ACTIVE", last_sm, Some(rule.p("busy_sm_min")), ctx.now),
        ],
        labels: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use crate::config::SecurityConfig;

    const STEP: i64 = 15_000;

    fn policy() -> SecurityConfig {
        SecurityConfig {
            approved_namespaces: vec!["ml-training".into(), "inference".into(), "research".into()],
            approved_accounts: vec!["physics".into()],
            hours_restricted_namespaces: vec!["research".into()],
            business_hours: vec!["mon-fri 07:00-20:00".into()],
            ..SecurityConfig::default()
        }
    }

    #[test]
    fn unapproved_namespace_fires_after_a_minute_and_approved_does_not() {
        let mut t = Tk::with_config(super::UNAPPROVED_ID, policy());
        t.set_workload(Some("crypto-free"), Some("data-prep-1"), None);
        let at = t.feed_until(10 * 60_000, STEP, training);
        assert!(at.is_some_and(|ms| (60_000..=90_000).contains(&ms)), "{at:?}");
        assert!(t.last.as_ref().unwrap().summary.contains("crypto-free"));

        let mut t = Tk::with_config(super::UNAPPROVED_ID, policy());
        t.set_workload(Some("ml-training"), Some("train-1"), None);
        assert_eq!(t.feed_until(10 * 60_000, STEP, training), None);
    }

    #[test]
    fn unapproved_slurm_account_fires_and_job_without_account_does_not() {
        let mut t = Tk::with_config(super::UNAPPROVED_ID, policy());
        t.set_workload(None, None, Some("181234"));
        t.set_label("account", "crypto");
        assert!(t.feed_until(10 * 60_000, STEP, training).is_some());

        let mut t = Tk::with_config(super::UNAPPROVED_ID, policy());
        t.set_workload(None, None, Some("181234"));
        assert_eq!(t.feed_until(10 * 60_000, STEP, training), None);
    }

    #[test]
    fn no_policy_means_no_unapproved_finding() {
        let mut t = Tk::new(super::UNAPPROVED_ID);
        t.set_workload(Some("anything"), Some("p"), None);
        assert_eq!(t.feed_until(10 * 60_000, STEP, training), None);
    }

    #[test]
    fn restricted_namespace_busy_at_night_fires_and_by_day_does_not() {
        // START is Wednesday 00:00 UTC: night.
        let mut t = Tk::with_config(super::OFF_HOURS_ID, policy());
        t.set_workload(Some("research"), Some("nb-1"), None);
        assert!(t.feed_until(30 * 60_000, STEP, training).is_some());
        assert!(
            t.last.as_ref().unwrap().summary.contains("Wed 00:"),
            "{}",
            t.last.as_ref().unwrap().summary
        );

        let mut t = Tk::with_config(super::OFF_HOURS_ID, policy()).starting_at(START + 12 * 3_600_000);
        t.set_workload(Some("research"), Some("nb-1"), None);
        assert_eq!(t.feed_until(30 * 60_000, STEP, training), None);

        // Unrestricted namespace at night: fine.
        let mut t = Tk::with_config(super::OFF_HOURS_ID, policy());
        t.set_workload(Some("ml-training"), Some("t"), None);
        assert_eq!(t.feed_until(30 * 60_000, STEP, training), None);
    }

    #[test]
    fn busy_gpu_without_workload_is_ghost_on_an_attributing_node() {
        let mut t = Tk::new(super::GHOST_ID);
        t.node_attributes();
        let at = t.feed_until(10 * 60_000, STEP, training);
        assert!(at.is_some_and(|ms| ms <= 3 * 60_000), "{at:?}");
    }

    #[test]
    fn throttled_ghost_is_still_ghost() {
        let mut t = Tk::new(super::GHOST_ID);
        t.node_attributes();
        let at = t.feed_until(10 * 60_000, STEP, |ts| {
            if (ts / 30_000) % 2 == 0 {
                miner_on(ts)
            } else {
                idle(ts)
            }
        });
        assert!(at.is_some_and(|ms| ms <= 5 * 60_000), "{at:?}");
    }

    #[test]
    fn idle_unlabelled_gpu_and_labelled_busy_gpu_are_not_ghosts() {
        let mut t = Tk::new(super::GHOST_ID);
        t.node_attributes();
        assert_eq!(t.feed_until(30 * 60_000, STEP, idle), None);

        let mut t = Tk::new(super::GHOST_ID);
        t.node_attributes();
        t.set_workload(Some("ml-training"), Some("t"), None);
        assert_eq!(t.feed_until(30 * 60_000, STEP, training), None);
    }

    #[test]
    fn node_without_any_attribution_is_not_judged_unless_expected() {
        let mut t = Tk::new(super::GHOST_ID);
        assert_eq!(t.feed_until(30 * 60_000, STEP, training), None);
        let mut t = Tk::with_config(
            super::GHOST_ID,
            SecurityConfig {
                attribution_expected: true,
                ..SecurityConfig::default()
            },
        );
        assert!(t.feed_until(30 * 60_000, STEP, training).is_some());
    }
}
