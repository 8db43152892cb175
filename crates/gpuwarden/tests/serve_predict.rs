//! `gpuwarden serve` runs failure prediction like `run`: with a model in
//! `DATA_DIR/models/` at start, every GPU it scrapes is scored each period, the scores and
//! their history are served by the prediction API, and a risk above the threshold opens a
//! `prediction` incident asking to drain the node.
//!
//! Real binaries on loopback ports: `gpuwarden simulate` (one node of four GPUs, no random
//! faults) is the exporter, `gpuwarden serve` scrapes it as a configured target every
//! second and scores every second (`[predict] period_s = 1`); the model is a tiny one
//! trained in about a second on a simulated history (`common::train_tiny_model`).

mod common;

use common::{get_json, predict_config, start_serve, start_sim_exporters, train_tiny_model, wait_for};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const BANDS: [&str; 4] = ["low", "elevated", "high", "critical"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_scores_every_gpu_with_the_model_in_its_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let version = train_tiny_model(&data);
    let (_sim, exporters) = start_sim_exporters(1, 4, 7).await;
    let targets = exporters
        .iter()
        .map(|h| format!("\"{h}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let config = predict_config(
        dir.path(),
        1,
        &format!("[scrape]\ninterval = \"1s\"\ntargets = [{targets}]\n"),
    );
    let gw = start_serve(&data, &["--config", config.to_str().unwrap()]).await;

    let model = get_json(&format!("{}/api/v1/models/current", gw.base))
        .await
        .expect("serve has a predictor and loaded the model");
    assert_eq!(model["version"], version.as_str());

    // Every scraped GPU gets a prediction from that model.
    let nodes: BTreeMap<String, String> = wait_for(Duration::from_secs(30), "4 fresh GPUs", || async {
        let body = get_json(&format!("{}/api/v1/gpus", gw.base)).await.ok()?;
        let fresh: BTreeMap<String, String> = body["gpus"]
            .as_array()?
            .iter()
            .filter(|g| g["stale"] == false)
            .filter_map(|g| {
                let id = &g["identity"];
                Some((id["uuid"].as_str()?.to_string(), id["node"].as_str()?.to_string()))
            })
            .collect();
        (fresh.len() == 4).then_some(fresh)
    })
    .await;
    let gpus: BTreeSet<String> = nodes.keys().cloned().collect();
    let list = wait_for(Duration::from_secs(30), "a prediction for every GPU", || async {
        let body = get_json(&format!("{}/api/v1/predictions", gw.base)).await.ok()?;
        let scored: BTreeSet<String> = body["predictions"]
            .as_array()?
            .iter()
            .filter_map(|p| p["gpu"].as_str().map(str::to_string))
            .collect();
        (scored == gpus).then_some(body)
    })
    .await;
    assert_eq!(list["model"], version.as_str());
    let threshold = list["threshold"].as_f64().unwrap();
    assert!(threshold > 0.0 && threshold <= 1.0, "threshold {threshold}");
    let preds = list["predictions"].as_array().unwrap();
    let probs: Vec<f64> = preds.iter().map(|p| p["probability"].as_f64().unwrap()).collect();
    assert!(probs.iter().all(|p| (0.0..=1.0).contains(p)), "{probs:?}");
    assert!(probs.windows(2).all(|w| w[0] >= w[1]), "riskiest first: {probs:?}");
    for p in preds {
        assert_eq!(p["model_version"], version.as_str());
        assert_eq!(p["node"], nodes[p["gpu"].as_str().unwrap()].as_str(), "{p}");
        assert!(BANDS.contains(&p["band"].as_str().unwrap()), "{p}");
    }

    // One GPU's page data: the latest score and a history that grows with each period.
    let uuid = preds[0]["gpu"].as_str().unwrap().to_string();
    let one = wait_for(Duration::from_secs(20), "two scores in the GPU's history", || async {
        let body = get_json(&format!("{}/api/v1/gpus/{uuid}/predictions", gw.base))
            .await
            .ok()?;
        (body["history"].as_array()?.len() >= 2).then_some(body)
    })
    .await;
    assert_eq!(one["model"], version.as_str());
    assert_eq!(one["horizon_hours"], 24.0);
    assert_eq!(one["threshold"].as_f64(), Some(threshold));
    assert_eq!(one["latest"]["gpu"], uuid.as_str());
    let ts: Vec<i64> = one["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["ts_ms"].as_i64().unwrap())
        .collect();
    assert!(ts.windows(2).all(|w| w[0] < w[1]), "history oldest first: {ts:?}");

    // The prediction analyzer is registered with serve's analysis stage: a GPU at or above
    // the threshold has an open `prediction` incident asking to drain the node.
    let at_risk: Vec<String> = preds
        .iter()
        .filter(|p| matches!(p["band"].as_str(), Some("high" | "critical")))
        .filter_map(|p| p["gpu"].as_str().map(str::to_string))
        .collect();
    if let Some(gpu) = at_risk.first() {
        let inc = wait_for(Duration::from_secs(15), "a prediction incident", || async {
            let url = format!("{}/api/v1/incidents?state=open&kind=prediction&gpu={gpu}", gw.base);
            let body = get_json(&url).await.ok()?;
            body["incidents"].as_array()?.first().cloned()
        })
        .await;
        assert_eq!(inc["action"], "drain_node", "{inc}");
    } else {
        eprintln!("no GPU above the threshold ({threshold}): the incident path is not exercised this run");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_a_model_answers_with_no_model_not_scores() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start_serve(&dir.path().join("data"), &[]).await;
    let list = get_json(&format!("{}/api/v1/predictions", gw.base))
        .await
        .expect("serve has a predictor");
    assert_eq!(list["model"], serde_json::Value::Null);
    assert_eq!(list["predictions"].as_array().map(Vec::len), Some(0));
    let err = get_json(&format!("{}/api/v1/models/current", gw.base))
        .await
        .expect_err("no model yet");
    assert!(err.contains("no_model"), "{err}");
}
