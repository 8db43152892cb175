//! `[store] url` through the real binary and a real, throwaway PostgreSQL server:
//! `gpuwarden run` stores samples and incidents in the database (nothing in
//! `data_dir/store`), and a restart — even on an empty data directory — finds them
//! there. Wrong schema and unreachable database end the start with a clear message.
//!
//! Skips when PostgreSQL is not installed, unless `GPUWARDEN_REQUIRE_TOOLS=1` (set by
//! scripts/test.sh), then fails.

mod common;

use common::{binary, get_json, post_json, start, wait_for};
use gpuwarden_store::pg_cluster::PgCluster;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn config(dir: &Path, url: &str) -> String {
    let path = dir.join("gpuwarden.toml");
    std::fs::write(&path, format!("[store]\nurl = \"{url}\"\n")).unwrap();
    path.to_str().unwrap().to_string()
}

async fn points(base: &str, uuid: &str) -> BTreeSet<(i64, u64)> {
    let s = get_json(&format!(
        "{base}/api/v1/gpus/{uuid}/series?field=DCGM_FI_DEV_GPU_TEMP&from=0&to=9999999999999&max_points=100000"
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
async fn run_stores_samples_and_incidents_in_postgres_and_a_restart_keeps_them() {
    let Some(pg) = PgCluster::start_or_skip("postgres_store") else {
        return;
    };
    let url = pg.create_database("gw").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), &url);
    let args = [
        "--config",
        &cfg,
        "--scrape-interval",
        "1s",
        "--seed",
        "9",
        "--fault-rate-multiplier",
        "0",
        "--nodes",
        "2",
    ];
    let data1 = tmp.path().join("data1");
    let mut gw = start(&data1, &args).await;
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
    // The remap failure is one signal of a memory incident (correlation); the incident's
    // rule names its cause.
    let rule = incident["rule"].as_str().unwrap().to_string();
    let contributes = |inc: &serde_json::Value| {
        inc["correlation"]["contributors"]
            .as_array()
            .is_some_and(|c| c.iter().any(|x| x["rule"] == "remap.failure"))
            || inc["rule"] == "remap.failure"
    };
    assert!(contributes(&incident), "{incident}");
    wait_for(Duration::from_secs(30), "3 stored points", || async {
        (points(&gw.base, &uuid).await.len() >= 3).then_some(())
    })
    .await;
    let before = points(&gw.base, &uuid).await;

    // In the database, not in the data directory.
    let in_db: i64 = pg
        .psql("gw", &format!("SELECT count(*) FROM samples WHERE gpu = '{uuid}'"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(in_db >= before.len() as i64, "{in_db} rows for {uuid} in samples");
    let inc_rows = pg
        .psql(
            "gw",
            &format!("SELECT incident->>'rule' FROM incidents WHERE id = '{id}'"),
        )
        .unwrap();
    assert_eq!(inc_rows, rule);
    assert!(!data1.join("store").exists(), "the embedded store was not used");

    // kill -9, then start on an empty data directory: everything comes from PostgreSQL.
    gw.child.kill().unwrap();
    gw.child.wait().unwrap();
    let gw2 = start(&tmp.path().join("data2"), &args).await;
    let after = points(&gw2.base, &uuid).await;
    let lost: Vec<_> = before.difference(&after).collect();
    assert!(lost.is_empty(), "{} acknowledged points lost: {lost:?}", lost.len());
    let again = get_json(&format!("{}/api/v1/incidents/{id}", gw2.base)).await.unwrap();
    assert_eq!(again["rule"], rule.as_str(), "{again}");
    assert!(
        contributes(&again),
        "the correlation came back from the database: {again}"
    );
    let body = get_json(&format!("{}/api/v1/gpus", gw2.base)).await.unwrap();
    assert_eq!(body["total"], 16, "the inventory is in the database");
}

/// Runs `gpuwarden run` expecting it to exit (not serve); returns its stderr.
fn run_expecting_exit(data_dir: &Path, cfg: &str) -> String {
    let mut child = Command::new(binary())
        .args(["run", "--listen", "127.0.0.1:0", "--config", cfg, "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success(), "gpuwarden run should have refused to start");
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return err;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("gpuwarden run did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_newer_schema_and_an_unreachable_database_stop_the_start_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    // Nothing listens on port 1.
    let cfg = config(tmp.path(), "postgres://gw@127.0.0.1:1/gw");
    let err = run_expecting_exit(&tmp.path().join("d0"), &cfg);
    assert!(
        err.contains("127.0.0.1:1/gw") && err.contains("is PostgreSQL running"),
        "{err}"
    );

    let Some(pg) = PgCluster::start_or_skip("postgres_store") else {
        return;
    };
    let url = pg.create_database("future").unwrap();
    pg.psql(
        "future",
        "CREATE TABLE gpuwarden_schema (version integer PRIMARY KEY, description text NOT NULL, \
         applied_at timestamptz NOT NULL DEFAULT now()); \
         CREATE TABLE gpuwarden_meta (key text PRIMARY KEY, value text NOT NULL); \
         INSERT INTO gpuwarden_schema (version, description) VALUES (99, 'from the future')",
    )
    .unwrap();
    let cfg = config(tmp.path(), &url);
    let err = run_expecting_exit(&tmp.path().join("d1"), &cfg);
    assert!(err.contains("version 99") && err.contains("upgrade gpuwarden"), "{err}");
}
