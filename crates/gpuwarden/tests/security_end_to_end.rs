//! The security rule pack end to end through the real binary: `gpuwarden run` registers
//! the engine, a miner planted through the simulator's control API opens one security
//! incident on that GPU (`cause.unauthorized_workload`: `sec.mining.telemetry` within
//! five minutes of data time, beside the ghost or unapproved-namespace finding that
//! matches the labels it was planted with), and an unapproved-namespace job opens one
//! with `sec.use.unapproved_namespace`.
//!
//! The simulator runs at `--speed 10` with a 1 s scrape interval: 10 s of data per scrape.

mod common;

use common::{get_json, inject, start_simulated, wait_for};
use serde_json::Value;
use std::time::Duration;

/// Whether an incident is, or groups, a finding of `rule`.
fn has_signal(incident: &Value, rule: &str) -> bool {
    incident["rule"] == rule
        || incident["correlation"]["contributors"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["rule"] == rule))
}

/// When a finding of `rule` first joined the incident (its opening if it is the rule).
fn signal_first_seen(incident: &Value, rule: &str) -> i64 {
    incident["correlation"]["contributors"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["rule"] == rule))
        .map_or(&incident["opened_ms"], |c| &c["first_seen_ms"])
        .as_i64()
        .unwrap()
}

/// The incident on `uuid` that is, or groups, a finding of `rule`.
async fn incident(base: &str, uuid: &str, rule: &str) -> Value {
    wait_for(Duration::from_secs(90), rule, || async {
        let list = get_json(&format!("{base}/api/v1/incidents?gpu={uuid}")).await.ok()?;
        list["incidents"]
            .as_array()?
            .iter()
            .find(|i| has_signal(i, rule))
            .cloned()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_miner_and_unapproved_namespace_open_security_incidents() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start_simulated(dir.path(), 5, 10).await;
    let gpus = wait_for(Duration::from_secs(30), "32 GPUs", || async {
        let body = get_json(&format!("{}/api/v1/gpus", gw.base)).await.ok()?;
        let list = body["gpus"].as_array()?.clone();
        (list.len() == 32).then_some(list)
    })
    .await;
    let uuid = |i: usize| gpus[i]["identity"]["uuid"].as_str().unwrap().to_string();
    let (miner, other) = (uuid(3), uuid(12));

    let (status, label) = inject(&gw.base, &miner, "miner").await;
    assert_eq!(status, 201, "{label}");
    let start_ms = label["start_ms"].as_i64().unwrap();
    let (status, _) = inject(&gw.base, &other, "unapproved-namespace").await;
    assert_eq!(status, 201);

    let mining = incident(&gw.base, &miner, "sec.mining.telemetry").await;
    assert_eq!(mining["kind"], "security");
    assert_eq!(mining["severity"], "critical");
    let delay = signal_first_seen(&mining, "sec.mining.telemetry") - start_ms;
    assert!(delay <= 5 * 60_000, "mining finding after {delay} ms of data time");
    assert!(mining["summary"].as_str().unwrap().contains("T1496"), "{mining}");

    // The miner was planted either with no pod (ghost) or in an unapproved namespace:
    // that finding and the mining are one workload, so one incident.
    let usage = wait_for(Duration::from_secs(60), "ghost or namespace finding", || async {
        let list = get_json(&format!("{}/api/v1/incidents?gpu={miner}", gw.base))
            .await
            .ok()?;
        list["incidents"]
            .as_array()?
            .iter()
            .find(|i| has_signal(i, "sec.use.ghost") || has_signal(i, "sec.use.unapproved_namespace"))
            .cloned()
    })
    .await;
    assert_eq!(usage["kind"], "security");
    assert_eq!(usage["id"], mining["id"], "one incident for one workload: {usage}");
    assert_eq!(usage["rule"], "cause.unauthorized_workload", "{usage}");
    // Both rules' ATT&CK techniques are kept (mining: T1496.001; ghost: T1564, unapproved
    // namespace: T1078), the primary one is the worst finding's.
    let techniques = usage["labels"]["gpuwarden.mitre.techniques"]
        .as_str()
        .unwrap_or_default();
    assert!(
        techniques.contains("T1496.001") && (techniques.contains("T1564") || techniques.contains("T1078")),
        "every rule's technique kept: {usage}"
    );
    assert_eq!(usage["labels"]["threat.technique.id"], "T1496", "{usage}");

    let ns = incident(&gw.base, &other, "sec.use.unapproved_namespace").await;
    assert!(ns["summary"].as_str().unwrap().contains("is not approved"), "{ns}");
}

/// A miner started inside a running job's pod (the simulator's `miner-in-job`: same
/// workload labels, telemetry turned into a hashing loop). The job's earlier samples
/// (GB/s of PCIe or NVLink) are still in the rule's 10-minute window; the incident must
/// open less than 5 minutes of data time after the first mining sample all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miner_hidden_in_a_running_jobs_pod_opens_a_critical_incident_within_five_minutes() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start_simulated(dir.path(), 7, 10).await;
    // Let the jobs run for a while (one second of wall time is ten of data time), so the
    // host job's own traffic fills the rule's window before the miner starts.
    tokio::time::sleep(Duration::from_secs(45)).await;
    let gpus = wait_for(Duration::from_secs(30), "32 GPUs", || async {
        let body = get_json(&format!("{}/api/v1/gpus", gw.base)).await.ok()?;
        let list = body["gpus"].as_array()?.clone();
        (list.len() == 32).then_some(list)
    })
    .await;
    let labelled: Vec<(String, Value)> = gpus
        .iter()
        .filter(|g| !g["identity"]["workload"]["pod"].is_null() || !g["identity"]["workload"]["job"].is_null())
        .map(|g| {
            (
                g["identity"]["uuid"].as_str().unwrap().to_string(),
                g["identity"]["workload"].clone(),
            )
        })
        .collect();
    assert!(!labelled.is_empty(), "no GPU runs a labelled job: {gpus:?}");
    // The first labelled GPU whose job is still running takes the miner.
    let mut planted = None;
    for (uuid, workload) in &labelled {
        let (status, label) = inject(&gw.base, uuid, "miner-in-job").await;
        if status == 201 {
            planted = Some((uuid.clone(), workload.clone(), label));
            break;
        }
    }
    let (uuid, workload, label) = planted.expect("a labelled GPU to hide a miner in");
    let start_ms = label["start_ms"].as_i64().unwrap();

    let mining = incident(&gw.base, &uuid, "sec.mining.telemetry").await;
    assert_eq!(mining["severity"], "critical", "{mining}");
    let delay = signal_first_seen(&mining, "sec.mining.telemetry") - start_ms;
    assert!(
        delay < 5 * 60_000,
        "mining incident {delay} ms of data time after the first mining sample"
    );
    // Still the job's labels: the miner did not change them.
    let now = get_json(&format!("{}/api/v1/gpus/{uuid}", gw.base)).await.unwrap();
    let pod_now = &now["identity"]["workload"]["pod"];
    assert_eq!(pod_now, &workload["pod"], "{now}");
}
