//! Checks the simulator's distributions against real fleet data: Kolmogorov–Smirnov
//! distances between a simulated fleet's samples and AcmeTrace's A100 CDFs.
//!
//! Used by `examples/ks_distance.rs` (prints the table in `docs/simulator.md`) and by
//! the calibration test, which keeps temperature and power from drifting away.

use crate::config::SimConfig;
use crate::error::SimError;
use crate::fleet::Fleet;
use gpuwarden_model::DcgmField;
use std::collections::BTreeMap;

/// A reference distribution as `(value, cumulative fraction)` points, sorted by value.
pub type RefCdf = Vec<(f64, f64)>;

/// Parses `cluster,metric,cdf_percent,value[,…]` lines (the AcmeTrace derived CDF
/// format) into one CDF per `(cluster, metric)`. Lines that do not parse are skipped.
pub fn parse_cdfs(text: &str) -> BTreeMap<(String, String), RefCdf> {
    let mut out: BTreeMap<(String, String), RefCdf> = BTreeMap::new();
    for line in text.lines().skip(1) {
        let mut cols = line.split(',');
        let (Some(cluster), Some(metric), Some(p), Some(v)) = (cols.next(), cols.next(), cols.next(), cols.next())
        else {
            continue;
        };
        let (Ok(p), Ok(v)) = (p.parse::<f64>(), v.parse::<f64>()) else {
            continue;
        };
        out.entry((cluster.to_string(), metric.to_string()))
            .or_default()
            .push((v, p / 100.0));
    }
    for cdf in out.values_mut() {
        cdf.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    }
    out
}

/// Reference CDF at `x`: the largest cumulative fraction whose value is `<= x`
/// (`strict`: `< x`), 0 below the first point.
fn ref_cdf(cdf: &RefCdf, x: f64, strict: bool) -> f64 {
    let i = cdf.partition_point(|&(v, _)| if strict { v < x } else { v <= x });
    if i == 0 {
        0.0
    } else if i == cdf.len() && !strict {
        1.0
    } else {
        cdf[i - 1].1
    }
}

/// Two-sample-style KS distance `sup |F_sim − F_ref|` between `samples` and a reference
/// CDF, checked on both sides of every jump of either function (values are often
/// integers, so the left limits matter).
pub fn ks_distance(samples: &[f64], reference: &RefCdf) -> f64 {
    if samples.is_empty() || reference.is_empty() {
        return 1.0;
    }
    let mut s: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    s.sort_by(f64::total_cmp);
    let n = s.len() as f64;
    let sim = |x: f64, strict: bool| s.partition_point(|&v| if strict { v < x } else { v <= x }) as f64 / n;
    let mut d: f64 = 0.0;
    for &x in s.iter().chain(reference.iter().map(|(v, _)| v)) {
        d = d.max((sim(x, false) - ref_cdf(reference, x, false)).abs());
        d = d.max((sim(x, true) - ref_cdf(reference, x, true)).abs());
    }
    d
}

/// A compared quantity: how to read it from the fleet and the AcmeTrace metric name.
pub struct Metric {
    pub acme: &'static str,
    pub field: DcgmField,
    /// Multiplies the exported value into the reference's unit.
    pub scale: f64,
}

/// What `examples/ks_distance.rs` compares. FB used is a % of 80 GiB in AcmeTrace.
pub const METRICS: &[Metric] = &[
    Metric {
        acme: "DCGM_FI_DEV_GPU_TEMP_C",
        field: DcgmField::GpuTemp,
        scale: 1.0,
    },
    Metric {
        acme: "DCGM_FI_DEV_MEMORY_TEMP_C",
        field: DcgmField::MemoryTemp,
        scale: 1.0,
    },
    Metric {
        acme: "DCGM_FI_DEV_POWER_USAGE_W",
        field: DcgmField::PowerUsage,
        scale: 1.0,
    },
    Metric {
        acme: "DCGM_FI_DEV_GPU_UTIL_pct",
        field: DcgmField::GpuUtil,
        scale: 1.0,
    },
    Metric {
        acme: "DCGM_FI_PROF_SM_ACTIVE_pct",
        field: DcgmField::ProfSmActive,
        scale: 100.0,
    },
    Metric {
        acme: "FB_USED_pct_of_80GiB",
        field: DcgmField::FbUsed,
        scale: 100.0 / 81920.0,
    },
];

/// An all-A100 fleet like AcmeTrace's clusters, no faults.
pub fn a100_fleet_config(seed: u64, nodes: usize) -> SimConfig {
    SimConfig {
        nodes,
        seed,
        fault_rate_multiplier: 0.0,
        model_mix: vec![crate::models::ModelShare {
            model: crate::models::GpuModel::A100Sxm4,
            weight: 1.0,
        }],
        ..SimConfig::default()
    }
}

/// Runs `config`'s fleet for `warmup_ms` then `duration_ms`, sampling every GPU's
/// `fields` every `every_ms` (what a scraper would store). One vector per field.
pub fn sample_fleet(
    config: &SimConfig,
    fields: &[DcgmField],
    warmup_ms: i64,
    duration_ms: i64,
    every_ms: i64,
) -> Result<Vec<Vec<f64>>, SimError> {
    let mut fleet = Fleet::new(config)?;
    let t0 = fleet.now_ms() + warmup_ms;
    let every = every_ms.max(1);
    let gpus = fleet.gpus().len();
    let mut out = vec![Vec::with_capacity((duration_ms / every) as usize * gpus); fields.len()];
    let mut t = t0;
    while t <= t0 + duration_ms {
        fleet.advance_to(t);
        for g in 0..gpus {
            for (i, f) in fields.iter().enumerate() {
                if let Some(v) = fleet.value(g, *f) {
                    out[i].push(v);
                }
            }
        }
        t += every;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ks_of_identical_distribution_is_small_and_of_disjoint_is_one() {
        let reference: RefCdf = (0..=100).map(|i| (i as f64, i as f64 / 100.0)).collect();
        let uniform: Vec<f64> = (0..10_000).map(|i| (i % 100) as f64 + 0.5).collect();
        assert!(ks_distance(&uniform, &reference) < 0.02);
        assert!((ks_distance(&[500.0; 10], &reference) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn parses_the_acme_format() {
        let cdfs = parse_cdfs("cluster,metric,cdf_percent,value\nSeren,T,0,20\nSeren,T,100,30\nbad line\n");
        assert_eq!(
            cdfs[&("Seren".to_string(), "T".to_string())],
            vec![(20.0, 0.0), (30.0, 1.0)]
        );
    }
}
