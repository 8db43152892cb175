//! End to end through the real binary: the simulated fleet is scraped over HTTP, stored,
//! and served by the API, exactly as a user runs it.

mod common;

use common::{get_json, post_json, start, wait_for};
use std::collections::BTreeSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_lists_32_simulated_gpus_with_current_values() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start(dir.path(), &["--scrape-interval", "1s", "--seed", "1"]).await;
    let gpus = wait_for(Duration::from_secs(30), "32 GPUs with values", || async {
        let body = get_json(&format!("{}/api/v1/gpus", gw.base)).await.ok()?;
        let gpus = body["gpus"].as_array()?.clone();
        let with_values = gpus
            .iter()
            .filter(|g| g["latest"]["DCGM_FI_DEV_GPU_TEMP"].is_number() && g["stale"] == false)
            .count();
        (with_values == 32).then_some(gpus)
    })
    .await;
    let uuids: BTreeSet<&str> = gpus.iter().map(|g| g["identity"]["uuid"].as_str().unwrap()).collect();
    assert_eq!(uuids.len(), 32, "32 distinct GPUs");
    let nodes: BTreeSet<&str> = gpus.iter().map(|g| g["identity"]["node"].as_str().unwrap()).collect();
    assert_eq!(nodes.len(), 4, "4 nodes");
    for g in &gpus {
        assert!(g["identity"]["model"].is_string(), "model label mapped: {g}");
        let power = g["latest"]["DCGM_FI_DEV_POWER_USAGE"].as_f64().unwrap();
        assert!(power > 0.0 && power < 1000.0, "plausible power {power}");
    }

    // Targets report their state.
    let targets = get_json(&format!("{}/api/v1/targets", gw.base)).await.unwrap();
    let targets = targets["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 4);
    assert!(targets
        .iter()
        .all(|t| t["up"] == true && t["last_samples"].as_u64().unwrap() > 0));

    // A series can be read back from the store.
    let uuid = gpus[0]["identity"]["uuid"].as_str().unwrap();
    let series = wait_for(Duration::from_secs(15), "3 stored points", || async {
        let s = get_json(&format!(
            "{}/api/v1/gpus/{uuid}/series?field=DCGM_FI_DEV_GPU_TEMP&from=0",
            gw.base
        ))
        .await
        .ok()?;
        (s["points"].as_array()?.len() >= 3).then_some(s)
    })
    .await;
    let points = series["points"].as_array().unwrap();
    assert!(
        points.windows(2).all(|w| w[0][0].as_f64() < w[1][0].as_f64()),
        "time-ordered"
    );

    // Own metrics.
    let metrics = reqwest::get(format!("{}/metrics", gw.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("gpuwarden_samples_ingested_total"), "{metrics}");
    assert!(metrics.contains("gpuwarden_scrape_duration_seconds"), "{metrics}");
    assert!(metrics.contains("gpuwarden_store_size_bytes"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallen_off_bus_gpu_is_stale_within_two_scrape_intervals() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start(
        dir.path(),
        &["--scrape-interval", "2s", "--seed", "2", "--fault-rate-multiplier", "0"],
    )
    .await;
    let gpus = wait_for(Duration::from_secs(30), "32 fresh GPUs", || async {
        let body = get_json(&format!("{}/api/v1/gpus?stale=false", gw.base)).await.ok()?;
        (body["total"].as_u64()? == 32).then_some(body)
    })
    .await;
    let victim = gpus["gpus"][5]["identity"]["uuid"].as_str().unwrap().to_string();
    let target = gpus["gpus"][5]["target"].as_str().unwrap().to_string();
    let scrapes_of = |targets: &serde_json::Value| {
        targets["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["url"] == target.as_str())
            .and_then(|t| t["scrapes_total"].as_u64())
            .unwrap()
    };
    let before = scrapes_of(&get_json(&format!("{}/api/v1/targets", gw.base)).await.unwrap());

    let (status, label) = post_json(
        &format!("{}/api/v1/simulation/faults", gw.base),
        serde_json::json!({"gpu": victim, "kind": "fallen-off-bus"}),
    )
    .await;
    assert_eq!(status, 201, "{label}");
    assert_eq!(label["kind"], "fallen-off-bus");

    let view = wait_for(Duration::from_secs(20), "the GPU to become stale", || async {
        let g = get_json(&format!("{}/api/v1/gpus/{victim}", gw.base)).await.ok()?;
        (g["stale"] == true).then_some(g)
    })
    .await;
    let after = scrapes_of(&get_json(&format!("{}/api/v1/targets", gw.base)).await.unwrap());
    assert!(
        after - before <= 2,
        "stale after {} scrapes of its node (must be ≤ 2)",
        after - before
    );
    assert_eq!(view["staleness"], "missing_from_scrape");

    // Its peers on the same node stay fresh.
    let fresh = get_json(&format!("{}/api/v1/gpus?stale=false", gw.base)).await.unwrap();
    assert_eq!(fresh["total"], 31);

    // The fault is recorded as ground truth, and the disappearance as an event.
    let labels = get_json(&format!("{}/api/v1/simulation/labels", gw.base))
        .await
        .unwrap();
    assert!(labels
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["gpu"] == victim.as_str() && l["kind"] == "fallen-off-bus"));
    let events = get_json(&format!("{}/api/v1/gpus/{victim}/events", gw.base))
        .await
        .unwrap();
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"]["type"].as_str())
        .collect();
    assert!(kinds.contains(&"gpu_disappeared"), "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_api_input_gets_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start(dir.path(), &["--scrape-interval", "1s", "--nodes", "1"]).await;
    let client = reqwest::Client::new();
    let cases = [
        (format!("{}/api/v1/gpus/GPU-nope", gw.base), 404, "gpu_not_found"),
        (format!("{}/api/v1/gpus?limit=abc", gw.base), 400, "bad_query"),
        (format!("{}/api/v1/gpus?limit=0", gw.base), 400, "bad_limit"),
        (format!("{}/api/v1/nothing-here", gw.base), 404, "not_found"),
    ];
    for (url, status, code) in cases {
        let resp = client.get(&url).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{url}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{url}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().len() > 5);
    }
    let (status, body) = post_json(
        &format!("{}/api/v1/simulation/faults", gw.base),
        serde_json::json!({"gpu": "GPU-x", "kind": "melted"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = post_json(
        &format!("{}/api/v1/simulation/faults", gw.base),
        serde_json::json!({"gpu": 42, "kind": ["thermal"]}),
    )
    .await;
    assert_eq!(status, 400);
}
