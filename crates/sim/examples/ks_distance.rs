//! Kolmogorov–Smirnov distance between a simulated all-A100 fleet and AcmeTrace's
//! Seren / Kalos A100 clusters, per field: the figures in `docs/simulator.md`.
//!
//! `cargo run --release -p gpuwarden-sim --example ks_distance -- [hours] [nodes] [seed] [CDF_CSV]`

use gpuwarden_sim::calibration::{a100_fleet_config, ks_distance, parse_cdfs, sample_fleet, METRICS};

fn main() {
    let mut args = std::env::args().skip(1);
    let hours: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(48.0);
    let nodes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let path = args
        .next()
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/acme_a100_cdfs.csv").to_string());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let cdfs = parse_cdfs(&text);
    let cfg = a100_fleet_config(seed, nodes);
    let fields: Vec<_> = METRICS.iter().map(|m| m.field).collect();
    let samples = sample_fleet(&cfg, &fields, 3_600_000, (hours * 3_600_000.0) as i64, 60_000).expect("valid config");
    println!("A100 fleet: {nodes} nodes × 8 GPUs, {hours} h sampled every 60 s, seed {seed}");
    println!(
        "{:<28} {:>8} {:>8}  p10/p25/p50/p75/p95: sim | Seren | Kalos",
        "metric", "KS Seren", "KS Kalos"
    );
    for (m, s) in METRICS.iter().zip(&samples) {
        let mut v: Vec<f64> = s.iter().map(|x| x * m.scale).collect();
        v.sort_by(f64::total_cmp);
        let q = |p: f64| v[((v.len() - 1) as f64 * p) as usize];
        let get = |c: &str| cdfs.get(&(c.to_string(), m.acme.to_string()));
        let rq = |c: &str, p: f64| {
            get(c)
                .and_then(|cdf| cdf.iter().find(|(_, f)| *f >= p).map(|(x, _)| *x))
                .unwrap_or(f64::NAN)
        };
        let ks = |c: &str| get(c).map(|cdf| ks_distance(&v, cdf)).unwrap_or(f64::NAN);
        let ps = [0.1, 0.25, 0.5, 0.75, 0.95];
        let fmt = |f: &dyn Fn(f64) -> f64| ps.iter().map(|&p| format!("{:.0}", f(p))).collect::<Vec<_>>().join("/");
        println!(
            "{:<28} {:>8.3} {:>8.3}  {} | {} | {}",
            m.acme,
            ks("Seren"),
            ks("Kalos"),
            fmt(&q),
            fmt(&|p| rq("Seren", p)),
            fmt(&|p| rq("Kalos", p)),
        );
    }
}
