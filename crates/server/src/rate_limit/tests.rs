use super::*;
use axum::body::Body;
use axum::routing::get;
use tower::ServiceExt;

fn limits(rate: f64, burst: u32, max: usize) -> Arc<RateLimits> {
    RateLimits::new(RateLimitConfig {
        client: Limit { rate, burst },
        principal: Limit { rate, burst },
        exempt_loopback: true,
        max_tracked: max,
    })
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn burst_then_refused_then_allowed_after_the_wait() {
    let l = limits(2.0, 5, 1000);
    let t0 = Instant::now();
    let a = ip("192.0.2.1");
    for i in 0..5 {
        assert!(l.check_client(a, t0).is_ok(), "request {i} of the burst");
    }
    let refused = l.check_client(a, t0).unwrap_err();
    assert_eq!(refused.retry_after_secs, 1, "one token comes back in 0.5 s → 1 s");
    // After the advertised wait a request is allowed again, and only one (2/s * 0.5 s).
    let later = t0 + Duration::from_millis(500);
    assert!(l.check_client(a, later).is_ok());
    assert!(l.check_client(a, later).is_err());
}

#[test]
fn retry_after_rounds_up_to_whole_seconds() {
    let l = limits(0.1, 1, 1000);
    let t0 = Instant::now();
    let a = ip("192.0.2.9");
    l.check_client(a, t0).unwrap();
    assert_eq!(l.check_client(a, t0).unwrap_err().retry_after_secs, 10);
    assert_eq!(
        l.check_client(a, t0 + Duration::from_millis(2500))
            .unwrap_err()
            .retry_after_secs,
        8
    );
}

#[test]
fn two_addresses_have_separate_buckets() {
    let l = limits(1.0, 2, 1000);
    let t = Instant::now();
    let (a, b) = (ip("198.51.100.1"), ip("198.51.100.2"));
    l.check_client(a, t).unwrap();
    l.check_client(a, t).unwrap();
    assert!(l.check_client(a, t).is_err());
    assert!(l.check_client(b, t).is_ok(), "b is not charged for a");
    assert!(l.check_client(b, t).is_ok());
    assert!(l.check_client(b, t).is_err());
}

#[test]
fn ipv6_is_keyed_by_its_64_and_mapped_v4_by_the_v4_address() {
    assert_eq!(
        ClientKey::of(ip("2001:db8:1:2::1")),
        ClientKey::of(ip("2001:db8:1:2:ffff::9"))
    );
    assert_ne!(
        ClientKey::of(ip("2001:db8:1:2::1")),
        ClientKey::of(ip("2001:db8:1:3::1"))
    );
    assert_eq!(ClientKey::of(ip("::ffff:192.0.2.7")), ClientKey::of(ip("192.0.2.7")));
}

#[test]
fn loopback_is_exempt_by_default_and_limited_when_configured() {
    let l = limits(1.0, 1, 1000);
    let t = Instant::now();
    for _ in 0..100 {
        l.check_client(ip("127.0.0.1"), t).unwrap();
        l.check_client(ip("::1"), t).unwrap();
    }
    let strict = RateLimits::new(RateLimitConfig {
        exempt_loopback: false,
        client: Limit { rate: 1.0, burst: 1 },
        ..Default::default()
    });
    strict.check_client(ip("127.0.0.1"), t).unwrap();
    assert!(strict.check_client(ip("127.0.0.1"), t).is_err());
}

#[test]
fn principals_are_limited_but_not_the_anonymous_one() {
    let l = limits(1.0, 1, 1000);
    let t = Instant::now();
    let p = Principal {
        id: "tok-abc".into(),
        role: crate::principal::Role::Viewer,
        tenant: None,
    };
    l.check_principal(&p, t).unwrap();
    let e = l.check_principal(&p, t).unwrap_err();
    assert!(e.who.contains("tok-abc"));
    for _ in 0..10 {
        l.check_principal(&Principal::anonymous(), t).unwrap();
    }
}

#[test]
fn memory_stays_bounded_under_a_million_addresses() {
    let max = 10_000;
    let l = limits(1.0, 5, max);
    let t = Instant::now();
    let active = ip("203.0.113.5");
    // The active client spends its burst at the start.
    for _ in 0..5 {
        l.check_client(active, t).unwrap();
    }
    for i in 0..1_000_000u32 {
        let addr = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        let _ = l.check_client(addr, t);
        if i % 1000 == 0 {
            // The active client keeps calling: its (empty) bucket must survive the flood,
            // or the flood would be a way to reset one's own limit.
            assert!(l.check_client(active, t).is_err(), "active bucket lost at {i}");
        }
        assert!(l.tracked().0 <= max, "{} buckets after {i} addresses", l.tracked().0);
    }
    assert!(l.tracked().0 <= max);
}

#[test]
fn idle_buckets_are_forgotten() {
    let l = limits(10.0, 10, 1000);
    let t = Instant::now();
    for i in 0..100u32 {
        l.check_client(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)), t)
            .unwrap();
    }
    assert_eq!(l.tracked().0, 100);
    // Two refill times later, two new callers rotate the idle ones out.
    l.check_client(ip("192.0.2.200"), t + Duration::from_secs(2)).unwrap();
    l.check_client(ip("192.0.2.201"), t + Duration::from_secs(4)).unwrap();
    assert!(l.tracked().0 <= 2, "{:?}", l.tracked());
}

