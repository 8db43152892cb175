//! TLS and rate limits through the real binary.
//!
//! - `gpuwarden serve` with `[tls]` on the API/UI listener and `[ingest.tls]` with a
//!   client CA on the ingest listener (certificates made here with rcgen): https works,
//!   plain http is answered 400 `tls_required`; `gpuwarden agent` with a client
//!   certificate for node-a pushes node-a's GPUs; a batch for node-b over node-a's
//!   certificate is refused 403; no client certificate → no handshake; a push on the API
//!   listener (no client certificate there) is refused 403. Replacing the certificate
//!   files changes what new connections see (checked from the client side) without a
//!   restart; garbage in the files, and a SIGHUP, keep the last good certificate serving.
//! - `gpuwarden run` with `[api.rate_limit]`: a burst past the limit is answered 429 with
//!   `Retry-After`, probes are spared, and after the wait requests pass again.

mod common;

use common::{free_port, wait_for};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/nvml/h100-hgx-8gpu.json");
const TOKEN: &str = "tls-test-token-0123456789abcdef-0123456789";

struct Ca(CertifiedIssuer<'static, KeyPair>);

impl Ca {
    fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        Ca(CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap())
    }

    /// Writes `NAME.pem` and `NAME.key` for a leaf named `cn`; returns the DER.
    fn leaf(&self, dir: &Path, name: &str, cn: &str, client: bool) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![cn.to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        if client {
            p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        }
        let cert = p.signed_by(&key, &self.0).unwrap();
        write_atomically(&dir.join(format!("{name}.pem")), &cert.pem());
        write_atomically(&dir.join(format!("{name}.key")), &key.serialize_pem());
        cert.der().to_vec()
    }
}

/// Write beside, then rename over: how deploy tools (and cert-manager) replace files.
fn write_atomically(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn client(dir: &Path, identity: Option<&str>) -> reqwest::Client {
    let ca = std::fs::read(dir.join("server-ca.pem")).unwrap();
    let mut b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .tls_info(true)
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0);
    if let Some(name) = identity {
        let mut pem = std::fs::read(dir.join(format!("{name}.pem"))).unwrap();
        pem.extend(std::fs::read(dir.join(format!("{name}.key"))).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

/// The DER certificate a new connection to `url` is shown.
async fn presented(c: &reqwest::Client, url: &str) -> Vec<u8> {
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|t| t.peer_certificate())
        .expect("TLS info")
        .to_vec()
}

fn batch(node: &str, ts: i64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "version": 1, "id": format!("batch-{node}-{ts}"), "node": node, "created_ms": ts,
        "pages": [{"source": "nvml",
                   "gpus": [{"uuid": format!("GPU-{node}"), "node": node, "index": 0, "device": null, "model": null,
                             "pci_bus_id": null, "driver_version": null, "mig": null,
                             "workload": {"namespace": null, "pod": null, "container": null, "job": null},
                             "extra_labels": {}}],
                   "rows": [{"gpu": format!("GPU-{node}"), "ts_ms": ts, "values": [["DCGM_FI_DEV_GPU_TEMP", 40.0]]}]}],
        "events": []
    }))
    .unwrap()
}

