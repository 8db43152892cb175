//! High availability on one PostgreSQL, through the real binary: one simulator with an
//! injected fault, two `gpuwarden serve` instances scraping it and sharing one database,
//! and a loopback webhook receiver that counts every delivery.
//!
//! * one incident for the fault (not one per instance), the same id on both APIs;
//! * one notification per transition (opened, resolved), each delivery key once;
//! * a silence created through one instance is listed (and applied) by the other;
//! * the instance holding a claim on an undelivered outbox entry is SIGKILLed while the
//!   receiver refuses deliveries; once the receiver is back, the survivor delivers that
//!   entry after the claim's lease runs out, and the incident still resolves and is
//!   announced once.
//!
//! Skips when PostgreSQL is not installed, unless `GPUWARDEN_REQUIRE_TOOLS=1`.

mod common;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use common::{binary, free_port, get_json, has_rule, post_json, start_serve, wait_for, Gpuwarden, KillOnDrop};
use gpuwarden_store::pg_cluster::PgCluster;
use parking_lot::Mutex;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The webhook receiver: refuses (503) while `refusing`, else records each message.
#[derive(Clone, Default)]
struct Receiver {
    refusing: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
    /// Every accepted message, in arrival order.
    got: Arc<Mutex<Vec<Value>>>,
}

