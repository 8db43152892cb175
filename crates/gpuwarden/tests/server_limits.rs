//! Probes of `gpuwarden serve`'s limits through the real binary on free loopback ports
//! (docs/reliability-server.md maps each probe to its test):
//!
//! - idle connections that never finish their request head do not starve `/healthz`,
//!   and the server closes them after the header-read timeout;
//! - every error status of the framework is the JSON error body;
//! - ingest tokens: minimum length, node scope (403), no moving a GPU known on another
//!   node, content dedup under new batch ids, `/metrics` behind the token on the ingest
//!   listener, and the token generator;
//! - silences: bounded count, sizes and duration; huge durations and times are 400, not
//!   a wrap-around.

mod common;

use common::{free_port, start_serve};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const TOKEN_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const TOKEN_ANY: &str = "cccccccccccccccccccccccccccccccccccccccc";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn token_file(dir: &Path) -> PathBuf {
    let p = dir.join("tokens");
    std::fs::write(
        &p,
        format!("# per host\n{TOKEN_A} node=host-a\n{TOKEN_B} nodes=host-b*\n{TOKEN_ANY}\n"),
    )
    .unwrap();
    p
}

/// `serve` with the token file and a separate ingest listener; returns (server, ingest base).
async fn serve_with_ingest(dir: &Path, extra: &[&str]) -> (common::Gpuwarden, String) {
    let tokens = token_file(dir);
    let ingest_port = free_port();
    let ingest = format!("127.0.0.1:{ingest_port}");
    let mut args = vec![
        "--ingest-token-file",
        tokens.to_str().unwrap(),
        "--ingest-listen",
        &ingest,
    ];
    args.extend_from_slice(extra);
    let s = start_serve(&dir.join("data"), &args).await;
    (s, format!("http://{ingest}"))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn batch(id: &str, node: &str, gpu: &str, gpu_node: &str, ts: i64) -> Value {
    json!({
        "version": 1, "id": id, "node": node, "created_ms": ts,
        "pages": [{"source": "nvml",
                   "gpus": [{"uuid": gpu, "node": gpu_node, "index": 0, "device": null, "model": null,
                             "pci_bus_id": null, "driver_version": null, "mig": null,
                             "workload": {"namespace": null, "pod": null, "container": null, "job": null},
                             "extra_labels": {}}],
                   "rows": [{"gpu": gpu, "ts_ms": ts, "values": [["DCGM_FI_DEV_GPU_TEMP", 40.0]]}]}],
        "events": []
    })
}

async fn push(base: &str, body: &Value, token: &str) -> (u16, Value) {
    let resp = client()
        .post(format!("{base}/api/v1/ingest"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

/// Runs `serve` with `args` and returns (exit success, stderr), killing it after 20 s.
fn serve_exits(args: &[&str]) -> (bool, String) {
    let mut child = Command::new(common::binary())
        .arg("serve")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            let mut out = String::new();
            child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
            return (status.success(), format!("{out}{err}"));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve {args:?} did not exit within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_starve_healthz_and_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ingest) = serve_with_ingest(dir.path(), &["--header-read-timeout", "1s"]).await;
    for base in [server.base.clone(), ingest] {
        let addr = base.trim_start_matches("http://").to_owned();
        // 300 connections that send half a request line and then nothing.
        let mut idle = Vec::new();
        for _ in 0..300 {
            let mut c = std::net::TcpStream::connect(&addr).unwrap();
            c.write_all(b"GET /healthz HT").unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            idle.push(c);
        }
        let started = Instant::now();
        let resp = client()
            .get(format!("{base}/healthz"))
            .send()
            .await
            .expect("healthz answers");
        assert_eq!(resp.status(), 200);
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        // Each idle one is closed by the server (EOF or reset) within the timeout + slack.
        let started = Instant::now();
        let closed = tokio::task::spawn_blocking(move || {
            idle.into_iter()
                .filter(|c| {
                    let mut buf = [0u8; 512];
                    let mut c = c;
                    loop {
                        match c.read(&mut buf) {
                            Ok(0) => return true,
                            Ok(_) => continue,
                            Err(e) => {
                                return !matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                )
                            }
                        }
                    }
                })
                .count()
        })
        .await
        .unwrap();
        assert_eq!(closed, 300, "idle connections still open after {:?}", started.elapsed());
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_closed_and_healthz_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_serve(
        &dir.path().join("data"),
        // Long enough that none of the 20 times out before the 21st arrives, also on a
        // loaded machine.
        &["--max-connections", "20", "--header-read-timeout", "4s"],
    )
    .await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut idle = Vec::new();
    for _ in 0..20 {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        c.write_all(b"GET / HT").unwrap();
        idle.push(c);
    }
    // Connections past the limit are accepted and closed at once. One may still get an
    // answer on a loaded machine: the readiness probe's connection can hold its permit
    // until the server notices it closed; the one that takes that permit keeps it
    // (it stays open here), so every later one must be closed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut extras = Vec::new();
    let mut answered = 0;
    for _ in 0..5 {
        let mut extra = std::net::TcpStream::connect(&addr).unwrap();
        extra.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n");
        let mut buf = [0u8; 64];
        if extra.read(&mut buf).unwrap_or(0) > 0 {
            answered += 1;
        }
        extras.push(extra);
    }
    assert!(
        answered <= 1,
        "{answered} of 5 connections past the limit got an answer"
    );
    // Once the header timeout closed the idle ones, /healthz answers again.
    common::wait_for(
        Duration::from_secs(10),
        "healthz after the idle ones are closed",
        || async { common::get_json(&format!("{}/healthz", server.base)).await.ok() },
    )
    .await;
    drop(idle);
    drop(extras);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_serve_promptly_with_idle_connections_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_serve(&dir.path().join("data"), &[]).await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let idle: Vec<_> = (0..50)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(&addr).unwrap();
            c.write_all(b"GET / HT").unwrap();
            c
        })
        .collect();
    let started = Instant::now();
    Command::new("kill")
        .arg("-TERM")
        .arg(server.child.id().to_string())
        .status()
        .unwrap();
    while server.child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "serve still running 15 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_framework_error_status_is_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_serve(&dir.path().join("data"), &["--request-timeout", "2s"]).await;
    let b = &server.base;
    let c = client();
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (c.get(format!("{b}/api/v1/nope")), 404, "not_found"),
        // (A state-changing method without the JSON content type is 415 first; see
        // csrf_host.rs.)
        (
            c.delete(format!("{b}/api/v1/gpus"))
                .header("content-type", "application/json"),
            405,
            "method_not_allowed",
        ),
        (
            c.get(format!("{b}/api/v1/gpus?x={}", "a".repeat(9000))),
            414,
            "uri_too_long",
        ),
        (
            c.get(format!("{b}/api/v1/gpus")).header("x-big", "v".repeat(40_000)),
            431,
            "headers_too_large",
        ),
    ];
    for (req, status, code) in cases {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{code}");
        assert_eq!(resp.headers()["content-type"], "application/json", "{code}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{body}");
    }
    // 413: a body over the route's limit (2 MiB for silences), over a raw socket so that
    // the early answer is read whatever happens to the rest of the upload.
    let addr = b.trim_start_matches("http://").to_owned();
    let head = "POST /api/v1/silences HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 3145728\r\nconnection: close\r\n\r\n";
    let answer = raw_request(&addr, head, 3 << 20).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"payload_too_large\""), "{answer}");
    // 408: a body announced but never sent finishes past the request timeout.
    let head = "POST /api/v1/silences HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 100\r\nconnection: close\r\n\r\n{";
    let answer = raw_request(&addr, head, 0).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    // 415 needs a route with a JSON extractor, which `serve` has none of: the server
    // crate's router test `json_errors::tests::framework_errors_are_json_with_stable_codes`
    // covers it.
}

