//! "Clocks below peers under load": a GPU whose SM clock lags the other busy GPUs of the
//! same model on the same node, with no power or thermal reason to explain it.
//!
//! Why a cohort and not a fixed clock: boost clocks depend on model, workload and power
//! limit, so "slow" only means something next to identical boards doing similar work.
//! The median is robust to the straggler itself and to a few power-capped peers. A peer
//! group smaller than `min_cohort` is not judged (two GPUs cannot say which one is odd).

use crate::checks::{num, Ctx};
use crate::hit::{ev, Hit};
use crate::rules::ids;
use crate::state::{GpuState, Streak};
use crate::throttle;
use gpuwarden_model::DcgmField;
use std::collections::HashMap;

/// Cohort key: node and model.
type Key = (String, Option<String>);

/// Median SM clock of the busy GPUs of each cohort.
#[derive(Debug, Default)]
pub struct Cohorts {
    clocks: HashMap<Key, Vec<f64>>,
    /// Node → (model, median, busy GPUs). Keyed by node so a GPU finds its cohort with
    /// one lookup by `&str`: a scan of every cohort per GPU made an evaluation cost
    /// GPUs × nodes (scoring cost per GPU grew 4.6× from 1k to 8k GPUs).
    medians: HashMap<String, Vec<(Option<String>, f64, usize)>>,
}

/// A GPU's utilization in percent: `DCGM_FI_DEV_GPU_UTIL`, else the DCP graphics-engine
/// activity ratio.
pub fn utilization(s: &GpuState) -> Option<f64> {
    s.get(DcgmField::GpuUtil)
        .or_else(|| s.get(DcgmField::ProfGrEngineActive).map(|r| r * 100.0))
}

impl Cohorts {
    /// Adds a GPU (fresh data only) to its cohort if it is busy.
    pub fn add(&mut self, s: &GpuState, min_utilization: f64) {
        let (Some(clock), Some(util)) = (s.get(DcgmField::SmClock), utilization(s)) else {
            return;
        };
        if util >= min_utilization && clock > 0.0 {
            self.clocks
                .entry((s.node.clone(), s.model.clone()))
                .or_default()
                .push(clock);
        }
    }

    /// Computes the medians; call once after every `add`.
    pub fn finish(&mut self) {
        for (k, v) in self.clocks.drain() {
            let mut v = v;
            v.sort_by(f64::total_cmp);
            let n = v.len();
            let m = if n % 2 == 1 {
                v[n / 2]
            } else {
                (v[n / 2 - 1] + v[n / 2]) / 2.0
            };
            let (node, model) = k;
            self.medians.entry(node).or_default().push((model, m, n));
        }
    }

    fn median(&self, s: &GpuState) -> Option<(f64, usize)> {
        // Models per node are few (nodes are usually homogeneous): a scan of the node's.
        self.medians
            .get(s.node.as_str())?
            .iter()
            .find(|(model, _, _)| *model == s.model)
            .map(|&(_, m, n)| (m, n))
    }

    /// Checks one GPU against its cohort.
    pub fn check(&self, s: &mut GpuState, ctx: &Ctx<'_>, out: &mut Vec<Hit>) {
        let rule = &ctx.rules.clocks.straggler;
        if !rule.enabled {
            return;
        }
        let clock = s.get(DcgmField::SmClock);
        let util = utilization(s);
        let bits = s.reasons().unwrap_or(0);
        let cohort = self.median(s);
        let mut found = None;
        if let (Some(clock), Some(util), Some((median, n))) = (clock, util, cohort) {
            let below = (median - clock) / median * 100.0;
            if util >= rule.min_utilization
                && n >= rule.min_cohort as usize
                && below > rule.below_median_percent
                && bits & throttle::EXPLAINS_LOW_CLOCK == 0
            {
                found = Some((clock, median, n, below, util));
            }
        }
        let streak = s.streak(Streak::Straggler, found.is_some(), ctx.new_row);
        let Some((clock, median, n, below, util)) = found else {
            return;
        };
        if streak < ctx.sustained(rule.min_evaluations) {
            return;
        }
        out.push(Hit::of(
            &rule.meta(ids::CLOCKS_STRAGGLER),
            format!(
                "straggler: SM clock {} MHz is {:.0}% below the median {} MHz of {n} busy peers (same node and model) at {}% utilization, with no power or thermal reason, for {streak} evaluations",
                num(clock),
                below,
                num(median),
                num(util)
            ),
            vec![ev(DcgmField::SmClock.as_str(), clock, None, Some(median), s.last_row_ms.unwrap_or(0))],
        ));
    }
}
