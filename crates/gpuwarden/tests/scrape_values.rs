//! `gpuwarden scrape` on pages it cannot fully judge: an exporter exposing one field
//! judges nothing (exit code 3, every dimension "not measured"), and a physically
//! impossible value is refused at mapping, never shown as a reading.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;

/// Serves `body` as /metrics to every connection, on a free local port.
fn serve(body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                body.len(),
                body
            );
        }
    });
    format!("http://{addr}/metrics")
}

fn scrape(url: &str, json: bool) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gpuwarden"));
    cmd.arg("scrape").arg(url);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

const ONE_FIELD: &str = "DCGM_FI_DEV_GPU_UTIL{gpu=\"0\",UUID=\"GPU-1\",Hostname=\"h\"} 40\n\
                         DCGM_FI_DEV_GPU_UTIL{gpu=\"1\",UUID=\"GPU-2\",Hostname=\"h\"} 9253\n";

#[test]
fn scrape_of_a_one_field_exporter_judges_nothing_and_exits_3() {
    let url = serve(ONE_FIELD);
    let (code, text) = scrape(&url, false);
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("nothing judged"), "{text}");
    assert!(!text.contains("healthy "), "no GPU may read healthy: {text}");
    assert!(text.contains("none"), "the judged column says none: {text}");

    let (code, json) = scrape(&url, true);
    assert_eq!(code, 3, "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["judged_any"], serde_json::json!(false));
    for g in v["gpus"].as_array().unwrap() {
        assert_eq!(g["health"]["state"], "unknown", "{g}");
        assert!(g["health"]["score"].is_null(), "{g}");
        assert_eq!(g["measured_dimensions"], serde_json::json!([]), "{g}");
        assert_eq!(g["not_measured_dimensions"].as_array().unwrap().len(), 5, "{g}");
    }
    // 9,253 % utilisation was refused at mapping: GPU-2 has no utilisation value.
    let g2 = v["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["identity"]["uuid"] == "GPU-2")
        .unwrap();
    assert!(g2["values"].get("DCGM_FI_DEV_GPU_UTIL").is_none(), "{g2}");
    assert_eq!(v["refused"][0]["field"], "DCGM_FI_DEV_GPU_UTIL", "{v}");
}

#[test]
fn scrape_with_temperature_judges_thermal_only() {
    let url = serve("DCGM_FI_DEV_GPU_TEMP{gpu=\"0\",UUID=\"GPU-1\",Hostname=\"h\"} 50\n");
    let (code, json) = scrape(&url, true);
    assert_eq!(code, 0, "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let g = &v["gpus"][0];
    assert_eq!(g["measured_dimensions"], serde_json::json!(["thermal"]), "{g}");
    assert!(g["health"]["dimensions"]["memory"].is_null(), "{g}");
    assert_eq!(g["health"]["dimensions"]["thermal"], serde_json::json!(100.0), "{g}");
}
