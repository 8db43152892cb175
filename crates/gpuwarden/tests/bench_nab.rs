//! `gpuwarden bench nab` on a corpus other than NAB, through the binary: it names the
//! corpus, runs NAB's windowed-Gaussian baseline beside our detector, prints the held-out
//! protocol, says when there is no published scoreboard, and refuses a corpus whose files
//! lack labels instead of scoring them as anomaly-free.

mod common;

use common::binary;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// Writes a small labelled corpus: four series of 1,200 five-minute rows in two
/// categories, each with one step change labelled as a window.
fn corpus(root: &Path) {
    let mut labels = serde_json::Map::new();
    for (k, name) in ["a/one.csv", "a/two.csv", "b/three.csv", "b/four.csv"]
        .iter()
        .enumerate()
    {
        let mut text = String::from("timestamp,value\n");
        let start = 1_600_000_000i64;
        for i in 0..1200i64 {
            let (d, rem) = ((start + i * 300) / 86_400, (start + i * 300) % 86_400);
            // Days since 2020-09-13 (1_600_000_000 is 2020-09-13 12:26:40 UTC).
            let day = 13 + (d - 1_600_000_000 / 86_400);
            let noise = ((i * 7919 + k as i64 * 31) % 17) as f64 / 17.0;
            let value = if (900 + k as i64 * 20..960 + k as i64 * 20).contains(&i) {
                40.0
            } else {
                10.0
            } + noise;
            let _ = writeln!(
                text,
                "2020-09-{day:02} {:02}:{:02}:{:02},{value}",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60
            );
        }
        let path = root.join("data").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        let at = |i: i64| {
            let t = start + i * 300;
            let (d, rem) = (t / 86_400, t % 86_400);
            format!(
                "2020-09-{:02} {:02}:{:02}:{:02}.000000",
                13 + (d - 1_600_000_000 / 86_400),
                rem / 3600,
                rem % 3600 / 60,
                rem % 60
            )
        };
        let w = 900 + k as i64 * 20;
        labels.insert(name.to_string(), serde_json::json!([[at(w - 30), at(w + 30)]]));
    }
    std::fs::create_dir_all(root.join("labels")).unwrap();
    std::fs::write(
        root.join("labels/combined_windows.json"),
        serde_json::Value::Object(labels).to_string(),
    )
    .unwrap();
}

fn bench(root: &Path) -> (bool, String, String) {
    let out = Command::new(binary())
        .args(["bench", "nab", "--data"])
        .arg(root)
        .output()
        .expect("run gpuwarden bench nab");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn scores_any_labelled_corpus_with_its_baseline_and_the_held_out_protocol() {
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path());
    let (ok, stdout, stderr) = bench(dir.path());
    assert!(ok, "bench nab failed: {stderr}\n{stdout}");
    assert!(
        stdout.contains(&format!("corpus: {}", dir.path().display())),
        "{stdout}"
    );
    assert!(stdout.contains("4 series, 4800 rows, 4 labelled windows"), "{stdout}");
    assert!(stdout.contains("no published results"), "{stdout}");
    assert!(!stdout.contains("NAB v1.1"), "another corpus is not NAB: {stdout}");
    // Both detectors, whole corpus and held out, with windows counted.
    for needle in [
        "| gpuwarden |",
        "| windowedGaussian |",
        "held out (series split 2 / 2",
        "| gpuwarden | standard |",
        "| windowedGaussian | standard |",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
    // A 30-unit step on a 10 ± 1 series is caught by both: 4 windows out of 4.
    let line = stdout
        .lines()
        .find(|l| l.starts_with("| windowedGaussian |") && l.contains(" / 4 |"))
        .unwrap_or_else(|| panic!("no windows-caught column for the baseline:\n{stdout}"));
    assert!(line.contains("| 4 / 4 |"), "{line}");
    // Nothing written under the current directory unless asked.
    assert!(!Path::new("target/bench-nab").join("windowedGaussian").exists());
}

#[test]
fn refuses_a_corpus_with_unlabelled_files_or_no_labels() {
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path());
    std::fs::copy(dir.path().join("data/a/one.csv"), dir.path().join("data/a/extra.csv")).unwrap();
    let (ok, _, stderr) = bench(dir.path());
    assert!(!ok);
    assert!(
        stderr.contains("a/extra.csv") && stderr.contains("no entry in labels"),
        "{stderr}"
    );

    std::fs::remove_file(dir.path().join("labels/combined_windows.json")).unwrap();
    let (ok, _, stderr) = bench(dir.path());
    assert!(!ok);
    assert!(stderr.contains("no labels/combined_windows.json"), "{stderr}");

    // A malformed published scoreboard fails before the run, not silently.
    corpus(dir.path());
    std::fs::remove_file(dir.path().join("data/a/extra.csv")).unwrap();
    std::fs::create_dir_all(dir.path().join("results")).unwrap();
    std::fs::write(dir.path().join("results/final_results.json"), "{oops").unwrap();
    let (ok, _, stderr) = bench(dir.path());
    assert!(!ok);
    assert!(stderr.contains("final_results.json"), "{stderr}");
}
