//! The test OpenID provider (`tests/browser/oidc-provider.mjs`: the certified
//! `oidc-provider` npm package run by node on loopback) for the end-to-end tests:
//! starting it, and getting JWT access tokens from it.

#![allow(dead_code)]

use super::common::{free_port, tools_required};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// gpuwarden's audience at the test provider (its resource indicator).
pub const AUDIENCE: &str = "https://gpuwarden.test";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether node and the provider package are installed; without them: fails under
/// `GPUWARDEN_REQUIRE_TOOLS=1`, else `false` (the caller skips).
pub fn available() -> bool {
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let ok = node && repo_root().join("tests/browser/node_modules/oidc-provider").is_dir();
    if !ok {
        assert!(
            !tools_required(),
            "the OpenID tests need node and `npm ci --prefix tests/browser`"
        );
        eprintln!("SKIPPED OpenID parts: need node and `npm ci --prefix tests/browser`");
    }
    ok
}

/// The provider process, killed when dropped.
pub struct Op {
    child: Child,
    pub issuer: String,
}

impl Drop for Op {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the provider on a free port, its UI client redirecting to gpuwarden on
/// `gw_port`, and waits (at most 30 s) for its ready line.
pub fn start(gw_port: u16) -> Op {
    let port = free_port();
    let mut child = Command::new("node")
        .arg(repo_root().join("tests/browser/oidc-provider.mjs"))
        .arg(port.to_string())
        .arg(format!("http://127.0.0.1:{gw_port}/auth/oidc/callback"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start node oidc-provider.mjs");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("\"ready\":true") {
                let _ = tx.send(line);
            }
        }
    });
    let op = Op {
        child,
        issuer: format!("http://127.0.0.1:{port}"),
    };
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the OpenID provider prints its ready line within 30 s");
    op
}

impl Op {
    /// A JWT access token for service client `client` (`svc-viewer`, `svc-operator`,
    /// `svc-admin`, `svc-tenant`, `svc-nobody`) and `resource` (the audience).
    pub async fn client_token(&self, client: &str, resource: &str) -> String {
        let resp = reqwest::Client::new()
            .post(format!("{}/token", self.issuer))
            .basic_auth(client, Some(client))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=client_credentials&scope=api&resource={}",
                resource.replace(':', "%3A").replace('/', "%2F")
            ))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("token request");
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert!(status.is_success(), "token for {client}: {status} {body}");
        let t = body["access_token"].as_str().unwrap().to_string();
        assert!(t.starts_with("eyJ") && t.split('.').count() == 3, "a JWT: {t}");
        t
    }

    /// A token the provider would never issue (`expired`, `wrong-issuer`, `forged`,
    /// `unknown-kid`, `rotated`), minted by the test script with its keys.
    pub async fn minted(&self, case: &str) -> String {
        reqwest::get(format!("{}/test/token/{case}", self.issuer))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `[auth.oidc]` for bearer tokens only (no UI client), roles by the test groups.
    pub fn bearer_config(&self) -> String {
        format!(
            "[auth.oidc]\nissuer = \"{}\"\naudience = \"{AUDIENCE}\"\nrole_claim = \"groups\"\n\
             tenant_claim = \"tenant\"\n\n[auth.oidc.roles]\nviewer = [\"gpu-viewers\"]\n\
             operator = [\"gpu-ops\"]\nadmin = [\"gpu-admins\"]\n",
            self.issuer
        )
    }
}
