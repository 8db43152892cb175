//! The scrape collector against local HTTP servers: a real dcgm-exporter capture is
//! scraped and mapped; a slow target times out; an oversized body is refused without
//! reading it all; a dead target is reported down; a file_sd target list is re-read
//! when it changes.

use axum::routing::get;
use axum::Router;
use gpuwarden_collect::prom::Limits;
use gpuwarden_collect::scrape::{
    scrape_once, ScrapeConfig, ScrapeError, ScrapeOutcome, Scraper, TargetSources, TargetSpec,
};
use gpuwarden_model::SystemClock;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

const CAPTURE: &str = include_str!("../../../testdata/exporters/dcgm-exporter-datadog-t4-a10g.txt");

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}/metrics")
}

fn target(url: &str) -> TargetSpec {
    TargetSpec::from_address(url, "test")
}

fn config(timeout_ms: u64) -> ScrapeConfig {
    ScrapeConfig {
        interval: Duration::from_millis(200),
        timeout: Duration::from_millis(timeout_ms),
        limits: Limits::default(),
        ..ScrapeConfig::default()
    }
}

async fn once(url: &str, cfg: &ScrapeConfig) -> ScrapeOutcome {
    let client = reqwest::Client::new();
    scrape_once(&client, cfg, target(url), &SystemClock).await
}

#[tokio::test]
async fn scrapes_a_real_dcgm_exporter_capture() {
    let url = serve(Router::new().route("/metrics", get(|| async { CAPTURE }))).await;
    let outcome = once(&url, &config(2000)).await;
    let page = outcome.result.expect("scrape succeeds");
    // Two T4 captures (drivers 460 and 470) and one A10G.
    assert_eq!(page.gpus.len(), 3);
    let a10g = page.gpu("GPU-abc").expect("the A10G");
    assert_eq!(a10g.workload.namespace.as_deref(), Some("ray-llm"));
    assert_eq!(page.sample_count(), 24, "GPU-labelled samples");
    assert!(
        !page.other.is_empty(),
        "the label-less dummy block is kept, not dropped"
    );
}

#[tokio::test]
async fn slow_target_times_out() {
    let url = serve(Router::new().route(
        "/metrics",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            CAPTURE
        }),
    ))
    .await;
    let outcome = once(&url, &config(300)).await;
    assert!(
        matches!(outcome.result, Err(ScrapeError::Timeout { .. })),
        "{:?}",
        outcome.result.err()
    );
    assert!(outcome.duration < Duration::from_secs(3));
}

/// A page that starts and never ends (headers sent, a line every 50 ms, far under the
/// body limit) is a timeout, whichever timer fires first: the scrape's own or the HTTP
/// client's (which reqwest reports as "error decoding response body").
#[tokio::test]
async fn never_ending_page_is_a_timeout() {
    // A raw HTTP/1.1 server: chunked body, one small chunk every 50 ms, forever.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n";
                if conn.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for i in 0u64.. {
                    let line = format!("# line {i}\n");
                    let chunk = format!("{:x}\r\n{line}\r\n", line.len());
                    if conn.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
        }
    });
    let cfg = config(400);
    // The same client settings as the scraper's: its timeout equals the scrape's.
    let client = reqwest::Client::builder().timeout(cfg.timeout).build().unwrap();
    for _ in 0..3 {
        let outcome = scrape_once(&client, &cfg, target(&url), &SystemClock).await;
        let err = outcome.result.expect_err("a never-ending page fails");
        assert!(matches!(err, ScrapeError::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("timed out"), "{err}");
    }
}

#[tokio::test]
async fn oversized_body_is_refused() {
    let big = "x".repeat(2 * 1024 * 1024);
    let url = serve(Router::new().route("/metrics", get(move || async move { big }))).await;
    let mut cfg = config(5000);
    cfg.limits.max_body_bytes = 1024 * 1024;
    let outcome = once(&url, &cfg).await;
    match outcome.result {
        Err(e @ ScrapeError::TooLarge { .. }) => assert!(e.to_string().contains("max_body_bytes")),
        other => panic!("expected TooLarge, got {:?}", other.map(|p| p.sample_count())),
    }
}

#[tokio::test]
async fn dead_target_and_http_errors_are_reported() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let outcome = once(&format!("http://127.0.0.1:{port}/metrics"), &config(1000)).await;
    assert!(matches!(outcome.result, Err(ScrapeError::Request { .. })));
    let url = serve(Router::new()).await; // 404 for /metrics
    let outcome = once(&url, &config(1000)).await;
    assert!(matches!(outcome.result, Err(ScrapeError::Status { status: 404, .. })));
}

#[tokio::test]
async fn garbage_page_is_a_parse_error_naming_the_line() {
    let url = serve(Router::new().route("/metrics", get(|| async { "ok 1\nbroken{a=\"x} 2\n" }))).await;
    let outcome = once(&url, &config(1000)).await;
    let Err(err) = outcome.result else {
        panic!("expected a parse error")
    };
    let err = err.to_string();
    assert!(err.contains("line 2"), "{err}");
}

#[tokio::test]
async fn file_targets_are_reloaded_when_the_file_changes() {
    let a = serve(Router::new().route("/metrics", get(|| async { CAPTURE }))).await;
    let b = serve(Router::new().route("/metrics", get(|| async { CAPTURE }))).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("targets.json");
    std::fs::write(
        &file,
        format!(r#"[{{"targets": ["{a}"], "labels": {{"node": "n1"}}}}]"#),
    )
    .unwrap();
    let scraper = Scraper::new(
        config(1000),
        TargetSources {
            static_targets: vec![],
            files: vec![file.clone()],
        },
        Arc::new(SystemClock),
    );
    let states = scraper.states();
    let (tx, mut rx) = mpsc::channel(16);
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(scraper.run(tx, stop_rx));
    let first = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.target.url, a);
    assert_eq!(first.target.node_hint, "n1");

    // Rewrite with a different mtime: the next rounds scrape b only.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(&file, format!(r#"[{{"targets": ["{b}"]}}]"#)).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let o = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("b scraped")
            .unwrap();
        if o.target.url == b {
            break;
        }
    }
    let urls: Vec<String> = states.snapshot().into_iter().map(|s| s.url).collect();
    assert_eq!(urls, vec![b.clone()], "state follows the file");

    // A broken rewrite keeps the previous list.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(&file, "[{broken").unwrap();
    for _ in 0..3 {
        let o = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(o.target.url, b);
    }
    stop_tx.send(true).unwrap();
    drop(rx);
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
}
