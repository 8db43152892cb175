//! OpenID Connect through the real binary and a real provider: `tests/browser/
//! oidc-provider.mjs` (the certified `oidc-provider` package, run by node on loopback)
//! and `gpuwarden run` with `[auth.oidc]` pointing at it.
//!
//! - JWT bearer tokens the provider issues (client credentials, resource indicators) are
//!   accepted with the mapped role and tenant — tenant filtering checked on returned
//!   data; a wrong audience, an expired, forged, unknown-key or foreign-issuer token, and
//!   an account whose groups map to no role are refused with 401; the provider's key
//!   rotation is picked up, and made-up key ids do not make gpuwarden hammer its JWKS.
//! - Real Chromium signs in through the provider's own login and consent pages
//!   (`tests/browser/oidc-signin.test.mjs`).
//!
//! Needs node and `npm ci --prefix tests/browser` (and chromium for the browser part);
//! skips with a message when one is missing unless `GPUWARDEN_REQUIRE_TOOLS=1`.

mod common;
mod oidc_op;

use common::{binary, free_port, get_json, tools_required, wait_for, Gpuwarden};
use oidc_op::{repo_root, Op, AUDIENCE};
use reqwest::StatusCode;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TENANT_NODE: &str = "simnode-00";

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

fn start_provider(gw_port: u16) -> Op {
    oidc_op::start(gw_port)
}

fn write_config(dir: &Path, issuer: &str, gw_port: u16) -> PathBuf {
    let secret = dir.join("oidc-client-secret");
    std::fs::write(&secret, "ui-secret\n").unwrap();
    let config = dir.join("gpuwarden.toml");
    std::fs::write(
        &config,
        format!(
            "[auth.tenants.team-a]\nnodes = [\"{TENANT_NODE}\"]\n\n\
             [auth.oidc]\nissuer = \"{issuer}\"\naudience = \"{AUDIENCE}\"\nname = \"Test IdP\"\n\
             client_id = \"gpuwarden-ui\"\nclient_secret_file = {secret:?}\n\
             public_url = \"http://127.0.0.1:{gw_port}\"\nscopes = [\"openid\", \"groups\"]\n\
             role_claim = \"groups\"\ntenant_claim = \"tenant\"\njwks_min_refresh = \"1s\"\nleeway = \"5s\"\n\n\
             [auth.oidc.roles]\nviewer = [\"gpu-viewers\"]\noperator = [\"gpu-ops\"]\nadmin = [\"gpu-admins\"]\n"
        ),
    )
    .unwrap();
    config
}

