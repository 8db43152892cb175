//! Authentication and roles through the real binary: `gpuwarden run` with `[auth]` on
//! the simulated fleet, tokens made with `gpuwarden auth token create`, and every path and
//! method of the served OpenAPI document called as every kind of caller — generated from
//! the document, so a new route cannot skip the matrix. Expectations are written here,
//! independently of the server's policy table: a new route fails this test until someone
//! decides who may call it.

mod common;
mod oidc_op;

use common::{binary, get_json, start, wait_for};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const TENANT_NODE: &str = "simnode-00";
const OTHER_NODE: &str = "simnode-01";

fn cli_create(data_dir: &Path, config: &Path, args: &[&str]) -> String {
    let out = Command::new(binary())
        .args(["auth", "token", "create", "--quiet", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .expect("run gpuwarden auth token create");
    assert!(
        out.status.success(),
        "auth token create {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("gpw_"), "{token}");
    token
}

fn cli_list(data_dir: &Path) -> Vec<Value> {
    let out = Command::new(binary())
        .args(["auth", "token", "list", "--json", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("run gpuwarden auth token list");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("gpw_"), "list must never show a secret: {text}");
    serde_json::from_str(&text).unwrap()
}

fn cli_revoke(data_dir: &Path, id: &str) {
    let out = Command::new(binary())
        .args(["auth", "token", "revoke", id, "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("run gpuwarden auth token revoke");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The id of the token named `name` (names are unique in this test).
fn id_of(data_dir: &Path, name: &str) -> String {
    cli_list(data_dir)
        .iter()
        .find(|t| t["name"] == name)
        .and_then(|t| t["id"].as_str())
        .unwrap_or_else(|| panic!("no token named {name}"))
        .to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Scraper,
    Viewer,
    Operator,
    Admin,
}

/// Who may call a route, as this test expects it: `None` for public routes, else the
/// lowest role and whether a tenant is refused (fleet-wide routes).
fn expected(method: &str, path: &str) -> Option<(Role, bool)> {
    let public = [
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/api/openapi.json"),
        ("post", "/api/v1/auth/session"),
        ("get", "/api/v1/auth/methods"),
        ("post", "/api/v1/ingest"),
        ("post", "/api/v1/write"),
    ];
    if public.contains(&(method, path)) {
        return None;
    }
    let fleet_wide = path == "/metrics"
        || path == "/api/v1/targets"
        || path.starts_with("/api/v1/simulation/")
        || path.starts_with("/api/v1/auth/tokens")
        || path == "/api/v1/audit";
    let role = match (method, path) {
        ("get", "/metrics") => Role::Scraper,
        (_, p) if p.starts_with("/api/v1/auth/tokens") => Role::Admin,
        ("get", "/api/v1/audit") => Role::Admin,
        ("post", "/api/v1/simulation/faults") => Role::Admin,
        ("post", "/api/v1/auth/session/logout") => Role::Viewer,
        ("get", _) => Role::Viewer,
        ("post", p) if p.ends_with("/ack") || p.ends_with("/resolve") => Role::Operator,
        ("post", "/api/v1/silences") | ("delete", "/api/v1/silences/{id}") => Role::Operator,
        _ => panic!("{method} {path} is new: decide who may call it (here and in the server's auth::policy table)"),
    };
    Some((role, fleet_wide))
}

struct Caller {
    name: &'static str,
    token: Option<String>,
    /// `None`: not authenticated (no, forged, expired or revoked token).
    role: Option<Role>,
    tenant: bool,
}

async fn call(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let mut rb = reqwest::Client::new()
        .request(m.clone(), format!("{base}{path}"))
        .timeout(Duration::from_secs(20));
    if m != Method::GET {
        rb = rb.header("content-type", "application/json").body("{}");
    }
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let resp = rb.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_as_every_caller() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("gpuwarden.toml");
    // JWT callers from a real OpenID provider join the matrix when node can run it.
    let op = oidc_op::available().then(|| oidc_op::start(common::free_port()));
    std::fs::write(
        &config,
        format!(
            "[auth]\nenabled = true\n\n[auth.tenants.team-a]\nnodes = [\"{TENANT_NODE}\"]\n\n{}",
            op.as_ref().map(|o| o.bearer_config()).unwrap_or_default()
        ),
    )
    .unwrap();

    let admin = cli_create(&data, &config, &["--role", "admin", "--name", "admin"]);
    let operator = cli_create(&data, &config, &["--role", "operator", "--name", "operator"]);
    let viewer = cli_create(&data, &config, &["--role", "viewer", "--name", "viewer"]);
    let scraper = cli_create(&data, &config, &["--role", "scraper", "--name", "prometheus"]);
    let tenant = cli_create(
        &data,
        &config,
        &["--role", "viewer", "--name", "tenant", "--tenant", "team-a"],
    );
    let expired = cli_create(
        &data,
        &config,
        &["--role", "admin", "--name", "expired", "--expires", "1s"],
    );
    let expired_at = Instant::now() + Duration::from_millis(1100);
    let revoked = cli_create(&data, &config, &["--role", "admin", "--name", "revoked"]);
    cli_revoke(&data, &id_of(&data, "revoked"));
    // A tenant that is not configured is refused by the CLI when it can check.
    let out = Command::new(binary())
        .args([
            "auth", "token", "create", "--role", "viewer", "--tenant", "ghost", "--config",
        ])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("ghost"));
    // A well-formed token this server never issued.
    let forged = format!("gpw_{}", "A".repeat(43));

    let gw = start(
        &data,
        &[
            "--config",
            config.to_str().unwrap(),
            "--nodes",
            "2",
            "--gpus-per-node",
            "2",
            "--scrape-interval",
            "1s",
            "--fault-rate-multiplier",
            "0",
        ],
    )
    .await;
    let base = gw.base.clone();
    tokio::time::sleep(expired_at.saturating_duration_since(Instant::now())).await;

    // Real ids: a GPU of the tenant's node (so the tenant may read it) and one of another.
    let gpus: Vec<Value> = wait_for(Duration::from_secs(30), "4 GPUs listed", || {
        let (base, admin) = (base.clone(), admin.clone());
        async move {
            let (s, _, body) = call(&base, "get", "/api/v1/gpus", Some(&admin)).await;
            let v: Value = serde_json::from_str(&body).ok()?;
            let list = v["gpus"].as_array()?.clone();
            (s == 200 && list.len() == 4).then_some(list)
        }
    })
    .await;
    let node_of = |g: &Value| g["identity"]["node"].as_str().unwrap().to_string();
    let uuid_of = |g: &Value| g["identity"]["uuid"].as_str().unwrap().to_string();
    let tenant_gpu = uuid_of(gpus.iter().find(|g| node_of(g) == TENANT_NODE).unwrap());
    let other_gpu = uuid_of(gpus.iter().find(|g| node_of(g) == OTHER_NODE).unwrap());

    let mut callers = vec![
        Caller {
            name: "no token",
            token: None,
            role: None,
            tenant: false,
        },
        Caller {
            name: "forged",
            token: Some(forged.clone()),
            role: None,
            tenant: false,
        },
        Caller {
            name: "expired",
            token: Some(expired.clone()),
            role: None,
            tenant: false,
        },
        Caller {
            name: "revoked",
            token: Some(revoked.clone()),
            role: None,
            tenant: false,
        },
        Caller {
            name: "scraper",
            token: Some(scraper.clone()),
            role: Some(Role::Scraper),
            tenant: false,
        },
        Caller {
            name: "viewer",
            token: Some(viewer.clone()),
            role: Some(Role::Viewer),
            tenant: false,
        },
        Caller {
            name: "operator",
            token: Some(operator.clone()),
            role: Some(Role::Operator),
            tenant: false,
        },
        Caller {
            name: "admin",
            token: Some(admin.clone()),
            role: Some(Role::Admin),
            tenant: false,
        },
        Caller {
            name: "tenant viewer",
            token: Some(tenant.clone()),
            role: Some(Role::Viewer),
            tenant: true,
        },
    ];
    let mut jwt_tenant = None;
    if let Some(op) = &op {
        use oidc_op::AUDIENCE;
        let tenant_jwt = op.client_token("svc-tenant", AUDIENCE).await;
        jwt_tenant = Some(tenant_jwt.clone());
        for (name, token, role, tenant) in [
            (
                "JWT admin",
                op.client_token("svc-admin", AUDIENCE).await,
                Some(Role::Admin),
                false,
            ),
            (
                "JWT operator",
                op.client_token("svc-operator", AUDIENCE).await,
                Some(Role::Operator),
                false,
            ),
            ("JWT tenant viewer", tenant_jwt, Some(Role::Viewer), true),
            (
                "JWT wrong audience",
                op.client_token("svc-admin", "https://other.test").await,
                None,
                false,
            ),
            ("JWT expired", op.minted("expired").await, None, false),
            ("JWT forged", op.minted("forged").await, None, false),
        ] {
            callers.push(Caller {
                name,
                token: Some(token),
                role,
                tenant,
            });
        }
    }

    // The matrix, from the served document (public: no token needed to read it).
    let doc = get_json(&format!("{base}/api/openapi.json"))
        .await
        .expect("openapi.json is public");
    let paths = doc["paths"].as_object().expect("paths");
    let mut calls = 0;
    let mut failures = Vec::new();
    for (template, ops) in paths {
        let path = template
            .replace("{uuid}", &tenant_gpu)
            .replace("{id}", "01JZZZZZZZZZZZZZZZZZZZZZZZ");
        for method in ops.as_object().unwrap().keys() {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            let rule = expected(method, template);
            for c in &callers {
                let (status, headers, body) = call(&base, method, &path, c.token.as_deref()).await;
                calls += 1;
                let want: Result<(), StatusCode> = match (rule, c.role) {
                    (None, _) => Ok(()),
                    (Some(_), None) => Err(StatusCode::UNAUTHORIZED),
                    (Some((need, fleet_wide)), Some(role)) => {
                        if role < need || (fleet_wide && c.tenant) {
                            Err(StatusCode::FORBIDDEN)
                        } else {
                            Ok(())
                        }
                    }
                };
                let ok = match want {
                    Ok(()) => {
                        status != StatusCode::UNAUTHORIZED
                            && status != StatusCode::FORBIDDEN
                            && !status.is_server_error()
                    }
                    Err(code) => status == code,
                };
                if !ok {
                    failures.push(format!(
                        "{} {template} as {}: got {status}, expected {}: {}",
                        method.to_uppercase(),
                        c.name,
                        match want {
                            Ok(()) => "allowed".to_string(),
                            Err(c) => c.to_string(),
                        },
                        body.chars().take(200).collect::<String>()
                    ));
                }
                if status == StatusCode::UNAUTHORIZED {
                    let www = headers
                        .get("www-authenticate")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    if !www.starts_with("Bearer") {
                        failures.push(format!(
                            "{method} {template} as {}: 401 without WWW-Authenticate: Bearer",
                            c.name
                        ));
                    }
                }
                if (status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN)
                    && serde_json::from_str::<Value>(&body)
                        .ok()
                        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
                        .is_none()
                {
                    failures.push(format!(
                        "{method} {template} as {}: {status} body is not the JSON error shape: {body}",
                        c.name
                    ));
                }
            }
        }
    }
    assert!(
        calls >= callers.len() * 30,
        "only {calls} calls for {} callers: is the document complete?",
        callers.len()
    );
    println!("{calls} calls by {} callers", callers.len());
    assert!(
        failures.is_empty(),
        "{} of {calls} calls wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Tenant filtering on the data, not only on status codes.
    let (_, _, body) = call(&base, "get", "/api/v1/gpus", Some(&tenant)).await;
    let list: Value = serde_json::from_str(&body).unwrap();
    let nodes: Vec<String> = list["gpus"].as_array().unwrap().iter().map(node_of).collect();
    assert_eq!(
        nodes,
        vec![TENANT_NODE.to_string(); 2],
        "the tenant sees only its node's GPUs: {body}"
    );
    let (s, _, _) = call(&base, "get", &format!("/api/v1/gpus/{other_gpu}"), Some(&tenant)).await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "another tenant's GPU does not exist for the tenant"
    );
    let (s, _, _) = call(&base, "get", &format!("/api/v1/gpus/{other_gpu}"), Some(&viewer)).await;
    assert_eq!(s, StatusCode::OK);
    if let Some(t) = &jwt_tenant {
        // The same filtering for a tenant named by an OpenID token's claim.
        let (_, _, body) = call(&base, "get", "/api/v1/gpus", Some(t)).await;
        let list: Value = serde_json::from_str(&body).unwrap();
        let nodes: Vec<String> = list["gpus"].as_array().unwrap().iter().map(node_of).collect();
        assert_eq!(nodes, vec![TENANT_NODE.to_string(); 2], "JWT tenant: {body}");
        let (s, _, _) = call(&base, "get", &format!("/api/v1/gpus/{other_gpu}"), Some(t)).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "JWT tenant: another tenant's GPU");
    }
    let (s, _, _) = call(&base, "get", "/metrics", Some(&tenant)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "/metrics is fleet-wide");
    let (s, _, body) = call(&base, "get", "/metrics", Some(&viewer)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("gpuwarden_"), "metrics body");
    let who = call(&base, "get", "/api/v1/auth/whoami", Some(&tenant)).await.2;
    let who: Value = serde_json::from_str(&who).unwrap();
    assert_eq!(
        (who["role"].as_str(), who["tenant"].as_str()),
        (Some("viewer"), Some("team-a"))
    );

    // The UI's files and documentation stay public (the sign-in form must load).
    for p in ["/", "/ui/js/app.js", "/api/docs/"] {
        let (s, _, _) = call(&base, "get", p, None).await;
        assert_eq!(s, StatusCode::OK, "{p} public");
    }

    live_changes_without_restart(&base, &data, &config, &admin).await;
    ui_session(&base, &data, &config, &operator).await;
    api_token_admin(&base, &admin).await;

    // Last use is written lazily (within about a minute), never a secret.
    let listed = cli_list(&data);
    assert!(listed
        .iter()
        .any(|t| t["name"] == "revoked" && t["status"] == "revoked"));
    assert!(listed
        .iter()
        .any(|t| t["name"] == "expired" && t["status"] == "expired"));
}

/// A token created by the CLI works on the running server within seconds, and a revoked
/// one stops working within seconds, without a restart.
async fn live_changes_without_restart(base: &str, data: &Path, config: &Path, admin: &str) {
    let fresh = cli_create(data, config, &["--role", "viewer", "--name", "fresh"]);
    let t0 = Instant::now();
    wait_for(Duration::from_secs(5), "a new CLI token to work", || {
        let fresh = fresh.clone();
        let base = base.to_string();
        async move { (call(&base, "get", "/api/v1/gpus", Some(&fresh)).await.0 == StatusCode::OK).then_some(()) }
    })
    .await;
    eprintln!("new token accepted after {:?}", t0.elapsed());
    cli_revoke(data, &id_of(data, "fresh"));
    let t0 = Instant::now();
    wait_for(Duration::from_secs(5), "a revoked CLI token to be refused", || {
        let fresh = fresh.clone();
        let base = base.to_string();
        async move {
            (call(&base, "get", "/api/v1/gpus", Some(&fresh)).await.0 == StatusCode::UNAUTHORIZED).then_some(())
        }
    })
    .await;
    eprintln!("revoked token refused after {:?}", t0.elapsed());
    // The admin is unaffected.
    assert_eq!(call(base, "get", "/api/v1/gpus", Some(admin)).await.0, StatusCode::OK);
}

/// Web UI sign-in: a session cookie (not the token), CSRF on changes, sign-out, and the
/// session ends with its token.
async fn ui_session(base: &str, data: &Path, config: &Path, _operator: &str) {
    let token = cli_create(data, config, &["--role", "operator", "--name", "browser"]);
    // The server picks a CLI token up within about a second.
    wait_for(Duration::from_secs(5), "the browser token to be known", || {
        let (base, token) = (base.to_string(), token.clone());
        async move { (call(&base, "get", "/api/v1/auth/whoami", Some(&token)).await.0 == StatusCode::OK).then_some(()) }
    })
    .await;
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{base}/api/v1/auth/session"))
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["gpw_session=", "Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{attr} missing: {cookie}");
    }
    assert!(!cookie.contains(&token), "the cookie is not the token");
    let session: Value = resp.json().await.unwrap();
    let csrf = session["csrf_token"].as_str().unwrap().to_string();
    let pair = cookie.split(';').next().unwrap().to_string();
    let with_cookie = |m: Method, p: &str| {
        client
            .request(m, format!("{base}{p}"))
            .header("cookie", &pair)
            .header("content-type", "application/json")
    };
    let r = with_cookie(Method::GET, "/api/v1/auth/whoami").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let who: Value = r.json().await.unwrap();
    assert_eq!(who["via"], "session");
    assert_eq!(who["csrf_token"].as_str(), Some(csrf.as_str()));
    // A change with the cookie but without the CSRF token: refused.
    let ack = "/api/v1/incidents/01JZZZZZZZZZZZZZZZZZZZZZZZ/ack";
    let r = with_cookie(Method::POST, ack).body("{}").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = with_cookie(Method::POST, ack)
        .header("x-csrf-token", "wrong")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // With it: past authentication (404: no such incident).
    let r = with_cookie(Method::POST, ack)
        .header("x-csrf-token", &csrf)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Sign-out ends it.
    let r = with_cookie(Method::POST, "/api/v1/auth/session/logout")
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = with_cookie(Method::GET, "/api/v1/gpus").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A new session ends when its token is revoked.
    let resp = client
        .post(format!("{base}/api/v1/auth/session"))
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap();
    let pair = resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let get = || client.get(format!("{base}/api/v1/gpus")).header("cookie", &pair).send();
    assert_eq!(get().await.unwrap().status(), StatusCode::OK);
    cli_revoke(data, &id_of(data, "browser"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while get().await.unwrap().status() != StatusCode::UNAUTHORIZED {
        assert!(Instant::now() < deadline, "session outlived its revoked token");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A bad token cannot sign in.
    let r = client
        .post(format!("{base}/api/v1/auth/session"))
        .json(&json!({"token": format!("gpw_{}", "B".repeat(43))}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// Token administration through the API: the secret once, effective at once.
async fn api_token_admin(base: &str, admin: &str) {
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{base}/api/v1/auth/tokens"))
        .bearer_auth(admin)
        .json(&json!({"role": "viewer", "name": "via-api", "expires": "1h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    let secret = created["token"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(call(base, "get", "/api/v1/gpus", Some(&secret)).await.0, StatusCode::OK);
    let (s, _, listed) = call(base, "get", "/api/v1/auth/tokens", Some(admin)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        listed.contains(&id) && !listed.contains(&secret),
        "listed without secret"
    );
    let r = client
        .post(format!("{base}/api/v1/auth/tokens"))
        .bearer_auth(admin)
        .json(&json!({"role": "viewer", "tenant": "ghost"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "unknown tenant refused");
    let r = client
        .delete(format!("{base}/api/v1/auth/tokens/{id}"))
        .bearer_auth(admin)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        call(base, "get", "/api/v1/gpus", Some(&secret)).await.0,
        StatusCode::UNAUTHORIZED
    );
}

/// `run` on a non-loopback address: refused without authentication, and with it but no
/// token; the refusal says how.
#[test]
fn non_loopback_needs_auth_and_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = |extra: &[&str]| {
        Command::new(binary())
            .args(["run", "--listen", "0.0.0.0:0", "--data-dir"])
            .arg(&data)
            .args(extra)
            .output()
            .unwrap()
    };
    for extra in [&[][..], &["--auth"][..]] {
        let out = run(extra);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?} started");
        assert!(err.contains("refusing to listen on 0.0.0.0:0"), "{err}");
        assert!(err.contains("gpuwarden auth token create --role admin"), "{err}");
        assert!(err.contains("enabled = true"), "{err}");
    }
    // A corrupt token file stops the start (never "no tokens, let everyone in").
    std::fs::create_dir_all(data.join("auth")).unwrap();
    std::fs::write(data.join("auth/tokens.json"), "{\"version\": 1, \"tokens\": [").unwrap();
    let out = Command::new(binary())
        .args(["run", "--auth", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("tokens.json") && err.contains("not valid"),
        "{err}"
    );
}
