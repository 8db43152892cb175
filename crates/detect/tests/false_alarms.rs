//! A quiet fleet must stay quiet: 32 simulated GPUs without faults for one simulated hour
//! at a 5 s scrape interval give no finding above warning, and every GPU ends healthy.

mod common;

use common::{quiet_config, Harness};
use gpuwarden_model::{HealthState, Severity};
use std::collections::BTreeMap;

#[test]
fn quiet_fleet_for_an_hour_raises_nothing_above_warning() {
    for seed in [42, 7] {
        let mut h = Harness::new(quiet_config(seed));
        let mut by_rule: BTreeMap<String, usize> = BTreeMap::new();
        let steps = 3_600_000 / common::STEP_MS as usize;
        let mut last = None;
        for _ in 0..steps {
            let e = h.step();
            for f in &e.findings {
                assert!(f.severity <= Severity::Warning, "seed {seed}: false alarm {f:?}");
                *by_rule.entry(f.rule.clone()).or_default() += 1;
            }
            last = Some(e);
        }
        let last = last.unwrap();
        assert_eq!(last.gpus.len(), 32);
        eprintln!("seed {seed}: finding-evaluations by rule over the hour: {by_rule:?}");
        let unhealthy: Vec<_> = last.gpus.iter().filter(|g| g.state == HealthState::Unhealthy).collect();
        assert!(unhealthy.is_empty(), "seed {seed}: {unhealthy:?}");
        assert!(last.gpus.iter().all(|g| g.score.is_some()));
    }
}
