//! Silences through the API: a silence created with `POST /api/v1/silences` holds back
//! what it matches, for the sinks it names, and nothing else; it expires on time, after
//! which the same incident's next transition is delivered; `DELETE` ends one early; the
//! CLI lists them.

mod common;
#[path = "notify_receivers.rs"]
mod receivers;

use common::{free_port, get_json, post_json, wait_for};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

async fn first_open_incident(base: &str, gpu: &str) -> Value {
    wait_for(Duration::from_secs(30), "an open incident", || async {
        let body = get_json(&format!("{base}/api/v1/incidents?state=open&gpu={gpu}"))
            .await
            .ok()?;
        body["incidents"].as_array()?.last().cloned()
    })
    .await
}

fn hook_entries(n: &Value) -> Vec<Value> {
    n["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "hook")
        .unwrap()["recent"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_holds_back_its_matches_and_expires_on_time() {
    for (k, v) in receivers::secret_env() {
        std::env::set_var(k, v);
    }
    let mut server = receivers::Server::new(free_port());
    server.start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gpuwarden.toml");
    std::fs::write(
        &config,
        format!(
            "[notify]\nretry_initial = \"100ms\"\n\n[notify.sinks.hook]\ntype = \"webhook\"\nurl = \"{}/hook\"\nsecret_env = \"GPUWARDEN_TEST_HOOK_KEY\"\n",
            server.base()
        ),
    )
    .unwrap();
    let gw = common::start(
        &dir.path().join("data"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--scrape-interval",
            "500ms",
            "--nodes",
            "1",
            "--gpus-per-node",
            "2",
            "--fault-rate-multiplier",
            "0",
        ],
    )
    .await;
    let gpus: Vec<String> = wait_for(Duration::from_secs(30), "2 scraped GPUs", || async {
        let body = get_json(&format!("{}/api/v1/gpus", gw.base)).await.ok()?;
        let l: Vec<String> = body["gpus"]
            .as_array()?
            .iter()
            .filter_map(|g| g["identity"]["uuid"].as_str().map(str::to_string))
            .collect();
        (l.len() == 2).then_some(l)
    })
    .await;
    let (silenced_gpu, other_gpu) = (&gpus[0], &gpus[1]);

    // Bad silences are refused with a reason.
    let (status, body) = post_json(
        &format!("{}/api/v1/silences", gw.base),
        json!({"author": "alice", "comment": "everything", "duration": "1h"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("matcher"), "{body}");

    // A 6 s silence on one GPU, for the webhook sink.
    let (status, sil) = post_json(
        &format!("{}/api/v1/silences", gw.base),
        json!({"matchers": {"gpus": [silenced_gpu]}, "sinks": ["hook"], "author": "alice", "comment": "swapping this GPU", "duration": "6s"}),
    )
    .await;
    assert_eq!(status, 201, "{sil}");
    assert_eq!(sil["state"], "active");
    let sil_id = sil["id"].as_str().unwrap().to_string();
    let ends_ms = sil["ends_ms"].as_i64().unwrap();

    for g in [silenced_gpu, other_gpu] {
        let (status, body) = post_json(
            &format!("{}/api/v1/simulation/faults", gw.base),
            json!({"gpu": g, "kind": "row-remap-failure"}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let silenced = first_open_incident(&gw.base, silenced_gpu).await;
    let other = first_open_incident(&gw.base, other_gpu).await;
    let (sid, oid) = (silenced["id"].as_str().unwrap(), other["id"].as_str().unwrap());

    // The other GPU's incident is delivered; the silenced one is recorded as silenced.
    let n = wait_for(Duration::from_secs(20), "the unsilenced incident delivered", || async {
        let n = get_json(&format!("{}/api/v1/notifications?recent=100", gw.base))
            .await
            .ok()?;
        let delivered = hook_entries(&n)
            .iter()
            .any(|e| e["incident"] == oid && e["state"] == "delivered");
        delivered.then_some(n)
    })
    .await;
    let entry = hook_entries(&n)
        .into_iter()
        .find(|e| e["incident"] == sid)
        .expect("silenced entry recorded");
    assert_eq!(entry["state"], "silenced", "{entry}");
    assert_eq!(entry["silenced_by"], sil_id.as_str(), "{entry}");
    assert!(
        !server
            .receivers
            .seen
            .lock()
            .keys
            .get("webhook")
            .cloned()
            .unwrap_or_default()
            .keys()
            .any(|k| k.starts_with(&format!("{sid}#"))),
        "a silenced message reached the receiver"
    );

    // Expires on time: active until its end, expired from then on.
    while now_ms() < ends_ms - 300 {
        let list = get_json(&format!("{}/api/v1/silences", gw.base)).await.unwrap();
        let s = list["silences"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == sil_id.as_str())
            .unwrap()
            .clone();
        assert_eq!(s["state"], "active", "{s}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_millis((ends_ms - now_ms() + 50).max(0) as u64)).await;
    let list = get_json(&format!("{}/api/v1/silences", gw.base)).await.unwrap();
    let s = list["silences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == sil_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(s["state"], "expired", "{s}");

    // After it: the silenced incident's resolution is delivered.
    let (status, body) = post_json(
        &format!("{}/api/v1/incidents/{sid}/resolve", gw.base),
        json!({"actor": "alice"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    wait_for(Duration::from_secs(20), "the resolution delivered", || async {
        let keys = server
            .receivers
            .seen
            .lock()
            .keys
            .get("webhook")
            .cloned()
            .unwrap_or_default();
        keys.keys().any(|k| k.starts_with(&format!("{sid}#"))).then_some(())
    })
    .await;
    assert!(server.receivers.seen.lock().errors.is_empty());

    // DELETE ends a silence early; the CLI lists both.
    let (status, sil2) = post_json(
        &format!("{}/api/v1/silences", gw.base),
        json!({"matchers": {"rules": ["xid.*"], "min_severity": "warning"}, "author": "bob", "comment": "driver rollout", "duration": "2h"}),
    )
    .await;
    assert_eq!(status, 201, "{sil2}");
    let id2 = sil2["id"].as_str().unwrap();
    let resp = reqwest::Client::new()
        .delete(format!("{}/api/v1/silences/{id2}", gw.base))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["state"], "expired", "{v}");
    let resp = reqwest::Client::new()
        .delete(format!("{}/api/v1/silences/sil-nope", gw.base))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let out = std::process::Command::new(common::binary())
        .args(["notify", "silence", "list", "--server", &gw.base])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(&sil_id) && text.contains(id2),
        "{text}"
    );

    // `notify test SINK` sends a test message straight to the receiver.
    let out = std::process::Command::new(common::binary())
        .args(["notify", "test", "hook", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let keys = server
        .receivers
        .seen
        .lock()
        .keys
        .get("webhook")
        .cloned()
        .unwrap_or_default();
    assert!(keys.keys().any(|k| k.starts_with("test-")), "{keys:?}");
}
