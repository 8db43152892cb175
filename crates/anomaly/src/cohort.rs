//! Cohort detector: each GPU judged against its peers at the same instant.
//!
//! # Why a cohort
//!
//! GPUs of the same model in the same node (and the same job, when the labels say so)
//! run the same code on the same data at the same time: they should look alike. A
//! per-series detector cannot see a straggler that has been slow since its job started,
//! a GPU that runs hot at the same power as its neighbours, or one busy GPU among idle
//! ones; its own history is "normal". Comparing it with its peers *now* needs no history
//! at all, so it works from the second scrape and is immune to load changes that hit the
//! whole cohort (8 GPUs that all start a job together are all alike again).
//!
//! # Method
//!
//! At each step the cohort's values give a median and a MAD (median absolute deviation);
//! a member's robust z is `(x − median) / max(1.4826·MAD, floor)`. Median and MAD ignore
//! up to half the cohort being odd, so the straggler does not pull the reference toward
//! itself as a mean would. The `floor` (absolute and relative to the median) is what makes
//! identical boards usable: eight GPUs pinned at the same boost clock have MAD 0, and a
//! 1 MHz wobble must not become a z of thousands. A member is *flagged* once its |z| has
//! exceeded the threshold for `persistence` consecutive steps (one noisy scrape is not a
//! finding), or at once when |z| reaches `instant_z` (a jump that large is no noisy
//! scrape; used where a few intervals of delay matter, e.g. a die heating up). Cohorts smaller than `min_members` are not judged: with two GPUs one cannot
//! say which one is odd.
//!
//! Cost: one sort of the cohort's values per step (8 GPUs: a few dozen comparisons);
//! memory: one small streak counter per member, dropped when the member leaves.

use std::collections::HashMap;
use std::hash::Hash;

/// Settings of a [`CohortDetector`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CohortConfig {
    /// Smallest cohort that is judged (the member included).
    pub min_members: usize,
    /// |robust z| beyond which a member is out of line.
    pub z_threshold: f64,
    /// Consecutive out-of-line steps before a member is flagged.
    pub persistence: u32,
    /// Scale floor in the field's unit (identical boards have MAD 0).
    pub abs_floor: f64,
    /// Scale floor as a fraction of |median|.
    pub rel_floor: f64,
    /// Only values *above* the peers count (e.g. temperature: a GPU cooler than its
    /// peers has no thermal problem).
    pub one_sided: bool,
    /// |robust z| at which one step is enough (a jump that large is no noisy scrape);
    /// `INFINITY` to always require `persistence`.
    pub instant_z: f64,
}

impl Default for CohortConfig {
    fn default() -> Self {
        Self {
            min_members: 4,
            z_threshold: 6.0,
            persistence: 2,
            abs_floor: 1e-9,
            rel_floor: 0.03,
            one_sided: false,
            instant_z: f64::INFINITY,
        }
    }
}

/// One member's standing in its cohort at one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CohortVerdict {
    /// Robust z against the peers (0 when the cohort is too small to judge).
    pub z: f64,
    /// The peers' median (the member included; it cannot move the median much).
    pub median: f64,
    /// The scale the z was divided by (1.4826·MAD, or the floor).
    pub scale: f64,
    pub observed: f64,
    /// Consecutive out-of-line steps so far.
    pub streak: u32,
    /// Out of line for `persistence` steps.
    pub flagged: bool,
}

