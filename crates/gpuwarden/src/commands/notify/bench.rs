//! `gpuwarden notify bench`: delivery throughput per sink type against local receivers
//! (in-process HTTP receivers answering like the real ones, a TCP syslog listener, a
//! file), and the added latency from an incident change to its arrival at the receiver.
//!
//! Everything goes through the real path: `IncidentSink::incidents_changed` → routes →
//! outbox (fsync) → delivery task → sink → receiver → outbox mark (fsync).

use anyhow::{Context, Result};
use axum::routing::post;
use clap::Args;
use gpuwarden_incident::{ChangeKind, IncidentChange};
use gpuwarden_model::{Action, FindingKind, GpuUuid, Incident, IncidentState, Severity, SystemClock};
use gpuwarden_notify::{Notifier, NotifyConfig};
use gpuwarden_pipeline::IncidentSink;
use parking_lot::Mutex;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Incident transitions per sink type for the throughput figure.
    #[arg(long, default_value_t = 2000)]
    pub transitions: usize,
    /// Transitions handed over per call (as one evaluation would).
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Single transitions timed for the latency figure.
    #[arg(long, default_value_t = 200)]
    pub latency_samples: usize,
}

/// Counts what a receiver got: requests, and arrival times.
#[derive(Default)]
struct Received {
    requests: AtomicU64,
    arrivals: Mutex<Vec<Instant>>,
}

async fn http_receiver(answer: &'static str) -> Result<(String, Arc<Received>)> {
    let rec = Arc::new(Received::default());
    let r = rec.clone();
    let app = axum::Router::new().fallback(post(move |_body: axum::body::Bytes| {
        let r = r.clone();
        async move {
            r.requests.fetch_add(1, Ordering::SeqCst);
            r.arrivals.lock().push(Instant::now());
            answer
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{addr}"), rec))
}

/// A TCP syslog listener that counts octet-counted frames.
async fn syslog_receiver() -> Result<(String, Arc<Received>)> {
    let rec = Arc::new(Received::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let r = rec.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let r = r.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 65536];
                while let Ok(n) = sock.read(&mut chunk).await {
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    // Consume every complete "LEN SP MSG" frame.
                    while let Some(sp) = buf.iter().position(|&b| b == b' ') {
                        let Some(len) = std::str::from_utf8(&buf[..sp])
                            .ok()
                            .and_then(|s| s.parse::<usize>().ok())
                        else {
                            return;
                        };
                        if buf.len() < sp + 1 + len {
                            break;
                        }
                        buf.drain(..sp + 1 + len);
                        r.requests.fetch_add(1, Ordering::SeqCst);
                        r.arrivals.lock().push(Instant::now());
                    }
                }
            });
        }
    });
    Ok((addr.to_string(), rec))
}

fn change(i: usize, t: usize) -> IncidentChange {
    let id = format!("inc-{:06}", i + 1);
    IncidentChange {
        incident: Incident {
            id: id.clone(),
            dedup_key: format!("ecc.dbe@GPU-{i}"),
            rule: "ecc.dbe".into(),
            kind: FindingKind::Health,
            severity: Severity::Critical,
            gpu: Some(GpuUuid::new(&format!("GPU-{i:08}"))),
            node: format!("node-{}", i % 64),
            state: IncidentState::Open,
            summary: format!("{} double-bit ECC errors in the last hour", 1 + t),
            action: Action::ResetGpu,
            opened_ms: 1_700_000_000_000,
            updated_ms: 1_700_000_000_000 + t as i64,
            last_seen_ms: 1_700_000_000_000,
            acknowledged_ms: None,
            acknowledged_by: None,
            resolved_ms: None,
            resolution: None,
            finding_count: 1,
            labels: Default::default(),
            flaps: 0,
            correlation: Default::default(),
            timeline: vec![],
        },
        kinds: vec![ChangeKind::Opened],
    }
}

struct Case {
    kind: &'static str,
    sink_toml: String,
    rec: Arc<Received>,
}

