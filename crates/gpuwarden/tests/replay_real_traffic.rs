//! `gpuwarden bench replay` through the real binary on a slice of the real GenTD26 trace
//! (the first 24 pods, the first 8 hours): the product's analysis must stay at or under
//! 1 incident per 1,000 GPU-hours on real serving traffic, and the replay must actually
//! have replayed the slice (rows, GPU-hours). Skips when the shared data folder is not
//! there (set `GPUWARDEN_GENTD26` to its path), unless `GPUWARDEN_REQUIRE_TOOLS=1`.

mod common;

use std::path::PathBuf;
use std::process::Command;

fn data_dir() -> PathBuf {
    std::env::var_os("GPUWARDEN_GENTD26").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/alibaba-gentd26"),
        PathBuf::from,
    )
}

#[test]
fn real_serving_traffic_opens_at_most_one_incident_per_thousand_gpu_hours() {
    let data = data_dir();
    if !data.join("pod_gpu_duty_cycle.dev-half.csv").exists() {
        assert!(!common::tools_required(), "GenTD26 not found at {}", data.display());
        eprintln!("SKIPPED replay test: GenTD26 not found at {}", data.display());
        return;
    }
    let out = Command::new(common::binary())
        .args(["bench", "replay", "--data"])
        .arg(&data)
        .args(["--max-gpus", "24", "--hours", "8"])
        .output()
        .expect("run gpuwarden bench replay");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "bench replay failed: {}", out.status);
    // "24 GPUs x 8.0 h = 192 GPU-hours at a 57 s interval; 12024 rows replayed ..."
    let line = stdout
        .lines()
        .find(|l| l.contains("GPU-hours at a"))
        .expect("summary line");
    let hours: f64 = line
        .split(" = ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!((180.0..=200.0).contains(&hours), "{line}");
    let rows: u64 = line
        .split("; ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(rows >= 24 * 500, "{line}");
    let all = stdout
        .lines()
        .find(|l| l.starts_with("| **all** |"))
        .expect("total row");
    let incidents: f64 = all.split('|').nth(2).unwrap().trim().parse().unwrap();
    assert!(
        incidents * 1000.0 / hours <= 1.0,
        "{incidents} incidents in {hours} GPU-hours of real traffic: {stdout}"
    );
}
