//! `kill -9` of `gpuwarden run` loses no sample that was acknowledged before the kill.
//!
//! "Acknowledged" is observable: the API serves series from the store, and the store
//! makes a sample visible only after its write-ahead-log record is durable. So every
//! point the API returned before the kill must be returned after a restart on the same
//! data directory.

mod common;

use common::{get_json, start, wait_for};
use std::collections::BTreeSet;
use std::time::Duration;

async fn points(base: &str, uuid: &str, field: &str) -> BTreeSet<(i64, u64)> {
    let s = get_json(&format!(
        "{base}/api/v1/gpus/{uuid}/series?field={field}&from=0&to=9999999999999&max_points=100000"
    ))
    .await
    .unwrap();
    s["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_f64().unwrap() as i64, p[1].as_f64().unwrap().to_bits()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_sample() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--scrape-interval", "500ms", "--seed", "3", "--nodes", "2"];
    let mut gw = start(dir.path(), &args).await;
    let uuids: Vec<String> = wait_for(Duration::from_secs(30), "16 GPUs", || async {
        let body = get_json(&format!("{}/api/v1/gpus", gw.base)).await.ok()?;
        let list: Vec<String> = body["gpus"]
            .as_array()?
            .iter()
            .map(|g| g["identity"]["uuid"].as_str().unwrap().to_string())
            .collect();
        (list.len() == 16).then_some(list)
    })
    .await;
    let fields = [
        "DCGM_FI_DEV_GPU_TEMP",
        "DCGM_FI_DEV_POWER_USAGE",
        "DCGM_FI_DEV_SM_CLOCK",
    ];
    // Let several scrapes land so there is something to lose.
    wait_for(Duration::from_secs(30), "6 stored points", || async {
        (points(&gw.base, &uuids[0], fields[0]).await.len() >= 6).then_some(())
    })
    .await;

    let mut before = Vec::new();
    for uuid in &uuids {
        for field in fields {
            before.push((uuid.clone(), field, points(&gw.base, uuid, field).await));
        }
    }
    // SIGKILL: no shutdown handler runs, nothing is flushed.
    gw.child.kill().unwrap();
    gw.child.wait().unwrap();

    let gw2 = start(dir.path(), &args).await;
    let mut checked = 0;
    for (uuid, field, seen) in &before {
        assert!(!seen.is_empty());
        let after = points(&gw2.base, uuid, field).await;
        let lost: Vec<_> = seen.difference(&after).collect();
        assert!(
            lost.is_empty(),
            "{uuid} {field}: {} acknowledged points lost: {lost:?}",
            lost.len()
        );
        checked += seen.len();
    }
    assert!(checked > 16 * 3 * 5, "checked {checked} points");
    // And the GPUs are known immediately after restart (stale until scraped again).
    let body = get_json(&format!("{}/api/v1/gpus", gw2.base)).await.unwrap();
    assert_eq!(body["total"], 16);
}
