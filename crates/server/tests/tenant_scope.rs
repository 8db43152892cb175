//! Tenants never see another tenant's data, through any route (issue 18).
//!
//! A real fleet: three dcgm-exporter-format endpoints on loopback (nodes `node-a`,
//! `node-b`, `node-c`; GPUs in namespaces `team-a` / `team-b`, Slurm jobs with and
//! without an account, idle GPUs) scraped by the real scraper into a real embedded store
//! and live view, evaluated by the real analysis stage (plus an analyzer that raises
//! fixed findings, so the incidents are known), with the real notifier (outbox,
//! silences) and predictor. The real router is wrapped in a test layer that does what
//! authentication will do: insert the caller's `CallerScope` and `Principal`.
//!
//! Tenant A = namespace `team-a`, Slurm account `physics`, node `node-c`.
//! Tenant B = namespace `team-b`.
//! Every route is called as A, as B and unscoped, and the RETURNED DATA is checked. The
//! last test compares the routes checked here with the served OpenAPI document, so a new
//! route without a tenant check fails.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use gpuwarden_collect::scrape::{ScrapeConfig, Scraper, TargetSources, TargetSpec};
use gpuwarden_model::{
    Action, Analyzer, Clock, Finding, FindingKind, Freshness, GpuUuid, Severity, SystemClock, TimestampMs,
};
use gpuwarden_notify::config::DeliverySettings;
use gpuwarden_notify::route::Router as NotifyRouter;
use gpuwarden_notify::sinks::BoxFuture;
use gpuwarden_notify::{Notification, Notifier, Sink, SinkError};
use gpuwarden_pipeline::{Analysis, Ingestor, LiveFleet, PipelineMetrics};
use gpuwarden_predict::{PredictConfig, Prediction, Predictor, RiskBand};
use gpuwarden_server::principal::{Principal, Role};
use gpuwarden_server::scope::{CallerScope, TenantDef};
use gpuwarden_server::{router, AppState};
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;
use tower::ServiceExt;

const ALL_GPUS: [&str; 8] = [
    "GPU-a0", "GPU-a1", "GPU-a2", "GPU-b0", "GPU-b1", "GPU-b2", "GPU-c0", "GPU-c1",
];
/// Tenant A: `team-a` (GPU-a0), account `physics` (GPU-b0), node `node-c` (GPU-c0, GPU-c1).
const A_GPUS: [&str; 4] = ["GPU-a0", "GPU-b0", "GPU-c0", "GPU-c1"];
/// Tenant B: `team-b` (GPU-a1, GPU-b2, GPU-c0).
const B_GPUS: [&str; 3] = ["GPU-a1", "GPU-b2", "GPU-c0"];

/// Rules of the fixed findings → who may see the incident.
/// - `test.a0` GPU-a0 (team-a now, nothing recorded) → A
/// - `test.a1` GPU-a1 (team-b) → B
/// - `test.b0` GPU-b0 (account physics) → A
/// - `test.b1` GPU-b1 (a Slurm job of unknown account) → nobody but unscoped callers
/// - `node.c` node-c, no GPU → A (owns node-c by `nodes`)
/// - `node.a` node-a, no GPU → nobody (pods on a node do not own it)
/// - `sec.a2` GPU-a2 (idle now) recorded namespace team-b → B
/// - `sec.a0` GPU-a0 (team-a now) recorded namespace team-b → B, not A: what an incident
///   recorded about the workload of its time wins over who holds the GPU now
const A_RULES: [&str; 3] = ["node.c", "test.a0", "test.b0"];
const B_RULES: [&str; 3] = ["sec.a0", "sec.a2", "test.a1"];
const ALL_RULES: usize = 8;

fn tenant_a() -> TenantDef {
    TenantDef {
        namespaces: vec!["team-a".into()],
        slurm_accounts: vec!["physics".into()],
        nodes: vec!["node-c".into()],
    }
}

fn tenant_b() -> TenantDef {
    TenantDef {
        namespaces: vec!["team-b".into()],
        ..TenantDef::default()
    }
}

/// dcgm-exporter text for one node: (uuid, index, workload labels).
fn exporter_page(node: &str, gpus: &[(&str, u32, &str)]) -> String {
    let mut out = String::from("# TYPE DCGM_FI_DEV_GPU_TEMP gauge\n");
    for (uuid, index, workload) in gpus {
        out.push_str(&format!(
            "DCGM_FI_DEV_GPU_TEMP{{gpu=\"{index}\",UUID=\"{uuid}\",device=\"nvidia{index}\",modelName=\"NVIDIA H100 80GB HBM3\",Hostname=\"{node}\"{workload}}} 41\n"
        ));
    }
    out.push_str("# TYPE DCGM_FI_DEV_POWER_USAGE gauge\n");
    for (uuid, index, workload) in gpus {
        out.push_str(&format!(
            "DCGM_FI_DEV_POWER_USAGE{{gpu=\"{index}\",UUID=\"{uuid}\",device=\"nvidia{index}\",modelName=\"NVIDIA H100 80GB HBM3\",Hostname=\"{node}\"{workload}}} 300\n"
        ));
    }
    out
}