async fn cases(dir: &std::path::Path) -> Result<Vec<Case>> {
    let mut v = Vec::new();
    let (u, r) = http_receiver("").await?;
    v.push(Case {
        kind: "alertmanager",
        sink_toml: format!("type = \"alertmanager\"\nurl = \"{u}\""),
        rec: r,
    });
    let (u, r) = http_receiver("").await?;
    v.push(Case {
        kind: "webhook",
        sink_toml: format!("type = \"webhook\"\nurl = \"{u}/hook\"\nsecret_env = \"GPUWARDEN_BENCH_KEY\""),
        rec: r,
    });
    let (u, r) = http_receiver("ok").await?;
    v.push(Case {
        kind: "slack",
        sink_toml: format!("type = \"slack\"\nurl = \"{u}/services/T/B/x\""),
        rec: r,
    });
    let (u, r) = http_receiver("1").await?;
    v.push(Case {
        kind: "teams",
        sink_toml: format!("type = \"teams\"\nurl = \"{u}/webhook\""),
        rec: r,
    });
    let (u, r) = http_receiver(r#"{"status":"success","message":"Event processed"}"#).await?;
    v.push(Case {
        kind: "pagerduty",
        sink_toml: format!("type = \"pagerduty\"\nurl = \"{u}/v2/enqueue\"\nsecret_env = \"GPUWARDEN_BENCH_KEY\""),
        rec: r,
    });
    let (u, r) = http_receiver(r#"{"text":"Success","code":0}"#).await?;
    v.push(Case {
        kind: "splunk",
        sink_toml: format!("type = \"splunk\"\nurl = \"{u}\"\nsecret_env = \"GPUWARDEN_BENCH_KEY\""),
        rec: r,
    });
    let (u, r) = http_receiver(r#"{"errors":false,"items":[]}"#).await?;
    v.push(Case {
        kind: "elastic",
        sink_toml: format!("type = \"elastic\"\nurl = \"{u}\""),
        rec: r,
    });
    let (a, r) = syslog_receiver().await?;
    v.push(Case {
        kind: "syslog (tcp)",
        sink_toml: format!("type = \"syslog\"\naddress = \"{a}\"\ntransport = \"tcp\""),
        rec: r,
    });
    let path = dir.join("ecs.ndjson");
    v.push(Case {
        kind: "ecs_file",
        sink_toml: format!("type = \"ecs_file\"\npath = \"{}\"", path.display()),
        rec: Arc::new(Received::default()),
    });
    Ok(v)
}

fn notifier(dir: &std::path::Path, sink_toml: &str) -> Result<Arc<Notifier>> {
    let cfg: NotifyConfig = toml::from_str(&format!("retry_initial = \"50ms\"\n[sinks.s]\n{sink_toml}\n"))?;
    Ok(Arc::new(Notifier::new(&cfg, dir, Arc::new(SystemClock))?))
}

/// Delivered so far (the counter behind `gpuwarden_notifications_delivered_total`).
fn delivered(n: &Notifier) -> usize {
    let label = gpuwarden_notify::metrics::NotifyMetrics::label("s");
    n.metrics().delivered.get_or_create(&label).get() as usize
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub async fn run(a: BenchArgs) -> Result<ExitCode> {
    // The secret the signed sinks read; a bench value, not a real key.
    std::env::set_var("GPUWARDEN_BENCH_KEY", "bench-key");
    let tmp = tempfile::tempdir().context("creating a scratch directory")?;
    println!(
        "transitions per sink type: {}, handed over {} per call; latency: {} single transitions",
        a.transitions, a.batch, a.latency_samples
    );
    println!(
        "{:<14} {:>14} {:>12} {:>12} {:>12}",
        "sink", "transitions/s", "requests", "p50 ms", "p95 ms"
    );
    for (i, case) in cases(tmp.path()).await?.into_iter().enumerate() {
        let dir = tmp.path().join(format!("case-{i}"));
        // Throughput: hand over everything, wait until the outbox says all delivered.
        let n = notifier(&dir.join("tp"), &case.sink_toml)?;
        n.set_namespace_lookup(Arc::new(|_| None));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let tasks = n.spawn(stop_rx);
        let start = Instant::now();
        let mut handed = 0;
        while handed < a.transitions {
            let k = a.batch.min(a.transitions - handed);
            let changes: Vec<IncidentChange> = (handed..handed + k).map(|i| change(i, 0)).collect();
            let n2 = n.clone();
            tokio::task::spawn_blocking(move || n2.incidents_changed(&changes)).await?;
            handed += k;
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        while delivered(&n) < a.transitions {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{}: not all delivered within 300 s",
                case.kind
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let secs = start.elapsed().as_secs_f64();
        let requests = case.rec.requests.load(Ordering::SeqCst);
        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = t.await;
        }

        // Latency: one transition at a time, from the hand-over to the receiver's arrival
        // (for the file sink: to the outbox saying delivered, i.e. after fsync).
        let n = notifier(&dir.join("lat"), &case.sink_toml)?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let tasks = n.spawn(stop_rx);
        let mut lat = Vec::with_capacity(a.latency_samples);
        for s in 0..a.latency_samples {
            let before_arrivals = case.rec.arrivals.lock().len();
            let before_done = delivered(&n);
            let c = vec![change(100_000 + s, 1)];
            let t0 = Instant::now();
            let n2 = n.clone();
            tokio::task::spawn_blocking(move || n2.incidents_changed(&c)).await?;
            let deadline = Instant::now() + Duration::from_secs(10);
            let arrived = loop {
                if case.kind == "ecs_file" {
                    if delivered(&n) > before_done {
                        break Instant::now();
                    }
                } else if let Some(t) = case.rec.arrivals.lock().get(before_arrivals) {
                    break *t;
                }
                anyhow::ensure!(Instant::now() < deadline, "{}: a transition took over 10 s", case.kind);
                tokio::task::yield_now().await;
            };
            lat.push(arrived.duration_since(t0).as_secs_f64() * 1000.0);
            // Let the outbox mark land before the next sample.
            while delivered(&n) <= before_done {
                tokio::task::yield_now().await;
            }
        }
        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = t.await;
        }
        lat.sort_by(|x, y| x.total_cmp(y));
        println!(
            "{:<14} {:>14.0} {:>12} {:>12.2} {:>12.2}",
            case.kind,
            a.transitions as f64 / secs,
            if case.kind == "ecs_file" {
                "-".to_string()
            } else {
                requests.to_string()
            },
            pct(&lat, 0.50),
            pct(&lat, 0.95)
        );
    }
    Ok(ExitCode::SUCCESS)
}