async fn hook(State(r): State<Receiver>, body: Bytes) -> StatusCode {
    if r.refusing.load(Ordering::SeqCst) {
        r.refused.fetch_add(1, Ordering::SeqCst);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    r.got.lock().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
    StatusCode::OK
}

/// Starts `gpuwarden simulate` (one node, 4 GPUs, no random faults) with its control API;
/// returns the guard, the exporter's `host:port` and the control base URL.
async fn start_simulator() -> (KillOnDrop, String, String) {
    let (port, control) = (free_port(), free_port());
    let child = Command::new(binary())
        .args(["simulate", "--nodes", "1", "--gpus-per-node", "4", "--seed", "5"])
        .args(["--fault-rate-multiplier", "0"])
        .args(["--base-port", &port.to_string(), "--control-port", &control.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start gpuwarden simulate");
    let guard = KillOnDrop(child);
    let url = format!("http://127.0.0.1:{port}/metrics");
    wait_for(Duration::from_secs(30), "the simulated exporter", || {
        let url = url.clone();
        async move { reqwest::get(&url).await.ok().filter(|r| r.status().is_success()) }
    })
    .await;
    (
        guard,
        format!("127.0.0.1:{port}"),
        format!("http://127.0.0.1:{control}"),
    )
}

async fn incidents(gw: &Gpuwarden) -> Option<Vec<Value>> {
    let body = get_json(&format!("{}/api/v1/incidents?limit=1000", gw.base))
        .await
        .ok()?;
    body["incidents"].as_array().cloned()
}

fn ids(list: &[Value]) -> BTreeSet<String> {
    list.iter()
        .filter_map(|i| i["id"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_database_open_one_incident_notify_once_and_survive_a_kill() {
    let Some(pg) = PgCluster::start_or_skip("ha_postgres") else {
        return;
    };
    let url = pg.create_database("ha").unwrap();
    let (_sim, exporter, control) = start_simulator().await;

    let receiver = Receiver::default();
    receiver.refusing.store(true, Ordering::SeqCst);
    let hook_port = free_port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", hook_port)).await.unwrap();
    let app = axum::Router::new()
        .route("/hook", post(hook))
        .with_state(receiver.clone());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gpuwarden.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"{url}\"\n\n[scrape]\ninterval = \"500ms\"\ntargets = [\"{exporter}\"]\n\n\
             [incidents]\nauto_resolve_after = \"2s\"\n\n\
             [notify]\nretry_initial = \"1s\"\nretry_max = \"1s\"\ntimeout = \"1s\"\nclaim_lease = \"3s\"\n\n\
             [notify.sinks.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{hook_port}/hook\"\n"
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let a = start_serve(&dir.path().join("a"), &["--config", cfg]).await;
    let b = start_serve(&dir.path().join("b"), &["--config", cfg]).await;

    // Both scrape the same 4 GPUs.
    let gpu = wait_for(Duration::from_secs(30), "4 fresh GPUs on both instances", || async {
        let mut first = None;
        for gw in [&a, &b] {
            let body = get_json(&format!("{}/api/v1/gpus", gw.base)).await.ok()?;
            let fresh: Vec<&Value> = body["gpus"]
                .as_array()?
                .iter()
                .filter(|g| g["stale"] == false)
                .collect();
            if fresh.len() != 4 {
                return None;
            }
            first = fresh[1]["identity"]["uuid"].as_str().map(str::to_string);
        }
        first
    })
    .await;

    // A silence created through one instance holds on the other (shared rows).
    let (status, sil) = post_json(
        &format!("{}/api/v1/silences", a.base),
        serde_json::json!({"matchers": {"nodes": ["no-such-node"]}, "author": "alice",
            "comment": "maintenance elsewhere", "duration": "1h"}),
    )
    .await;
    assert_eq!(status, 201, "{sil}");
    let sil_id = sil["id"].as_str().unwrap().to_string();
    wait_for(
        Duration::from_secs(10),
        "the silence listed by the other instance",
        || async {
            let list = get_json(&format!("{}/api/v1/silences", b.base)).await.ok()?;
            list["silences"]
                .as_array()?
                .iter()
                .any(|s| s["id"] == sil_id.as_str() && s["state"] == "active")
                .then_some(())
        },
    )
    .await;

    // One fault, seen by both instances at once.
    let (status, body) = post_json(
        &format!("{control}/api/v1/simulation/faults"),
        serde_json::json!({"gpu": gpu, "kind": "power-brake", "duration_s": 8.0}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let on_gpu = |list: &[Value]| -> Vec<Value> {
        list.iter()
            .filter(|i| i["gpu"] == gpu.as_str() && has_rule(i, "throttle.power_brake"))
            .cloned()
            .collect()
    };
    let incident = wait_for(Duration::from_secs(30), "the power-brake incident on both", || async {
        let (la, lb) = (incidents(&a).await?, incidents(&b).await?);
        let (ia, ib) = (on_gpu(&la), on_gpu(&lb));
        (ia.len() == 1 && ib.len() == 1 && ia[0]["id"] == ib[0]["id"]).then(|| ia[0].clone())
    })
    .await;
    let id = incident["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("inc-") && id.len() == 30, "a ULID id: {id}");
    let key = pg
        .psql("ha", &format!("SELECT dedup_key FROM incidents WHERE id = '{id}'"))
        .unwrap();
    let rows: i64 = pg
        .psql(
            "ha",
            &format!("SELECT count(*) FROM incidents WHERE dedup_key = '{key}'"),
        )
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(rows, 1, "one incident for the condition in the database (key {key})");

    // The API answers on both with the same incident list.
    wait_for(Duration::from_secs(10), "the same incident ids on both", || async {
        let (la, lb) = (incidents(&a).await?, incidents(&b).await?);
        (ids(&la) == ids(&lb)).then_some(())
    })
    .await;

    // The receiver refuses; some instance holds a claim on the opening's entry. Kill it.
    let claim = wait_for(
        Duration::from_secs(20),
        "a claimed, undelivered outbox entry",
        || async {
            let out = pg
                .psql(
                    "ha",
                    &format!(
                        "SELECT id || ' ' || claimed_by FROM notify_outbox WHERE incident = '{id}' \
                     AND state = 'pending' AND claimed_by IS NOT NULL AND attempts > 0 ORDER BY id LIMIT 1"
                    ),
                )
                .ok()?;
            (!out.is_empty()).then_some(out)
        },
    )
    .await;
    let (entry, owner) = claim.split_once(' ').unwrap();
    let pid: u32 = owner.split(':').nth(1).unwrap().parse().unwrap();
    let (mut dead, survivor) = if a.child.id() == pid {
        (a, b)
    } else {
        assert_eq!(b.child.id(), pid, "the claimant {owner} is one of ours");
        (b, a)
    };
    dead.child.kill().unwrap(); // SIGKILL
    dead.child.wait().unwrap();
    assert!(receiver.refused.load(Ordering::SeqCst) > 0, "deliveries were refused");
    receiver.refusing.store(false, Ordering::SeqCst);

    // The survivor delivers the dead one's entry once its lease has run out.
    wait_for(
        Duration::from_secs(30),
        "the dead instance's entry delivered",
        || async {
            let state = pg
                .psql("ha", &format!("SELECT state FROM notify_outbox WHERE id = {entry}"))
                .ok()?;
            (state == "delivered").then_some(())
        },
    )
    .await;

    // The fault ends; the survivor resolves the incident and announces it.
    wait_for(
        Duration::from_secs(60),
        "the incident resolved and announced",
        || async {
            let list = incidents(&survivor).await?;
            let resolved = on_gpu(&list)
                .iter()
                .any(|i| i["id"] == id.as_str() && i["state"] == "resolved");
            let announced = receiver
                .got
                .lock()
                .iter()
                .any(|n| n["incident"] == id.as_str() && n["transition"] == "resolved");
            (resolved && announced).then_some(())
        },
    )
    .await;
    // Let anything doubled arrive before counting.
    tokio::time::sleep(Duration::from_secs(4)).await;

    let got = receiver.got.lock().clone();
    let mut by_key: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_transition: BTreeMap<(String, String), usize> = BTreeMap::new();
    for n in &got {
        *by_key
            .entry(n["delivery_key"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
        *by_transition
            .entry((
                n["incident"].as_str().unwrap_or("").to_string(),
                n["transition"].as_str().unwrap_or("").to_string(),
            ))
            .or_default() += 1;
    }
    let doubled: Vec<_> = by_key.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "delivery keys received twice: {doubled:?}");
    for t in ["opened", "resolved"] {
        assert_eq!(
            by_transition.get(&(id.clone(), t.to_string())),
            Some(&1),
            "one '{t}' notification for {id}: {by_transition:?}"
        );
    }
    let twice: Vec<_> = by_transition
        .iter()
        .filter(|((_, t), n)| (t == "opened" || t == "resolved") && **n > 1)
        .collect();
    assert!(twice.is_empty(), "transitions announced twice: {twice:?}");
    let pending: i64 = pg
        .psql("ha", "SELECT count(*) FROM notify_outbox WHERE state = 'pending'")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(pending, 0, "nothing left undelivered");
    let unresolved: i64 = pg
        .psql(
            "ha",
            &format!("SELECT count(*) FROM incidents WHERE dedup_key = '{key}' AND state <> 'resolved'"),
        )
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(unresolved, 0);
    server.abort();
    drop(survivor);
}

/// A browser signed in on one instance is signed in on the other (the load balancer may
/// send it to either), and signing out on one ends the session on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ui_session_is_valid_on_both_instances_and_ends_on_both() {
    let Some(pg) = PgCluster::start_or_skip("ha_postgres") else {
        return;
    };
    let url = pg.create_database("ha_sessions").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gpuwarden.toml");
    std::fs::write(&config, format!("[store]\nurl = \"{url}\"\n\n[auth]\nenabled = true\n")).unwrap();
    let (data_a, data_b) = (dir.path().join("a"), dir.path().join("b"));
    let out = Command::new(binary())
        .args([
            "auth", "token", "create", "--quiet", "--role", "operator", "--name", "alice", "--config",
        ])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data_a)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    // API tokens stay per instance (docs/scaling.md): the operator installs the file on both.
    std::fs::create_dir_all(data_b.join("auth")).unwrap();
    std::fs::copy(data_a.join("auth/tokens.json"), data_b.join("auth/tokens.json")).unwrap();
    let cfg = config.to_str().unwrap();
    let a = start_serve(&data_a, &["--config", cfg]).await;
    let b = start_serve(&data_b, &["--config", cfg]).await;

    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/api/v1/auth/session", a.base))
        .json(&serde_json::json!({ "token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let csrf = r.json::<Value>().await.unwrap()["csrf_token"]
        .as_str()
        .unwrap()
        .to_string();
    let whoami = |base: String| {
        let (http, cookie) = (http.clone(), cookie.clone());
        async move {
            http.get(format!("{base}/api/v1/auth/whoami"))
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(whoami(a.base.clone()).await, 200);
    assert_eq!(
        whoami(b.base.clone()).await,
        200,
        "the session of instance A on instance B"
    );
    // Sign out through B; A refuses the cookie from then on.
    let r = http
        .post(format!("{}/api/v1/auth/session/logout", b.base))
        .header("cookie", &cookie)
        .header("x-csrf-token", csrf)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(whoami(a.base.clone()).await, 401);
    assert_eq!(whoami(b.base.clone()).await, 401);
}

/// An agent's retried push that reaches the other instance is answered "duplicate" there
/// (the batch ledger is shared), and the sample is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_retried_to_the_other_instance_is_a_duplicate() {
    let Some(pg) = PgCluster::start_or_skip("ha_postgres") else {
        return;
    };
    let url = pg.create_database("ha_ledger").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gpuwarden.toml");
    std::fs::write(&config, format!("[store]\nurl = \"{url}\"\n")).unwrap();
    const TOKEN: &str = "test-token-0123456789abcdef-0123456789";
    let tokens = dir.path().join("token");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--ingest-token-file",
        tokens.to_str().unwrap(),
    ];
    let a = start_serve(&dir.path().join("a"), &args).await;
    let b = start_serve(&dir.path().join("b"), &args).await;
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 60_000;
    let batch = serde_json::json!({
        "version": 1, "id": "batch-ha-0001", "node": "n1", "created_ms": ts,
        "pages": [{"source": "nvml",
                   "gpus": [{"uuid": "GPU-ha", "node": "n1", "index": 0, "device": null, "model": null,
                             "pci_bus_id": null, "driver_version": null, "mig": null,
                             "workload": {"namespace": null, "pod": null, "container": null, "job": null},
                             "extra_labels": {}}],
                   "rows": [{"gpu": "GPU-ha", "ts_ms": ts, "values": [["DCGM_FI_DEV_GPU_TEMP", 40.0]]}]}],
        "events": []
    });
    let push = |base: String| {
        let batch = batch.clone();
        async move {
            let r = reqwest::Client::new()
                .post(format!("{base}/api/v1/ingest"))
                .bearer_auth(TOKEN)
                .json(&batch)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, reply) = push(a.base.clone()).await;
    assert_eq!((status, reply["status"].as_str()), (200, Some("stored")), "{reply}");
    let (status, reply) = push(b.base.clone()).await;
    assert_eq!((status, reply["status"].as_str()), (200, Some("duplicate")), "{reply}");
    let rows: i64 = pg
        .psql("ha_ledger", "SELECT count(*) FROM samples WHERE gpu = 'GPU-ha'")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(rows, 1);
}

/// A model trained once (`train` with the PostgreSQL store) is picked up by an instance
/// on an empty data directory: the current model is shared through the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_trained_once_is_served_by_every_instance() {
    let Some(pg) = PgCluster::start_or_skip("ha_postgres") else {
        return;
    };
    let url = pg.create_database("ha_model").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = common::predict_config(dir.path(), 1, &format!("[store]\nurl = \"{url}\"\n"));
    let out = Command::new(binary())
        .args(["train", "--simulate", "--gpus", "32", "--days", "4", "--step", "5m"])
        .args(["--fault-rate-multiplier", "3000", "--budget", "0.3", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("trainer"))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(stdout.contains("shared through the store"), "{stdout}");
    let version = stdout
        .split_whitespace()
        .skip_while(|w| *w != "model")
        .nth(1)
        .unwrap()
        .to_string();
    let gw = start_serve(&dir.path().join("fresh"), &["--config", config.to_str().unwrap()]).await;
    let model = get_json(&format!("{}/api/v1/models/current", gw.base))
        .await
        .expect("the instance loaded the shared model");
    assert_eq!(model["version"], version.as_str(), "{model}");
}
