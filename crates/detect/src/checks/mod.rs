//! The per-GPU health checks, one module per family of rules. Each check reads the GPU's
//! [`GpuState`], compares it with its rule's thresholds and pushes a [`Hit`] when the
//! condition holds. Checks never fail: a value that is missing or not a number simply
//! leaves its rule silent.

pub mod interconnect;
pub mod memory;
pub mod thermal;

use crate::hit::Hit;
use crate::rules::HealthRules;
use crate::state::GpuState;

/// What a check needs besides the GPU's state.
pub struct Ctx<'a> {
    pub rules: &'a HealthRules,
    /// Scoring a single page (no history): sustained conditions count from one sample.
    pub snapshot: bool,
    /// A row arrived since the previous evaluation (streaks move only then).
    pub new_row: bool,
}

impl Ctx<'_> {
    /// The evaluations in a row a sustained rule needs: one in snapshot mode.
    pub fn sustained(&self, min_evaluations: u32) -> u32 {
        if self.snapshot {
            1
        } else {
            min_evaluations.max(1)
        }
    }
}

/// Runs every sample-based check (not XIDs, not the cohort) on one GPU.
pub fn run_all(state: &mut GpuState, ctx: &Ctx<'_>, out: &mut Vec<Hit>, notes: &mut Vec<String>) {
    memory::check(state, ctx, out);
    thermal::check(state, ctx, out, notes);
    interconnect::check(state, ctx, out);
}

/// Formats a duration for people ("5 s", "12 min", "1.0 h").
pub fn human_span(ms: i64) -> String {
    let s = ms as f64 / 1000.0;
    if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

/// Formats a number without a pointless ".0".
pub fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}
