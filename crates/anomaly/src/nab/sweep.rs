//! Row weights and the threshold sweep — NAB's `sweeper.py`, one row at a time.
//!
//! Weights depend only on the labels, so they are computed once per file ([`FileRows`])
//! and reused for every profile and threshold; a profile only scales them. The sweep
//! sorts every scored row of the corpus by anomaly score, lowers the threshold through
//! the distinct values and keeps the running total, which is what NAB does to pick one
//! threshold per detector and profile.

use super::corpus::Window;
use super::profile::Profile;

/// NAB's scaled sigmoid: `2σ(−5y) − 1`, and `−1` once `y > 3` (a false positive far
/// behind a window costs the full `A_FP`).
pub fn scaled_sigmoid(y: f64) -> f64 {
    if y > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * y).exp()) - 1.0
    }
}

/// What a row counts as when it is detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowClass {
    /// In the probationary period (the first `min(⌊0.15·n⌋, 750)` rows): never scored.
    Probation,
    /// Outside every window: a detection here is a false positive.
    Outside,
    /// Inside the file's window with this index: a detection is a true positive.
    Window(u32),
}

/// The labels of one file turned into a class and an unweighted score per row.
#[derive(Debug, Clone)]
pub struct FileRows {
    pub name: String,
    pub classes: Vec<RowClass>,
    /// `ss(y)` before the profile's weights: positive in windows, ≤ 0 outside.
    pub unweighted: Vec<f64>,
    /// Windows with at least one row after probation: each is worth `A_TP` or `−A_FN`.
    pub scored_windows: u32,
    /// Every labelled window of the file (the perfect score counts these).
    pub labelled_windows: u32,
}

/// `ss(−1)`: the unweighted value of a window's first row, used to scale it to `A_TP`.
fn max_tp() -> f64 {
    scaled_sigmoid(-1.0)
}

impl FileRows {
    /// Computes row classes and weights from the file's timestamps (ascending, ms) and its
    /// labelled windows (inclusive). A window covers the rows whose timestamps fall inside
    /// it; NAB requires its ends to be row timestamps, which they are in the corpus.
    pub fn new(name: impl Into<String>, timestamps: &[i64], windows: &[Window]) -> Self {
        let n = timestamps.len();
        // NAB: min(floor(0.15 * n), 0.15 * 5000), compared with `i >= probation`.
        let probation = ((0.15 * n as f64).floor() as usize).min(750);
        let mut bounds: Vec<(usize, usize)> = windows
            .iter()
            .filter_map(|w| {
                let l = timestamps.partition_point(|&t| t < w.start_ms);
                let r_excl = timestamps.partition_point(|&t| t <= w.end_ms);
                (l < r_excl).then(|| (l, r_excl - 1))
            })
            .collect();
        bounds.sort_unstable();
        // Overlapping windows are one anomaly span: merged, so a window that
        // starts inside another is neither skipped nor does it stop every later window of
        // the file from being seen (NAB's own labels never overlap; other corpora do).
        let before_merge = bounds.len();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(bounds.len());
        for (l, r) in bounds {
            match merged.last_mut() {
                Some(last) if l <= last.1 => last.1 = last.1.max(r),
                _ => merged.push((l, r)),
            }
        }
        let merged_away = before_merge - merged.len();
        let bounds = merged;
        let mut classes = Vec::with_capacity(n);
        let mut unweighted = Vec::with_capacity(n);
        let mut next = 0usize;
        let mut cur: Option<(usize, usize, u32)> = None;
        let mut prev: Option<(usize, usize)> = None; // (right index, width)
        let mut window_has_scored_row = vec![false; bounds.len()];
        for i in 0..n {
            if cur.is_none() && next < bounds.len() && bounds[next].0 == i {
                cur = Some((bounds[next].0, bounds[next].1, next as u32));
                next += 1;
            }
            let (class, un) = match cur {
                Some((l, r, id)) => {
                    let width = (r - l + 1) as f64;
                    let y = -((r - i + 1) as f64) / width;
                    (RowClass::Window(id), scaled_sigmoid(y))
                }
                None => {
                    let un = match prev {
                        None => -1.0,
                        Some((pr, pw)) => {
                            // NAB divides by (width − 1); a one-row window would divide by
                            // zero there, so it is treated as width 2.
                            let denom = (pw.max(2) - 1) as f64;
                            scaled_sigmoid(i.abs_diff(pr) as f64 / denom)
                        }
                    };
                    (RowClass::Outside, un)
                }
            };
            let class = if i < probation {
                RowClass::Probation
            } else {
                if let RowClass::Window(id) = class {
                    window_has_scored_row[id as usize] = true;
                }
                class
            };
            classes.push(class);
            unweighted.push(un);
            if let Some((l, r, _)) = cur {
                if i == r {
                    prev = Some((r, r - l + 1));
                    cur = None;
                }
            }
        }
        Self {
            name: name.into(),
            classes,
            unweighted,
            scored_windows: window_has_scored_row.iter().filter(|&&b| b).count() as u32,
            labelled_windows: (windows.len() - merged_away) as u32,
        }
    }