/// Serves `body` at `/metrics` on a free loopback port; returns the URL.
async fn exporter(body: String) -> String {
    let app = axum::Router::new().route("/metrics", axum::routing::get(move || async move { body }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/metrics")
}

/// Raises a fixed set of findings (the incidents the test knows).
struct FixedFindings;

fn finding(rule: &str, gpu: Option<&str>, node: &str, now: TimestampMs) -> Finding {
    Finding {
        kind: if rule.starts_with("sec.") {
            FindingKind::Security
        } else {
            FindingKind::Health
        },
        rule: rule.into(),
        severity: Severity::Critical,
        gpu: gpu.map(GpuUuid::new),
        node: node.into(),
        ts_ms: now,
        summary: format!("{rule} on {}", gpu.unwrap_or(node)),
        evidence: Vec::new(),
        action: Action::None,
        dimension: None,
        labels: Default::default(),
    }
}

impl Analyzer for FixedFindings {
    fn name(&self) -> &'static str {
        "fixed"
    }
    fn evaluate(&mut self, now: TimestampMs, _freshness: &dyn Fn(&GpuUuid) -> Freshness) -> Vec<Finding> {
        let mut sec_a2 = finding("sec.a2", Some("GPU-a2"), "node-a", now);
        sec_a2.labels.insert("gpuwarden.namespace".into(), "team-b".into());
        sec_a2.labels.insert("gpuwarden.pod".into(), "miner-7".into());
        let mut sec_a0 = finding("sec.a0", Some("GPU-a0"), "node-a", now);
        sec_a0.labels.insert("gpuwarden.namespace".into(), "team-b".into());
        vec![
            finding("test.a0", Some("GPU-a0"), "node-a", now),
            finding("test.a1", Some("GPU-a1"), "node-a", now),
            finding("test.b0", Some("GPU-b0"), "node-b", now),
            finding("test.b1", Some("GPU-b1"), "node-b", now),
            finding("node.c", None, "node-c", now),
            finding("node.a", None, "node-a", now),
            sec_a2,
            sec_a0,
        ]
    }
}

/// A sink that accepts everything (the notifier's delivery tasks are not started: the
/// entries stay in the outbox, which is what the API shows).
struct Hook;

impl Sink for Hook {
    fn name(&self) -> &str {
        "hook"
    }
    fn type_name(&self) -> &'static str {
        "webhook"
    }
    fn deliver<'a>(&'a self, _batch: &'a [Arc<Notification>]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Who calls: the test layer turns this into what authentication will insert.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Admin,
    A,
    B,
}

struct Fleet {
    app: axum::Router,
    analysis: Arc<Analysis>,
    store: Arc<dyn gpuwarden_store::Store>,
    target_urls: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Fleet {
    async fn call(&self, who: Who, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1")
            .header("x-test-caller", format!("{who:?}"));
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Body::from(v.to_string())
            }
            None if method == "POST" || method == "DELETE" => {
                req = req.header("content-type", "application/json");
                Body::empty()
            }
            None => Body::empty(),
        };
        let resp = self.app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20).await.unwrap();
        let v =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, v)
    }

    async fn get(&self, who: Who, path: &str) -> Value {
        let (status, v) = self.call(who, "GET", path, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path} as {who:?}: {v}");
        v
    }

    async fn status(&self, who: Who, method: &str, path: &str) -> StatusCode {
        self.call(who, method, path, None).await.0
    }

    /// Incident ids by rule, read unscoped from the engine.
    fn incident_id(&self, rule: &str) -> String {
        self.analysis.with_incidents(|e| {
            e.list(&Default::default())
                .into_iter()
                .find(|i| i.rule == rule)
                .map(|i| i.id.clone())
                .unwrap_or_else(|| panic!("no incident of rule {rule}"))
        })
    }

    fn incident_state(&self, rule: &str) -> String {
        let id = self.incident_id(rule);
        self.analysis
            .with_incidents(|e| {
                e.get(&id)
                    .map(|i| serde_json::to_value(i.state).unwrap().as_str().unwrap().to_string())
            })
            .unwrap()
    }
}

/// The test stand-in for authentication: a `CallerScope` and a `Principal` per caller.
async fn as_caller(mut req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let who = req
        .headers()
        .get("x-test-caller")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("Admin")
        .to_string();
    let (tenant, def) = match who.as_str() {
        "A" => (Some("tenant-a"), Some(tenant_a())),
        "B" => (Some("tenant-b"), Some(tenant_b())),
        _ => (None, None),
    };
    if let Some(def) = def {
        req.extensions_mut().insert(CallerScope::for_tenant(&def));
        req.extensions_mut().insert(Principal {
            id: format!("tok-{who}"),
            role: Role::Operator,
            tenant: tenant.map(Into::into),
        });
    }
    next.run(req).await
}

