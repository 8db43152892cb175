//! A hostile or broken exporter against the real binary: far-future and pre-1970
//! timestamps, fresh GPU UUIDs on every scrape, a whole target's GPUs vanishing at
//! once, pages with tens of thousands of names per GPU. Each test serves the pages from
//! an in-test HTTP server on loopback and runs `gpuwarden run` against it.

mod common;

use common::*;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// An exporter whose page is produced by a closure called with the scrape number.
struct Exporter {
    hostport: String,
    scrapes: Arc<AtomicU64>,
    _task: tokio::task::JoinHandle<()>,
}

type PageFn = Arc<Mutex<Box<dyn FnMut(u64) -> String + Send>>>;

async fn exporter(page: PageFn) -> Exporter {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hostport = listener.local_addr().unwrap().to_string();
    let scrapes = Arc::new(AtomicU64::new(0));
    let n = scrapes.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (page, n) = (page.clone(), n.clone());
            async move {
                let i = n.fetch_add(1, Ordering::SeqCst);
                let mut f = page.lock();
                (f)(i)
            }
        }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Exporter {
        hostport,
        scrapes,
        _task: task,
    }
}

fn gpu_lines(out: &mut String, uuid: &str, index: usize, node: &str, temp: f64, xid: u32, ts: Option<i64>) {
    let labels = format!(
        r#"gpu="{index}",UUID="{uuid}",device="nvidia{index}",modelName="NVIDIA H100 80GB HBM3",Hostname="{node}""#
    );
    let ts = ts.map(|t| format!(" {t}")).unwrap_or_default();
    out.push_str(&format!("DCGM_FI_DEV_GPU_TEMP{{{labels}}} {temp}{ts}\n"));
    out.push_str(&format!("DCGM_FI_DEV_POWER_USAGE{{{labels}}} 300{ts}\n"));
    out.push_str(&format!("DCGM_FI_DEV_XID_ERRORS{{{labels}}} {xid}{ts}\n"));
}

fn config(dir: &std::path::Path, target: &str, extra_scrape: &str) -> std::path::PathBuf {
    let path = dir.join("gpuwarden.toml");
    std::fs::write(
        &path,
        format!("[scrape]\ninterval = \"1s\"\ntargets = [\"{target}\"]\n{extra_scrape}\n"),
    )
    .unwrap();
    path
}

async fn incidents(base: &str) -> Vec<serde_json::Value> {
    get_json(&format!("{base}/api/v1/incidents?limit=1000"))
        .await
        .ok()
        .and_then(|b| b["incidents"].as_array().cloned())
        .unwrap_or_default()
}