async fn push(c: &reqwest::Client, base: &str, body: Vec<u8>) -> Result<(u16, Value), reqwest::Error> {
    let r = c
        .post(format!("{base}/api/v1/ingest"))
        .header("content-type", "application/json")
        .bearer_auth(TOKEN)
        .body(body)
        .send()
        .await?;
    Ok((r.status().as_u16(), r.json().await.unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_over_tls_with_agent_certificates_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server_ca = Ca::new("gpuwarden test server CA");
    std::fs::write(d.join("server-ca.pem"), server_ca.0.pem()).unwrap();
    let agents_ca = Ca::new("gpuwarden test agents CA");
    std::fs::write(d.join("agents-ca.pem"), agents_ca.0.pem()).unwrap();
    let der1 = server_ca.leaf(d, "api", "localhost", false);
    server_ca.leaf(d, "ingest", "localhost", false);
    agents_ca.leaf(d, "node-a", "node-a", true);
    std::fs::write(d.join("tokens"), format!("{TOKEN}\n")).unwrap();
    let p = |n: &str| d.join(n).display().to_string();
    std::fs::write(
        d.join("gpuwarden.toml"),
        format!(
            "[tls]\ncert = {:?}\nkey = {:?}\nreload_interval = \"200ms\"\n\
             [ingest.tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\nreload_interval = \"200ms\"\n",
            p("api.pem"),
            p("api.key"),
            p("ingest.pem"),
            p("ingest.key"),
            p("agents-ca.pem")
        ),
    )
    .unwrap();
    let (port, iport) = (free_port(), free_port());
    let serve = Proc(
        Command::new(common::binary())
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--ingest-listen", &format!("127.0.0.1:{iport}")])
            .args(["--agent-interval", "1s", "--config", &p("gpuwarden.toml")])
            .args(["--data-dir", &p("data"), "--ingest-token-file", &p("tokens")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start gpuwarden serve"),
    );
    let base = format!("https://localhost:{port}");
    let ingest = format!("https://localhost:{iport}");
    let api = client(d, None);
    wait_for(Duration::from_secs(30), "serve to answer /healthz over https", || {
        let (api, url) = (api.clone(), format!("{base}/healthz"));
        async move { api.get(&url).send().await.ok().filter(|r| r.status() == 200) }
    })
    .await;

    // Plain http on the TLS port: a clear 400, not a hang or a reset.
    let r = reqwest::get(format!("http://localhost:{port}/healthz")).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "tls_required");

    // The real agent, with node-a's certificate, pushes node-a's GPUs.
    let agent = Command::new(common::binary())
        .args(["agent", "--server", &ingest, "--node", "node-a", "--interval", "200ms"])
        .args([
            "--kernel-log",
            "off",
            "--nvml-fixture",
            FIXTURE,
            "--exit-after-batches",
            "2",
        ])
        .args(["--ca", &p("server-ca.pem"), "--client-cert", &p("node-a.pem")])
        .args(["--client-key", &p("node-a.key"), "--token-file", &p("tokens")])
        .args(["--spool-dir", &p("spool"), "--proc-root", &p("no-proc")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start gpuwarden agent");
    let mut agent = Proc(agent);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = agent.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the agent did not finish within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "agent exited with {status}");
    let gpus: Value = api
        .get(format!("{base}/api/v1/gpus?limit=1000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let gpus = gpus["gpus"].as_array().unwrap();
    assert_eq!(gpus.len(), 8, "the agent's 8 GPUs arrived over mutual TLS");
    assert!(gpus.iter().all(|g| g["identity"]["node"] == "node-a"));

    // node-a's certificate may write node-a, not node-b.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let node_a = client(d, Some("node-a"));
    let (status, reply) = push(&node_a, &ingest, batch("node-a", now - 1000)).await.unwrap();
    assert_eq!(status, 200, "{reply}");
    let (status, reply) = push(&node_a, &ingest, batch("node-b", now - 1000)).await.unwrap();
    assert_eq!(status, 403, "{reply}");
    assert_eq!(reply["error"]["code"], "node_not_certified", "{reply}");

    // Without a client certificate the ingest listener completes no handshake.
    assert!(push(&api, &ingest, batch("node-a", now - 500)).await.is_err());
    // … and the API listener, where agents could go around it, refuses pushes.
    let (status, reply) = push(&api, &base, batch("node-a", now - 500)).await.unwrap();
    assert_eq!(status, 403, "{reply}");
    assert_eq!(reply["error"]["code"], "client_certificate_required");

    // New certificate on disk: new connections get it, no restart.
    let url = format!("{base}/healthz");
    assert_eq!(presented(&api, &url).await, der1);
    let der2 = server_ca.leaf(d, "api", "localhost", false);
    assert_ne!(der1, der2);
    wait_for(Duration::from_secs(15), "the new certificate to be served", || {
        let (api, url, der2) = (api.clone(), url.clone(), der2.clone());
        async move { (presented(&api, &url).await == der2).then_some(()) }
    })
    .await;

    // Garbage in the certificate file, then SIGHUP: the process lives on and the last
    // good certificate keeps serving.
    write_atomically(
        &d.join("api.pem"),
        "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(presented(&api, &url).await, der2);
    let _ = Command::new("kill").args(["-HUP", &serve.0.id().to_string()]).status();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(presented(&api, &url).await, der2);
    // Fixed files are picked up again.
    let der3 = server_ca.leaf(d, "api", "localhost", false);
    wait_for(Duration::from_secs(15), "the fixed certificate to be served", || {
        let (api, url, der3) = (api.clone(), url.clone(), der3.clone());
        async move { (presented(&api, &url).await == der3).then_some(()) }
    })
    .await;
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_answers_429_with_retry_after_past_the_rate_limit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gpuwarden.toml");
    std::fs::write(
        &cfg,
        "[api.rate_limit]\nexempt_loopback = false\nclient_rate = 1.0\nclient_burst = 3\n",
    )
    .unwrap();
    let g = common::start(
        &dir.path().join("data"),
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--nodes",
            "1",
            "--gpus-per-node",
            "1",
        ],
    )
    .await;
    // The /healthz polls of the start helper did not use the budget (probes are exempt);
    // the bucket refills at 1/s, so wait a moment for it to be full.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let c = reqwest::Client::new();
    let url = format!("{}/api/v1/fleet/summary", g.base);
    for i in 0..3 {
        assert_eq!(
            c.get(&url).send().await.unwrap().status(),
            200,
            "request {i} of the burst"
        );
    }
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "rate_limited");
    assert_eq!(c.get(format!("{}/healthz", g.base)).send().await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(
        c.get(&url).send().await.unwrap().status(),
        200,
        "allowed again after Retry-After"
    );
}