    /// The weight a detection of row `i` adds under `profile` (0 in probation).
    pub fn weight(&self, i: usize, profile: &Profile) -> f64 {
        match self.classes[i] {
            RowClass::Probation => 0.0,
            RowClass::Outside => self.unweighted[i] * profile.fp,
            RowClass::Window(_) => self.unweighted[i] * profile.tp / max_tp(),
        }
    }
}

/// The score and row counts at one threshold (NAB's `ThresholdScore`). Counts are rows,
/// as in NAB's `*_scores.csv`: `tp` detected rows inside windows, `fn_` undetected ones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThresholdScore {
    pub threshold: f64,
    pub score: f64,
    /// Labelled windows (after probation) with at least one detection: what an operator
    /// counts. `tp`/`fn_` below count rows, as NAB's result tables do.
    pub windows_detected: u64,
    pub tp: u64,
    pub tn: u64,
    pub fp: u64,
    pub fn_: u64,
}

/// A profile's outcome on a corpus: raw and normalised score and the threshold used.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileResult {
    pub profile: Profile,
    pub best: ThresholdScore,
    /// Raw score of a detector that never fires (`−A_FN` per scored window).
    pub null_score: f64,
    /// Raw score of a detector that fires on the first row of every window.
    pub perfect_score: f64,
    /// `100 · (raw − null) / (perfect − null)`.
    pub normalized: f64,
    /// Raw score of each file at the chosen threshold, in input order.
    pub per_file: Vec<f64>,
    /// Labelled windows that are scored (not inside the probation period).
    pub windows_scored: u64,
}

/// Scores every file at `threshold` (a detection is a scored row with score ≥ threshold;
/// NaN never is). Returns the corpus total and each file's raw score.
///
/// `scores[k]` must have one value per row of `files[k]`.
pub fn score_at_threshold(
    files: &[FileRows],
    scores: &[Vec<f64>],
    profile: &Profile,
    threshold: f64,
) -> (ThresholdScore, Vec<f64>) {
    assert_eq!(files.len(), scores.len(), "one score vector per file");
    let mut total = ThresholdScore {
        threshold,
        score: 0.0,
        windows_detected: 0,
        tp: 0,
        tn: 0,
        fp: 0,
        fn_: 0,
    };
    let mut per_file = Vec::with_capacity(files.len());
    for (f, s) in files.iter().zip(scores) {
        assert_eq!(f.classes.len(), s.len(), "one score per row in {}", f.name);
        let mut best: Vec<Option<f64>> = vec![None; f.labelled_windows as usize];
        let mut seen = vec![false; f.labelled_windows as usize];
        let mut fp_sum = 0.0;
        for (i, (&class, &score)) in f.classes.iter().zip(s).enumerate() {
            let detected = score >= threshold;
            match class {
                RowClass::Probation => {}
                RowClass::Outside => {
                    if detected {
                        total.fp += 1;
                        fp_sum += f.weight(i, profile);
                    } else {
                        total.tn += 1;
                    }
                }
                RowClass::Window(id) => {
                    seen[id as usize] = true;
                    if detected {
                        total.tp += 1;
                        let w = f.weight(i, profile);
                        let b = &mut best[id as usize];
                        *b = Some(b.map_or(w, |x: f64| x.max(w)));
                    } else {
                        total.fn_ += 1;
                    }
                }
            }
        }
        total.windows_detected += best.iter().zip(&seen).filter(|(b, &s)| s && b.is_some()).count() as u64;
        let windows: f64 = best
            .iter()
            .zip(&seen)
            .filter(|(_, &s)| s)
            .map(|(b, _)| b.unwrap_or(-profile.fn_))
            .sum();
        per_file.push(windows + fp_sum);
        total.score += windows + fp_sum;
    }
    (total, per_file)
}

