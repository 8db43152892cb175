//! Classifier metrics: ROC-AUC, PR-AUC (average precision), precision and recall at a
//! threshold, the F1-best threshold. Weighted (negatives are subsampled in training sets
//! and carry the weight of the rows they stand for). NaN scores rank lowest.

use serde::{Deserialize, Serialize};

/// Metrics of scores against labels at one operating threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub roc_auc: f64,
    pub pr_auc: f64,
    pub threshold: f64,
    pub precision: f64,
    pub recall: f64,
    pub positives: f64,
    pub total: f64,
}

fn order(scores: &[f64]) -> Vec<usize> {
    let key = |s: f64| if s.is_nan() { f64::NEG_INFINITY } else { s };
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| key(scores[b]).total_cmp(&key(scores[a])));
    idx
}

/// ROC-AUC and average precision; ties are one step (no credit for arbitrary order).
pub fn auc(scores: &[f64], labels: &[bool], weights: Option<&[f64]>) -> (f64, f64) {
    let w = |i: usize| weights.map_or(1.0, |w| w[i]);
    let pos: f64 = (0..labels.len()).filter(|&i| labels[i]).map(w).sum();
    let neg: f64 = (0..labels.len()).filter(|&i| !labels[i]).map(w).sum();
    if pos <= 0.0 || neg <= 0.0 {
        return (f64::NAN, f64::NAN);
    }
    let idx = order(scores);
    let (mut tp, mut fp, mut roc, mut ap) = (0.0, 0.0, 0.0, 0.0);
    let mut i = 0;
    while i < idx.len() {
        let s = scores[idx[i]];
        let (mut dtp, mut dfp) = (0.0, 0.0);
        while i < idx.len() && (scores[idx[i]] == s || (s.is_nan() && scores[idx[i]].is_nan())) {
            if labels[idx[i]] {
                dtp += w(idx[i]);
            } else {
                dfp += w(idx[i]);
            }
            i += 1;
        }
        // Trapezoid under the ROC step; AP adds precision at each recall step.
        roc += dfp * (tp + dtp / 2.0);
        tp += dtp;
        fp += dfp;
        if dtp > 0.0 {
            ap += dtp / pos * (tp / (tp + fp));
        }
    }
    (roc / (pos * neg), ap)
}

/// Precision and recall of `score >= threshold`.
pub fn at_threshold(scores: &[f64], labels: &[bool], weights: Option<&[f64]>, threshold: f64) -> (f64, f64) {
    let (mut tp, mut fp, mut fneg) = (0.0, 0.0, 0.0);
    for i in 0..scores.len() {
        let w = weights.map_or(1.0, |w| w[i]);
        let hit = scores[i] >= threshold;
        match (hit, labels[i]) {
            (true, true) => tp += w,
            (true, false) => fp += w,
            (false, true) => fneg += w,
            _ => {}
        }
    }
    let p = if tp + fp > 0.0 { tp / (tp + fp) } else { 0.0 };
    let r = if tp + fneg > 0.0 { tp / (tp + fneg) } else { 0.0 };
    (p, r)
}

/// All metrics at `threshold`.
pub fn evaluate(scores: &[f64], labels: &[bool], weights: Option<&[f64]>, threshold: f64) -> Metrics {
    let (roc_auc, pr_auc) = auc(scores, labels, weights);
    let (precision, recall) = at_threshold(scores, labels, weights, threshold);
    let w = |i: usize| weights.map_or(1.0, |w| w[i]);
    Metrics {
        roc_auc,
        pr_auc,
        threshold,
        precision,
        recall,
        positives: (0..labels.len()).filter(|&i| labels[i]).map(w).sum(),
        total: (0..labels.len()).map(w).sum(),
    }
}

/// The threshold with the best F1 (the operating point saved with a model).
pub fn best_f1_threshold(scores: &[f64], labels: &[bool], weights: Option<&[f64]>) -> f64 {
    let w = |i: usize| weights.map_or(1.0, |w| w[i]);
    let pos: f64 = (0..labels.len()).filter(|&i| labels[i]).map(w).sum();
    let idx = order(scores);
    let (mut tp, mut fp, mut best, mut best_t) = (0.0, 0.0, -1.0, 0.5);
    let mut i = 0;
    while i < idx.len() {
        let s = scores[idx[i]];
        if s.is_nan() {
            break;
        }
        while i < idx.len() && scores[idx[i]] == s {
            if labels[idx[i]] {
                tp += w(idx[i]);
            } else {
                fp += w(idx[i]);
            }
            i += 1;
        }
        let f1 = if tp > 0.0 {
            2.0 * tp / (2.0 * tp + fp + (pos - tp))
        } else {
            0.0
        };
        if f1 > best {
            best = f1;
            best_t = s;
        }
    }
    best_t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_random_and_tied_scores() {
        let labels = [true, true, false, false];
        assert_eq!(auc(&[0.9, 0.8, 0.2, 0.1], &labels, None), (1.0, 1.0));
        let (roc, _) = auc(&[0.5; 4], &labels, None);
        assert_eq!(roc, 0.5);
        let (roc, _) = auc(&[0.1, 0.2, 0.8, f64::NAN], &labels, None);
        assert_eq!(roc, 0.5); // NaN ranks lowest: one pair won, one lost
        assert_eq!(at_threshold(&[0.9, 0.1, 0.9, 0.1], &labels, None, 0.5), (0.5, 0.5));
    }
}
