//! `docs/detections/` is generated from the rule catalog: regenerating it into a temporary
//! directory must give exactly the committed files, so docs never drift from the rules.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn md_files(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let p: PathBuf = e.unwrap().path();
            let name = p.file_name()?.to_str()?.to_string();
            name.ends_with(".md")
                .then(|| (name, std::fs::read_to_string(&p).unwrap()))
        })
        .collect()
}

#[test]
fn committed_detection_docs_are_up_to_date() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(common::binary())
        .args(["rules", "docs", "--out"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let fresh = md_files(tmp.path());
    let committed = md_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/detections"));
    assert_eq!(
        fresh.keys().collect::<Vec<_>>(),
        committed.keys().collect::<Vec<_>>(),
        "docs/detections has other pages than the catalog: run `gpuwarden rules docs`"
    );
    for (name, text) in &fresh {
        assert!(
            committed[name] == *text,
            "docs/detections/{name} is out of date: run `gpuwarden rules docs`"
        );
    }
}

#[test]
fn rules_list_names_every_rule_with_its_technique() {
    let out = Command::new(common::binary())
        .args(["rules", "list", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 9);
    assert_eq!(lines[0]["id"], "sec.mining.telemetry");
    assert_eq!(lines[0]["mitre"][0], "T1496");
}
