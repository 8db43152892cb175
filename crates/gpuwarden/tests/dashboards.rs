//! Every panel of the exported Grafana dashboards, run against a real Prometheus
//! (Debian package `prometheus`) that scrapes a simulated fleet and gpuwarden itself: a
//! query that errors or returns nothing fails the test.

mod common;

use common::{binary, exporter_hostports, get_json, start, start_prometheus, tools_required, wait_for};
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_query_returns_data_in_prometheus() {
    if Command::new("prometheus").arg("--version").output().is_err() {
        assert!(!tools_required(), "prometheus is required (GPUWARDEN_REQUIRE_TOOLS=1)");
        eprintln!("skipping: prometheus not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let gw = start(dir.path(), &["--scrape-interval", "1s", "--nodes", "2", "--seed", "5"]).await;
    let mut hostports = exporter_hostports(&gw.base).await;
    hostports.push(gw.base.trim_start_matches("http://").to_string());
    let (prom, _prom) = start_prometheus(dir.path(), &hostports);
    let query = |q: String| {
        let prom = prom.clone();
        async move {
            let resp = reqwest::Client::new()
                .get(format!("{prom}/api/v1/query"))
                .query(&[("query", q.as_str())])
                .send()
                .await
                .ok()?;
            resp.json::<serde_json::Value>().await.ok()
        }
    };
    // Wait until Prometheus has both the exporters' and gpuwarden's health metrics.
    wait_for(Duration::from_secs(90), "Prometheus to scrape everything", || {
        let q = query("count(DCGM_FI_DEV_GPU_TEMP) + count(gpuwarden_gpu_health_score)".into());
        async move {
            let v = q.await?;
            v["data"]["result"].as_array().filter(|r| !r.is_empty()).map(|_| ())
        }
    })
    .await;
    // A few more scrapes so that rate() and *_over_time have points.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let out = dir.path().join("dashboards");
    let status = Command::new(binary())
        .args(["dashboards", "export", "--out"])
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let uuid = get_json(&format!("{}/api/v1/gpus", gw.base)).await.unwrap()["gpus"][0]["identity"]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let mut checked = 0;
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(&out).unwrap() {
        let path = entry.unwrap().path();
        let dash: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for panel in dash["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap().replace("$gpu", &uuid);
                let result = query(expr.clone()).await;
                let ok = result.as_ref().is_some_and(|v| {
                    v["status"] == "success" && v["data"]["result"].as_array().is_some_and(|r| !r.is_empty())
                });
                if !ok {
                    failures.push(format!("{} / {}: {expr} -> {result:?}", dash["title"], panel["title"]));
                }
                checked += 1;
            }
        }
    }
    assert!(failures.is_empty(), "panel queries failed:\n{}", failures.join("\n"));
    assert!(checked >= 25, "checked {checked} queries");
}
