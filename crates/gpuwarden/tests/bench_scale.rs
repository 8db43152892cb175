//! `gpuwarden bench scale` through the real binary with a tiny fleet: it starts a live
//! fleet, measures it while scrapes land and prints every figure it promises, with
//! values that show the pipeline really ran (evaluations, API answers, stored samples).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The value in the row of the printed table whose label starts with `label`.
fn row<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(&format!("| {label}")))
        .and_then(|l| l.trim_end_matches('|').rsplit('|').next())
        .map(str::trim)
        .unwrap_or_else(|| panic!("no row '{label}' in:\n{out}"))
}

#[test]
fn bench_scale_measures_a_tiny_live_fleet() {
    let mut child = Command::new(common::binary())
        .args([
            "bench",
            "scale",
            "--gpus",
            "16",
            "--duration",
            "6s",
            "--scrape-interval",
            "1s",
            "--clients",
            "4",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(180) {
            let _ = child.kill();
            panic!("bench scale did not finish within 3 minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        status.success(),
        "{status}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(row(&stdout, "GPUs"), "16");
    let evals: f64 = row(&stdout, "evaluations in the window").parse().unwrap();
    assert!(evals >= 2.0, "{stdout}");
    let per_gpu: f64 = row(&stdout, "evaluation per GPU").parse().unwrap();
    assert!(per_gpu > 0.0 && per_gpu.is_finite(), "{stdout}");
    let rss: Vec<f64> = row(&stdout, "RSS start / middle / end")
        .split('/')
        .map(|v| v.trim().parse().unwrap())
        .collect();
    assert!(rss.len() == 3 && rss.iter().all(|&v| v > 1.0), "{stdout}");
    assert_eq!(row(&stdout, "API requests failed"), "0");
    let page = row(&stdout, "API `/api/v1/gpus?limit=100`");
    assert!(!page.contains("NaN"), "no API answer measured:\n{stdout}");
    let bytes: f64 = row(&stdout, "bytes per sample on disk, live").parse().unwrap();
    assert!(bytes > 0.0 && bytes.is_finite(), "{stdout}");
    let lag: f64 = row(&stdout, "scrape lag").parse().unwrap();
    assert!(
        lag.is_finite() && lag < 5_000.0,
        "targets scraped every second:\n{stdout}"
    );
    assert!(stdout.contains("RSS and CPU over time"));
}
