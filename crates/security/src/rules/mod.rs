//! The rules' logic, one function per rule, pure and synchronous: each looks at one
//! GPU's remembered state (and its node's) at a time and returns a [`Hit`] when its
//! condition holds. Thresholds come from the rule file (see [`crate::catalog`]).

pub mod behaviour;
pub mod drift;
pub mod mining;
pub mod usage;

use crate::catalog::Rule;
use crate::policy::Policy;
use crate::state::{GpuState, NodeState};
use gpuwarden_model::{Evidence, Freshness, TimestampMs};

/// What a rule sees.
pub struct Ctx<'a> {
    pub now: TimestampMs,
    pub policy: &'a Policy,
    pub gpu: &'a GpuState,
    pub node: &'a NodeState,
    pub freshness: Freshness,
}

/// A rule's conclusion, before the engine adds the common SOC context.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// One sentence with the numbers.
    pub summary: String,
    pub evidence: Vec<Evidence>,
    /// Rule-specific labels (`gpuwarden.mining.variant`, `gpuwarden.drift.setting`, …).
    pub labels: Vec<(String, String)>,
}

/// The parameters each rule's code reads; checked against its file at load time.
pub fn required_params(id: &str) -> &'static [&'static str] {
    match id {
        mining::ID => mining::PARAMS,
        usage::UNAPPROVED_ID => usage::UNAPPROVED_PARAMS,
        usage::OFF_HOURS_ID => usage::OFF_HOURS_PARAMS,
        usage::GHOST_ID => usage::GHOST_PARAMS,
        behaviour::ID => behaviour::PARAMS,
        drift::POWER_ID => drift::POWER_PARAMS,
        drift::INVENTORY_ID => drift::INVENTORY_PARAMS,
        _ => &[],
    }
}

/// Whether the rule's id has code behind it.
pub fn known(id: &str) -> bool {
    [
        mining::ID,
        usage::UNAPPROVED_ID,
        usage::OFF_HOURS_ID,
        usage::GHOST_ID,
        behaviour::ID,
        drift::DRIVER_ID,
        drift::CONFIG_ID,
        drift::POWER_ID,
        drift::INVENTORY_ID,
    ]
    .contains(&id)
}

/// Runs one rule on one GPU. Only called with fresh data, except the inventory rule,
/// which is the one whose subject is the data going missing.
pub fn evaluate(rule: &Rule, ctx: &Ctx) -> Option<Hit> {
    match rule.id() {
        mining::ID => mining::evaluate(rule, ctx),
        usage::UNAPPROVED_ID => usage::unapproved(rule, ctx),
        usage::OFF_HOURS_ID => usage::off_hours(rule, ctx),
        usage::GHOST_ID => usage::ghost(rule, ctx),
        behaviour::ID => behaviour::evaluate(rule, ctx),
        drift::DRIVER_ID => drift::driver_floor(rule, ctx),
        drift::CONFIG_ID => drift::config(rule, ctx),
        drift::POWER_ID => drift::power_limit(rule, ctx),
        drift::INVENTORY_ID => drift::inventory(rule, ctx),
        _ => None,
    }
}

pub(crate) fn ev(signal: &str, observed: f64, expected: Option<f64>, ts_ms: TimestampMs) -> Evidence {
    Evidence {
        signal: signal.to_string(),
        observed,
        previous: None,
        expected,
        ts_ms,
    }
}

/// Minutes/seconds parameter → milliseconds, NaN-safe (NaN gives 0, which no window
/// can satisfy).
pub(crate) fn ms(x: f64, unit_ms: f64) -> i64 {
    let v = x * unit_ms;
    if v.is_finite() {
        v as i64
    } else {
        0
    }
}

/// Human-readable bytes per second.
pub(crate) fn bps(x: f64) -> String {
    match x {
        x if x >= 1e9 => format!("{:.1} GB/s", x / 1e9),
        x if x >= 1e6 => format!("{:.1} MB/s", x / 1e6),
        x if x >= 1e3 => format!("{:.1} kB/s", x / 1e3),
        x => format!("{x:.0} B/s"),
    }
}

/// Busy time and busy samples in a run: a sample counts its interval since the
/// previous one (the first counts nothing: its start is unknown).
pub(crate) fn time_in_state(
    run: &[crate::features::Feat],
    max_gap_ms: i64,
    pred: impl Fn(&crate::features::Feat) -> bool,
) -> (usize, i64) {
    let mut n = 0;
    let mut t = 0;
    for (i, f) in run.iter().enumerate() {
        if pred(f) {
            n += 1;
            if i > 0 {
                t += (f.ts_ms - run[i - 1].ts_ms).min(max_gap_ms);
            }
        }
    }
    (n, t)
}

#[cfg(test)]
pub(crate) mod testkit;
