//! `/readyz` follows the store's write health: 503 with the error while writes fail (a
//! full disk), 200 again once a write succeeds; `/healthz` (liveness) stays 200 through
//! it, and `/metrics` shows `gpuwarden_store_write_failing`. Driven by the store's
//! failing test double over a real embedded store, since a real disk cannot be made to
//! fail on demand inside a test.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use gpuwarden_collect::scrape::TargetStates;
use gpuwarden_model::{Clock, GpuIdentity, GpuSamples, GpuUuid, SystemClock};
use gpuwarden_pipeline::{Analysis, Ingestor, LiveFleet, PipelineMetrics};
use gpuwarden_server::{router, AppState};
use gpuwarden_store::embedded::{EmbeddedOptions, EmbeddedStore};
use gpuwarden_store::testing::{FailingStore, Op};
use gpuwarden_store::{PageWrite, Store};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use tower::ServiceExt;

async fn get(app: &axum::Router, path: &str) -> (StatusCode, String) {
    let resp = app
        .clone()
        .oneshot(
            Request::get(path)
                .header("host", "127.0.0.1")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn readyz_is_503_while_store_writes_fail_and_recovers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap());
    let failing = Arc::new(FailingStore::new(inner));
    let store: Arc<dyn Store> = failing.clone();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let live = Arc::new(LiveFleet::new(60_000));
    let analysis = Arc::new(
        Analysis::new(
            store.clone(),
            live.clone(),
            clock.clone(),
            gpuwarden_detect::HealthRules::builtin(),
            gpuwarden_detect::XidCatalog::builtin(),
            Default::default(),
        )
        .unwrap(),
    );
    let metrics = PipelineMetrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let ingestor = Arc::new(Ingestor::new(store.clone(), live.clone(), metrics, clock.clone()));
    let refresh = ingestor.clone();
    let app = router(
        AppState {
            store: store.clone(),
            live,
            analysis,
            targets: TargetStates::default(),
            registry: Arc::new(registry),
            clock: clock.clone(),
            before_metrics: Arc::new(move || refresh.refresh_gauges()),
            started_ms: clock.now_ms(),
            ingest: None,
            notifier: None,
            cache: Default::default(),
            predictor: None,
            allowed_hosts: Default::default(),
            audit: None,
        },
        None,
    );

    let (status, body) = get(&app, "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(r#""status":"ready""#), "{body}");

    // The disk fills: a page write fails.
    let gpu = GpuUuid::new("GPU-readyz-1");
    let ids = [GpuIdentity::new(gpu.clone(), "n1")];
    let rows = [GpuSamples::new(gpu, clock.now_ms())];
    let page = PageWrite {
        rows: &rows,
        events: &[],
        gpus: &ids,
        seen_ms: clock.now_ms(),
    };
    failing.fail_next(Op::AppendPage, 1);
    assert!(store.append_page(&page).is_err());

    let (status, body) = get(&app, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "not_ready");
    assert_eq!(v["store"], "failing");
    assert_eq!(v["failed_writes"], 1);
    assert!(v["error"].as_str().unwrap().contains("AppendPage"), "{body}");
    // Liveness is not affected: restarting would not free the disk.
    let (status, _) = get(&app, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    let (_, metrics) = get(&app, "/metrics").await;
    assert!(metrics.contains("gpuwarden_store_write_failing 1"), "{metrics}");

    // Space is freed: the next write succeeds and readiness comes back by itself.
    store.append_page(&page).unwrap();
    let (status, body) = get(&app, "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, metrics) = get(&app, "/metrics").await;
    assert!(metrics.contains("gpuwarden_store_write_failing 0"), "{metrics}");
}