async fn wait_scrapes(e: &Exporter, n: u64) {
    let target = e.scrapes.load(Ordering::SeqCst) + n;
    wait_for(Duration::from_secs(60), "scrapes", || async {
        (e.scrapes.load(Ordering::SeqCst) >= target).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_future_or_pre_1970_timestamp_is_refused_and_resolves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // GPU-a reports XID 79 (fallen off the bus) throughout; GPU-b is healthy.
    let hostile = Arc::new(AtomicU64::new(0));
    let h = hostile.clone();
    let page: PageFn = Arc::new(Mutex::new(Box::new(move |_| {
        let mut s = String::new();
        gpu_lines(&mut s, "GPU-a", 0, "node-1", 45.0, 79, None);
        match h.load(Ordering::SeqCst) {
            // Year 2100 on one line of GPU-b.
            1 => gpu_lines(&mut s, "GPU-b", 1, "node-1", 50.0, 0, Some(4_102_444_800_000)),
            // Before 1970.
            2 => gpu_lines(&mut s, "GPU-b", 1, "node-1", 50.0, 0, Some(-86_400_000)),
            _ => gpu_lines(&mut s, "GPU-b", 1, "node-1", 50.0, 0, None),
        }
        s
    })));
    let e = exporter(page).await;
    let cfg = config(dir.path(), &e.hostport, "");
    // Auto-resolve after 5 s of absence: a clock moved a century ahead would resolve
    // the XID incident at the next evaluation.
    let cfg_text = std::fs::read_to_string(&cfg).unwrap() + "[incidents]\nauto_resolve_after = \"5s\"\n";
    std::fs::write(&cfg, cfg_text).unwrap();
    let gw = start(&dir.path().join("data"), &["--config", cfg.to_str().unwrap()]).await;

    let xid = wait_for(Duration::from_secs(30), "the XID 79 incident", || async {
        incidents(&gw.base)
            .await
            .into_iter()
            .find(|i| common::has_rule(i, "xid.79") && i["gpu"] == "GPU-a" && i["state"] == "open")
    })
    .await;
    let id = xid["id"].as_str().unwrap().to_string();

    for (mode, reason) in [(1, "too_far_ahead"), (2, "too_old")] {
        hostile.store(mode, Ordering::SeqCst);
        wait_scrapes(&e, 4).await;
        let targets = get_json(&format!("{}/api/v1/targets", gw.base)).await.unwrap();
        let ingest = &targets["ingest"][0];
        assert!(
            ingest["refused"][reason].as_u64().unwrap_or(0) >= 3,
            "{reason} refusals are counted per target: {ingest}"
        );
        assert!(
            !ingest["last_refusal_reasons"].as_array().unwrap().is_empty(),
            "{ingest}"
        );
    }
    hostile.store(0, Ordering::SeqCst);
    // Past the 5 s auto-resolve window, the XID incident is still open and GPU-a is not
    // healthy: the analysis clock did not jump.
    wait_scrapes(&e, 7).await;
    let inc = get_json(&format!("{}/api/v1/incidents/{id}", gw.base)).await.unwrap();
    assert_eq!(inc["state"], "open", "{inc}");
    let gpu = get_json(&format!("{}/api/v1/gpus/GPU-a", gw.base)).await.unwrap();
    assert_ne!(gpu["health"]["state"], "healthy", "{gpu}");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // No stored point of GPU-b in the future or before 1970.
    let series = get_json(&format!(
        "{}/api/v1/gpus/GPU-b/series?field=DCGM_FI_DEV_GPU_TEMP&from=-1h",
        gw.base
    ))
    .await
    .unwrap();
    for p in series["points"].as_array().unwrap() {
        let ts = p[0].as_f64().unwrap() as i64;
        assert!(ts > 0 && ts <= now_ms + 60_000, "stored point at {ts}");
    }
    let metrics = reqwest::get(format!("{}/metrics", gw.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("gpuwarden_samples_refused_total")
            && l.contains("too_far_ahead")
            && !l.ends_with(" 0")),
        "refusals on /metrics"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_uuids_on_every_scrape_stay_bounded_and_open_one_target_incident() {
    let dir = tempfile::tempdir().unwrap();
    // 2,000 never-seen GPUs on every page.
    let page: PageFn = Arc::new(Mutex::new(Box::new(move |scrape| {
        let mut s = String::with_capacity(2_000 * 600);
        for i in 0..2_000 {
            gpu_lines(
                &mut s,
                &format!("GPU-churn-{scrape}-{i}"),
                i,
                "node-churn",
                40.0,
                0,
                None,
            );
        }
        s
    })));
    let e = exporter(page).await;
    let cfg = config(
        dir.path(),
        &e.hostport,
        "max_gpus_per_target = 64\nmax_new_gpus_per_page = 32\n",
    );
    let gw = start(&dir.path().join("data"), &["--config", cfg.to_str().unwrap()]).await;
    wait_scrapes(&e, 8).await;

    let health = get_json(&format!("{}/healthz", gw.base)).await.unwrap();
    assert_eq!(
        health["gpus"], 64,
        "the live view holds at most the target's limit: {health}"
    );
    let targets = get_json(&format!("{}/api/v1/targets", gw.base)).await.unwrap();
    let ingest = &targets["ingest"][0];
    assert!(ingest["refused"]["gpu_limit"].as_u64().unwrap() > 10_000, "{ingest}");
    assert!(ingest["gpus_vanished"].is_object(), "{ingest}");

    // One target-level incident, no per-GPU fallen-off-bus storm.
    let all = wait_for(Duration::from_secs(20), "the target-level incident", || async {
        let all = incidents(&gw.base).await;
        all.iter().any(|i| i["rule"] == "target.gpus_vanished").then_some(all)
    })
    .await;
    let vanished = all.iter().filter(|i| i["rule"] == "target.gpus_vanished").count();
    assert_eq!(vanished, 1, "{all:?}");
    let per_gpu = all.iter().filter(|i| i["gpu"].is_string()).count();
    assert_eq!(per_gpu, 0, "no per-GPU incidents for vanished GPUs: {all:?}");

    // Memory stays bounded: far below what 16,000 GPUs' state would take.
    let rss_kb = std::fs::read_to_string(format!("/proc/{}/status", gw.child.id()))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .map(|v| v.trim().trim_end_matches(" kB").parse::<u64>().unwrap())
        })
        .unwrap();
    assert!(rss_kb < 400_000, "RSS {rss_kb} kB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_with_tens_of_thousands_of_names_keeps_the_series_limit() {
    let dir = tempfile::tempdir().unwrap();
    // 20,000 distinct unknown names on one GPU, new ones on every page.
    let page: PageFn = Arc::new(Mutex::new(Box::new(move |scrape| {
        let mut s = String::with_capacity(20_000 * 120);
        gpu_lines(&mut s, "GPU-names", 0, "node-n", 40.0, 0, None);
        let labels = r#"gpu="0",UUID="GPU-names",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="node-n""#;
        for i in 0..20_000 {
            s.push_str(&format!("DCGM_CUSTOM_{scrape}_{i}{{{labels}}} 1\n"));
        }
        s
    })));
    let e = exporter(page).await;
    let cfg = config(dir.path(), &e.hostport, "max_series_per_gpu = 100\n");
    let mut gw = start(&dir.path().join("data"), &["--config", cfg.to_str().unwrap()]).await;
    wait_scrapes(&e, 4).await;
    let gpu = get_json(&format!("{}/api/v1/gpus/GPU-names", gw.base)).await.unwrap();
    let names = gpu["latest"].as_object().map_or(0, |m| m.len());
    assert_eq!(names, 100, "the GPU keeps exactly its series limit of names");
    let targets = get_json(&format!("{}/api/v1/targets", gw.base)).await.unwrap();
    assert!(targets["ingest"][0]["refused"]["series_limit"].as_u64().unwrap() > 50_000);
    // SIGTERM still ends it (bounded wait; the figure is in `gpuwarden bench hostile`).
    let pid = gw.child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = wait_for(Duration::from_secs(30), "exit after SIGTERM", || {
        let s = gw.child.try_wait().ok().flatten();
        async move { s }
    })
    .await;
    assert!(status.success(), "{status}");
}
