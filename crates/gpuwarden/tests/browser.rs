//! The web UI in a real browser: starts the real binary on a simulated fleet with a tiny
//! failure model in its data dir (trained in about a second) and a 2-second scoring
//! period, injects a fault so that an incident opens, then runs `tests/browser/ui.test.mjs`
//! (playwright-core driving Debian's chromium) against it. The script checks the fleet,
//! GPU and incidents pages, the failure-risk badges on the tiles and the risk panel of a
//! GPU page, Ack, and that a GPU fallen off the bus shows grey `unknown` (and no risk);
//! it saves screenshots to `target/browser-screenshots/`.
//!
//! Needs `node`, `/usr/bin/chromium` (or `$CHROMIUM`) and `npm ci --prefix tests/browser`
//! (`scripts/test.sh` does all three). Skips with a message when one is missing, unless
//! `GPUWARDEN_REQUIRE_TOOLS=1`, then fails.

mod common;

use common::{get_json, post_json, predict_config, start, tools_required, train_tiny_model, wait_for};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// How long the Node script may run before it is killed.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(200);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// What is missing to run the browser test, if anything.
fn missing_tools() -> Vec<String> {
    let mut missing = Vec::new();
    let node = std::process::Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !node.is_ok_and(|s| s.success()) {
        missing.push("node (apt-get install nodejs)".to_string());
    }
    if !chromium().exists() {
        missing.push(format!("{} (apt-get install chromium)", chromium().display()));
    }
    if !repo_root().join("tests/browser/node_modules/playwright-core").is_dir() {
        missing.push("playwright-core (npm ci --prefix tests/browser)".to_string());
    }
    missing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_ui_works_in_a_real_browser() {
    let missing = missing_tools();
    if !missing.is_empty() {
        assert!(
            !tools_required(),
            "browser test needs: {} (GPUWARDEN_REQUIRE_TOOLS=1)",
            missing.join(", ")
        );
        eprintln!("SKIPPED web UI browser test: missing {}", missing.join(", "));
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    // A model in DATA_DIR/models before the start (the file `run` loads), and scoring every
    // 2 s instead of every 5 min: GPUs carry a risk within seconds. The model scores
    // whatever history there is (windows not yet filled are missing values to it).
    let data = dir.path().join("data");
    let version = train_tiny_model(&data);
    let config = predict_config(dir.path(), 2, "");
    let gw = start(
        &data,
        &[
            "--config",
            config.to_str().unwrap(),
            "--scrape-interval",
            "1s",
            "--seed",
            "1",
            "--fault-rate-multiplier",
            "0",
        ],
    )
    .await;
    let gpus = wait_for(Duration::from_secs(30), "32 fresh GPUs", || async {
        let body = get_json(&format!("{}/api/v1/gpus", gw.base)).await.ok()?;
        let gpus = body["gpus"].as_array()?.clone();
        (gpus.iter().filter(|g| g["stale"] == false).count() == 32).then_some(gpus)
    })
    .await;

    wait_for(Duration::from_secs(30), "failure predictions", || async {
        let body = get_json(&format!("{}/api/v1/predictions", gw.base)).await.ok()?;
        (body["model"] == version.as_str() && !body["predictions"].as_array()?.is_empty()).then_some(())
    })
    .await;

    // A row-remap failure is a memory fault the health engine turns into an incident.
    let uuid = gpus[11]["identity"]["uuid"].as_str().unwrap().to_string();
    let (status, body) = post_json(
        &format!("{}/api/v1/simulation/faults", gw.base),
        serde_json::json!({"gpu": uuid, "kind": "row-remap-failure"}),
    )
    .await;
    assert!(status < 300, "inject fault: {status} {body}");
    // (Not a `prediction` incident: the tiny model may put any GPU above its threshold.)
    wait_for(
        Duration::from_secs(60),
        "an open incident on the faulty GPU",
        || async {
            let url = format!("{}/api/v1/incidents?state=open&gpu={uuid}", gw.base);
            let body = get_json(&url).await.ok()?;
            body["incidents"]
                .as_array()?
                .iter()
                .any(|i| i["kind"] != "prediction")
                .then_some(())
        },
    )
    .await;

    let script = repo_root().join("tests/browser/ui.test.mjs");
    let run = tokio::process::Command::new("node")
        .arg(&script)
        .arg(&gw.base)
        .env("CHROMIUM", chromium())
        .env("GPUWARDEN_SCREENSHOTS", repo_root().join("target/browser-screenshots"))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(SCRIPT_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("browser test did not finish within {SCRIPT_TIMEOUT:?}"))
        .expect("run node");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    println!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "browser test failed: {}", out.status);
}

/// A GPU with an open critical security incident is not shown as healthy: a miner is
/// planted through the simulator (speed 10, so the rule's minutes pass in seconds), and
/// once its critical security incident (`cause.unauthorized_workload`, grouping
/// `sec.mining.telemetry`) is open the API's `status` of that
/// GPU is `unhealthy` (its `health` stays the measured one) and
/// `tests/browser/status.test.mjs` checks the tile and the GPU page in Chromium.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_with_an_open_critical_security_incident_is_not_shown_healthy() {
    let missing = missing_tools();
    if !missing.is_empty() {
        assert!(
            !tools_required(),
            "browser test needs: {} (GPUWARDEN_REQUIRE_TOOLS=1)",
            missing.join(", ")
        );
        eprintln!("SKIPPED status browser test: missing {}", missing.join(", "));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let gw = common::start_simulated(dir.path(), 5, 10).await;
    let gpus = wait_for(Duration::from_secs(30), "32 GPUs", || async {
        let body = get_json(&format!("{}/api/v1/gpus", gw.base)).await.ok()?;
        let list = body["gpus"].as_array()?.clone();
        (list.len() == 32).then_some(list)
    })
    .await;
    let uuid = gpus[3]["identity"]["uuid"].as_str().unwrap().to_string();
    let (status, body) = common::inject(&gw.base, &uuid, "miner").await;
    assert_eq!(status, 201, "{body}");
    wait_for(Duration::from_secs(120), "an open critical mining incident", || async {
        let url = format!("{}/api/v1/incidents?state=open&gpu={uuid}", gw.base);
        let body = get_json(&url).await.ok()?;
        body["incidents"]
            .as_array()?
            .iter()
            .any(|i| i["rule"] == "cause.unauthorized_workload" && i["severity"] == "critical")
            .then_some(())
    })
    .await;
    let gpu = get_json(&format!("{}/api/v1/gpus/{uuid}", gw.base)).await.unwrap();
    assert_eq!(gpu["status"]["state"], "unhealthy", "{gpu}");
    assert!(
        gpu["status"]["incidents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["rule"] == "cause.unauthorized_workload"),
        "{gpu}"
    );
    println!("health alone: {} {}", gpu["health"]["state"], gpu["health"]["score"]);

    let script = repo_root().join("tests/browser/status.test.mjs");
    let run = tokio::process::Command::new("node")
        .arg(&script)
        .arg(&gw.base)
        .arg(&uuid)
        .env("CHROMIUM", chromium())
        .env("GPUWARDEN_SCREENSHOTS", repo_root().join("target/browser-screenshots"))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(SCRIPT_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("browser test did not finish within {SCRIPT_TIMEOUT:?}"))
        .expect("run node");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    println!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "status browser test failed: {}", out.status);
}