/// Median of a sorted, non-empty slice.
fn median_sorted(v: &[f64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Median and MAD of `values` (non-finite ones ignored). `None` when none is finite.
/// `scratch` is reused to avoid allocating on every step.
pub fn median_mad(values: &[f64], scratch: &mut Vec<f64>) -> Option<(f64, f64)> {
    scratch.clear();
    scratch.extend(values.iter().copied().filter(|v| v.is_finite()));
    if scratch.is_empty() {
        return None;
    }
    scratch.sort_by(f64::total_cmp);
    let m = median_sorted(scratch);
    for v in scratch.iter_mut() {
        *v = (*v - m).abs();
    }
    scratch.sort_by(f64::total_cmp);
    Some((m, median_sorted(scratch)))
}

/// Scores members of cohorts step by step and remembers how long each has been out of
/// line. `K` identifies a member (e.g. a GPU UUID); cohorts are formed by the caller.
#[derive(Debug, Clone)]
pub struct CohortDetector<K: Hash + Eq + Clone> {
    cfg: CohortConfig,
    streaks: HashMap<K, u32>,
    scratch: Vec<f64>,
}

impl<K: Hash + Eq + Clone> CohortDetector<K> {
    pub fn new(cfg: CohortConfig) -> Self {
        Self {
            cfg,
            streaks: HashMap::new(),
            scratch: Vec::new(),
        }
    }

    pub fn config(&self) -> &CohortConfig {
        &self.cfg
    }

    /// Members currently remembered (those seen in their cohort's latest step).
    pub fn len(&self) -> usize {
        self.streaks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streaks.is_empty()
    }

    /// The member's current count of consecutive out-of-line steps (0 if unknown).
    pub fn streak(&self, k: &K) -> u32 {
        self.streaks.get(k).copied().unwrap_or(0)
    }

    /// Scores one cohort's values at one step; `out[i]` is the verdict on `members[i]`.
    /// A non-finite value gets z 0 and resets its member's streak.
    pub fn step(&mut self, members: &[(K, f64)], out: &mut Vec<CohortVerdict>) {
        self.step_masked(members, None, out);
    }

    /// As [`step`](Self::step), but only members with `judged[i]` may be out of line:
    /// the others still count toward the median and MAD (they are peers, just in a state
    /// where their own deviation means nothing, e.g. mid-transient) and get z 0.
    pub fn step_masked(&mut self, members: &[(K, f64)], judged: Option<&[bool]>, out: &mut Vec<CohortVerdict>) {
        out.clear();
        let values: Vec<f64> = members.iter().map(|(_, v)| *v).collect();
        let finite = values.iter().filter(|v| v.is_finite()).count();
        let stats = if finite >= self.cfg.min_members {
            median_mad(&values, &mut self.scratch)
        } else {
            None
        };
        for (i, (k, x)) in members.iter().enumerate() {
            let judge = judged.is_none_or(|j| j.get(i).copied().unwrap_or(false));
            let (z, median, scale) = match stats {
                Some((m, mad)) if x.is_finite() && judge => {
                    let scale = (1.482_6 * mad)
                        .max(self.cfg.rel_floor * m.abs())
                        .max(self.cfg.abs_floor)
                        .max(1e-12);
                    ((x - m) / scale, m, scale)
                }
                Some((m, _)) => (0.0, m, 0.0),
                None => (0.0, f64::NAN, 0.0),
            };
            let streak = self.streaks.entry(k.clone()).or_insert(0);
            let out_of_line = if self.cfg.one_sided {
                z > self.cfg.z_threshold
            } else {
                z.abs() > self.cfg.z_threshold
            };
            if out_of_line {
                *streak = streak.saturating_add(1);
            } else {
                *streak = 0;
            }
            out.push(CohortVerdict {
                z,
                median,
                scale,
                observed: *x,
                streak: *streak,
                flagged: *streak >= self.cfg.persistence || (*streak > 0 && z.abs() >= self.cfg.instant_z),
            });
        }
    }

    /// Forgets members not in `keep` (GPUs gone, or moved to another cohort: their
    /// streak would mean nothing there). Keeps memory bounded by the fleet size.
    pub fn retain(&mut self, keep: impl Fn(&K) -> bool) {
        self.streaks.retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(i: u64) -> f64 {
        let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as f64 / u64::MAX as f64 * 2.0 - 1.0
    }

    #[test]
    fn median_and_mad() {
        let mut s = Vec::new();
        assert_eq!(median_mad(&[1.0, 2.0, 3.0, 100.0], &mut s), Some((2.5, 1.0)));
        assert_eq!(median_mad(&[f64::NAN], &mut s), None);
    }

    #[test]
    fn small_cohorts_and_nan_are_not_judged() {
        let mut d = CohortDetector::new(CohortConfig::default());
        let mut out = Vec::new();
        for _ in 0..5 {
            d.step(&[(0, 1.0), (1, 1.0), (2, 100.0)], &mut out);
        }
        assert!(out.iter().all(|v| !v.flagged && v.z == 0.0));
        for _ in 0..5 {
            d.step(
                &[(0, 1.0), (1, 1.0), (2, 1.0), (3, f64::NAN), (4, f64::INFINITY)],
                &mut out,
            );
        }
        assert!(out.iter().all(|v| !v.flagged && v.z.is_finite()));
    }

    #[test]
    fn retain_bounds_memory() {
        let mut d = CohortDetector::new(CohortConfig::default());
        let mut out = Vec::new();
        d.step(&[(0, 1.0), (1, 1.0), (2, 1.0), (3, 1.0)], &mut out);
        assert_eq!(d.len(), 4);
        d.retain(|k| *k < 2);
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn same_load_change_for_all_is_not_flagged() {
        let mut d = CohortDetector::new(CohortConfig {
            abs_floor: 30.0,
            ..CohortConfig::default()
        });
        let mut out = Vec::new();
        for t in 0..200u64 {
            let base = if t < 100 { 1980.0 } else { 1410.0 };
            let members: Vec<(u32, f64)> = (0..8u32)
                .map(|g| (g, base + 5.0 * noise(t * 8 + u64::from(g))))
                .collect();
            d.step(&members, &mut out);
            assert!(out.iter().all(|v| !v.flagged), "t={t} {out:?}");
        }
    }
}
