//! How often does a healthy noisy series alarm? Streams 50,000 samples of stationary
//! pseudo-noise (sum of three uniforms, 10 s apart) through a detector with
//! `SeriesConfig::default()` (or the JSON config in `$NAB_CFG`) and prints quantiles of
//! `score` and `calibrated` after a 1,000-sample warm-up, and how many samples reach 0.5.

mod common;

use gpuwarden_anomaly::SeriesDetector;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cfg = common::config_from_env()?;
    let mut d = SeriesDetector::new(cfg)?;
    let mut seed: u64 = 7;
    let mut u = move || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    let (mut score, mut cal) = (Vec::new(), Vec::new());
    for i in 0..51_000i64 {
        let v = 60.0 + 2.0 * (u() + u() + u() - 1.5);
        let a = d.update(i * 10_000, v);
        if i >= 1_000 {
            score.push(a.score);
            cal.push(a.calibrated);
        }
    }
    for (name, mut xs) in [("score", score), ("calibrated", cal)] {
        xs.sort_by(f64::total_cmp);
        let q = |p: f64| xs[((xs.len() - 1) as f64 * p) as usize];
        let over = xs.iter().filter(|&&x| x >= 0.5).count();
        println!(
            "{name:<10} p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} max {:.3}  >=0.5: {over} of {}",
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            xs[xs.len() - 1],
            xs.len()
        );
    }
    Ok(())
}