/// Sends `head` and `body_len` bytes of `x` (write errors ignored: the server may answer
/// and stop reading early), then reads the answer (at most 10 s).
async fn raw_request(addr: &str, head: &str, body_len: usize) -> String {
    let (addr, head) = (addr.to_owned(), head.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < body_len {
            let n = chunk.len().min(body_len - sent);
            if s.write_all(&chunk[..n]).is_err() {
                break;
            }
            sent += n;
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_tokens_are_refused_and_the_generator_makes_long_ones() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "x\n").unwrap();
    let (ok, out) = serve_exits(&[
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--data-dir",
        dir.path().join("d").to_str().unwrap(),
        "--ingest-token-file",
        short.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        out.contains("at least 32") && out.contains("--generate-ingest-token"),
        "{out}"
    );
    let (ok, out) = serve_exits(&["--generate-ingest-token"]);
    assert!(ok, "{out}");
    let token = out.trim();
    assert_eq!(token.len(), 64, "{token}");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
    let (_, again) = serve_exits(&["--generate-ingest-token"]);
    assert_ne!(again.trim(), token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_tokens_are_bound_to_their_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, ingest) = serve_with_ingest(dir.path(), &[]).await;
    let ts = now_ms();
    let ok = batch("a-1", "host-a", "GPU-host-a-1", "host-a", ts);
    assert_eq!(push(&ingest, &ok, TOKEN_A).await.0, 200);
    // Token A may not write another node, as the batch node or as a GPU's node label.
    let (s, body) = push(
        &ingest,
        &batch("x-1", "attacker-host", "GPU-x", "attacker-host", ts),
        TOKEN_A,
    )
    .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (403, Some("node_not_allowed")),
        "{body}"
    );
    let (s, body) = push(&ingest, &batch("x-2", "host-a", "GPU-x", "attacker-host", ts), TOKEN_A).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (403, Some("node_not_allowed")),
        "{body}"
    );
    // Token B (host-b*) may not move host-a's GPU to host-b.
    let (s, body) = push(
        &ingest,
        &batch("x-3", "host-b1", "GPU-host-a-1", "host-b1", ts + 1000),
        TOKEN_B,
    )
    .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (403, Some("gpu_on_other_node")),
        "{body}"
    );
    // ... nor write samples of it by naming it only in a row (the wire format already
    // refuses rows of GPUs the page does not describe: 400).
    let mut sneaky = batch("x-4", "host-b1", "GPU-b", "host-b1", ts + 1000);
    sneaky["pages"][0]["rows"][0]["gpu"] = json!("GPU-host-a-1");
    let (s, body) = push(&ingest, &sneaky, TOKEN_B).await;
    assert!(s == 400 || s == 403, "{s}: {body}");
    // ... nor an XID event of it, nor an event labelled with a node outside its scope.
    let mut event = batch("x-5", "host-b1", "GPU-b", "host-b1", ts + 1000);
    event["events"] = json!([{"gpu": "GPU-host-a-1", "node": "host-b1", "ts_ms": ts,
                              "kind": {"type": "xid", "code": 79}}]);
    let (s, body) = push(&ingest, &event, TOKEN_B).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (403, Some("gpu_on_other_node")),
        "{body}"
    );
    event["events"][0]["node"] = json!("host-a");
    event["id"] = json!("x-6");
    let (s, body) = push(&ingest, &event, TOKEN_B).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (403, Some("node_not_allowed")),
        "{body}"
    );
    // Its own nodes are fine.
    assert_eq!(
        push(&ingest, &batch("b-1", "host-b1", "GPU-b", "host-b1", ts), TOKEN_B)
            .await
            .0,
        200
    );
    // The GPU stayed on host-a.
    let g = common::get_json(&format!("{}/api/v1/gpus/GPU-host-a-1", _server.base))
        .await
        .unwrap();
    assert_eq!(g["identity"]["node"], "host-a", "{g}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_samples_under_a_new_batch_id_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ingest) = serve_with_ingest(dir.path(), &[]).await;
    let ts = now_ms();
    let (s, first) = push(&ingest, &batch("first-id", "host-a", "GPU-d", "host-a", ts), TOKEN_A).await;
    assert_eq!((s, first["samples"].as_u64()), (200, Some(1)), "{first}");
    let (s, again) = push(&ingest, &batch("second-id", "host-a", "GPU-d", "host-a", ts), TOKEN_A).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["samples"], 0, "{again}");
    assert_eq!(again["repeated_rows"], 1, "{again}");
    let url = format!(
        "{}/api/v1/gpus/GPU-d/series?field=DCGM_FI_DEV_GPU_TEMP&from=0&to=now&max_points=1000",
        server.base
    );
    let series = common::get_json(&url).await.unwrap();
    assert_eq!(series["points"].as_array().unwrap().len(), 1, "{series}");
}