/// NAB's threshold optimisation: sweeps every distinct score value (from high to low,
/// starting above 1 where nothing is detected) and returns the threshold with the highest
/// corpus-wide score. Ties keep the higher threshold, as NAB's `max` over the
/// descending list does.
pub fn sweep_best_threshold(files: &[FileRows], scores: &[Vec<f64>], profile: &Profile) -> ThresholdScore {
    assert_eq!(files.len(), scores.len(), "one score vector per file");
    let mut window_base = Vec::with_capacity(files.len());
    let mut n_windows = 0usize;
    let mut rows: Vec<(f64, u32, u32)> = Vec::new();
    let (mut tn, mut fn_) = (0u64, 0u64);
    let mut window_part = 0.0;
    for (k, (f, s)) in files.iter().zip(scores).enumerate() {
        assert_eq!(f.classes.len(), s.len(), "one score per row in {}", f.name);
        window_base.push(n_windows);
        n_windows += f.labelled_windows as usize;
        window_part -= profile.fn_ * f64::from(f.scored_windows);
        for (i, (&class, &score)) in f.classes.iter().zip(s).enumerate() {
            match class {
                RowClass::Probation => continue,
                RowClass::Outside => tn += 1,
                RowClass::Window(_) => fn_ += 1,
            }
            if !score.is_nan() {
                rows.push((score, k as u32, i as u32));
            }
        }
    }
    rows.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
    let mut best_in_window: Vec<Option<f64>> = vec![None; n_windows];
    let mut fp_part = 0.0;
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut windows_detected = 0u64;
    let mut current = ThresholdScore {
        threshold: 1.1,
        score: window_part,
        windows_detected,
        tp,
        tn,
        fp,
        fn_,
    };
    let mut best = current;
    let mut idx = 0;
    while idx < rows.len() {
        let value = rows[idx].0;
        // Take every row with this exact score: they cross the threshold together.
        while idx < rows.len() && rows[idx].0 == value {
            let (_, k, i) = rows[idx];
            let f = &files[k as usize];
            let w = f.weight(i as usize, profile);
            match f.classes[i as usize] {
                RowClass::Probation => {}
                RowClass::Outside => {
                    fp += 1;
                    tn -= 1;
                    fp_part += w;
                }
                RowClass::Window(id) => {
                    tp += 1;
                    fn_ -= 1;
                    let slot = &mut best_in_window[window_base[k as usize] + id as usize];
                    windows_detected += u64::from(slot.is_none());
                    let old = slot.unwrap_or(-profile.fn_);
                    let new = slot.map_or(w, |x| x.max(w));
                    window_part += new - old;
                    *slot = Some(new);
                }
            }
            idx += 1;
        }
        current = ThresholdScore {
            threshold: value,
            score: window_part + fp_part,
            windows_detected,
            tp,
            tn,
            fp,
            fn_,
        };
        if current.score > best.score {
            best = current;
        }
    }
    best
}

