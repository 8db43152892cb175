//! Against a real Prometheus Alertmanager (Debian `prometheus-alertmanager`): an incident
//! opened in the simulated fleet shows up in Alertmanager's `GET /api/v2/alerts` with the
//! documented labels and annotations, and ends when the incident is resolved through
//! gpuwarden's API.
//!
//! Skips when the binary is missing, unless `GPUWARDEN_REQUIRE_TOOLS=1`
//! (`scripts/test.sh` installs it).

mod common;

use common::{free_port, get_json, post_json, tools_required, wait_for};
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const AM: &str = "prometheus-alertmanager";

struct Alertmanager {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_alertmanager() -> Option<Alertmanager> {
    if Command::new(AM).arg("--version").output().is_err() {
        assert!(
            !tools_required(),
            "{AM} is not installed (apt-get install prometheus-alertmanager)"
        );
        eprintln!("skipping: {AM} is not installed");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("am.yml");
    std::fs::write(&cfg, "route:\n  receiver: none\nreceivers:\n  - name: none\n").unwrap();
    let port = free_port();
    let child = Command::new(AM)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start alertmanager");
    let am = Alertmanager {
        child,
        base: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    let url = format!("{}/api/v2/status", am.base);
    wait_for(Duration::from_secs(20), "Alertmanager to answer", || async {
        get_json(&url).await.ok()
    })
    .await;
    Some(am)
}

/// Alertmanager's active alerts with `incident = id`.
async fn alerts_of(am: &str, id: &str) -> Vec<Value> {
    let all = get_json(&format!("{am}/api/v2/alerts")).await.unwrap_or(Value::Null);
    all.as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["labels"]["incident"] == id)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_fires_in_alertmanager_and_ends_when_resolved() {
    let Some(am) = start_alertmanager().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gpuwarden.toml");
    std::fs::write(
        &config,
        format!(
            "[notify]\nexternal_url = \"http://gpuwarden.test:9470\"\nretry_initial = \"200ms\"\nretry_max = \"1s\"\n\n\
             [notify.sinks.am]\ntype = \"alertmanager\"\nurl = \"{}\"\n",
            am.base
        ),
    )
    .unwrap();
    let gw = common::start(
        &dir.path().join("data"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--scrape-interval",
            "500ms",
            "--nodes",
            "1",
            "--gpus-per-node",
            "2",
            "--fault-rate-multiplier",
            "0",
        ],
    )
    .await;
    let gpu = wait_for(Duration::from_secs(30), "a scraped GPU", || async {
        let body = get_json(&format!("{}/api/v1/gpus", gw.base)).await.ok()?;
        body["gpus"][0]["identity"]["uuid"].as_str().map(str::to_string)
    })
    .await;
    let (status, _) = post_json(
        &format!("{}/api/v1/simulation/faults", gw.base),
        serde_json::json!({"gpu": gpu, "kind": "row-remap-failure"}),
    )
    .await;
    assert_eq!(status, 201);
    let incident = wait_for(Duration::from_secs(30), "an open incident", || async {
        let body = get_json(&format!("{}/api/v1/incidents?state=open&gpu={gpu}", gw.base))
            .await
            .ok()?;
        body["incidents"].as_array()?.first().cloned()
    })
    .await;
    let id = incident["id"].as_str().unwrap().to_string();

    // Open → appears, with every documented field.
    let alert = wait_for(Duration::from_secs(20), "the alert in Alertmanager", || async {
        alerts_of(&am.base, &id).await.into_iter().next()
    })
    .await;
    let l = &alert["labels"];
    assert_eq!(l["alertname"], "GpuwardenHealth", "{alert}");
    assert_eq!(l["severity"], incident["severity"], "{alert}");
    assert_eq!(l["rule"], incident["rule"], "{alert}");
    assert_eq!(l["node"], incident["node"], "{alert}");
    assert_eq!(l["gpu"], gpu.as_str(), "{alert}");
    assert_eq!(l["uuid"], gpu.as_str(), "{alert}");
    assert_eq!(l["incident"], id.as_str(), "{alert}");
    assert_eq!(alert["annotations"]["summary"], incident["summary"], "{alert}");
    assert!(
        alert["annotations"]["description"].as_str().unwrap().contains(&id),
        "{alert}"
    );
    assert!(
        alert["annotations"]["action"]
            .as_str()
            .unwrap()
            .starts_with(incident["action"].as_str().unwrap()),
        "{alert}"
    );
    assert_eq!(
        alert["generatorURL"],
        format!("http://gpuwarden.test:9470/api/v1/incidents/{id}")
    );
    assert_eq!(alert["status"]["state"], "active", "{alert}");
    let starts = humantime::parse_rfc3339(alert["startsAt"].as_str().unwrap()).unwrap();
    let ends = humantime::parse_rfc3339(alert["endsAt"].as_str().unwrap()).unwrap();
    assert!(
        ends > std::time::SystemTime::now() + Duration::from_secs(3600),
        "firing alert ends in the future"
    );
    assert!(starts <= std::time::SystemTime::now());

    // Resolve → ends.
    let (status, body) = post_json(
        &format!("{}/api/v1/incidents/{id}/resolve", gw.base),
        serde_json::json!({"actor": "test", "comment": "replaced the GPU"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    wait_for(Duration::from_secs(20), "the alert to end in Alertmanager", || async {
        alerts_of(&am.base, &id).await.is_empty().then_some(())
    })
    .await;

    // The outbox agrees: both transitions delivered, nothing pending or failed.
    let n = get_json(&format!("{}/api/v1/notifications", gw.base)).await.unwrap();
    let sink = &n["sinks"][0];
    assert_eq!(sink["name"], "am");
    assert_eq!(sink["pending"], 0, "{n}");
    assert_eq!(sink["failed"], 0, "{n}");
    let keys: Vec<&str> = sink["recent"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["delivery_key"].as_str())
        .collect();
    assert!(
        keys.contains(&format!("{id}#1").as_str()) && keys.contains(&format!("{id}#2").as_str()),
        "{n}"
    );
    let metrics = reqwest::get(format!("{}/metrics", gw.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gpuwarden_notifications_delivered_total{sink=\"am\"}")),
        "{metrics}"
    );
}
