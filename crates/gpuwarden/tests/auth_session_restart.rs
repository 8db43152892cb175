//! A web UI session survives a restart of the binary (nothing lost on restart), and a
//! signed-out one stays out.

mod common;

use common::{binary, start};
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_sessions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("gpuwarden.toml");
    std::fs::write(&config, "[auth]\nenabled = true\n").unwrap();
    let out = Command::new(binary())
        .args([
            "auth", "token", "create", "--quiet", "--role", "operator", "--name", "alice", "--config",
        ])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--nodes",
        "1",
        "--gpus-per-node",
        "1",
    ];
    let http = reqwest::Client::new();

    let sign_in = |base: String| {
        let (http, token) = (http.clone(), token.clone());
        async move {
            let r = http
                .post(format!("{base}/api/v1/auth/session"))
                .json(&serde_json::json!({ "token": token }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let cookie = r.headers()["set-cookie"]
                .to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_string();
            let body: serde_json::Value = r.json().await.unwrap();
            (cookie, body["csrf_token"].as_str().unwrap().to_string())
        }
    };
    let whoami = |base: String, cookie: String| {
        let http = http.clone();
        async move {
            http.get(format!("{base}/api/v1/auth/whoami"))
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .status()
        }
    };

    let gw = start(&data, &args).await;
    let (kept, _) = sign_in(gw.base.clone()).await;
    let (ended, csrf) = sign_in(gw.base.clone()).await;
    assert_eq!(whoami(gw.base.clone(), kept.clone()).await, 200);
    let r = http
        .post(format!("{}/api/v1/auth/session/logout", gw.base))
        .header("cookie", &ended)
        .header("x-csrf-token", csrf)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(gw);

    let gw = start(&data, &args).await;
    assert_eq!(
        whoami(gw.base.clone(), kept).await,
        200,
        "the session is still signed in after a restart"
    );
    assert_eq!(
        whoami(gw.base.clone(), ended).await,
        401,
        "a signed-out session stays out"
    );
    assert_eq!(whoami(gw.base.clone(), "gpw_session=forged".into()).await, 401);
}
