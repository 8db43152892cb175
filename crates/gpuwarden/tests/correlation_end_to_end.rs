//! Correlation end to end through the real binary: a simulated GPU overheating is one
//! `cause.thermal` incident whose contributors are the thermal signals (temperature,
//! margin, throttle, slowdown), with the root cause named, severity and action of the
//! worst contributor, and no second incident on the GPU for any of those signals; a GPU
//! falling off the bus is one `cause.bus` incident, and the inventory change that
//! follows is a separate security incident that says it follows the bus loss.

mod common;

use common::{get_json, has_rule_where, inject, start_simulated, wait_for};
use serde_json::Value;
use std::time::Duration;

const THERMAL_SIGNALS: &[&str] = &[
    "anomaly.series.gpu_temp",
    "anomaly.cohort.gpu_temp",
    "anomaly.series.memory_temp",
    "anomaly.cohort.memory_temp",
    "thermal.memory",
    "thermal.margin",
    "throttle.thermal",
    "thermal.slowdown",
];

async fn incidents_of(base: &str, gpu: &str) -> Vec<Value> {
    get_json(&format!("{base}/api/v1/incidents?gpu={gpu}"))
        .await
        .ok()
        .and_then(|l| l["incidents"].as_array().cloned())
        .unwrap_or_default()
}

async fn healthy_gpus(base: &str) -> Vec<Value> {
    wait_for(Duration::from_secs(30), "32 scored GPUs", || async {
        let body = get_json(&format!("{base}/api/v1/gpus")).await.ok()?;
        let list = body["gpus"].as_array()?.clone();
        (list.len() == 32 && list.iter().all(|g| g["health"]["state"] == "healthy")).then_some(list)
    })
    .await
}

fn severity_rank(s: &Value) -> u8 {
    match s.as_str() {
        Some("info") => 0,
        Some("warning") => 1,
        Some("critical") => 2,
        Some("fatal") => 3,
        _ => panic!("unknown severity {s}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overheating_gpu_is_one_incident_with_its_thermal_signals_as_contributors() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start_simulated(dir.path(), 3, 10).await;
    let gpus = healthy_gpus(&gw.base).await;
    let uuid = gpus
        .iter()
        .find(|g| !g["identity"]["model"].as_str().unwrap_or("").contains("L40S"))
        .map(|g| g["identity"]["uuid"].as_str().unwrap().to_string())
        .unwrap();
    let (status, label) = inject(&gw.base, &uuid, "thermal").await;
    assert_eq!(status, 201, "{label}");

    // Wait until the hardware slowdown has joined (the end of the chain) …
    let incident = wait_for(
        Duration::from_secs(90),
        "a thermal incident with the slowdown",
        || async {
            incidents_of(&gw.base, &uuid).await.into_iter().find(|i| {
                i["rule"] == "cause.thermal"
                    && i["correlation"]["contributors"]
                        .as_array()
                        .is_some_and(|c| c.iter().any(|s| s["rule"] == "thermal.slowdown"))
            })
        },
    )
    .await;
    // … and a few more evaluations, so any stray incident would have opened too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all = incidents_of(&gw.base, &uuid).await;
    let thermal: Vec<&Value> = all
        .iter()
        .filter(|i| has_rule_where(i, |r| THERMAL_SIGNALS.contains(&r)))
        .collect();
    assert_eq!(thermal.len(), 1, "one incident for one overheating GPU: {all:#?}");
    let id = incident["id"].as_str().unwrap();
    let inc = get_json(&format!("{}/api/v1/incidents/{id}", gw.base)).await.unwrap();
    assert_eq!(inc["dedup_key"], format!("cause.thermal@{uuid}"));
    assert_eq!(inc["correlation"]["root_cause"]["title"], "GPU overheating", "{inc:#}");
    let contributors = inc["correlation"]["contributors"].as_array().unwrap();
    let rules: Vec<&str> = contributors.iter().map(|c| c["rule"].as_str().unwrap()).collect();
    assert!(rules.len() >= 2, "several signals, one incident: {rules:?}");
    assert!(rules.iter().all(|r| THERMAL_SIGNALS.contains(r)), "{rules:?}");
    // Severity and action are the worst contributor's.
    let worst = contributors
        .iter()
        .map(|c| severity_rank(&c["severity"]))
        .max()
        .unwrap();
    assert_eq!(severity_rank(&inc["severity"]), worst, "{inc:#}");
    assert_eq!(inc["action"], "drain_node", "{inc:#}");
    // Every contributor keeps its evidence and when it was first and last seen.
    for c in contributors {
        assert!(c["first_seen_ms"].as_i64().unwrap() <= c["last_seen_ms"].as_i64().unwrap());
        assert!(c["findings"].as_u64().unwrap() >= 1);
        assert!(!c["summary"].as_str().unwrap().is_empty());
    }
    // The first domino is named and is one of the contributors.
    let first = inc["correlation"]["root_cause"]["first_signal"].as_str().unwrap();
    assert!(rules.contains(&first), "{first} not in {rules:?}");
    // A later signal joined with a timeline entry.
    assert!(
        inc["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["what"] == "joined"),
        "{inc:#}"
    );
    // The contributor filter finds it.
    let by_rule = get_json(&format!(
        "{}/api/v1/incidents?rule=thermal.slowdown&gpu={uuid}",
        gw.base
    ))
    .await
    .unwrap();
    assert_eq!(by_rule["total"], 1, "{by_rule}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_falling_off_the_bus_is_one_health_incident_and_a_linked_security_one() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start_simulated(dir.path(), 5, 10).await;
    let gpus = healthy_gpus(&gw.base).await;
    let uuid = gpus[5]["identity"]["uuid"].as_str().unwrap().to_string();
    let (status, label) = inject(&gw.base, &uuid, "fallen-off-bus").await;
    assert_eq!(status, 201, "{label}");
    let (bus, sec) = wait_for(Duration::from_secs(60), "bus and inventory incidents", || async {
        let all = incidents_of(&gw.base, &uuid).await;
        let bus = all.iter().find(|i| i["rule"] == "cause.bus")?.clone();
        let sec = all.iter().find(|i| i["rule"] == "sec.drift.inventory")?.clone();
        // The link is made in the evaluation where both are present.
        sec["correlation"]["related"].as_array()?.first()?;
        Some((bus, sec))
    })
    .await;
    let all = incidents_of(&gw.base, &uuid).await;
    let health: Vec<&Value> = all.iter().filter(|i| i["kind"] == "health").collect();
    assert_eq!(
        health.len(),
        1,
        "XID 79 and the GPU vanishing are one incident: {all:#?}"
    );
    assert_eq!(sec["kind"], "security");
    assert_eq!(sec["correlation"]["related"][0]["id"], bus["id"]);
    assert!(
        sec["summary"]
            .as_str()
            .unwrap()
            .starts_with("follows the GPU falling off the bus"),
        "{sec:#}"
    );
    let bus = get_json(&format!("{}/api/v1/incidents/{}", gw.base, bus["id"].as_str().unwrap()))
        .await
        .unwrap();
    assert!(
        bus["correlation"]["related"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == sec["id"]),
        "{bus:#}"
    );
}