fn app(l: Arc<RateLimits>) -> axum::Router {
    let r = axum::Router::new()
        .route("/api/v1/gpus", get(|| async { "ok" }))
        .route("/healthz", get(|| async { "ok" }));
    // A stand-in for the authentication layer: the principal from a test header.
    let r = wrap_principals(r, l.clone()).layer(axum::middleware::from_fn(|mut req: Request, next: Next| async move {
        if let Some(id) = req.headers().get("x-test-principal").and_then(|v| v.to_str().ok()) {
            let p = Principal {
                id: id.to_owned(),
                role: crate::principal::Role::Viewer,
                tenant: None,
            };
            req.extensions_mut().insert(p);
        }
        next.run(req).await
    }));
    wrap_addresses(r, l)
}

async fn call(app: &axum::Router, peer: &str, path: &str, principal: Option<&str>) -> Response {
    let mut req = axum::http::Request::get(path);
    if let Some(p) = principal {
        req = req.header("x-test-principal", p);
    }
    let mut req = req.body(Body::empty()).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo::<SocketAddr>(peer.parse().unwrap()));
    app.clone().oneshot(req).await.unwrap()
}

#[tokio::test]
async fn middleware_answers_429_with_retry_after_and_json_and_spares_probes() {
    let l = limits(1.0, 2, 1000);
    let app = app(l);
    let peer = "192.0.2.10:5555";
    assert_eq!(call(&app, peer, "/api/v1/gpus", None).await.status(), 200);
    assert_eq!(call(&app, peer, "/api/v1/gpus", None).await.status(), 200);
    let r = call(&app, peer, "/api/v1/gpus", None).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let body = axum::body::to_bytes(r.into_body(), 10_000).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "rate_limited");
    // Probes are never limited; another address is not affected.
    assert_eq!(call(&app, peer, "/healthz", None).await.status(), 200);
    assert_eq!(call(&app, "192.0.2.11:1", "/api/v1/gpus", None).await.status(), 200);
}

#[tokio::test]
async fn middleware_limits_a_principal_across_addresses() {
    let l = limits(1.0, 2, 1000);
    let app = app(l);
    // One principal from three addresses (each address has budget left).
    assert_eq!(
        call(&app, "192.0.2.1:1", "/api/v1/gpus", Some("tok-1")).await.status(),
        200
    );
    assert_eq!(
        call(&app, "192.0.2.2:1", "/api/v1/gpus", Some("tok-1")).await.status(),
        200
    );
    let r = call(&app, "192.0.2.3:1", "/api/v1/gpus", Some("tok-1")).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        call(&app, "192.0.2.3:1", "/api/v1/gpus", Some("tok-2")).await.status(),
        200
    );
}
