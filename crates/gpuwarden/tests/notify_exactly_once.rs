//! No notification lost, none doubled, through a receiver outage and a crash: with every
//! receiver down, incidents open; gpuwarden is killed (SIGKILL) with everything still
//! pending in its outbox, started again on the same data directory, and only then do the
//! receivers come back. Every incident transition (the openings from before the crash,
//! the automatic resolutions after it) must reach every receiver exactly once, counted
//! by delivery key, with every field as the providers document it.

mod common;
#[path = "notify_receivers.rs"]
mod receivers;

use common::{free_port, get_json, post_json, wait_for};
use serde_json::Value;
use std::time::Duration;

fn sinks_of(n: &Value) -> Vec<Value> {
    n["sinks"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transition_is_delivered_exactly_once_across_an_outage_and_a_crash() {
    for (k, v) in receivers::secret_env() {
        std::env::set_var(k, v);
    }
    let mut server = receivers::Server::new(free_port()); // not started: the outage
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gpuwarden.toml");
    std::fs::write(
        &config,
        format!(
            // XID findings hold 1 min instead of a day, and a DBE counts for 1 min instead
            // of an hour: the health engine's state comes back from the store after the
            // restart (as it should), and the incidents must resolve within the test.
            "[incidents]\nauto_resolve_after = \"2s\"\n\n[health.xid]\nhold_minutes_critical = 1\nhold_minutes_fatal = 1\n\n[health.ecc.dbe]\nwindow_minutes = 1\n\n[notify]\nretry_initial = \"100ms\"\nretry_max = \"500ms\"\n{}",
            server.sinks_toml()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--scrape-interval",
        "500ms",
        "--nodes",
        "1",
        "--gpus-per-node",
        "4",
        "--fault-rate-multiplier",
        "0",
    ];

    // 1. Receivers down; two incidents open; everything waits in the outbox.
    let gw = common::start(&data, &args).await;
    let gpus: Vec<String> = wait_for(Duration::from_secs(30), "4 scraped GPUs", || async {
        let body = get_json(&format!("{}/api/v1/gpus", gw.base)).await.ok()?;
        let list: Vec<String> = body["gpus"]
            .as_array()?
            .iter()
            .filter_map(|g| g["identity"]["uuid"].as_str().map(str::to_string))
            .collect();
        (list.len() == 4).then_some(list)
    })
    .await;
    for g in &gpus[..2] {
        let (status, body) = post_json(
            &format!("{}/api/v1/simulation/faults", gw.base),
            serde_json::json!({"gpu": g, "kind": "row-remap-failure"}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    // A remap failure opens more than one incident per GPU (the remap rule, XID 64):
    // wait until both GPUs have one, then a little for the rest.
    wait_for(Duration::from_secs(30), "an open incident on both GPUs", || async {
        let body = get_json(&format!("{}/api/v1/incidents?state=open", gw.base))
            .await
            .ok()?;
        let on = |g: &String| {
            body["incidents"]
                .as_array()
                .is_some_and(|a| a.iter().any(|i| i["gpu"] == g.as_str()))
        };
        (on(&gpus[0]) && on(&gpus[1])).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    wait_for(
        Duration::from_secs(20),
        "every sink failing with messages pending",
        || async {
            let n = get_json(&format!("{}/api/v1/notifications", gw.base)).await.ok()?;
            let sinks = sinks_of(&n);
            (sinks.len() == 6
                && sinks.iter().all(|s| {
                    s["pending"].as_u64() >= Some(2) && s["failing"] == true && s["last_error"].as_str().is_some()
                }))
            .then_some(())
        },
    )
    .await;
    // The API shows the receiver's problem but never a secret.
    let n = get_json(&format!("{}/api/v1/notifications", gw.base))
        .await
        .unwrap()
        .to_string();
    for (_, secret) in receivers::secret_env() {
        assert!(!n.contains(secret), "a secret leaked into the API: {n}");
    }

    // 2. Crash with everything pending.
    drop(gw);

    // 3. Restart on the same data; then the receivers come back.
    let gw = common::start(&data, &args).await;
    server.start().await;

    // The faults died with the old simulator and the restored XID and DBE conditions'
    // 1-min holds run out, so every incident resolves on its own.
    let ids: Vec<String> = wait_for(Duration::from_secs(150), "every incident resolved", || async {
        let body = get_json(&format!("{}/api/v1/incidents", gw.base)).await.ok()?;
        let all = body["incidents"].as_array()?.clone();
        (!all.is_empty() && all.iter().all(|i| i["state"] == "resolved")).then(|| {
            all.iter()
                .filter_map(|i| i["id"].as_str().map(str::to_string))
                .collect()
        })
    })
    .await;
    assert!(ids.len() >= 2, "{ids:?}");
    let n = wait_for(Duration::from_secs(30), "every sink drained", || async {
        let n = get_json(&format!("{}/api/v1/notifications?recent=1000", gw.base))
            .await
            .ok()?;
        let done = sinks_of(&n)
            .iter()
            .all(|s| s["pending"] == 0 && s["delivered"].as_u64() >= Some(2 * ids.len() as u64));
        done.then_some(n)
    })
    .await;
    for s in sinks_of(&n) {
        assert_eq!(s["failed"], 0, "{s}");
        assert_eq!(s["failing"], false, "{s}");
    }
    // A moment for anything doubled to arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let seen = server.receivers.seen.lock();
    assert!(seen.errors.is_empty(), "field checks failed: {:#?}", seen.errors);
    let kinds = [
        ("hook", "webhook"),
        ("slack", "slack"),
        ("teams", "teams"),
        ("pd", "pagerduty"),
        ("splunk", "splunk"),
        ("es", "elastic"),
    ];
    for (sink, kind) in kinds {
        let status = sinks_of(&n).into_iter().find(|s| s["name"] == sink).unwrap();
        let entries = status["recent"].as_array().unwrap().clone();
        let received = seen.keys.get(kind).cloned().unwrap_or_default();
        // Exactly once: nothing received twice, and as many messages as transitions.
        for (key, count) in &received {
            assert_eq!(*count, 1, "{kind}: {key} received {count} times: {received:?}");
        }
        assert_eq!(
            received.len(),
            entries.len(),
            "{kind}: {received:?} vs outbox {entries:?}"
        );
        for e in &entries {
            assert_eq!(e["state"], "delivered", "{kind}: {e}");
            let key = e["delivery_key"].as_str().unwrap();
            let expected = match (kind, e["transition"].as_str().unwrap()) {
                ("pagerduty", "resolved") => format!("gpuwarden-{}:resolve", e["incident"].as_str().unwrap()),
                _ => key.to_string(),
            };
            assert!(
                received.contains_key(&expected),
                "{kind}: {expected} not received: {received:?}"
            );
        }
        // Every incident: its opening (sent before the crash) and its resolution.
        for id in &ids {
            let of = |t: &str| {
                entries
                    .iter()
                    .any(|e| e["incident"] == id.as_str() && e["transition"] == t)
            };
            assert!(
                of("opened") && of("resolved"),
                "{kind}: {id} lacks opened or resolved: {entries:?}"
            );
            assert!(
                entries.iter().any(|e| e["delivery_key"] == format!("{id}#1").as_str()),
                "{kind}: {id}#1"
            );
        }
    }
}
