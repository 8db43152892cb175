//! The running service: per-node endpoints and the control API over real HTTP.

mod common;

use gpuwarden_sim::{control_router, SimConfig, Simulator};

#[tokio::test]
async fn serves_nodes_and_injects_over_http() {
    let dir = std::env::temp_dir().join(format!("gpuwarden-sim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let labels_path = dir.join("labels.jsonl");
    let _ = std::fs::remove_file(&labels_path);
    let cfg = SimConfig {
        nodes: 2,
        fault_rate_multiplier: 0.0,
        labels_path: Some(labels_path.clone()),
        ..SimConfig::default()
    };
    let sim = Simulator::start(cfg).await.unwrap();
    let targets = sim.targets();
    assert_eq!(targets.len(), 2);
    assert!(targets[0].1.starts_with("http://127.0.0.1:") && targets[0].1.ends_with("/metrics"));

    let client = reqwest::Client::new();
    let body = client.get(&targets[0].1).send().await.unwrap().text().await.unwrap();
    let lines = common::parse(&body);
    assert!(lines.iter().any(|l| l.name == "DCGM_FI_DEV_GPU_TEMP"));

    // Control API on its own listener, as the API server would merge it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    let app = control_router(sim.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let gpus: serde_json::Value = client
        .get(format!("{api}/api/v1/simulation/gpus"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let gpu = gpus[0]["uuid"].as_str().unwrap().to_string();
    assert_eq!(gpus.as_array().unwrap().len(), 16);

    let r = client
        .post(format!("{api}/api/v1/simulation/faults"))
        .json(&serde_json::json!({"gpu": gpu, "kind": "app-xid"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let label: serde_json::Value = r.json().await.unwrap();
    assert_eq!(label["kind"], "app-xid");
    assert_eq!(label["gpu"], gpu.as_str());
    assert_eq!(label["injected"], true);

    let body = client.get(&targets[0].1).send().await.unwrap().text().await.unwrap();
    let xid = common::value(&common::parse(&body), "DCGM_FI_DEV_XID_ERRORS", &gpu).unwrap();
    assert!([13.0, 31.0, 43.0].contains(&xid), "xid {xid}");

    // Errors: unknown kind, bad body, unknown GPU, duplicate.
    let post = |body: String| {
        let c = client.clone();
        let url = format!("{api}/api/v1/simulation/faults");
        async move {
            let r = c
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let v: serde_json::Value = r.json().await.unwrap();
            (status, v["error"]["code"].as_str().unwrap_or_default().to_string())
        }
    };
    assert_eq!(
        post(format!(r#"{{"gpu":"{gpu}","kind":"melted"}}"#)).await,
        (400, "unknown_fault_kind".into())
    );
    assert_eq!(post("{not json".into()).await, (400, "bad_request".into()));
    assert_eq!(
        post(r#"{"gpu":"GPU-nope","kind":"thermal"}"#.into()).await,
        (404, "gpu_not_found".into())
    );
    assert_eq!(
        post(format!(r#"{{"gpu":"{gpu}","kind":"thermal","duration_s":-1}}"#)).await,
        (400, "bad_request".into())
    );
    assert_eq!(post(format!(r#"{{"gpu":"{gpu}","kind":"app-xid"}}"#)).await.0, 409);

    let labels: serde_json::Value = client
        .get(format!("{api}/api/v1/simulation/labels"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(labels.as_array().unwrap().len(), 1);
    let file = std::fs::read_to_string(&labels_path).unwrap();
    assert_eq!(file.lines().count(), 1);
    assert!(file.contains("\"app-xid\""));

    sim.shutdown().await;
    server.abort();
    assert!(
        client.get(&targets[0].1).send().await.is_err(),
        "listener still up after shutdown"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Past 1,024 nodes (a port each would run out of ports and descriptors) every node is
/// served from one listener at `/nodes/{i}/metrics`; each page is that node's own.
#[tokio::test]
async fn large_fleets_share_one_listener() {
    let cfg = SimConfig {
        nodes: 1500,
        gpus_per_node: 1,
        fault_rate_multiplier: 0.0,
        ..SimConfig::default()
    };
    let sim = Simulator::start(cfg).await.unwrap();
    let targets = sim.targets();
    assert_eq!(targets.len(), 1500);
    let port = |url: &str| url.split('/').nth(2).unwrap().to_string();
    assert!(targets.iter().all(|(_, url)| port(url) == port(&targets[0].1)));
    let client = reqwest::Client::new();
    for i in [0, 1499] {
        let (node, url) = &targets[i];
        assert!(url.ends_with(&format!("/nodes/{i}/metrics")), "{url}");
        let body = client.get(url).send().await.unwrap().text().await.unwrap();
        let lines = common::parse(&body);
        let temps: Vec<_> = lines.iter().filter(|l| l.name == "DCGM_FI_DEV_GPU_TEMP").collect();
        assert_eq!(temps.len(), 1, "one GPU per node");
        assert!(body.contains(&format!("Hostname=\"{node}\"")), "node {node}'s own page");
    }
    let beyond = targets[0].1.replace("/nodes/0/", "/nodes/1500/");
    assert_eq!(client.get(&beyond).send().await.unwrap().status(), 404);
    sim.shutdown().await;
}

#[test]
fn fleet_size_limits() {
    let ok = SimConfig {
        nodes: 12_500,
        gpus_per_node: 8,
        ..SimConfig::default()
    };
    assert!(ok.validate().is_ok(), "100,000 GPUs");
    assert!(ok.one_listener());
    let too_many = SimConfig {
        nodes: gpuwarden_sim::config::MAX_NODES + 1,
        ..SimConfig::default()
    };
    assert!(too_many.validate().is_err());
    assert!(!SimConfig::default().one_listener());
}
