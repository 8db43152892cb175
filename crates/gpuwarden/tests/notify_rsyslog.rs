//! Syslog delivery into a real rsyslog (Debian `rsyslog` + `rsyslog-gnutls`), started by
//! the test on loopback with its own configuration: imudp, imtcp (octet-counted
//! framing) and imtcp with the `gtls` driver (TLS, certificates made by the test with
//! rcgen), all written raw to a file. The test reads what the daemon wrote and checks
//! the RFC 5424 header and every CEF field, including the escaping of `|`, `\` and `=`
//! and of a line break.
//!
//! Skips when rsyslogd is missing, unless `GPUWARDEN_REQUIRE_TOOLS=1`.

mod common;

use common::{free_port, tools_required, wait_for};
use gpuwarden_incident::{ChangeKind, IncidentChange};
use gpuwarden_model::{Action, FindingKind, GpuUuid, Incident, IncidentState, Severity, SystemClock};
use gpuwarden_notify::sinks::cef;
use gpuwarden_notify::{Notifier, NotifyConfig};
use gpuwarden_pipeline::IncidentSink;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";
const SUMMARY: &str = "remap failed | bank\\3 spare=0\nsecond line";

struct Rsyslog(Child);

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A CA and a server certificate for `localhost`, as PEM files in `dir`.
fn certificates(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
}

