use super::*;
use crate::request_guard::{self, AllowedHosts};
use axum::http::{header, Request as HttpRequest};
use axum::routing::{delete, post};
use gpuwarden_audit::{query, Query, Record};
use tower::ServiceExt;

fn app(log: Arc<AuditLog>) -> axum::Router {
    let api = axum::Router::new()
        .route("/api/v1/incidents/{id}/resolve", post(|| async { "{}" }))
        .route(
            "/api/v1/silences",
            post(|| async { (StatusCode::CREATED, axum::Json(serde_json::json!({"id": "sil-42"}))) }),
        )
        .route("/api/v1/silences/{id}", delete(|| async { StatusCode::NOT_FOUND }))
        .route(
            "/api/v1/tokens",
            post(|| async {
                let mut r = (StatusCode::CREATED, "{}").into_response();
                r.extensions_mut().insert(Principal {
                    id: "tok-admin".into(),
                    role: crate::principal::Role::Admin,
                    tenant: Some("team-a".into()),
                });
                r
            }),
        )
        .route("/api/v1/ingest", post(|| async { "ok" }));
    wrap(request_guard::wrap(api, Arc::new(AllowedHosts::default())), Some(log))
}

fn req(method: &str, uri: &str, ct: Option<&str>, origin: Option<&str>) -> HttpRequest<Body> {
    let mut b = HttpRequest::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "127.0.0.1:9470");
    if let Some(ct) = ct {
        b = b.header(header::CONTENT_TYPE, ct);
    }
    if let Some(o) = origin {
        b = b.header(header::ORIGIN, o);
    }
    let mut r = b.body(Body::empty()).unwrap();
    r.extensions_mut()
        .insert(ConnectInfo::<SocketAddr>("192.0.2.7:40000".parse().unwrap()));
    r
}

fn all(dir: &std::path::Path) -> Vec<Record> {
    let mut v = query(
        dir,
        &Query {
            limit: 1000,
            ..Query::default()
        },
    )
    .unwrap()
    .records;
    v.reverse();
    v
}

const JSON: Option<&str> = Some("application/json");

#[tokio::test]
async fn changes_and_denials_are_recorded_with_who_what_where() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(AuditLog::open(dir.path()).unwrap());
    let writer = log.spawn_writer().unwrap();
    let app = app(log.clone());
    let send = |r| app.clone().oneshot(r);

    let resp = send(req("POST", "/api/v1/incidents/inc-01ABC/resolve", JSON, None))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // A change is on disk before its answer leaves.
    let recs = all(dir.path());
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(
        (
            r.action.as_str(),
            r.target.as_deref(),
            r.actor.as_str(),
            r.role.as_str()
        ),
        ("incident.resolve", Some("inc-01ABC"), "anonymous", "admin")
    );
    assert_eq!(
        (r.result, r.status, r.client.as_deref()),
        (Outcome::Ok, Some(200), Some("192.0.2.7:40000"))
    );

    // The created id comes from the answer; the body reaches the client unchanged.
    let resp = send(req("POST", "/api/v1/silences", JSON, None)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["id"],
        "sil-42"
    );
    // The principal the authentication middleware left in the answer is the actor.
    send(req("POST", "/api/v1/tokens", JSON, None)).await.unwrap();
    // Refused by the guard: a form post, a foreign Origin, a rebinding Host.
    let form = send(req(
        "POST",
        "/api/v1/incidents/inc-01ABC/resolve",
        Some("application/x-www-form-urlencoded"),
        None,
    ))
    .await
    .unwrap();
    assert_eq!(form.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let foreign = send(req("POST", "/api/v1/silences", JSON, Some("https://evil.example")))
        .await
        .unwrap();
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
    let mut rebound = req("GET", "/api/v1/gpus", None, None);
    rebound
        .headers_mut()
        .insert(header::HOST, "evil.example.com".parse().unwrap());
    assert_eq!(send(rebound).await.unwrap().status(), StatusCode::MISDIRECTED_REQUEST);
    // A failed change, a push (data, not a change), a read: the first is recorded.
    assert_eq!(
        send(req("DELETE", "/api/v1/silences/sil-nope", JSON, None))
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    send(req("POST", "/api/v1/ingest", Some("application/x-protobuf"), None))
        .await
        .unwrap();
    writer.stop();

    let recs = all(dir.path());
    let find = |action: &str, status: u16| {
        recs.iter()
            .find(|r| r.action == action && r.status == Some(status))
            .unwrap_or_else(|| panic!("no {action} {status} in {recs:#?}"))
    };
    assert_eq!(find("silence.create", 201).target.as_deref(), Some("sil-42"));
    let tok = find("token.create", 201);
    assert_eq!(
        (tok.actor.as_str(), tok.tenant.as_deref()),
        ("tok-admin", Some("team-a"))
    );
    let d = find("request.denied", 415);
    assert_eq!(d.result, Outcome::Denied);
    assert_eq!(d.detail.as_deref(), Some("unsupported_media_type"));
    assert_eq!(d.target.as_deref(), Some("POST /api/v1/incidents/inc-01ABC/resolve"));
    assert_eq!(find("request.denied", 403).detail.as_deref(), Some("cross_origin"));
    assert_eq!(find("request.denied", 421).target.as_deref(), Some("GET /api/v1/gpus"));
    assert_eq!(find("silence.expire", 404).result, Outcome::Error);
    assert!(!recs.iter().any(|r| r.action.starts_with("ingest")), "{recs:#?}");
    assert_eq!(recs.len(), 7, "{recs:#?}");
    assert!(gpuwarden_audit::verify(dir.path()).unwrap().is_intact());
}

#[tokio::test]
async fn a_change_whose_record_cannot_be_written_is_answered_503() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(AuditLog::open(dir.path()).unwrap());
    let app = app(log.clone());
    assert_eq!(
        app.clone()
            .oneshot(req("POST", "/api/v1/incidents/a/resolve", JSON, None))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // A directory where the next file of the log would be: every write fails.
    std::fs::create_dir(dir.path().join("audit-00000000000000000002.jsonl")).unwrap();
    let resp = app
        .oneshot(req("POST", "/api/v1/incidents/b/resolve", JSON, None))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "audit_unavailable");
    // And /metrics says so.
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(AuditMetrics(log)));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("gpuwarden_audit_write_errors_total 1"), "{text}");
    assert!(text.contains("gpuwarden_audit_records_written_total 1"), "{text}");
}

