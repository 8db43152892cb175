//! Interoperability with the real Prometheus tools (Debian package `prometheus`):
//! `promtool check metrics` accepts gpuwarden's `/metrics` and the simulator's
//! dcgm-exporter pages, and a real Prometheus scrapes the simulated exporters.
//!
//! These tests skip when the tools are missing, unless GPUWARDEN_REQUIRE_TOOLS=1 (set by
//! `scripts/test.sh`), in which case a missing tool is a failure.

mod common;

use common::{exporter_hostports, get_json, start, start_prometheus, tools_required, wait_for};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

fn have(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            !tools_required(),
            "{tool} is required (GPUWARDEN_REQUIRE_TOOLS=1) but not installed"
        );
        eprintln!("skipping: {tool} not installed (install the Debian package `prometheus`)");
    }
    found
}

fn promtool_check_metrics(body: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_our_metrics_and_the_simulated_exporter_pages() {
    if !have("promtool") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let gw = start(dir.path(), &["--scrape-interval", "1s", "--nodes", "1"]).await;
    wait_for(Duration::from_secs(30), "a scrape", || async {
        let t = get_json(&format!("{}/api/v1/targets", gw.base)).await.ok()?;
        (t["targets"][0]["up"] == true).then_some(())
    })
    .await;
    let ours = reqwest::get(format!("{}/metrics", gw.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (ok, report) = promtool_check_metrics(&ours);
    assert!(ok, "promtool check metrics on gpuwarden /metrics: {report}\n{ours}");

    let targets = get_json(&format!("{}/api/v1/targets", gw.base)).await.unwrap();
    let url = targets["targets"][0]["url"].as_str().unwrap();
    let page = reqwest::get(url).await.unwrap().text().await.unwrap();
    let (_, report) = promtool_check_metrics(&page);
    // dcgm-exporter's own naming (`UUID`, `modelName`, `Hostname` labels; counters such as
    // DCGM_FI_DEV_PCIE_REPLAY_COUNTER without `_total`) breaks promtool's style lints; a
    // simulator that mimics it must too. Anything else (a parse error, a missing HELP or
    // TYPE) is a real defect.
    const DCGM_EXPORTER_STYLE: [&str; 3] = [
        "label names should be written in 'snake_case' not 'camelCase'",
        "counter metrics should have \"_total\" suffix",
        "metric name should not include type 'counter'",
    ];
    let problems: Vec<&str> = report
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !DCGM_EXPORTER_STYLE.iter().any(|ok| l.contains(ok)))
        .collect();
    assert!(
        problems.is_empty(),
        "promtool check metrics on a simulated dcgm-exporter page: {problems:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_prometheus_scrapes_the_simulated_exporters() {
    if !have("prometheus") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let gw = start(dir.path(), &["--scrape-interval", "1s", "--nodes", "2"]).await;
    let hostports = exporter_hostports(&gw.base).await;
    let (prom, _prom) = start_prometheus(dir.path(), &hostports);
    let query = format!("{prom}/api/v1/query?query=count(DCGM_FI_DEV_GPU_TEMP)");
    let count = wait_for(
        Duration::from_secs(60),
        "Prometheus to store 16 GPU temperatures",
        || async {
            let body = get_json(&query).await.ok()?;
            let v = body["data"]["result"][0]["value"][1].as_str()?.parse::<f64>().ok()?;
            (v >= 16.0).then_some(v)
        },
    )
    .await;
    assert_eq!(count, 16.0);
    let up = get_json(&format!("{prom}/api/v1/query?query=sum(up)")).await.unwrap();
    assert_eq!(
        up["data"]["result"][0]["value"][1], "2",
        "both simulated exporters up: {up}"
    );
}
