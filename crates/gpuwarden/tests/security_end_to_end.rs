//! The security rule pack end to end through the real binary: `gpuwarden run` registers
//! the engine, a miner planted through the simulator's control API opens a
//! `sec.mining.telemetry` incident on that GPU (plus the ghost or unapproved-namespace
//! incident that matches the labels it was planted with) within five minutes of data
//! time, and an unapproved-namespace job opens `sec.use.unapproved_namespace`.
//!
//! The simulator runs at `--speed 10` with a 1 s scrape interval: 10 s of data per scrape.

mod common;

use common::{get_json, inject, start_simulated, wait_for};
use serde_json::Value;
use std::time::Duration;

async fn incident(base: &str, uuid: &str, rule: &str) -> Value {
    wait_for(Duration::from_secs(90), rule, || async {
        let list = get_json(&format!("{base}/api/v1/incidents?gpu={uuid}")).await.ok()?;
        list["incidents"]
            .as_array()?
            .iter()
            .find(|i| i["rule"] == rule)
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
    let delay = mining["opened_ms"].as_i64().unwrap() - start_ms;
    assert!(delay <= 5 * 60_000, "mining incident after {delay} ms of data time");
    assert!(mining["summary"].as_str().unwrap().contains("T1496"), "{mining}");

    // The miner was planted either with no pod (ghost) or in an unapproved namespace.
    let usage = wait_for(Duration::from_secs(60), "ghost or namespace incident", || async {
        let list = get_json(&format!("{}/api/v1/incidents?gpu={miner}", gw.base))
            .await
            .ok()?;
        list["incidents"]
            .as_array()?
            .iter()
            .find(|i| i["rule"] == "sec.use.ghost" || i["rule"] == "sec.use.unapproved_namespace")
            .cloned()
    })
    .await;
    assert_eq!(usage["kind"], "security");

    let ns = incident(&gw.base, &other, "sec.use.unapproved_namespace").await;
    assert!(ns["summary"].as_str().unwrap().contains("is not approved"), "{ns}");
}