/// `gpuwarden run` on `port` with `config` (no API token exists: OpenID alone).
async fn start_gpuwarden(data: &Path, config: &Path, port: u16) -> Gpuwarden {
    let child = Command::new(binary())
        .args(["run", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data)
        .arg("--config")
        .arg(config)
        .args([
            "--nodes",
            "2",
            "--gpus-per-node",
            "2",
            "--scrape-interval",
            "1s",
            "--fault-rate-multiplier",
            "0",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start gpuwarden run");
    let g = Gpuwarden {
        child,
        base: format!("http://127.0.0.1:{port}"),
        data_dir: data.to_path_buf(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_json(&format!("{}/healthz", g.base)).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "gpuwarden did not answer /healthz within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    g
}

async fn call(base: &str, method: &str, path: &str, token: &str) -> (StatusCode, Value) {
    let c = reqwest::Client::new();
    let rb = match method {
        "GET" => c.get(format!("{base}{path}")),
        _ => c
            .post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .body("{}"),
    };
    let resp = rb
        .bearer_auth(token)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let s = resp.status();
    (s, resp.json().await.unwrap_or(Value::Null))
}

async fn jwks_fetches(issuer: &str) -> u64 {
    get_json(&format!("{issuer}/test/stats")).await.unwrap()["jwks_fetches"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_bearer_tokens_from_a_real_provider() {
    if !oidc_op::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let gw_port = free_port();
    let op = start_provider(gw_port);
    let config = write_config(dir.path(), &op.issuer, gw_port);
    let gw = start_gpuwarden(&dir.path().join("data"), &config, gw_port).await;
    let base = gw.base.clone();

    // The sign-in methods name the provider (public).
    let m = get_json(&format!("{base}/api/v1/auth/methods")).await.unwrap();
    assert_eq!(m["oidc"]["name"], "Test IdP", "{m}");

    let admin = op.client_token("svc-admin", AUDIENCE).await;
    let operator = op.client_token("svc-operator", AUDIENCE).await;
    let viewer = op.client_token("svc-viewer", AUDIENCE).await;
    let tenant = op.client_token("svc-tenant", AUDIENCE).await;
    let nobody = op.client_token("svc-nobody", AUDIENCE).await;
    let wrong_audience = op.client_token("svc-admin", "https://other.test").await;

    // Roles as mapped from the groups claim.
    for (t, role, tenant_name) in [
        (&admin, "admin", None),
        (&operator, "operator", None),
        (&viewer, "viewer", None),
        (&tenant, "viewer", Some("team-a")),
    ] {
        let (s, me) = call(&base, "GET", "/api/v1/auth/whoami", t).await;
        assert_eq!(s, StatusCode::OK, "{me}");
        assert_eq!(me["role"], role, "{me}");
        assert_eq!(me["via"], "bearer");
        assert_eq!(me["tenant"].as_str(), tenant_name, "{me}");
        assert!(
            me["id"]
                .as_str()
                .unwrap()
                .starts_with(&format!("oidc:{}#svc-", op.issuer)),
            "{me}"
        );
    }
    // What each role may do.
    let bogus = "/api/v1/incidents/01JZZZZZZZZZZZZZZZZZZZZZZZ/ack";
    assert_eq!(call(&base, "POST", bogus, &viewer).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        call(&base, "POST", bogus, &operator).await.0,
        StatusCode::NOT_FOUND,
        "past auth"
    );
    assert_eq!(
        call(&base, "GET", "/api/v1/audit", &operator).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(call(&base, "GET", "/api/v1/audit", &admin).await.0, StatusCode::OK);
    assert_eq!(
        call(&base, "GET", "/api/v1/targets", &tenant).await.0,
        StatusCode::FORBIDDEN
    );

    // Tenant filtering on the data: the admin sees both nodes' GPUs, the tenant only its
    // node's.
    let all: Vec<Value> = wait_for(Duration::from_secs(30), "4 GPUs listed", || {
        let (base, admin) = (base.clone(), admin.clone());
        async move {
            let (s, v) = call(&base, "GET", "/api/v1/gpus", &admin).await;
            let list = v["gpus"].as_array()?.clone();
            (s == StatusCode::OK && list.len() == 4).then_some(list)
        }
    })
    .await;
    let node = |g: &Value| g["identity"]["node"].as_str().unwrap().to_string();
    assert!(all.iter().any(|g| node(g) != TENANT_NODE));
    let (s, v) = call(&base, "GET", "/api/v1/gpus", &tenant).await;
    assert_eq!(s, StatusCode::OK);
    let mine = v["gpus"].as_array().unwrap();
    assert_eq!(mine.len(), 2, "{v}");
    assert!(mine.iter().all(|g| node(g) == TENANT_NODE), "{v}");
    let other = all.iter().find(|g| node(g) != TENANT_NODE).unwrap();
    let other_uuid = other["identity"]["uuid"].as_str().unwrap();
    let (s, _) = call(&base, "GET", &format!("/api/v1/gpus/{other_uuid}"), &tenant).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "another tenant's GPU does not exist for it");

    // Refused: 401 with a reason.
    let refused = |t: String, why: &'static str, want: &'static str| {
        let base = base.clone();
        async move {
            let (s, body) = call(&base, "GET", "/api/v1/gpus", &t).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{why}: {body}");
            let msg = body["error"]["message"].as_str().unwrap_or_default().to_string();
            assert!(msg.contains(want), "{why}: {msg}");
        }
    };
    refused(nobody, "no mapped group", "maps to a role").await;
    refused(wrong_audience, "wrong audience", "meant for").await;
    refused(op.minted("expired").await, "expired", "expired").await;
    refused(op.minted("wrong-issuer").await, "wrong issuer", "issued by").await;
    refused(op.minted("forged").await, "forged signature", "signature").await;
    refused(op.minted("unknown-kid").await, "unknown kid", "ghost-key").await;
    let mut tampered: Vec<String> = viewer.split('.').map(str::to_owned).collect();
    tampered[2] = tampered[2].chars().rev().collect();
    refused(tampered.join("."), "tampered signature", "signature").await;

    // Made-up key ids cannot make gpuwarden hammer the provider: at most one JWKS fetch
    // per jwks_min_refresh (1 s here) whatever arrives.
    let ghost = op.minted("unknown-kid").await;
    let before = jwks_fetches(&op.issuer).await;
    let started = Instant::now();
    for _ in 0..30 {
        assert_eq!(
            call(&base, "GET", "/api/v1/gpus", &ghost).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let fetched = jwks_fetches(&op.issuer).await - before;
    let allowed = started.elapsed().as_secs() + 1;
    assert!(
        fetched <= allowed,
        "{fetched} JWKS fetches for 30 unknown-kid requests in {:?}",
        started.elapsed()
    );

    // The refused refreshes are counted on /metrics.
    let metrics = reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} on /metrics"))
    };
    assert!(
        value("gpuwarden_oidc_jwks_refresh_throttled_total") >= (30 - fetched) as f64,
        "throttled refreshes counted"
    );
    assert!(value("gpuwarden_oidc_jwks_fetches_total") >= 1.0);
    assert_eq!(value("gpuwarden_oidc_jwks_fetch_failures_total"), 0.0);

    // Key rotation: a token signed with the provider's next key is refused until the
    // provider publishes it, then accepted without restarting gpuwarden.
    let rotated = op.minted("rotated").await;
    assert_eq!(
        call(&base, "GET", "/api/v1/gpus", &rotated).await.0,
        StatusCode::UNAUTHORIZED
    );
    let s = reqwest::Client::new()
        .post(format!("{}/test/rotate", op.issuer))
        .send()
        .await
        .unwrap()
        .status();
    assert!(s.is_success());
    wait_for(Duration::from_secs(10), "the rotated key to be accepted", || {
        let (base, t) = (base.clone(), rotated.clone());
        async move { (call(&base, "GET", "/api/v1/gpus", &t).await.0 == StatusCode::OK).then_some(()) }
    })
    .await;
    // The old key still works (rotation adds before it removes).
    assert_eq!(call(&base, "GET", "/api/v1/gpus", &viewer).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_signs_in_through_the_provider_in_a_real_browser() {
    let root = repo_root();
    if !oidc_op::available() {
        return;
    }
    let ok = root.join("tests/browser/node_modules/playwright-core").is_dir() && chromium().exists();
    if !ok {
        assert!(
            !tools_required(),
            "the OpenID browser test needs chromium and playwright-core"
        );
        eprintln!("SKIPPED OpenID browser test: needs chromium and `npm ci --prefix tests/browser`");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let gw_port = free_port();
    let op = start_provider(gw_port);
    let config = write_config(dir.path(), &op.issuer, gw_port);
    let gw = start_gpuwarden(&dir.path().join("data"), &config, gw_port).await;
    let run = tokio::process::Command::new("node")
        .arg(root.join("tests/browser/oidc-signin.test.mjs"))
        .arg(&gw.base)
        .env("CHROMIUM", chromium())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(150), run)
        .await
        .expect("the browser test finishes within 150 s")
        .expect("run node");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    println!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "OpenID sign-in browser test failed: {}",
        out.status
    );

    // The audit trail names who signed in through the provider, and the refusals.
    let admin = op.client_token("svc-admin", AUDIENCE).await;
    let (s, v) = call(
        &gw.base,
        "GET",
        "/api/v1/audit?action=auth.oidc_sign_in&limit=100",
        &admin,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let records = v["records"]
        .as_array()
        .or_else(|| v.as_array())
        .cloned()
        .unwrap_or_default();
    let ok: Vec<&Value> = records.iter().filter(|r| r["result"] == "ok").collect();
    assert!(
        ok.iter()
            .any(|r| r["actor"].as_str().unwrap_or("").ends_with("#otto") && r["role"] == "operator"),
        "otto's sign-in recorded: {v}"
    );
    assert!(
        ok.iter()
            .any(|r| r["actor"].as_str().unwrap_or("").ends_with("#tia") && r["tenant"] == "team-a"),
        "tia's sign-in recorded with her tenant: {v}"
    );
    let (_, denied) = call(&gw.base, "GET", "/api/v1/audit?result=denied&limit=100", &admin).await;
    assert!(
        denied.to_string().contains("/auth/oidc/callback"),
        "refused sign-ins recorded as denied: {denied}"
    );
    drop(op);
}
