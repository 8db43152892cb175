//! The exported Prometheus alerting rules: the committed file is valid (`promtool check
//! rules`), its unit tests pass (`promtool test rules`: cases that fire and cases that do
//! not, for every alert), and it equals a fresh `gpuwarden rules export`.
//!
//! Skips when `promtool` (Debian package `prometheus`) is missing, unless
//! GPUWARDEN_REQUIRE_TOOLS=1 (set by scripts/test.sh), then fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn promtool() -> Option<&'static str> {
    let ok = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !common::tools_required(),
            "promtool is required (GPUWARDEN_REQUIRE_TOOLS=1) but not installed"
        );
        eprintln!("skipping: promtool not installed (apt-get install prometheus)");
        return None;
    }
    Some("promtool")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("command runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn committed_rules_equal_a_fresh_export() {
    let dir = repo().join("deploy/prometheus");
    let out = Command::new(common::binary())
        .args(["rules", "export", "--format", "prometheus", "--config"])
        .arg(dir.join("gpuwarden-export.toml"))
        .output()
        .expect("gpuwarden runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let committed = std::fs::read_to_string(dir.join("gpuwarden-rules.yml")).unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout) == committed,
        "deploy/prometheus/gpuwarden-rules.yml is out of date: run\n  gpuwarden rules export --format prometheus \
         --config deploy/prometheus/gpuwarden-export.toml --out deploy/prometheus/gpuwarden-rules.yml"
    );
}

#[test]
fn promtool_checks_the_rules_and_their_unit_tests_pass() {
    let Some(tool) = promtool() else { return };
    let dir = repo().join("deploy/prometheus");
    let check = run(Command::new(tool)
        .args(["check", "rules"])
        .arg(dir.join("gpuwarden-rules.yml")));
    assert!(check.contains("SUCCESS"), "{check}");
    let test = run(Command::new(tool)
        .args(["test", "rules"])
        .arg(dir.join("gpuwarden-rules.test.yml")));
    assert!(test.contains("SUCCESS"), "{test}");
}

#[test]
fn every_exported_alert_has_a_unit_test() {
    let dir = repo().join("deploy/prometheus");
    let rules = std::fs::read_to_string(dir.join("gpuwarden-rules.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("gpuwarden-rules.test.yml")).unwrap();
    for line in rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")) {
        assert!(
            tests.contains(&format!("alertname: {line}")),
            "no promtool test for {line}"
        );
    }
}
