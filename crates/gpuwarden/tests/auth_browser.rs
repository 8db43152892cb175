//! The web UI's sign-in with an API token in real Chromium: `gpuwarden run` with `[auth]`
//! on, an operator token made with the CLI, then `tests/browser/signin.test.mjs`
//! (playwright-core driving Debian's chromium) signs in, checks the cookie's attributes
//! and CSRF, and signs out. Needs the same tools as `browser.rs`; skips with a message
//! when one is missing unless `GPUWARDEN_REQUIRE_TOOLS=1`.

mod common;

use common::{binary, start, tools_required};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_signs_in_with_a_token_in_a_real_browser() {
    let node_ok = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let pw = repo_root().join("tests/browser/node_modules/playwright-core").is_dir();
    if !(node_ok && chromium().exists() && pw) {
        assert!(
            !tools_required(),
            "needs node, chromium and `npm ci --prefix tests/browser`"
        );
        eprintln!("SKIPPED sign-in browser test: needs node, chromium and `npm ci --prefix tests/browser`");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(binary())
        .args([
            "auth",
            "token",
            "create",
            "--role",
            "operator",
            "--name",
            "browser",
            "--quiet",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let gw = start(
        &data,
        &[
            "--auth",
            "--nodes",
            "1",
            "--scrape-interval",
            "1s",
            "--fault-rate-multiplier",
            "0",
        ],
    )
    .await;
    let run = tokio::process::Command::new("node")
        .arg(repo_root().join("tests/browser/signin.test.mjs"))
        .arg(&gw.base)
        .arg(&token)
        .env("CHROMIUM", chromium())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the browser test finishes within 120 s")
        .expect("run node");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    println!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "sign-in browser test failed: {}", out.status);
}
