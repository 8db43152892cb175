use super::*;
use axum::routing::{get, post};
use tower::ServiceExt;

fn hosts() -> AllowedHosts {
    AllowedHosts::new(
        Some("127.0.0.2:9470".parse().unwrap()),
        &["GPUwarden.example.com".to_string()],
    )
    .unwrap()
}

fn app() -> axum::Router {
    let r = axum::Router::new()
        .route("/api/v1/things", get(|| async { "list" }).post(|| async { "made" }))
        .route("/api/v1/things/{id}", axum::routing::delete(|| async { "gone" }))
        .route("/api/v1/ingest", post(|| async { "pushed" }))
        .route("/healthz", get(|| async { "ok" }));
    wrap(r, Arc::new(hosts()))
}

/// (method, path, content type, Origin, Host, expected status).
type Case = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
    u16,
);

/// method × content type × Origin × Host → status.
#[tokio::test]
async fn method_content_type_origin_host_table() {
    let json = Some("application/json");
    #[rustfmt::skip]
    let cases: &[Case] = &[
        // Reads: any content type, any Origin; Host must be allowed.
        ("GET", "/api/v1/things", None, None, Some("127.0.0.1:9470"), 200),
        ("GET", "/api/v1/things", None, Some("https://evil.example"), Some("localhost:9470"), 200),
        ("GET", "/api/v1/things", None, None, Some("localhost"), 200),
        ("GET", "/api/v1/things", None, None, Some("[::1]:9470"), 200),
        ("GET", "/api/v1/things", None, None, Some("127.0.0.2:1"), 200),
        ("GET", "/api/v1/things", None, None, Some("gpuwarden.EXAMPLE.com"), 200),
        ("GET", "/api/v1/things", None, None, Some("evil.example.com"), 421),
        ("GET", "/api/v1/things", None, None, Some("evil.example.com:9470"), 421),
        ("GET", "/api/v1/things", None, None, Some("127.0.0.3:9470"), 421),
        ("GET", "/api/v1/things", None, None, Some("localhost.evil.example"), 421),
        ("GET", "/api/v1/things", None, None, Some("::1"), 421),
        ("GET", "/api/v1/things", None, None, None, 421),
        // Probes answer whatever the Host.
        ("GET", "/healthz", None, None, Some("10.1.2.3:9470"), 200),
        ("GET", "/healthz", None, None, None, 200),
        // Changes: JSON only.
        ("POST", "/api/v1/things", json, None, Some("127.0.0.1:9470"), 200),
        ("POST", "/api/v1/things", Some("application/json; charset=utf-8"), None, Some("127.0.0.1:9470"), 200),
        ("POST", "/api/v1/things", Some("Application/JSON"), None, Some("127.0.0.1:9470"), 200),
        ("POST", "/api/v1/things", None, None, Some("127.0.0.1:9470"), 415),
        ("POST", "/api/v1/things", Some("text/plain"), None, Some("127.0.0.1:9470"), 415),
        ("POST", "/api/v1/things", Some("application/x-www-form-urlencoded"), None, Some("127.0.0.1:9470"), 415),
        ("POST", "/api/v1/things", Some("multipart/form-data; boundary=x"), None, Some("127.0.0.1:9470"), 415),
        ("POST", "/api/v1/things", Some("application/jsonx"), None, Some("127.0.0.1:9470"), 415),
        ("DELETE", "/api/v1/things/1", None, None, Some("127.0.0.1:9470"), 415),
        ("DELETE", "/api/v1/things/1", json, None, Some("127.0.0.1:9470"), 200),
        // Changes: same origin or none.
        ("POST", "/api/v1/things", json, Some("http://127.0.0.1:9470"), Some("127.0.0.1:9470"), 200),
        ("POST", "/api/v1/things", json, Some("http://localhost"), Some("localhost"), 200),
        ("POST", "/api/v1/things", json, Some("https://gpuwarden.example.com"), Some("gpuwarden.example.com"), 200),
        ("POST", "/api/v1/things", json, Some("http://[::1]:9470"), Some("[::1]:9470"), 200),
        ("POST", "/api/v1/things", json, Some("https://evil.example"), Some("127.0.0.1:9470"), 403),
        ("POST", "/api/v1/things", json, Some("http://localhost:9470"), Some("127.0.0.1:9470"), 403),
        ("POST", "/api/v1/things", json, Some("http://127.0.0.1:9471"), Some("127.0.0.1:9470"), 403),
        ("POST", "/api/v1/things", json, Some("http://127.0.0.1"), Some("127.0.0.1:9470"), 403),
        ("POST", "/api/v1/things", json, Some("https://gpuwarden.example.com"), Some("gpuwarden.example.com:80"), 403),
        ("POST", "/api/v1/things", json, Some("null"), Some("127.0.0.1:9470"), 403),
        ("POST", "/api/v1/things", json, Some("file://"), Some("127.0.0.1:9470"), 403),
        ("DELETE", "/api/v1/things/1", json, Some("https://evil.example"), Some("127.0.0.1:9470"), 403),
        // The content type is checked first.
        ("POST", "/api/v1/things", Some("text/plain"), Some("https://evil.example"), Some("127.0.0.1:9470"), 415),
        // A rebinding host is refused even with a matching Origin.
        ("POST", "/api/v1/things", json, Some("http://evil.example.com"), Some("evil.example.com"), 421),
        // Pushes: any content type, but never cross-origin.
        ("POST", "/api/v1/ingest", Some("application/x-protobuf"), None, Some("127.0.0.1:9470"), 200),
        ("POST", "/api/v1/ingest", None, None, Some("127.0.0.1:9470"), 200),
        ("POST", "/api/v1/ingest", Some("text/plain"), Some("https://evil.example"), Some("127.0.0.1:9470"), 403),
        // Unknown routes keep their 404; a wrong method is 405 once the request is JSON.
        ("POST", "/api/v1/nope", None, None, Some("127.0.0.1:9470"), 404),
        ("DELETE", "/api/v1/things", json, None, Some("127.0.0.1:9470"), 405),
        ("DELETE", "/api/v1/things", None, None, Some("127.0.0.1:9470"), 415),
    ];
    for &(method, path, ct, origin, host, want) in cases {
        let mut b = axum::http::Request::builder().method(method).uri(path);
        if let Some(ct) = ct {
            b = b.header("content-type", ct);
        }
        if let Some(o) = origin {
            b = b.header("origin", o);
        }
        if let Some(h) = host {
            b = b.header("host", h);
        }
        let res = app().oneshot(b.body(axum::body::Body::empty()).unwrap()).await.unwrap();
        let status = res.status().as_u16();
        let body = axum::body::to_bytes(res.into_body(), 1 << 16).await.unwrap();
        assert_eq!(
            status,
            want,
            "{method} {path} ct={ct:?} origin={origin:?} host={host:?}: {}",
            String::from_utf8_lossy(&body)
        );
        let code = match want {
            415 => "unsupported_media_type",
            403 => "cross_origin",
            421 => "host_not_allowed",
            _ => continue,
        };
        let v: serde_json::Value = serde_json::from_slice(&body).expect("a JSON error body");
        assert_eq!(v["error"]["code"], code, "{method} {path}: {v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
}

#[test]
fn host_names_are_checked_and_normalized() {
    assert_eq!(normalize_name(" Example.COM ").unwrap(), "example.com");
    assert_eq!(normalize_name("::1").unwrap(), "[::1]");
    assert_eq!(normalize_name("[fd00::1]").unwrap(), "[fd00::1]");
    assert_eq!(normalize_name("10.0.0.1").unwrap(), "10.0.0.1");
    for bad in [
        "",
        "http://x.example",
        "x.example:9470",
        "*.example.com",
        "x.example/path",
        "a..b",
    ] {
        assert!(normalize_name(bad).is_err(), "{bad:?}");
    }
    // A wildcard listen address adds nothing; a literal one adds its IP.
    assert_eq!(
        AllowedHosts::new(Some("0.0.0.0:1".parse().unwrap()), &[]).unwrap(),
        AllowedHosts::default()
    );
    let h = AllowedHosts::new(Some("[::2]:1".parse().unwrap()), &[]).unwrap();
    assert!(h.allows("[::2]:9470"));
    assert!(!h.allows("[::3]:9470"));
}