/// Scores a corpus under one profile: at `threshold` if given, else at the threshold the
/// sweep finds best. Normalises against the null and perfect detectors.
pub fn evaluate(files: &[FileRows], scores: &[Vec<f64>], profile: &Profile, threshold: Option<f64>) -> ProfileResult {
    let threshold = threshold.unwrap_or_else(|| sweep_best_threshold(files, scores, profile).threshold);
    let (best, per_file) = score_at_threshold(files, scores, profile, threshold);
    let null_score: f64 = -profile.fn_ * files.iter().map(|f| f64::from(f.scored_windows)).sum::<f64>();
    let perfect_score: f64 = profile.tp * files.iter().map(|f| f64::from(f.labelled_windows)).sum::<f64>();
    let normalized = if perfect_score > null_score {
        100.0 * (best.score - null_score) / (perfect_score - null_score)
    } else {
        0.0
    };
    ProfileResult {
        profile: profile.clone(),
        best,
        null_score,
        perfect_score,
        normalized,
        per_file,
        windows_scored: files.iter().map(|f| u64::from(f.scored_windows)).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn std_profile() -> Profile {
        Profile::nab_defaults().remove(0)
    }

    #[test]
    fn overlapping_windows_are_merged_and_later_windows_still_count() {
        let ts: Vec<i64> = (0..100).collect();
        let w = |a: i64, b: i64| Window { start_ms: a, end_ms: b };
        // 40..=50 starts inside 30..=45; 80..=85 comes after both.
        let rows = FileRows::new("f", &ts, &[w(30, 45), w(40, 50), w(80, 85)]);
        assert_eq!(rows.labelled_windows, 2);
        assert_eq!(rows.scored_windows, 2);
        for i in 30..=50 {
            assert!(
                matches!(rows.classes[i], RowClass::Window(0)),
                "row {i}: {:?}",
                rows.classes[i]
            );
        }
        for i in 80..=85 {
            assert!(
                matches!(rows.classes[i], RowClass::Window(1)),
                "row {i}: {:?}",
                rows.classes[i]
            );
        }
        assert!(matches!(rows.classes[60], RowClass::Outside));
        // Unmerged, the same windows in another order give the same rows.
        let again = FileRows::new("f", &ts, &[w(80, 85), w(40, 50), w(30, 45)]);
        assert_eq!(again.classes, rows.classes);
    }

    #[test]
    fn scaled_sigmoid_matches_nab() {
        assert!((scaled_sigmoid(-1.0) - 0.986_614_298_151_43).abs() < 1e-12);
        assert!(scaled_sigmoid(0.0).abs() < 1e-12);
        assert_eq!(scaled_sigmoid(3.5), -1.0);
    }

    /// 100 rows, probation 15, one window over rows 40..=49.
    fn toy() -> FileRows {
        let ts: Vec<i64> = (0..100).map(|i| i * 1000).collect();
        FileRows::new(
            "toy",
            &ts,
            &[Window {
                start_ms: 40_000,
                end_ms: 49_000,
            }],
        )
    }

    #[test]
    fn window_start_is_worth_a_tp_and_a_miss_costs_a_fn() {
        let f = toy();
        assert_eq!(f.classes[14], RowClass::Probation);
        assert_eq!(f.classes[15], RowClass::Outside);
        assert_eq!(f.classes[40], RowClass::Window(0));
        let p = std_profile();
        assert!((f.weight(40, &p) - 1.0).abs() < 1e-12);
        assert!(f.weight(49, &p) > 0.0 && f.weight(49, &p) < 0.3);
        assert!((f.weight(20, &p) + 0.11).abs() < 1e-12);
        // Just after the window a false positive is almost free.
        assert!(f.weight(50, &p).abs() < 0.11 * 0.6);

        let mut s = vec![0.0; 100];
        let (none, _) = score_at_threshold(std::slice::from_ref(&f), std::slice::from_ref(&s), &p, 0.5);
        assert_eq!(none.score, -1.0);
        s[40] = 1.0;
        s[45] = 1.0;
        s[20] = 1.0;
        s[5] = 1.0; // probation: ignored
        let (hit, _) = score_at_threshold(std::slice::from_ref(&f), std::slice::from_ref(&s), &p, 0.5);
        assert!((hit.score - (1.0 - 0.11)).abs() < 1e-12);
        assert_eq!((hit.tp, hit.fp), (2, 1));
        let r = evaluate(&[f], &[s], &p, None);
        assert!((r.best.score - 0.89).abs() < 1e-12);
        assert!((r.normalized - 100.0 * 1.89 / 2.0).abs() < 1e-9);
    }

    #[test]
    fn sweep_agrees_with_direct_scoring() {
        let f = toy();
        let p = std_profile();
        let s: Vec<f64> = (0..100).map(|i| ((i * 37) % 101) as f64 / 100.0).collect();
        let best = sweep_best_threshold(std::slice::from_ref(&f), std::slice::from_ref(&s), &p);
        let (direct, _) = score_at_threshold(std::slice::from_ref(&f), std::slice::from_ref(&s), &p, best.threshold);
        assert!((best.score - direct.score).abs() < 1e-9);
        assert_eq!(
            (best.tp, best.fp, best.fn_, best.tn, best.windows_detected),
            (direct.tp, direct.fp, direct.fn_, direct.tn, direct.windows_detected)
        );
        for t in s.iter().copied() {
            let (d, _) = score_at_threshold(std::slice::from_ref(&f), std::slice::from_ref(&s), &p, t);
            assert!(d.score <= best.score + 1e-12);
        }
    }

    #[test]
    fn nan_scores_are_never_detections() {
        let f = toy();
        let p = std_profile();
        let s = vec![f64::NAN; 100];
        let r = evaluate(&[f], &[s], &p, None);
        assert_eq!(r.best.score, -1.0);
        assert_eq!(r.normalized, 0.0);
        assert_eq!((r.best.windows_detected, r.windows_scored), (0, 1));
    }

    #[test]
    fn windows_are_counted_once_however_many_rows_detect_them() {
        let ts: Vec<i64> = (0..100).collect();
        let w = |a: i64, b: i64| Window { start_ms: a, end_ms: b };
        let f = FileRows::new("f", &ts, &[w(30, 40), w(60, 70), w(80, 90)]);
        let mut s = vec![0.0; 100];
        for score in &mut s[30..=40] {
            *score = 1.0; // eleven rows, one window
        }
        s[65] = 1.0;
        let (r, _) = score_at_threshold(std::slice::from_ref(&f), std::slice::from_ref(&s), &std_profile(), 0.5);
        assert_eq!((r.windows_detected, r.tp), (2, 12));
    }
}