fn incident(id: &str, state: IncidentState) -> Incident {
    Incident {
        id: id.into(),
        dedup_key: "remap.failure@GPU-5ab1".into(),
        rule: "remap.failure".into(),
        kind: FindingKind::Health,
        severity: Severity::Critical,
        gpu: Some(GpuUuid::new("GPU-5ab1")),
        node: "node-7".into(),
        state,
        summary: SUMMARY.into(),
        action: Action::HardwareInspection,
        opened_ms: 1_795_000_000_000,
        updated_ms: 1_795_000_060_000,
        last_seen_ms: 1_795_000_060_000,
        acknowledged_ms: None,
        acknowledged_by: None,
        resolved_ms: (state == IncidentState::Resolved).then_some(1_795_000_060_000),
        resolution: None,
        finding_count: 2,
        labels: Default::default(),
        flaps: 0,
        correlation: Default::default(),
        timeline: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_receives_rfc5424_cef_over_udp_tcp_and_tls() {
    if !Path::new(RSYSLOGD).exists() {
        assert!(
            !tools_required(),
            "rsyslogd is not installed (apt-get install rsyslog rsyslog-gnutls)"
        );
        eprintln!("skipping: rsyslogd is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certificates(d);
    std::fs::create_dir_all(d.join("work")).unwrap();
    let (udp, tcp, tls) = (free_port(), free_port(), free_port());
    let out = d.join("out.log");
    let conf = format!(
        r#"global(workDirectory="{d}/work"
       defaultNetstreamDriverCAFile="{d}/ca.pem"
       defaultNetstreamDriverCertFile="{d}/cert.pem"
       defaultNetstreamDriverKeyFile="{d}/key.pem")
module(load="imudp")
module(load="imtcp")
template(name="raw" type="string" string="%rawmsg%\n")
ruleset(name="out") {{ action(type="omfile" file="{out}" template="raw") }}
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="out")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="out")
input(type="imtcp" address="127.0.0.1" port="{tls}" ruleset="out"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
"#,
        d = d.display(),
        out = out.display()
    );
    std::fs::write(d.join("rsyslog.conf"), conf).unwrap();
    let _rsyslog = Rsyslog(
        Command::new(RSYSLOGD)
            .args(["-n", "-f"])
            .arg(d.join("rsyslog.conf"))
            .arg("-i")
            .arg(d.join("rsyslog.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start rsyslogd"),
    );
    for port in [tcp, tls] {
        wait_for(Duration::from_secs(15), "rsyslog to listen", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
    }

    let cfg: NotifyConfig = toml::from_str(&format!(
        r#"retry_initial = "100ms"
retry_max = "500ms"
[sinks.udp]
type = "syslog"
address = "127.0.0.1:{udp}"
transport = "udp"
hostname = "gw-udp"
[sinks.tcp]
type = "syslog"
address = "127.0.0.1:{tcp}"
transport = "tcp"
hostname = "gw-tcp"
[sinks.tls]
type = "syslog"
address = "127.0.0.1:{tls}"
transport = "tls"
ca_file = "{ca}"
server_name = "localhost"
hostname = "gw-tls"
"#,
        ca = d.join("ca.pem").display()
    ))
    .unwrap();
    let notifier = Arc::new(Notifier::new(&cfg, &d.join("outbox"), Arc::new(SystemClock)).unwrap());
    notifier.set_namespace_lookup(Arc::new(|_| Some("ml-team".to_string())));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tasks = notifier.spawn(stop_rx);
    let changes = vec![IncidentChange {
        incident: incident("inc-000042", IncidentState::Open),
        kinds: vec![ChangeKind::Opened],
    }];
    let n = notifier.clone();
    tokio::task::spawn_blocking(move || n.incidents_changed(&changes))
        .await
        .unwrap();
    let changes = vec![IncidentChange {
        incident: incident("inc-000042", IncidentState::Resolved),
        kinds: vec![ChangeKind::Resolved],
    }];
    let n = notifier.clone();
    tokio::task::spawn_blocking(move || n.incidents_changed(&changes))
        .await
        .unwrap();

    let lines = wait_for(Duration::from_secs(20), "6 lines written by rsyslog", || {
        let out = out.clone();
        async move {
            let text = std::fs::read_to_string(&out).ok()?;
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            (lines.len() >= 6).then_some(lines)
        }
    })
    .await;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    assert_eq!(lines.len(), 6, "{lines:#?}");

    let pid = std::process::id().to_string();
    for host in ["gw-udp", "gw-tcp", "gw-tls"] {
        let mine: Vec<&String> = lines.iter().filter(|l| l.split(' ').nth(2) == Some(host)).collect();
        assert_eq!(mine.len(), 2, "{host}: {lines:#?}");
        for (line, (seq, transition, outcome)) in
            mine.iter().zip([(1, "opened", "firing"), (2, "resolved", "resolved")])
        {
            // RFC 5424: <PRI>VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG
            let f: Vec<&str> = line.splitn(8, ' ').collect();
            assert_eq!(f[0], "<130>1", "local0.crit: {line}");
            assert_eq!(f[1], "2026-11-18T11:07:40.000Z", "1_795_000_060_000 ms: {line}");
            assert_eq!(f[3], "gpuwarden", "{line}");
            assert_eq!(f[4], pid, "{line}");
            assert_eq!(f[5], transition, "{line}");
            assert_eq!(f[6], "-", "{line}");
            let (h, ext) = cef::parse(f[7]).unwrap_or_else(|| panic!("not CEF: {line}"));
            assert_eq!(
                h,
                vec![
                    "CEF:0".to_string(),
                    "gpuwarden".into(),
                    "gpuwarden".into(),
                    env!("CARGO_PKG_VERSION").into(),
                    "remap.failure".into(),
                    format!("remap.failure {transition}: {}", SUMMARY.replace('\n', " ")),
                    "8".into(),
                ],
                "{line}"
            );
            let get = |k: &str| ext.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
            assert_eq!(get("rt"), Some("1795000060000"), "{line}");
            assert_eq!(get("start"), Some("1795000000000"), "{line}");
            assert_eq!(
                get("end"),
                (transition == "resolved").then_some("1795000060000"),
                "{line}"
            );
            assert_eq!(get("dhost"), Some("node-7"), "{line}");
            assert_eq!(get("externalId"), Some("inc-000042"), "{line}");
            assert_eq!(get("act"), Some("hardware_inspection"), "{line}");
            assert_eq!(get("msg"), Some(SUMMARY), "escaping round trip: {line}");
            assert_eq!(get("cat"), Some("health"), "{line}");
            assert_eq!(get("outcome"), Some(outcome), "{line}");
            assert_eq!(
                (get("cn1Label"), get("cn1")),
                (Some("seq"), Some(seq.to_string().as_str())),
                "{line}"
            );
            assert_eq!((get("cs1Label"), get("cs1")), (Some("gpu"), Some("GPU-5ab1")), "{line}");
            let key = format!("inc-000042#{seq}");
            assert_eq!(
                (get("cs2Label"), get("cs2")),
                (Some("deliveryKey"), Some(key.as_str())),
                "{line}"
            );
            assert_eq!(
                (get("cs3Label"), get("cs3")),
                (Some("namespace"), Some("ml-team")),
                "{line}"
            );
            assert_eq!(
                (get("cs4Label"), get("cs4")),
                (Some("transition"), Some(transition)),
                "{line}"
            );
            // The raw escapes as written: `\|` is not needed in extensions, `\=` and `\\` are.
            assert!(
                f[7].contains("msg=remap failed | bank\\\\3 spare\\=0\\nsecond line"),
                "{line}"
            );
        }
    }
}