#[tokio::test]
async fn a_flood_of_refused_requests_writes_a_bounded_number_of_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(AuditLog::open(dir.path()).unwrap());
    let writer = log.spawn_writer().unwrap();
    let app = app(log.clone());
    let n = 5000u64;
    for i in 0..n {
        let mut r = req(
            "POST",
            &format!("/api/v1/incidents/inc-{i}/resolve"),
            Some("text/plain"),
            Some("https://evil.example"),
        );
        // 40 hosts, a new port each time.
        let peer: SocketAddr = format!("198.51.100.{}:{}", i % 40, 1024 + i).parse().unwrap();
        r.extensions_mut().insert(ConnectInfo(peer));
        assert_eq!(
            app.clone().oneshot(r).await.unwrap().status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }
    writer.stop();
    let recs = all(dir.path());
    // One record when each host is first refused, one with the count of its repeats.
    assert_eq!(recs.len(), 80, "{}", recs.len());
    assert_eq!(recs.iter().map(|r| r.count).sum::<u64>(), n);
    assert!(gpuwarden_audit::verify(dir.path()).unwrap().is_intact());
}

#[test]
fn actions_are_named_from_routes() {
    let cases = [
        (
            Method::POST,
            "/api/v1/incidents/inc-1/ack",
            "incident.ack",
            Some("inc-1"),
        ),
        (Method::POST, "/api/v1/silences", "silence.create", None),
        (
            Method::DELETE,
            "/api/v1/silences/sil-1",
            "silence.expire",
            Some("sil-1"),
        ),
        (Method::POST, "/api/v1/tokens", "token.create", None),
        (Method::DELETE, "/api/v1/tokens/tok-1", "token.delete", Some("tok-1")),
        (Method::PUT, "/api/v1/config", "config.update", None),
        (
            Method::POST,
            "/api/v1/models/m-1/activate",
            "model.activate",
            Some("m-1"),
        ),
        (Method::POST, "/api/v1/notifications/test", "notification.test", None),
        (
            Method::POST,
            "/api/v1/simulation/faults",
            "simulation.fault_inject",
            None,
        ),
        (Method::POST, "/api/v1/<script>/x", "request.post", None),
        (Method::POST, "/api/v1/incidents/x/<b>", "request.post", None),
    ];
    for (m, path, action, target) in cases {
        let (a, t) = action_of(&m, path);
        assert_eq!((a.as_str(), t.as_deref()), (action, target), "{m} {path}");
    }
}
