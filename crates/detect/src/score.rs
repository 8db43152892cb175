//! Turns a GPU's hits into its health score and state.
//!
//! Each of the five dimensions starts at 100 and loses the points of every rule that
//! fired against it (floored at 0). A dimension with no measured input on the GPU (see
//! [`crate::measured`]) and no rule fired against it is `None`, "not measured": 100
//! would claim a clean bill of health nobody checked. The GPU's score is the
//! **minimum** over measured dimensions, `None` when none is measured (state
//! `unknown`):
//! one broken dimension makes a broken GPU, however good the others are, and averaging
//! would let a dead memory subsystem hide behind four healthy dimensions.
//!
//! State: `healthy` when score ≥ `score.healthy_min` and no critical or fatal finding;
//! `unhealthy` when score < `score.unhealthy_below` or any critical or fatal finding;
//! `degraded` otherwise. Stale or missing data is `unknown` (decided by the engine
//! before it gets here).

use crate::hit::Hit;
use crate::rules::ScoreRules;
use gpuwarden_model::{Dimension, HealthState, Severity};
use std::collections::BTreeMap;

/// Per-dimension scores of a GPU with fresh data: all five keys, `None` for a dimension
/// that is neither in `measured` nor hit by a rule.
pub fn dimensions(hits: &[Hit], measured: &[Dimension]) -> BTreeMap<Dimension, Option<f64>> {
    let mut d: BTreeMap<Dimension, Option<f64>> = Dimension::ALL
        .iter()
        .map(|d| (*d, measured.contains(d).then_some(100.0)))
        .collect();
    for h in hits {
        if let Some(v) = d.get_mut(&h.dimension) {
            // A rule that fired saw something: its dimension is measured.
            *v = Some((v.unwrap_or(100.0) - h.points.max(0.0)).max(0.0));
        }
    }
    d
}

/// The overall score: the worst measured dimension; `None` when none is measured.
pub fn overall(dims: &BTreeMap<Dimension, Option<f64>>) -> Option<f64> {
    dims.values().copied().flatten().reduce(f64::min)
}

/// The state for a score and the worst severity among the GPU's findings.
pub fn state(score: f64, worst: Option<Severity>, rules: &ScoreRules) -> HealthState {
    let serious = worst.is_some_and(|s| s >= Severity::Critical);
    if serious || score < rules.unhealthy_below {
        HealthState::Unhealthy
    } else if score >= rules.healthy_min {
        HealthState::Healthy
    } else {
        HealthState::Degraded
    }
}

/// Badness order for picking the worst state: unknown is not "worse" than unhealthy.
pub fn rank(s: HealthState) -> u8 {
    match s {
        HealthState::Unknown => 0,
        HealthState::Healthy => 1,
        HealthState::Degraded => 2,
        HealthState::Unhealthy => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpuwarden_model::Action;

    fn hit(d: Dimension, points: f64, sev: Severity) -> Hit {
        Hit {
            rule: "t".into(),
            dimension: d,
            severity: sev,
            action: Action::None,
            points,
            summary: String::new(),
            evidence: vec![],
        }
    }

    const R: ScoreRules = ScoreRules {
        healthy_min: 90.0,
        unhealthy_below: 50.0,
    };

    #[test]
    fn score_is_the_worst_dimension_and_floors_at_zero() {
        let d = dimensions(
            &[
                hit(Dimension::Memory, 60.0, Severity::Warning),
                hit(Dimension::Memory, 60.0, Severity::Warning),
                hit(Dimension::Thermal, 10.0, Severity::Warning),
            ],
            &Dimension::ALL,
        );
        assert_eq!(d[&Dimension::Memory], Some(0.0));
        assert_eq!(d[&Dimension::Thermal], Some(90.0));
        assert_eq!(overall(&d), Some(0.0));
    }

    #[test]
    fn unmeasured_dimensions_are_none_and_do_not_count() {
        let d = dimensions(&[], &[Dimension::Thermal]);
        assert_eq!(d[&Dimension::Thermal], Some(100.0));
        assert_eq!(d[&Dimension::Power], None);
        assert_eq!(d[&Dimension::Memory], None);
        assert_eq!(overall(&d), Some(100.0));
        // A hit on an unmeasured dimension makes it measured.
        let d = dimensions(
            &[hit(Dimension::Compute, 30.0, Severity::Warning)],
            &[Dimension::Thermal],
        );
        assert_eq!(d[&Dimension::Compute], Some(70.0));
        assert_eq!(overall(&d), Some(70.0));
    }

    #[test]
    fn nothing_measured_is_no_score() {
        let d = dimensions(&[], &[]);
        assert!(d.values().all(Option::is_none));
        assert_eq!(overall(&d), None);
    }

    #[test]
    fn thresholds() {
        assert_eq!(state(100.0, None, &R), HealthState::Healthy);
        assert_eq!(state(90.0, Some(Severity::Warning), &R), HealthState::Healthy);
        assert_eq!(state(89.0, None, &R), HealthState::Degraded);
        assert_eq!(state(50.0, None, &R), HealthState::Degraded);
        assert_eq!(state(49.9, None, &R), HealthState::Unhealthy);
        assert_eq!(state(100.0, Some(Severity::Critical), &R), HealthState::Unhealthy);
    }
}