async fn fleet() -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store: Arc<dyn gpuwarden_store::Store> = Arc::new(
        gpuwarden_store::embedded::EmbeddedStore::open(&dir.path().join("store"), Default::default()).unwrap(),
    );
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
    analysis.add_analyzer(Box::new(FixedFindings));
    let metrics = PipelineMetrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let ingestor =
        Arc::new(Ingestor::new(store.clone(), live.clone(), metrics, clock.clone()).with_analysis(analysis.clone()));

    // Notifications: the real notifier with one sink, fed by the analysis stage, with
    // the same namespace / account lookups `gpuwarden run` wires.
    let notifier = Arc::new(
        Notifier::from_parts(
            &dir.path().join("outbox"),
            vec![(Arc::new(Hook) as Arc<dyn Sink>, None)],
            NotifyRouter::new(Vec::new(), vec!["hook".into()]),
            DeliverySettings::default(),
            clock.clone(),
        )
        .unwrap(),
    );
    {
        let (live, clock) = (live.clone(), clock.clone());
        notifier.set_namespace_lookup(Arc::new(move |g| {
            live.get(g, clock.now_ms()).and_then(|v| v.identity.workload.namespace)
        }));
    }
    {
        let (live, clock) = (live.clone(), clock.clone());
        notifier.set_account_lookup(Arc::new(move |g| {
            live.get(g, clock.now_ms()).and_then(|v| v.identity.workload.account)
        }));
    }
    analysis.add_incident_sink(notifier.clone());

    // The fleet, served as dcgm-exporter pages and scraped by the real scraper.
    let pages = [
        (
            "node-a",
            exporter_page(
                "node-a",
                &[
                    ("GPU-a0", 0, ",namespace=\"team-a\",pod=\"train-0\""),
                    ("GPU-a1", 1, ",namespace=\"team-b\",pod=\"serve-1\""),
                    ("GPU-a2", 2, ""),
                ],
            ),
        ),
        (
            "node-b",
            exporter_page(
                "node-b",
                &[
                    ("GPU-b0", 0, ",hpc_job=\"4242\",slurm_account=\"physics\""),
                    ("GPU-b1", 1, ",hpc_job=\"4243\""),
                    ("GPU-b2", 2, ",namespace=\"team-b\",pod=\"serve-2\""),
                ],
            ),
        ),
        (
            "node-c",
            exporter_page(
                "node-c",
                &[
                    ("GPU-c0", 0, ",namespace=\"team-b\",pod=\"serve-3\""),
                    ("GPU-c1", 1, ""),
                ],
            ),
        ),
    ];
    let mut specs = Vec::new();
    let mut target_urls = Vec::new();
    for (node, body) in pages {
        let url = exporter(body).await;
        target_urls.push((node.to_string(), url.clone()));
        specs.push(TargetSpec {
            url,
            node_hint: node.into(),
            source: "static".into(),
        });
    }
    let scraper = Scraper::new(
        ScrapeConfig {
            interval: std::time::Duration::from_secs(3600),
            ..ScrapeConfig::default()
        },
        TargetSources {
            static_targets: specs,
            files: Vec::new(),
        },
        clock.clone(),
    );
    let targets = scraper.states();
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let scraping = tokio::spawn(scraper.run(tx, stopped));
    for _ in 0..3 {
        let outcome = tokio::time::timeout(std::time::Duration::from_secs(20), rx.recv())
            .await
            .expect("a scrape within 20 s")
            .expect("the scraper runs");
        assert!(
            outcome.result.is_ok(),
            "scraping {}: {:?}",
            outcome.target.url,
            outcome.result.as_ref().err()
        );
        let ing = ingestor.clone();
        tokio::task::spawn_blocking(move || ing.handle(&outcome).unwrap())
            .await
            .unwrap();
    }
    let _ = stop.send(true);
    let _ = scraping.await;

    // Predictions as the scorer records them.
    let predictor = Predictor::new(None, PredictConfig::default());
    let now = clock.now_ms();
    predictor.record(
        [
            ("GPU-a0", "node-a", 0.9),
            ("GPU-a1", "node-a", 0.8),
            ("GPU-b1", "node-b", 0.7),
            ("GPU-c1", "node-c", 0.1),
        ]
        .into_iter()
        .map(|(g, n, p)| Prediction {
            gpu: GpuUuid::new(g),
            node: n.into(),
            ts_ms: now,
            probability: p,
            band: RiskBand::of(p, 0.5),
            top_features: Vec::new(),
            model_version: "test-1".into(),
        })
        .collect(),
    );

    let refresh = ingestor.clone();
    let extra = axum::Router::new()
        .route(
            "/api/v1/simulation/faults",
            axum::routing::post(|| async { (StatusCode::CREATED, axum::Json(json!({"injected": true}))) }),
        )
        .route(
            "/api/v1/simulation/labels",
            axum::routing::get(|| async { axum::Json(json!([{"gpu": "GPU-a1"}])) }),
        );
    let app = router(
        AppState {
            store: store.clone(),
            live,
            analysis: analysis.clone(),
            targets,
            registry: Arc::new(registry),
            clock: clock.clone(),
            before_metrics: Arc::new(move || refresh.refresh_gauges()),
            started_ms: clock.now_ms(),
            ingest: None,
            notifier: Some(notifier),
            cache: Default::default(),
            predictor: Some(predictor),
            allowed_hosts: Default::default(),
            audit: None,
        },
        Some(extra),
    )
    .layer(axum::middleware::from_fn(as_caller));
    Fleet {
        app,
        analysis,
        store,
        target_urls,
        _dir: dir,
    }
}

