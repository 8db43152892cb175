//! `/metrics` with authentication on, scraped by a real Prometheus (Debian package) the
//! way operators configure it: a `scraper` token in `authorization.credentials_file`.
//! The scrape token reads `/metrics` and nothing else (no API route, no UI sign-in), and
//! a scrape job without it is refused (`up == 0`).

mod common;

use common::{binary, free_port, start, tools_required, wait_for, KillOnDrop};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn create_token(data: &Path, config: &Path, role: &str) -> String {
    let out = Command::new(binary())
        .args([
            "auth", "token", "create", "--quiet", "--role", role, "--name", role, "--config",
        ])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("run gpuwarden auth token create");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `up` of each scrape job, from Prometheus's query API.
async fn up_by_job(prom: &str) -> Option<Vec<(String, String)>> {
    let v: Value = reqwest::get(format!("{prom}/api/v1/query?query=up"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let mut out: Vec<(String, String)> = v["data"]["result"]
        .as_array()?
        .iter()
        .filter_map(|r| {
            Some((
                r["metric"]["job"].as_str()?.to_string(),
                r["value"][1].as_str()?.to_string(),
            ))
        })
        .collect();
    out.sort();
    Some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_metrics_with_a_scraper_token_that_reads_nothing_else() {
    if Command::new("prometheus").arg("--version").output().is_err() {
        assert!(
            !tools_required(),
            "prometheus is required (GPUWARDEN_REQUIRE_TOOLS=1) but not installed"
        );
        eprintln!("skipping: `prometheus` is not installed (apt-get install prometheus)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("gpuwarden.toml");
    std::fs::write(&config, "[auth]\nenabled = true\n").unwrap();
    let scraper = create_token(&data, &config, "scraper");
    let token_file = dir.path().join("scrape-token");
    std::fs::write(&token_file, &scraper).unwrap();

    let gw = start(
        &data,
        &[
            "--config",
            config.to_str().unwrap(),
            "--nodes",
            "1",
            "--gpus-per-node",
            "2",
            "--scrape-interval",
            "1s",
            "--fault-rate-multiplier",
            "0",
        ],
    )
    .await;
    let base = gw.base.clone();
    let http = reqwest::Client::new();

    // The scrape token reads /metrics …
    let r = http
        .get(format!("{base}/metrics"))
        .bearer_auth(&scraper)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("gpuwarden_"));
    // … and nothing else: no API route, no UI session.
    for path in ["/api/v1/gpus", "/api/v1/incidents", "/api/v1/fleet/summary"] {
        let r = http
            .get(format!("{base}{path}"))
            .bearer_auth(&scraper)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "GET {path} with the scrape token");
    }
    let r = http
        .post(format!("{base}/api/v1/auth/session"))
        .json(&serde_json::json!({ "token": scraper }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "the scrape token must not sign in to the UI");
    assert!(r.headers().get("set-cookie").is_none());
    // Without a token /metrics is refused.
    let r = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // A real Prometheus: one job with the token in a credentials file, one without.
    let target = base.trim_start_matches("http://");
    let prom_port = free_port();
    let prom_config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  \
         - job_name: with-token\n    authorization:\n      credentials_file: {}\n    static_configs:\n      - targets: ['{target}']\n  \
         - job_name: without-token\n    static_configs:\n      - targets: ['{target}']\n",
        token_file.display()
    );
    std::fs::write(dir.path().join("prometheus.yml"), prom_config).unwrap();
    let _prom = KillOnDrop(
        Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("prom").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    let prom = format!("http://127.0.0.1:{prom_port}");
    let up = wait_for(Duration::from_secs(60), "both scrape jobs reported", || {
        let prom = prom.clone();
        async move { up_by_job(&prom).await.filter(|v| v.len() == 2) }
    })
    .await;
    assert_eq!(
        up,
        vec![
            ("with-token".to_string(), "1".to_string()),
            ("without-token".to_string(), "0".to_string())
        ],
        "the job with the scrape token is up, the one without is refused"
    );
    // What Prometheus stored came from gpuwarden's /metrics through the token.
    let stored = wait_for(Duration::from_secs(30), "a gpuwarden series in Prometheus", || {
        let prom = prom.clone();
        async move {
            let v: Value = reqwest::get(format!(
                "{prom}/api/v1/query?query=count(%7Bjob%3D%22with-token%22%2C__name__%3D~%22gpuwarden_.*%22%7D)"
            ))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
            let n: f64 = v["data"]["result"][0]["value"][1].as_str()?.parse().ok()?;
            (n > 0.0).then_some(n)
        }
    })
    .await;
    assert!(stored > 0.0);
}
