//! Browser safety through the real binary (docs/api.md, "Browser safety: content type,
//! Origin, Host"): what another web page could send — an HTML form post, a `text/plain`
//! fetch, a JSON call with a foreign `Origin`, a DNS-rebound `Host` — is refused and
//! changes nothing; the same calls done right succeed; incident ids are not sequential.

mod common;

use common::{get_json, post_json, start, wait_for};
use reqwest::header::{CONTENT_TYPE, HOST, ORIGIN};
use serde_json::{json, Value};
use std::time::Duration;

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.timeout(Duration::from_secs(10)).send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn assert_refused(what: &str, (status, body): (u16, Value), want: u16, code: &str) {
    assert_eq!(status, want, "{what}: {body}");
    assert_eq!(body["error"]["code"], code, "{what}: {body}");
    assert!(
        body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
}

/// Whether `id` looks like the old sequential ids (`inc-` and digits only).
fn sequential(id: &str) -> bool {
    id.strip_prefix("inc-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_pages_cannot_change_anything_and_rebinding_hosts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--scrape-interval",
        "1s",
        "--seed",
        "11",
        "--fault-rate-multiplier",
        "0",
        "--nodes",
        "1",
        "--allowed-host",
        "gpuwarden.example.com",
    ];
    let gw = start(dir.path(), &args).await;
    let base = gw.base.clone();
    let host = base.trim_start_matches("http://").to_owned();
    let c = reqwest::Client::new();

    let uuid = wait_for(Duration::from_secs(30), "8 GPUs", || async {
        let b = get_json(&format!("{base}/api/v1/gpus")).await.ok()?;
        (b["total"] == 8).then(|| b["gpus"][2]["identity"]["uuid"].as_str().unwrap().to_string())
    })
    .await;
    let (status, body) = post_json(
        &format!("{base}/api/v1/simulation/faults"),
        json!({"gpu": uuid, "kind": "row-remap-failure"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let incident = wait_for(Duration::from_secs(30), "the remap-failure incident", || async {
        let b = get_json(&format!("{base}/api/v1/incidents?state=open&rule=remap.failure"))
            .await
            .ok()?;
        b["incidents"].as_array()?.first().cloned()
    })
    .await;
    let id = incident["id"].as_str().unwrap().to_string();
    assert!(!sequential(&id), "incident id {id} is sequential");
    assert!(id.starts_with("inc-") && id.len() == 30, "{id}");

    let resolve = format!("{base}/api/v1/incidents/{id}/resolve");
    let ack = format!("{base}/api/v1/incidents/{id}/ack");
    let silences = format!("{base}/api/v1/silences");
    let silence = json!({"matchers": {"rules": ["*"]}, "author": "evil", "comment": "shh", "duration": "8760h"});

    // What a page of another origin can send without a CORS preflight.
    for (url, what) in [(&resolve, "resolve"), (&ack, "ack"), (&silences, "silence")] {
        assert_refused(
            &format!("{what}: form post, empty body"),
            send(
                c.post(url.as_str())
                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .header(ORIGIN, "https://evil.example")
                    .body(""),
            )
            .await,
            415,
            "unsupported_media_type",
        );
        assert_refused(
            &format!("{what}: text/plain with a JSON body"),
            send(
                c.post(url.as_str())
                    .header(CONTENT_TYPE, "text/plain;charset=UTF-8")
                    .header(ORIGIN, "https://evil.example")
                    .body(silence.to_string()),
            )
            .await,
            415,
            "unsupported_media_type",
        );
        assert_refused(
            &format!("{what}: no content type, no Origin"),
            send(c.post(url.as_str()).body("")).await,
            415,
            "unsupported_media_type",
        );
        // JSON from another origin (a preflight gpuwarden never approves; or a proxy).
        for origin in ["https://evil.example", "null", "http://localhost:1"] {
            assert_refused(
                &format!("{what}: JSON with Origin {origin}"),
                send(c.post(url.as_str()).header(ORIGIN, origin).json(&silence)).await,
                403,
                "cross_origin",
            );
        }
    }
    // Nothing changed.
    let now = get_json(&format!("{base}/api/v1/incidents/{id}")).await.unwrap();
    assert_eq!(now["state"], "open", "{now}");
    let list = get_json(&silences).await.unwrap();
    assert_eq!(list["silences"].as_array().map(Vec::len), Some(0), "{list}");

    // DNS rebinding: the page's requests name its own host.
    for path in ["/api/v1/gpus", "/api/v1/incidents", "/"] {
        assert_refused(
            &format!("GET {path} with Host evil.example.com"),
            send(c.get(format!("{base}{path}")).header(HOST, "evil.example.com")).await,
            421,
            "host_not_allowed",
        );
    }
    assert_refused(
        "resolve with a rebound Host and matching Origin",
        send(
            c.post(&resolve)
                .header(HOST, format!("evil.example.com:{}", host.rsplit(':').next().unwrap()))
                .header(
                    ORIGIN,
                    format!("http://evil.example.com:{}", host.rsplit(':').next().unwrap()),
                )
                .json(&json!({})),
        )
        .await,
        421,
        "host_not_allowed",
    );
    let now = get_json(&format!("{base}/api/v1/incidents/{id}")).await.unwrap();
    assert_eq!(now["state"], "open", "{now}");

    // Done right: loopback names, the configured name, JSON, same or no Origin.
    for h in [
        host.clone(),
        format!("localhost:{}", host.rsplit(':').next().unwrap()),
        "gpuwarden.example.com".into(),
    ] {
        let (s, b) = send(c.get(format!("{base}/api/v1/gpus")).header(HOST, h.as_str())).await;
        assert_eq!(s, 200, "Host {h}: {b}");
    }
    let (s, acked) = send(
        c.post(&ack)
            .header(ORIGIN, base.as_str())
            .json(&json!({"actor": "alice"})),
    )
    .await;
    assert_eq!(s, 200, "{acked}");
    assert_eq!(acked["state"], "acknowledged");
    let (s, sil) = send(
        c.post(&silences)
            .header(CONTENT_TYPE, "application/json; charset=utf-8")
            .body(
                json!({"matchers": {"rules": ["xid.*"]}, "author": "bob", "comment": "rollout", "duration": "1h"})
                    .to_string(),
            ),
    )
    .await;
    assert_eq!(s, 201, "{sil}");
    let sil_id = sil["id"].as_str().unwrap();
    // DELETE takes no body but still needs the content type.
    assert_refused(
        "expire without a content type",
        send(c.delete(format!("{silences}/{sil_id}"))).await,
        415,
        "unsupported_media_type",
    );
    let (s, gone) = send(
        c.delete(format!("{silences}/{sil_id}"))
            .header(CONTENT_TYPE, "application/json"),
    )
    .await;
    assert_eq!(s, 200, "{gone}");
    assert_eq!(gone["state"], "expired");
    let (s, resolved) = send(
        c.post(&resolve)
            .header(ORIGIN, base.as_str())
            .json(&json!({"actor": "alice", "comment": "swapped"})),
    )
    .await;
    assert_eq!(s, 200, "{resolved}");
    assert_eq!(resolved["state"], "resolved");

    // The CLI sends what the guard asks for.
    let out = std::process::Command::new(common::binary())
        .args([
            "notify",
            "silence",
            "create",
            "--server",
            &base,
            "--rule",
            "xid.*",
            "--duration",
            "1h",
            "--comment",
            "rollout",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sil_id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let out = std::process::Command::new(common::binary())
        .args(["notify", "silence", "expire", &sil_id, "--server", &base])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
