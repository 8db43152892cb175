//! NAB's reference detectors, re-implemented so `gpuwarden bench nab` can run them on any
//! corpus it is given and print their row beside ours: a figure without its baseline
//! cannot say whether a corpus is easy or our detector good.
//!
//! [`WindowedGaussian`] is NAB's `windowedGaussian` detector (NAB v1.1,
//! `nab/detectors/gaussian/windowedGaussian_detector.py`): the mean and population
//! standard deviation of the last 6,400 values, moved forward 100 values at a time; each
//! value scores `1 − Q(|z|)`, the two-sided tail probability under that Gaussian. NAB
//! publishes 39.6 / 20.9 / 47.4 for it; `tests/nab_conformance.rs` checks that this code
//! gives the same on NAB's corpus.

/// NAB's window and step.
pub const WINDOW: usize = 6400;
pub const STEP: usize = 100;

/// A streaming windowed-Gaussian detector; one per series.
#[derive(Debug, Clone)]
pub struct WindowedGaussian {
    window: std::collections::VecDeque<f64>,
    step: Vec<f64>,
    mean: f64,
    std: f64,
    window_size: usize,
    step_size: usize,
}

impl Default for WindowedGaussian {
    fn default() -> Self {
        Self::new(WINDOW, STEP)
    }
}

impl WindowedGaussian {
    /// A detector with its own window and step (both at least 1).
    pub fn new(window_size: usize, step_size: usize) -> Self {
        Self {
            window: std::collections::VecDeque::with_capacity(window_size.max(1)),
            step: Vec::with_capacity(step_size.max(1)),
            // NAB starts from N(0, 1) and only scores once it has seen a value.
            mean: 0.0,
            std: 1.0,
            window_size: window_size.max(1),
            step_size: step_size.max(1),
        }
    }

    /// Scores `value` against the window so far, then takes it in (as NAB does: score
    /// first, no look-ahead). A non-finite value scores 0 and is not taken in, so one bad
    /// row cannot poison the statistics of the next 6,400.
    pub fn update(&mut self, value: f64) -> f64 {
        if !value.is_finite() {
            return 0.0;
        }
        let score = if self.window.is_empty() {
            0.0
        } else {
            1.0 - normal_tail(value, self.mean, self.std)
        };
        if self.window.len() < self.window_size {
            self.window.push_back(value);
            self.refresh();
        } else {
            self.step.push(value);
            if self.step.len() == self.step_size {
                self.window.drain(..self.step_size.min(self.window.len()));
                self.window.extend(self.step.drain(..));
                self.refresh();
            }
        }
        score
    }

    fn refresh(&mut self) {
        let n = self.window.len() as f64;
        self.mean = self.window.iter().sum::<f64>() / n;
        let var = self.window.iter().map(|v| (v - self.mean).powi(2)).sum::<f64>() / n;
        self.std = var.sqrt();
        // NAB's guard against a constant window.
        if self.std == 0.0 {
            self.std = 0.000_001;
        }
    }
}

/// A score as NAB's result files hold it: Python 2's `str(float)`, 12 significant digits.
/// It matters for this detector: NAB's detections are the rows whose score *prints* as
/// 1.0, i.e. beyond about 7.2 σ, not those that saturate in binary (about 8.3 σ);
/// scored without this rounding the baseline falls from 39.6 to 36.5.
pub fn as_nab_stores_it(score: f64) -> f64 {
    format!("{score:.11e}").parse().unwrap_or(score)
}

/// NAB's `normalProbability`: the tail probability beyond `x` of N(mean, std), mirrored
/// below the mean (so it is the one-sided tail of |z|).
fn normal_tail(x: f64, mean: f64, std: f64) -> f64 {
    let x = if x < mean { 2.0 * mean - x } else { x };
    let z = (x - mean) / std;
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_probabilities_are_those_of_the_normal_distribution() {
        assert!((normal_tail(0.0, 0.0, 1.0) - 0.5).abs() < 1e-12);
        assert!((normal_tail(1.959_963_985, 0.0, 1.0) - 0.025).abs() < 1e-9);
        // Symmetric around the mean.
        assert_eq!(normal_tail(-2.0, 0.0, 1.0), normal_tail(2.0, 0.0, 1.0));
        assert!((normal_tail(13.0, 10.0, 2.0) - normal_tail(1.5, 0.0, 1.0)).abs() < 1e-15);
    }

    #[test]
    fn an_outlier_scores_near_one_and_ordinary_values_do_not() {
        let mut d = WindowedGaussian::default();
        assert_eq!(d.update(5.0), 0.0, "nothing seen yet");
        for i in 0..2000 {
            d.update((f64::from(i) * 0.37).sin());
        }
        // At the mean the two-sided tail is everything: 1 − Q(0) = 0.5.
        assert!((d.update(0.0) - 0.5).abs() < 0.05);
        assert!(d.update(50.0) > 0.999_999);
        // NAB's detections are the rows that saturate at exactly 1.0.
        assert_eq!(d.update(1e6), 1.0);
    }

    #[test]
    fn scores_are_rounded_to_twelve_significant_digits() {
        assert_eq!(as_nab_stores_it(0.999_999_999_999_7), 1.0);
        assert_eq!(as_nab_stores_it(0.999_999_999_998), 0.999_999_999_998);
        assert_eq!(as_nab_stores_it(0.022_989_696_081_93), 0.022_989_696_081_9);
        assert_eq!(as_nab_stores_it(0.0), 0.0);
    }

    #[test]
    fn the_window_slides_by_whole_steps() {
        let mut d = WindowedGaussian::new(4, 2);
        for v in [1.0, 1.0, 1.0, 1.0] {
            d.update(v);
        }
        assert_eq!(d.mean, 1.0);
        assert_eq!(d.std, 0.000_001, "a constant window gets NAB's floor");
        d.update(3.0);
        assert_eq!(d.mean, 1.0, "one value of a step of two moves nothing");
        d.update(3.0);
        assert_eq!(d.mean, 2.0, "the window is now 1, 1, 3, 3");
        assert_eq!(d.window.len(), 4);
    }

    #[test]
    fn non_finite_values_are_not_taken_in() {
        let mut d = WindowedGaussian::new(4, 2);
        d.update(1.0);
        assert_eq!(d.update(f64::NAN), 0.0);
        assert_eq!(d.update(f64::INFINITY), 0.0);
        assert_eq!(d.window.len(), 1);
        assert!(d.mean.is_finite());
    }
}
