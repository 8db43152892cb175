//! Incidents through the API: acknowledge, resolve, invalid transitions, filters, and
//! survival across a restart of `gpuwarden run` on the same data directory.

mod common;

use common::{get_json, post_json, start, wait_for};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_lifecycle_through_the_api_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--scrape-interval",
        "1s",
        "--seed",
        "9",
        "--fault-rate-multiplier",
        "0",
        "--nodes",
        "2",
    ];
    let mut gw = start(dir.path(), &args).await;
    let uuid = wait_for(Duration::from_secs(30), "16 GPUs", || async {
        let b = get_json(&format!("{}/api/v1/gpus", gw.base)).await.ok()?;
        (b["total"] == 16).then(|| b["gpus"][3]["identity"]["uuid"].as_str().unwrap().to_string())
    })
    .await;
    let (status, _) = post_json(
        &format!("{}/api/v1/simulation/faults", gw.base),
        serde_json::json!({"gpu": uuid, "kind": "row-remap-failure"}),
    )
    .await;
    assert_eq!(status, 201);
    let incident = wait_for(Duration::from_secs(30), "the remap-failure incident", || async {
        let b = get_json(&format!("{}/api/v1/incidents?state=open&rule=remap.failure", gw.base))
            .await
            .ok()?;
        b["incidents"].as_array()?.first().cloned()
    })
    .await;
    let id = incident["id"].as_str().unwrap().to_string();
    assert_eq!(incident["gpu"], uuid.as_str());
    assert_eq!(incident["severity"], "critical");
    assert_eq!(incident["action"], "hardware_inspection");

    // Filters.
    let crit = get_json(&format!("{}/api/v1/incidents?severity=critical&gpu={uuid}", gw.base))
        .await
        .unwrap();
    assert!(crit["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["id"] == id.as_str()));
    let none = get_json(&format!("{}/api/v1/incidents?node=no-such-node", gw.base))
        .await
        .unwrap();
    assert_eq!(none["total"], 0);
    let bad = reqwest::get(format!("{}/api/v1/incidents?state=sleepy", gw.base))
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // Ack, then resolve, with actor and comment; then an invalid transition.
    let (s, acked) = post_json(
        &format!("{}/api/v1/incidents/{id}/ack", gw.base),
        serde_json::json!({"actor": "alice", "comment": "looking"}),
    )
    .await;
    assert_eq!(s, 200, "{acked}");
    assert_eq!(acked["state"], "acknowledged");
    assert_eq!(acked["acknowledged_by"], "alice");
    let (s, resolved) = post_json(
        &format!("{}/api/v1/incidents/{id}/resolve", gw.base),
        serde_json::json!({"actor": "alice", "comment": "GPU swapped"}),
    )
    .await;
    assert_eq!(s, 200, "{resolved}");
    assert_eq!(resolved["state"], "resolved");
    assert_eq!(resolved["resolution"]["by"], "manual");
    let (s, err) = post_json(&format!("{}/api/v1/incidents/{id}/ack", gw.base), serde_json::json!({})).await;
    assert_eq!(s, 409, "{err}");
    assert_eq!(err["error"]["code"], "invalid_transition");
    let (s, err) = post_json(
        &format!("{}/api/v1/incidents/inc-999999/ack", gw.base),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(s, 404);
    assert_eq!(err["error"]["code"], "incident_not_found");
    let (s, err) = post_json(
        &format!("{}/api/v1/incidents/{id}/ack", gw.base),
        serde_json::json!({"actor": 5, "extra": true}),
    )
    .await;
    assert_eq!(s, 400, "{err}");
    assert_eq!(err["error"]["code"], "bad_body");

    // Restart on the same data directory: the incident, its state and timeline are back.
    gw.child.kill().unwrap();
    gw.child.wait().unwrap();
    let gw2 = start(dir.path(), &args).await;
    let after = get_json(&format!("{}/api/v1/incidents/{id}", gw2.base)).await.unwrap();
    assert_eq!(after["state"], "resolved");
    assert_eq!(after["acknowledged_by"], "alice");
    let whats: Vec<&str> = after["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["what"].as_str())
        .collect();
    assert!(
        whats.contains(&"opened") && whats.contains(&"acknowledged") && whats.contains(&"resolved"),
        "{whats:?}"
    );
}