/// Evaluates once (incidents open, notifications are enqueued).
async fn evaluate(f: &Fleet) {
    let a = f.analysis.clone();
    tokio::task::spawn_blocking(move || a.evaluate().unwrap())
        .await
        .unwrap();
}

fn gpu_set(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|g| g["identity"]["uuid"].as_str().unwrap().to_string())
        .collect()
}

fn set<const N: usize>(items: [&str; N]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn rules(list: &Value) -> BTreeSet<String> {
    list["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["rule"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_tenant_with_its_own_data_only() {
    let f = fleet().await;

    // Silences first (they apply when notifications are enqueued): A mutes every test
    // and security rule — without its confinement that would mute B's incidents too.
    let mute = |rules: &[&str]| json!({"matchers": {"rules": rules}, "author": "ops", "comment": "maintenance", "duration": "1h"});
    let (st, sa) = f
        .call(
            Who::A,
            "POST",
            "/api/v1/silences",
            Some(mute(&["test.*", "sec.*", "node.*"])),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{sa}");
    assert_eq!(
        sa["within"]["namespaces"],
        json!(["team-a"]),
        "the server confines it: {sa}"
    );
    assert_eq!(sa["within"]["nodes"], json!(["node-c"]));
    let (st, sb) = f
        .call(Who::B, "POST", "/api/v1/silences", Some(mute(&["none.*"])))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{sb}");
    let (st, s_admin) = f
        .call(Who::Admin, "POST", "/api/v1/silences", Some(mute(&["nothing.*"])))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{s_admin}");
    assert!(
        s_admin.get("within").is_none(),
        "an unscoped silence is not confined: {s_admin}"
    );
    let (sa_id, sb_id) = (sa["id"].as_str().unwrap(), sb["id"].as_str().unwrap());

    evaluate(&f).await;

    // --- GPUs: list (also the cached answer: the unscoped caller fills the cache first,
    // with the very same query, in the same second).
    let all = f.get(Who::Admin, "/api/v1/gpus?limit=100").await;
    assert_eq!(gpu_set(&all["gpus"]), set(ALL_GPUS));
    let a = f.get(Who::A, "/api/v1/gpus?limit=100").await;
    assert_eq!(gpu_set(&a["gpus"]), set(A_GPUS), "{a}");
    assert_eq!(a["total"], 4);
    let b = f.get(Who::B, "/api/v1/gpus?limit=100").await;
    assert_eq!(gpu_set(&b["gpus"]), set(B_GPUS), "{b}");
    let a_node_a = f.get(Who::A, "/api/v1/gpus?node=node-a").await;
    assert_eq!(gpu_set(&a_node_a["gpus"]), set(["GPU-a0"]));
    // A GPU's status counts only incidents the caller may see: GPU-a0 is A's now, but
    // its critical security incident recorded team-b's workload.
    let status_rules = |v: &Value| -> BTreeSet<String> {
        v["status"]["incidents"]
            .as_array()
            .map(|l| l.iter().filter_map(|i| i["rule"].as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    let a0_admin = f.get(Who::Admin, "/api/v1/gpus/GPU-a0").await;
    assert!(status_rules(&a0_admin).contains("sec.a0"), "{a0_admin}");
    assert_eq!(a0_admin["status"]["state"], "unhealthy", "{a0_admin}");
    let a0_tenant = f.get(Who::A, "/api/v1/gpus/GPU-a0").await;
    assert!(!status_rules(&a0_tenant).contains("sec.a0"), "{a0_tenant}");
    let listed = a["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["identity"]["uuid"] == "GPU-a0")
        .unwrap();
    assert!(!status_rules(listed).contains("sec.a0"), "{listed}");
    let summary_a = f.get(Who::A, "/api/v1/fleet/summary").await;
    for g in summary_a["worst"].as_array().unwrap() {
        assert!(!status_rules(g).contains("sec.a0"), "{g}");
    }
    // The account came from the exporter's label.
    let b0 = f.get(Who::A, "/api/v1/gpus/GPU-b0").await;
    assert_eq!(b0["identity"]["workload"]["account"], "physics", "{b0}");

    // --- One GPU, series, events, health history: in scope 200, out of scope 404.
    for uuid in ALL_GPUS {
        for (who, mine) in [(Who::A, &A_GPUS[..]), (Who::B, &B_GPUS[..])] {
            let want = if mine.contains(&uuid) {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            };
            for path in [
                format!("/api/v1/gpus/{uuid}"),
                format!("/api/v1/gpus/{uuid}/series?field=DCGM_FI_DEV_GPU_TEMP&from=-1h"),
                format!("/api/v1/gpus/{uuid}/events"),
                format!("/api/v1/gpus/{uuid}/health/history"),
                format!("/api/v1/gpus/{uuid}/predictions"),
            ] {
                let (st, v) = f.call(who, "GET", &path, None).await;
                assert_eq!(st, want, "GET {path} as {who:?}: {v}");
                if st == StatusCode::NOT_FOUND {
                    assert_eq!(v["error"]["code"], "gpu_not_found", "as if unknown: {v}");
                }
            }
        }
    }
    let series = f
        .get(Who::A, "/api/v1/gpus/GPU-a0/series?field=DCGM_FI_DEV_GPU_TEMP&from=-1h")
        .await;
    assert_eq!(
        series["points"][0][1], 41.0,
        "the tenant reads its own series: {series}"
    );
    // History is split by tenant: a sample from before GPU-a0's current workload arrived
    // (another tenant's time) is the admin's to read, not A's, who sees GPU-a0 through
    // its namespace; GPU-c0, on a node A owns, keeps its whole history for A.
    let before = SystemClock.now_ms() - 30 * 60_000;
    for uuid in ["GPU-a0", "GPU-c0"] {
        let mut old = gpuwarden_model::GpuSamples::new(GpuUuid::new(uuid), before);
        old.values.push((
            gpuwarden_model::FieldName::Dcgm(gpuwarden_model::DcgmField::GpuTemp),
            99.0,
        ));
        f.store.append_samples(&[old]).unwrap();
    }
    let old_points = |v: &Value| -> usize { v["points"].as_array().unwrap().iter().filter(|p| p[1] == 99.0).count() };
    let path = |uuid: &str| format!("/api/v1/gpus/{uuid}/series?field=DCGM_FI_DEV_GPU_TEMP&from=-1h");
    assert_eq!(old_points(&f.get(Who::Admin, &path("GPU-a0")).await), 1);
    let a0 = f.get(Who::A, &path("GPU-a0")).await;
    assert_eq!(old_points(&a0), 0, "another tenant's time on GPU-a0: {a0}");
    assert!(a0["from"].as_i64().unwrap() > before, "{a0}");
    assert_eq!(old_points(&f.get(Who::A, &path("GPU-c0")).await), 1, "A owns node-c");
    let (_, unknown) = f.call(Who::A, "GET", "/api/v1/gpus/GPU-zz", None).await;
    let (_, foreign) = f.call(Who::A, "GET", "/api/v1/gpus/GPU-a1", None).await;
    assert_eq!(
        unknown["error"]["message"].as_str().unwrap().replace("GPU-zz", "X"),
        foreign["error"]["message"].as_str().unwrap().replace("GPU-a1", "X"),
        "another tenant's GPU reads exactly like an unknown one"
    );

    // --- Incidents: list, one.
    let all = f.get(Who::Admin, "/api/v1/incidents").await;
    assert_eq!(all["total"], ALL_RULES, "{all}");
    let a = f.get(Who::A, "/api/v1/incidents").await;
    assert_eq!(rules(&a), set(A_RULES), "{a}");
    assert_eq!(a["total"], 3);
    let b = f.get(Who::B, "/api/v1/incidents").await;
    assert_eq!(rules(&b), set(B_RULES), "{b}");
    let a_on_a1 = f.get(Who::A, "/api/v1/incidents?gpu=GPU-a1").await;
    assert_eq!(a_on_a1["total"], 0, "a filter cannot reach around the scope: {a_on_a1}");
    for rule in A_RULES.iter().chain(&B_RULES).chain(&["test.b1", "node.a"]) {
        let id = f.incident_id(rule);
        let path = format!("/api/v1/incidents/{id}");
        let a_sees = A_RULES.contains(rule);
        let b_sees = B_RULES.contains(rule);
        let (st, v) = f.call(Who::A, "GET", &path, None).await;
        assert_eq!(st == StatusCode::OK, a_sees, "GET {rule} as A: {st} {v}");
        if !a_sees {
            assert_eq!(st, StatusCode::NOT_FOUND, "404, never 403: {v}");
            assert_eq!(v["error"]["code"], "incident_not_found");
        }
        let (st, _) = f.call(Who::B, "GET", &path, None).await;
        assert_eq!(st == StatusCode::OK, b_sees, "GET {rule} as B: {st}");
        assert_eq!(f.status(Who::Admin, "GET", &path).await, StatusCode::OK);
    }

    // --- Ack and resolve another tenant's incident: 404, and nothing changes.
    let b_incident = f.incident_id("test.a1");
    for action in ["ack", "resolve"] {
        let (st, v) = f
            .call(
                Who::A,
                "POST",
                &format!("/api/v1/incidents/{b_incident}/{action}"),
                Some(json!({"comment": "x"})),
            )
            .await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{action} B's incident as A: {v}");
        assert_eq!(v["error"]["code"], "incident_not_found");
    }
    assert_eq!(f.incident_state("test.a1"), "open", "A's attempts changed nothing");
    let node_level = f.incident_id("node.a");
    assert_eq!(
        f.status(Who::A, "POST", &format!("/api/v1/incidents/{node_level}/resolve"))
            .await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(f.incident_state("node.a"), "open");
    // Its own: allowed.
    let own = f.incident_id("test.b0");
    let (st, v) = f
        .call(Who::A, "POST", &format!("/api/v1/incidents/{own}/ack"), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(f.incident_state("test.b0"), "acknowledged");
    let (st, _) = f
        .call(Who::B, "POST", &format!("/api/v1/incidents/{b_incident}/resolve"), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(f.incident_state("test.a1"), "resolved");

    // --- Fleet summary and nodes: aggregates over the caller's GPUs only.
    let s = f.get(Who::Admin, "/api/v1/fleet/summary").await;
    assert_eq!((s["gpus"].as_u64(), s["nodes"].as_u64()), (Some(8), Some(3)), "{s}");
    let open = |s: &Value| -> u64 {
        ["info", "warning", "critical", "fatal"]
            .iter()
            .map(|k| s["open_incidents"][k].as_u64().unwrap())
            .sum()
    };
    assert_eq!(open(&s), ALL_RULES as u64 - 1, "one resolved");
    let s = f.get(Who::A, "/api/v1/fleet/summary").await;
    assert_eq!(s["gpus"], 4, "{s}");
    assert_eq!(s["nodes"], 3);
    assert_eq!(open(&s), 3, "A's three incidents are active (one acknowledged): {s}");
    let worst: BTreeSet<String> = s["worst"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["identity"]["uuid"].as_str().unwrap().to_string())
        .collect();
    assert!(worst.is_subset(&set(A_GPUS)), "{worst:?}");
    let s = f.get(Who::B, "/api/v1/fleet/summary").await;
    assert_eq!(s["gpus"], 3, "{s}");
    assert_eq!(open(&s), 2, "B resolved one of its three");

    let nodes = |v: &Value| -> Vec<(String, u64)> {
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["node"].as_str().unwrap().to_string(), n["gpus"].as_u64().unwrap()))
            .collect()
    };
    let n = f.get(Who::Admin, "/api/v1/nodes").await;
    assert_eq!(
        nodes(&n),
        vec![("node-a".into(), 3), ("node-b".into(), 3), ("node-c".into(), 2)]
    );
    let n = f.get(Who::A, "/api/v1/nodes").await;
    assert_eq!(
        nodes(&n),
        vec![("node-a".into(), 1), ("node-b".into(), 1), ("node-c".into(), 2)],
        "shared nodes count only A's GPUs; its own node counts all: {n}"
    );
    for node in n["nodes"].as_array().unwrap() {
        if let Some(w) = node["worst_gpu"].as_str() {
            assert!(A_GPUS.contains(&w), "{node}");
        }
    }
    // node-a has node-level and other tenants' critical incidents; A's part of it is
    // judged on A's GPU alone.
    let n = f.get(Who::B, "/api/v1/nodes").await;
    assert_eq!(
        nodes(&n),
        vec![("node-a".into(), 1), ("node-b".into(), 1), ("node-c".into(), 1)]
    );

    // --- Predictions: list and per GPU (per GPU checked above).
    let preds = |v: &Value| -> BTreeSet<String> {
        v["predictions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["gpu"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(preds(&f.get(Who::Admin, "/api/v1/predictions").await).len(), 4);
    assert_eq!(
        preds(&f.get(Who::A, "/api/v1/predictions").await),
        set(["GPU-a0", "GPU-c1"])
    );
    assert_eq!(preds(&f.get(Who::B, "/api/v1/predictions").await), set(["GPU-a1"]));
    let p = f.get(Who::A, "/api/v1/gpus/GPU-a0/predictions").await;
    assert_eq!(p["latest"]["probability"], 0.9, "{p}");
    // No model is loaded: the same 404 for everyone (the training report, fleet-wide, is
    // null for tenants when one is; see predictions.rs).
    assert_eq!(
        f.status(Who::A, "GET", "/api/v1/models/current").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        f.status(Who::Admin, "GET", "/api/v1/models/current").await,
        StatusCode::NOT_FOUND
    );

    // --- Notifications: only entries of the caller's incidents, counts over those.
    let entries = |v: &Value| -> Vec<(String, Option<String>)> {
        v["sinks"][0]["recent"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["incident"].as_str().unwrap().to_string(),
                    e["silenced_by"].as_str().map(str::to_string),
                )
            })
            .collect()
    };
    let ids = |rules: &[&str]| -> BTreeSet<String> { rules.iter().map(|r| f.incident_id(r)).collect() };
    let all = f.get(Who::Admin, "/api/v1/notifications?recent=1000").await;
    let all_entries = entries(&all);
    // Silences: A's silence held back exactly A's incidents' notifications.
    for (incident, silenced_by) in &all_entries {
        let a_incident = ids(&A_RULES).contains(incident);
        assert_eq!(
            silenced_by.as_deref() == Some(sa_id),
            a_incident,
            "A's silence must hold back A's notifications and no other: {incident} {silenced_by:?}"
        );
    }
    for rule in B_RULES {
        let id = f.incident_id(rule);
        assert!(
            all_entries.iter().any(|(i, s)| *i == id && s.is_none()),
            "B's {rule} was notified, not silenced by A"
        );
    }
    let a = f.get(Who::A, "/api/v1/notifications?recent=1000").await;
    let a_incidents: BTreeSet<String> = entries(&a).into_iter().map(|(i, _)| i).collect();
    assert_eq!(a_incidents, ids(&A_RULES), "{a}");
    let c = &a["sinks"][0];
    let counted = ["pending", "delivered", "failed", "silenced"]
        .iter()
        .map(|k| c[k].as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(
        counted as usize,
        entries(&a).len(),
        "A's counts are over A's entries: {c}"
    );
    assert!(c["silenced"].as_u64().unwrap() >= 3, "{c}");
    let b = f.get(Who::B, "/api/v1/notifications?recent=1000").await;
    let b_incidents: BTreeSet<String> = entries(&b).into_iter().map(|(i, _)| i).collect();
    assert_eq!(b_incidents, ids(&B_RULES), "{b}");
    assert_eq!(b["sinks"][0]["silenced"], 0);

    // --- Silences: each tenant lists and expires only its own.
    let listed = |v: &Value| -> BTreeSet<String> {
        v["silences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(listed(&f.get(Who::A, "/api/v1/silences").await), set([sa_id]));
    assert_eq!(listed(&f.get(Who::B, "/api/v1/silences").await), set([sb_id]));
    assert_eq!(listed(&f.get(Who::Admin, "/api/v1/silences").await).len(), 3);
    let (st, v) = f
        .call(Who::A, "DELETE", &format!("/api/v1/silences/{sb_id}"), None)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["error"]["code"], "silence_not_found");
    let admin_id = s_admin["id"].as_str().unwrap();
    assert_eq!(
        f.status(Who::A, "DELETE", &format!("/api/v1/silences/{admin_id}"))
            .await,
        StatusCode::NOT_FOUND,
        "a fleet-wide silence is not a tenant's to expire"
    );
    let still: Vec<Value> = f.get(Who::Admin, "/api/v1/silences").await["silences"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        still.iter().all(|s| s["state"] == "active"),
        "nothing expired: {still:?}"
    );
    let (st, v) = f
        .call(Who::A, "DELETE", &format!("/api/v1/silences/{sa_id}"), None)
        .await;
    assert_eq!((st, v["state"].as_str()), (StatusCode::OK, Some("expired")));
    // A body cannot widen the confinement (unknown field) or lift it.
    let (st, _) = f
        .call(
            Who::A,
            "POST",
            "/api/v1/silences",
            Some(
                json!({"matchers": {"rules": ["x"]}, "within": null, "author": "a", "comment": "c", "duration": "1h"}),
            ),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // --- Targets: only nodes the tenant owns (A owns node-c; B owns none).
    let urls = |v: &Value, key: &str| -> BTreeSet<String> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                t[if key == "targets" { "url" } else { "target" }]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let node_c_url = f.target_urls.iter().find(|(n, _)| n == "node-c").unwrap().1.clone();
    let all = f.get(Who::Admin, "/api/v1/targets").await;
    assert_eq!(urls(&all, "targets").len(), 3);
    let a = f.get(Who::A, "/api/v1/targets").await;
    assert_eq!(urls(&a, "targets"), set([node_c_url.as_str()]), "{a}");
    assert!(urls(&a, "ingest").is_subset(&set([node_c_url.as_str()])), "{a}");
    let b = f.get(Who::B, "/api/v1/targets").await;
    assert!(urls(&b, "targets").is_empty() && urls(&b, "ingest").is_empty(), "{b}");

    // --- System routes.
    assert_eq!(f.get(Who::Admin, "/healthz").await["gpus"], 8);
    assert_eq!(f.get(Who::A, "/healthz").await["gpus"], 4);
    assert_eq!(f.get(Who::B, "/healthz").await["gpus"], 3);
    assert_eq!(
        f.status(Who::A, "GET", "/readyz").await,
        StatusCode::OK,
        "no fleet data in it"
    );
    assert_eq!(f.status(Who::A, "GET", "/metrics").await, StatusCode::FORBIDDEN);
    assert_eq!(f.status(Who::Admin, "GET", "/metrics").await, StatusCode::OK);
    // The audit trail is fleet-wide: refused to a tenant (this fleet keeps none: 404
    // for the unscoped admin, past the tenant check).
    assert_eq!(f.status(Who::A, "GET", "/api/v1/audit").await, StatusCode::FORBIDDEN);
    // whoami tells a tenant principal about itself, nothing of the fleet.
    let me = f.get(Who::A, "/api/v1/auth/whoami").await;
    assert_eq!(me.as_object().map(|o| o.len() <= 8), Some(true), "{me}");
    assert!(!me.to_string().contains("GPU-"), "{me}");
    assert_eq!(
        f.status(Who::Admin, "GET", "/api/v1/audit").await,
        StatusCode::NOT_FOUND
    );

    // --- Routes that write or describe the whole fleet: not for tenants.
    assert_eq!(f.status(Who::A, "POST", "/api/v1/ingest").await, StatusCode::FORBIDDEN);
    assert_eq!(f.status(Who::A, "POST", "/api/v1/write").await, StatusCode::FORBIDDEN);
    assert_eq!(
        f.status(Who::Admin, "POST", "/api/v1/ingest").await,
        StatusCode::NOT_FOUND,
        "ingest off"
    );
    assert_eq!(
        f.status(Who::A, "GET", "/api/v1/simulation/labels").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        f.status(Who::B, "POST", "/api/v1/simulation/faults").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        f.status(Who::Admin, "GET", "/api/v1/simulation/labels").await,
        StatusCode::OK
    );
}

/// Every route of the served OpenAPI document, with how the test above checks it for
/// tenants. A route added to the document without being added here fails this test.
const VERIFIED: &[(&str, &str, &str)] = &[
    ("get", "/api/v1/auth/whoami", "the caller's own principal only"),
    (
        "get",
        "/api/v1/auth/tokens",
        "fleet-wide: refused to tenants by auth::policy (auth_matrix)",
    ),
    (
        "post",
        "/api/v1/auth/tokens",
        "fleet-wide: refused to tenants by auth::policy (auth_matrix)",
    ),
    (
        "delete",
        "/api/v1/auth/tokens/{id}",
        "fleet-wide: refused to tenants by auth::policy (auth_matrix)",
    ),
    ("post", "/api/v1/auth/session", "sign-in: no fleet data"),
    ("post", "/api/v1/auth/session/logout", "sign-out: no fleet data"),
    (
        "get",
        "/api/v1/auth/methods",
        "public sign-in methods (provider name, login URL): no fleet data",
    ),
    ("get", "/api/v1/audit", "fleet-wide: 403 for a tenant"),
    ("get", "/healthz", "counts only the tenant's GPUs"),
    ("get", "/readyz", "store write health only: no fleet data"),
    (
        "get",
        "/metrics",
        "fleet-wide: 403 for tenants (authentication refuses it first)",
    ),
    ("get", "/api/v1/targets", "only targets of nodes the tenant owns"),
    ("get", "/api/v1/gpus", "exactly the tenant's GPUs (also from the cache)"),
    ("get", "/api/v1/gpus/{uuid}", "404 outside the scope"),
    ("get", "/api/v1/gpus/{uuid}/series", "404 outside the scope"),
    ("get", "/api/v1/gpus/{uuid}/events", "404 outside the scope"),
    ("get", "/api/v1/gpus/{uuid}/health/history", "404 outside the scope"),
    ("get", "/api/v1/gpus/{uuid}/predictions", "404 outside the scope"),
    ("get", "/api/v1/predictions", "only the tenant's GPUs"),
    (
        "get",
        "/api/v1/models/current",
        "no GPU data; training report null for tenants",
    ),
    (
        "get",
        "/api/v1/fleet/summary",
        "counts over the tenant's GPUs and incidents",
    ),
    ("get", "/api/v1/nodes", "aggregates over the tenant's GPUs"),
    ("get", "/api/v1/incidents", "exactly the tenant's incidents"),
    ("get", "/api/v1/incidents/{id}", "404 outside the scope"),
    (
        "post",
        "/api/v1/incidents/{id}/ack",
        "404 outside the scope, nothing changes",
    ),
    (
        "post",
        "/api/v1/incidents/{id}/resolve",
        "404 outside the scope, nothing changes",
    ),
    (
        "get",
        "/api/v1/notifications",
        "entries and counts of the tenant's incidents",
    ),
    ("get", "/api/v1/silences", "only silences confined within the tenant"),
    ("post", "/api/v1/silences", "confined to the tenant by the server"),
    ("delete", "/api/v1/silences/{id}", "404 for others' silences"),
    ("post", "/api/v1/ingest", "403 for tenants"),
    ("post", "/api/v1/write", "403 for tenants"),
    ("post", "/api/v1/simulation/faults", "403 for tenants"),
    ("get", "/api/v1/simulation/labels", "403 for tenants"),
];

#[test]
fn every_route_of_the_openapi_document_has_a_tenant_check() {
    let doc = serde_json::to_value(gpuwarden_server::openapi::document()).unwrap();
    let mut served = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                served.insert((method.to_string(), path.clone()));
            }
        }
    }
    let verified: BTreeSet<(String, String)> = VERIFIED
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    let unchecked: Vec<_> = served.difference(&verified).collect();
    assert!(
        unchecked.is_empty(),
        "routes without a tenant check in tests/tenant_scope.rs: {unchecked:?} — decide what a tenant may see \
         there, filter by CallerScope / visibility, and add the route to VERIFIED with an assertion"
    );
    let gone: Vec<_> = verified.difference(&served).collect();
    assert!(
        gone.is_empty(),
        "VERIFIED lists routes the document no longer has: {gone:?}"
    );
}