/// An agent batch stamped in the year 2100 (its rows and an XID event) is refused and
/// counted against the agent; it neither blocks the GPU's later rows as "repeats" nor
/// stores an event from the future.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_future_agent_batch_is_refused_and_blocks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ingest) = serve_with_ingest(dir.path(), &[]).await;
    let year_2100 = 4_102_444_800_000_i64;
    let mut future = batch("future-id", "host-a", "GPU-f", "host-a", year_2100);
    future["events"] = json!([{"gpu": "GPU-f", "node": "host-a", "ts_ms": year_2100,
        "kind": {"type": "xid", "code": 79, "message": null, "pid": null, "process": null}}]);
    let (s, reply) = push(&ingest, &future, TOKEN_A).await;
    assert_eq!(s, 200, "{reply}");
    assert_eq!(reply["samples"], 0, "{reply}");
    assert_eq!(reply["refused_events"], 1, "{reply}");

    // A normal batch right after is stored: the refused row set no dedup mark.
    let ts = now_ms();
    let (s, reply) = push(&ingest, &batch("now-id", "host-a", "GPU-f", "host-a", ts), TOKEN_A).await;
    assert_eq!((s, reply["samples"].as_u64()), (200, Some(1)), "{reply}");

    let targets = common::get_json(&format!("{}/api/v1/targets", server.base))
        .await
        .unwrap();
    let ahead: u64 = targets["ingest"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["target"].as_str().unwrap_or("").starts_with("agent://host-a"))
        .filter_map(|t| t["refused"]["too_far_ahead"].as_u64())
        .sum();
    assert_eq!(ahead, 2, "one row and one event refused: {targets}");
    let events = common::get_json(&format!("{}/api/v1/gpus/GPU-f/events?from=0&to=now", server.base))
        .await
        .unwrap();
    assert!(
        !events.to_string().contains(&year_2100.to_string()),
        "an event from 2100 was stored: {events}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_listener_metrics_need_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, ingest) = serve_with_ingest(dir.path(), &[]).await;
    let resp = client().get(format!("{ingest}/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    let resp = client()
        .get(format!("{ingest}/metrics"))
        .bearer_auth(TOKEN_A)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // /healthz stays open for load balancers.
    assert_eq!(
        client().get(format!("{ingest}/healthz")).send().await.unwrap().status(),
        200
    );
}

async fn create_silence(base: &str, body: Value) -> (u16, Value) {
    common::post_json(&format!("{base}/api/v1/silences"), body).await
}

fn silence(extra: Value) -> Value {
    let mut s =
        json!({"matchers": {"rules": ["xid.*"]}, "author": "alice", "comment": "maintenance", "duration": "2h"});
    for (k, v) in extra.as_object().unwrap() {
        s[k] = v.clone();
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silences_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gpuwarden.toml");
    std::fs::write(&cfg, "[notify.silences]\nmax_count = 3\n").unwrap();
    let server = start_serve(&dir.path().join("data"), &["--config", cfg.to_str().unwrap()]).await;
    let b = &server.base;
    let cases = [
        (json!({"duration": "2y"}), 400, "silence_too_long"),
        (json!({"comment": "c".repeat(5000)}), 413, "silence_too_large"),
        (json!({"author": "a".repeat(300)}), 413, "silence_too_large"),
        (json!({"matchers": {"nodes": vec!["n"; 101]}}), 413, "silence_too_large"),
        (
            json!({"matchers": {"rules": ["r".repeat(300)]}}),
            413,
            "silence_too_large",
        ),
    ];
    for (extra, status, code) in cases {
        let (s, body) = create_silence(b, silence(extra.clone())).await;
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{extra}: {body}"
        );
    }
    for _ in 0..3 {
        assert_eq!(create_silence(b, silence(json!({}))).await.0, 201);
    }
    let (s, body) = create_silence(b, silence(json!({}))).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (400, Some("too_many_silences")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_durations_and_times_are_400_not_wrapped() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_serve(&dir.path().join("data"), &[]).await;
    let b = &server.base;
    let (s, body) = create_silence(b, silence(json!({"duration": "99999999999y"}))).await;
    assert_eq!(s, 400, "{body}");
    let (s, body) = create_silence(
        b,
        silence(json!({"duration": null, "ends_ms": i64::MAX, "starts_ms": i64::MIN})),
    )
    .await;
    assert_eq!(s, 400, "{body}");
    // A GPU to ask about (pushes on the main listener are open: no token file).
    let ts = now_ms();
    let (st, reply) = push(b, &batch("t-1", "n1", "GPU-t", "n1", ts), "unused").await;
    assert_eq!(st, 200, "{reply}");
    for from in ["-99999999999y", "-18446744073709551615s", "-9223372036854775807ms"] {
        let url = format!("{b}/api/v1/gpus/GPU-t/series?field=DCGM_FI_DEV_GPU_TEMP&from={from}");
        let resp = client().get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{from}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "bad_time", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("too far back") || message.contains("too large"),
            "{body}"
        );
    }
    // Extreme integers are times, not overflows: no 500, no wrap-around.
    let url = format!("{b}/api/v1/gpus/GPU-t/series?field=DCGM_FI_DEV_GPU_TEMP&to=-9223372036854775808");
    assert_eq!(client().get(&url).send().await.unwrap().status(), 400);
}
