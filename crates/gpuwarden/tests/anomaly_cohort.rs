//! The cohort anomaly detector end to end through the real binary: a straggler injected
//! into a running job (one GPU's clocks drop while its peers on the same node, running
//! the same workload, keep theirs) opens an `anomaly.cohort.*` (or the `clocks.straggler`
//! rule's) incident on that GPU within three scrape intervals, and none on its peers.
//!
//! Why through the binary: the unit tests drive `AnomalyAnalyzer` directly with tidy
//! rows; this checks that what the collector really produces (identities with workload
//! labels, rows at the scrape cadence, freshness) forms the cohorts the detector needs
//! and that its findings reach the incident API. Time is data time: the simulator runs
//! at `--speed 10`, so one 1 s scrape interval is 10 s of data.

mod common;

use common::{get_json, inject, start_simulated, wait_for};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

const SPEED: i64 = 10;
const INTERVAL_DATA_MS: i64 = 1000 * SPEED;

fn is_cohort_finding(rule: &str) -> bool {
    rule.starts_with("anomaly.cohort.") || rule == "clocks.straggler"
}

/// The workload a GPU's identity names (job, else namespace/pod), if any.
fn workload(g: &Value) -> Option<String> {
    let w = &g["identity"]["workload"];
    if let Some(j) = w["job"].as_str() {
        return Some(format!("job:{j}"));
    }
    w["pod"]
        .as_str()
        .map(|p| format!("pod:{}/{p}", w["namespace"].as_str().unwrap_or("")))
}

async fn cohort_incidents(base: &str, uuid: &str) -> Vec<Value> {
    get_json(&format!("{base}/api/v1/incidents?gpu={uuid}"))
        .await
        .ok()
        .and_then(|l| l["incidents"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|i| common::has_rule_where(i, is_cohort_finding))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn straggler_in_a_running_job_is_a_cohort_incident_on_it_and_not_on_its_peers() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start_simulated(dir.path(), 3, 10).await;
    // A cohort: at least 5 GPUs of one model on one node running the same workload
    // (the detector judges cohorts of 4 or more; one spare so the victim's peers alone
    // still form one), seen for a few scrapes so the detector has them all.
    let (victim, peers) = wait_for(Duration::from_secs(90), "a job on 5+ GPUs of one node", || async {
        let body = get_json(&format!("{}/api/v1/gpus", gw.base)).await.ok()?;
        let mut groups: BTreeMap<(String, String, String), Vec<String>> = BTreeMap::new();
        for g in body["gpus"].as_array()? {
            let Some(w) = workload(g) else { continue };
            groups
                .entry((
                    g["identity"]["node"].as_str()?.to_string(),
                    g["identity"]["model"].as_str().unwrap_or("").to_string(),
                    w,
                ))
                .or_default()
                .push(g["identity"]["uuid"].as_str()?.to_string());
        }
        let mut members = groups.into_values().find(|m| m.len() >= 5)?;
        let victim = members.remove(0);
        Some((victim, members))
    })
    .await;
    // Let the cohort run together for a few intervals first.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for u in std::iter::once(&victim).chain(&peers) {
        let before = cohort_incidents(&gw.base, u).await;
        assert!(before.is_empty(), "cohort incident before any fault on {u}: {before:?}");
    }

    let (status, label) = inject(&gw.base, &victim, "straggler").await;
    assert_eq!(status, 201, "{label}");
    let start_ms = label["start_ms"].as_i64().unwrap();

    let incident = wait_for(
        Duration::from_secs(30),
        "a cohort incident on the straggler",
        || async {
            cohort_incidents(&gw.base, &victim)
                .await
                .into_iter()
                .min_by_key(|i| i["opened_ms"].as_i64())
        },
    )
    .await;
    let delay = incident["opened_ms"].as_i64().unwrap() - start_ms;
    assert!(
        delay <= 3 * INTERVAL_DATA_MS,
        "{} opened {delay} ms (data time) after the straggler started; allowed {} ms: {incident}",
        incident["rule"],
        3 * INTERVAL_DATA_MS
    );

    // Another five intervals: the straggler must not drag its peers' medians into a
    // finding on them.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for u in &peers {
        let on_peer = cohort_incidents(&gw.base, u).await;
        assert!(
            on_peer.is_empty(),
            "healthy peer {u} got a cohort incident: {on_peer:?}"
        );
    }
}
