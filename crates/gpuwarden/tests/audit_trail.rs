//! The audit trail through the real binary (docs/api.md, "Audit trail"): resolving an
//! incident, creating and expiring a silence and a refused cross-origin form post are
//! recorded with who, what, from where and the result; `GET /api/v1/audit` lists and
//! filters them; the records reach the SIEM sink named in `[audit] forward` even while a
//! silence matches everything; `gpuwarden audit verify` passes on the intact trail and
//! names the record when one is modified, removed or two are swapped. A CLI change
//! (`gpuwarden notify test`) joins the same chain.

mod common;

use common::{binary, get_json, post_json, start, wait_for};
use reqwest::header::{CONTENT_TYPE, ORIGIN};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn audit(args: &[&str], data_dir: &Path) -> (i32, String) {
    let out = Command::new(binary())
        .arg("audit")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("run gpuwarden audit");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The only file of the trail.
fn trail_file(data_dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(data_dir.join("audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

fn seq_of(line: &str) -> u64 {
    serde_json::from_str::<Value>(line).unwrap()["seq"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_and_denials_are_recorded_listed_forwarded_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let siem = dir.path().join("siem.ndjson");
    let config = dir.path().join("gpuwarden.toml");
    std::fs::write(
        &config,
        format!(
            "[notify]\nretry_initial = \"100ms\"\n\n[notify.sinks.siem]\ntype = \"ecs_file\"\npath = \"{}\"\n\n[audit]\nforward = [\"siem\"]\n",
            siem.display()
        ),
    )
    .unwrap();
    let gw = start(
        &data,
        &[
            "--config",
            config.to_str().unwrap(),
            "--scrape-interval",
            "1s",
            "--seed",
            "5",
            "--fault-rate-multiplier",
            "0",
            "--nodes",
            "1",
        ],
    )
    .await;
    let base = gw.base.clone();
    let c = reqwest::Client::new();

    // An incident to resolve.
    let uuid = wait_for(Duration::from_secs(30), "8 GPUs", || async {
        let b = get_json(&format!("{base}/api/v1/gpus")).await.ok()?;
        (b["total"] == 8).then(|| b["gpus"][1]["identity"]["uuid"].as_str().unwrap().to_string())
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
        b["incidents"].as_array()?.first()?["id"].as_str().map(str::to_string)
    })
    .await;

    // A silence matching everything: forwarded audit records must pass it.
    let (status, sil) = post_json(
        &format!("{base}/api/v1/silences"),
        json!({"matchers": {"rules": ["*"]}, "author": "alice", "comment": "maintenance", "duration": "1h"}),
    )
    .await;
    assert_eq!(status, 201, "{sil}");
    let sil_id = sil["id"].as_str().unwrap().to_string();

    let (status, body) = post_json(
        &format!("{base}/api/v1/incidents/{incident}/resolve"),
        json!({"actor": "alice", "comment": "replaced the GPU"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let resp = c
        .delete(format!("{base}/api/v1/silences/{sil_id}"))
        .header(CONTENT_TYPE, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // What another web page would send: a form post (415), JSON from its origin (403).
    let form = c
        .post(format!("{base}/api/v1/incidents/{incident}/ack"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(ORIGIN, "https://evil.example")
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 415);
    let foreign = c
        .post(format!("{base}/api/v1/silences"))
        .header(ORIGIN, "https://evil.example")
        .json(&json!({"matchers": {}, "author": "evil", "comment": "shh", "duration": "8760h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);

    // Denials are written by the writer thread: wait for them.
    let all = wait_for(Duration::from_secs(10), "the denials in the audit trail", || async {
        let b = get_json(&format!("{base}/api/v1/audit?limit=100")).await.ok()?;
        let denied = b["records"]
            .as_array()?
            .iter()
            .filter(|r| r["result"] == "denied")
            .count();
        (denied == 2).then_some(b)
    })
    .await;
    let records = all["records"].as_array().unwrap();
    let find = |action: &str| -> &Value {
        records
            .iter()
            .find(|r| r["action"] == action)
            .unwrap_or_else(|| panic!("no {action} in {all:#}"))
    };
    let resolve = find("incident.resolve");
    assert_eq!(resolve["target"], incident.as_str(), "{resolve}");
    assert_eq!(resolve["actor"], "anonymous", "{resolve}");
    assert_eq!(resolve["role"], "admin", "{resolve}");
    assert_eq!(resolve["result"], "ok", "{resolve}");
    assert_eq!(resolve["status"], 200, "{resolve}");
    assert!(
        resolve["client"].as_str().is_some_and(|c| c.starts_with("127.0.0.1:")),
        "{resolve}"
    );
    assert_eq!(find("silence.create")["target"], sil_id.as_str());
    assert_eq!(find("silence.expire")["target"], sil_id.as_str());
    assert_eq!(find("simulation.fault_inject")["status"], 201);
    let denials: Vec<&Value> = records.iter().filter(|r| r["action"] == "request.denied").collect();
    let form_denial = denials.iter().find(|r| r["status"] == 415).expect("the form post");
    assert_eq!(form_denial["detail"], "unsupported_media_type");
    assert_eq!(
        form_denial["target"],
        format!("POST /api/v1/incidents/{incident}/ack").as_str()
    );
    assert!(form_denial["client"]
        .as_str()
        .is_some_and(|c| c.starts_with("127.0.0.1:")));
    let cross = denials
        .iter()
        .find(|r| r["status"] == 403)
        .expect("the cross-origin post");
    assert_eq!(cross["detail"], "cross_origin");
    // Newest first, chained.
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "{seqs:?}");
    assert_eq!(records[0]["prev"], records[1]["hash"]);

    // Filters and paging.
    let silences = get_json(&format!("{base}/api/v1/audit?action=silence.*"))
        .await
        .unwrap();
    assert_eq!(silences["records"].as_array().unwrap().len(), 2, "{silences}");
    let denied = get_json(&format!("{base}/api/v1/audit?result=denied")).await.unwrap();
    assert_eq!(denied["records"].as_array().unwrap().len(), 2, "{denied}");
    let mine = get_json(&format!("{base}/api/v1/audit?actor=nobody")).await.unwrap();
    assert_eq!(mine["records"].as_array().unwrap().len(), 0, "{mine}");
    let page1 = get_json(&format!("{base}/api/v1/audit?limit=2")).await.unwrap();
    let next = page1["next_before"].as_u64().expect("a next page");
    let page2 = get_json(&format!("{base}/api/v1/audit?limit=2&before={next}"))
        .await
        .unwrap();
    assert_eq!(page2["records"][0]["seq"].as_u64(), Some(next - 1), "{page2}");
    let future = get_json(&format!("{base}/api/v1/audit?from=-1m&to=now")).await.unwrap();
    assert_eq!(future["records"].as_array().unwrap().len(), records.len());
    let (status, bad) = {
        let r = c.get(format!("{base}/api/v1/audit?result=maybe")).send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(
        (status, bad["error"]["code"].as_str()),
        (400, Some("bad_result")),
        "{bad}"
    );

    // The SIEM sink got the records, the silence notwithstanding.
    let forwarded = wait_for(Duration::from_secs(20), "the audit records in the SIEM file", || {
        let siem = siem.clone();
        async move {
            let text = std::fs::read_to_string(&siem).ok()?;
            let docs: Vec<Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|d| d["gpuwarden"]["labels"]["audit.seq"].is_string())
                .collect();
            let actions: Vec<String> = docs
                .iter()
                .filter_map(|d| d["gpuwarden"]["labels"]["event.action"].as_str().map(str::to_string))
                .collect();
            (actions.iter().any(|a| a == "silence.create")
                && actions.iter().filter(|a| *a == "request.denied").count() == 2)
                .then_some(docs)
        }
    })
    .await;
    let created = forwarded
        .iter()
        .find(|d| d["gpuwarden"]["labels"]["event.action"] == "silence.create")
        .unwrap();
    assert_eq!(created["gpuwarden"]["labels"]["user.name"], "anonymous", "{created}");
    assert_eq!(created["gpuwarden"]["labels"]["event.outcome"], "success", "{created}");

    // A change made by a command on the host (`notify test`) joins the same chain.
    drop(gw);
    let cli_config = dir.path().join("cli.toml");
    std::fs::write(
        &cli_config,
        format!(
            "data_dir = \"{}\"\n[notify.sinks.siem]\ntype = \"ecs_file\"\npath = \"{}\"\n",
            data.display(),
            siem.display()
        ),
    )
    .unwrap();
    let out = Command::new(binary())
        .args(["notify", "test", "siem", "--config"])
        .arg(&cli_config)
        .env("USER", "carol")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (code, out) = audit(&["show", "--json", "--action", "notification.test"], &data);
    assert_eq!(code, 0, "{out}");
    let rec: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(
        (
            &rec["actor"],
            &rec["role"],
            &rec["client"],
            &rec["target"],
            &rec["result"]
        ),
        (
            &json!("cli:carol"),
            &json!("local"),
            &json!("cli"),
            &json!("siem"),
            &json!("ok")
        ),
        "{rec}"
    );

    // Intact.
    let (code, out) = audit(&["verify"], &data);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("intact") && out.contains("head hash"), "{out}");
    let (code, out) = audit(&["show", "--limit", "3", "--action", "request.denied"], &data);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("cross_origin") && out.contains("unsupported_media_type"),
        "{out}"
    );

    let path = trail_file(&data);
    let original = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<String> = original.lines().map(str::to_string).collect();
    assert!(lines.len() >= 6, "{original}");
    let write = |ls: &[String]| std::fs::write(&path, ls.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();

    // One byte of a record changed: the resolve's target.
    let i = lines.iter().position(|l| l.contains("\"incident.resolve\"")).unwrap();
    let mut edited = lines.clone();
    let at = edited[i].find(&incident).unwrap() + incident.len() - 1;
    let mut bytes = edited[i].clone().into_bytes();
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    edited[i] = String::from_utf8(bytes).unwrap();
    write(&edited);
    let (code, out) = audit(&["verify"], &data);
    assert_eq!(code, 1, "{out}");
    let seq = seq_of(&lines[i]);
    assert!(
        out.contains(&format!("record {seq} ")) && out.contains("modified") && out.contains(&format!("line {}", i + 1)),
        "{out}"
    );

    // One record removed.
    let mut removed = lines.clone();
    let gone = removed.remove(2);
    write(&removed);
    let (code, out) = audit(&["verify"], &data);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("record {} is missing", seq_of(&gone))), "{out}");

    // Two records swapped.
    let mut swapped = lines.clone();
    swapped.swap(3, 4);
    write(&swapped);
    let (code, out) = audit(&["verify"], &data);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("record {} ", seq_of(&lines[3]))) && out.contains("out of order"),
        "{out}"
    );

    // Restored: intact again.
    std::fs::write(&path, &original).unwrap();
    assert_eq!(audit(&["verify"], &data).0, 0);
}
