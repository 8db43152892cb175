//! The simulated A100 fleet stays close to AcmeTrace's real A100 clusters (KS distance
//! per field). `examples/ks_distance.rs` prints the full table for docs/simulator.md.

use gpuwarden_model::DcgmField;
use gpuwarden_sim::calibration::{a100_fleet_config, ks_distance, parse_cdfs, sample_fleet};

#[test]
fn temperature_and_power_match_acme_a100_clusters() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/acme_a100_cdfs.csv")).unwrap();
    let cdfs = parse_cdfs(&text);
    let fields = [DcgmField::GpuTemp, DcgmField::PowerUsage];
    // 64 GPUs over a simulated day: jobs last hours, so shorter runs are mostly noise.
    let samples = sample_fleet(&a100_fleet_config(1, 8), &fields, 3_600_000, 24 * 3_600_000, 120_000).unwrap();
    for cluster in ["Seren", "Kalos"] {
        let temp = ks_distance(&samples[0], &cdfs[&(cluster.into(), "DCGM_FI_DEV_GPU_TEMP_C".into())]);
        let power = ks_distance(
            &samples[1],
            &cdfs[&(cluster.into(), "DCGM_FI_DEV_POWER_USAGE_W".into())],
        );
        eprintln!("{cluster}: KS temperature {temp:.3}, power {power:.3}");
        assert!(temp < 0.2, "{cluster} GPU temperature KS {temp:.3}");
        assert!(power < 0.25, "{cluster} power KS {power:.3}");
    }
}
