//! Email into a real SMTP server: PyPI `aiosmtpd` on loopback with STARTTLS required
//! (certificates made by the test with rcgen), storing what it receives in a maildir.
//! The test reads the received message and checks the envelope headers, the delivery
//! key header, and both the plain-text and the HTML part.
//!
//! Skips when aiosmtpd is missing, unless `GPUWARDEN_REQUIRE_TOOLS=1`
//! (`scripts/test.sh` installs it with pip).

mod common;

use common::{free_port, tools_required, wait_for};
use gpuwarden_incident::{ChangeKind, IncidentChange};
use gpuwarden_model::{Action, FindingKind, GpuUuid, Incident, IncidentState, Severity, SystemClock};
use gpuwarden_notify::{Notifier, NotifyConfig};
use gpuwarden_pipeline::IncidentSink;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

struct Smtpd(Child);

impl Drop for Smtpd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn incident() -> Incident {
    Incident {
        id: "inc-000009".into(),
        dedup_key: "thermal.slowdown@GPU-77".into(),
        rule: "thermal.slowdown".into(),
        kind: FindingKind::Health,
        severity: Severity::Warning,
        gpu: Some(GpuUuid::new("GPU-77")),
        node: "node-2".into(),
        state: IncidentState::Open,
        summary: "GPU at 91 °C, 3 °C above its slowdown temperature <check airflow>".into(),
        action: Action::DrainNode,
        opened_ms: 1_795_000_000_000,
        updated_ms: 1_795_000_000_000,
        last_seen_ms: 1_795_000_000_000,
        acknowledged_ms: None,
        acknowledged_by: None,
        resolved_ms: None,
        resolution: None,
        finding_count: 1,
        labels: Default::default(),
        flaps: 0,
        correlation: Default::default(),
        timeline: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_arrives_over_starttls_with_text_and_html() {
    let has = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .status()
        .is_ok_and(|s| s.success());
    if !has {
        assert!(!tools_required(), "aiosmtpd is not installed (pip install aiosmtpd)");
        eprintln!("skipping: aiosmtpd is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        std::fs::write(d.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(d.join("cert.pem"), leaf.pem()).unwrap();
        std::fs::write(d.join("key.pem"), key.serialize_pem()).unwrap();
    }
    let port = free_port();
    let maildir = d.join("maildir");
    let _smtpd = Smtpd(
        Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .arg("--tlscert")
            .arg(d.join("cert.pem"))
            .arg("--tlskey")
            .arg(d.join("key.pem"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start aiosmtpd"),
    );
    wait_for(Duration::from_secs(20), "aiosmtpd to listen", || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;

    let cfg: NotifyConfig = toml::from_str(&format!(
        r#"external_url = "http://gpuwarden.test:9470"
[sinks.mail]
type = "email"
host = "localhost"
port = {port}
from = "gpuwarden <gpuwarden@example.com>"
to = ["oncall@example.com", "Storage Team <storage@example.com>"]
ca_file = "{ca}"
"#,
        ca = d.join("ca.pem").display()
    ))
    .unwrap();
    let notifier = Arc::new(Notifier::new(&cfg, &d.join("outbox"), Arc::new(SystemClock)).unwrap());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tasks = notifier.spawn(stop_rx);
    let n = notifier.clone();
    tokio::task::spawn_blocking(move || {
        n.incidents_changed(&[IncidentChange {
            incident: incident(),
            kinds: vec![ChangeKind::Opened],
        }])
    })
    .await
    .unwrap();
    let message = wait_for(Duration::from_secs(20), "the message in the maildir", || {
        let new = maildir.join("new");
        async move {
            let f = std::fs::read_dir(&new).ok()?.next()?.ok()?;
            std::fs::read_to_string(f.path()).ok()
        }
    })
    .await;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let status = notifier.status(5);
    assert_eq!(status[0].counts.delivered, 1, "{status:?}");

    // Headers (unfolded) and the two parts.
    let unfolded = message.replace("\r\n", "\n").replace("\n ", " ").replace("\n\t", " ");
    let header = |name: &str| {
        unfolded
            .lines()
            .find(|l| {
                l.to_ascii_lowercase()
                    .starts_with(&format!("{}:", name.to_ascii_lowercase()))
            })
            .map(|l| l[name.len() + 1..].trim().to_string())
            .unwrap_or_default()
    };
    assert_eq!(header("From"), "gpuwarden <gpuwarden@example.com>", "{message}");
    assert!(
        header("To").contains("oncall@example.com") && header("To").contains("storage@example.com"),
        "{message}"
    );
    assert_eq!(header("X-Gpuwarden-Delivery"), "inc-000009#1", "{message}");
    assert!(header("Subject").contains("thermal.slowdown opened"), "{message}");
    assert!(header("Content-Type").starts_with("multipart/alternative"), "{message}");
    assert!(
        unfolded.contains("Content-Type: text/plain; charset=utf-8"),
        "{message}"
    );
    assert!(unfolded.contains("Content-Type: text/html; charset=utf-8"), "{message}");
    let decoded = decode_qp(&unfolded);
    assert!(
        decoded.contains("Recommended action: drain the node: move its work elsewhere"),
        "{decoded}"
    );
    assert!(
        decoded.contains("&lt;check airflow&gt;"),
        "HTML escapes the summary: {decoded}"
    );
    assert!(
        decoded.contains("Link: http://gpuwarden.test:9470/api/v1/incidents/inc-000009"),
        "{decoded}"
    );
}

/// Undoes quoted-printable soft breaks and `=XX` escapes (enough to read the bodies).
fn decode_qp(s: &str) -> String {
    let s = s.replace("=\n", "");
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}
