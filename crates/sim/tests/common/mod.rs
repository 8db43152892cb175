//! Helpers shared by the integration tests: a small page parser.

#![allow(dead_code)]

use std::collections::BTreeMap;

/// One sample line: name, labels, value, optional timestamp.
#[derive(Debug, Clone)]
pub struct Line {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    pub ts: Option<i64>,
}

/// Parses a dcgm-exporter page strictly: every non-comment line must be
/// `NAME{k="v",...} VALUE[ TS]`. Panics (test failure) on anything else.
pub fn parse(page: &str) -> Vec<Line> {
    let mut out = Vec::new();
    for line in page.lines() {
        if line.starts_with('#') {
            continue;
        }
        let open = line.find('{').unwrap_or_else(|| panic!("no labels: {line}"));
        let close = line.rfind('}').unwrap_or_else(|| panic!("no closing brace: {line}"));
        let name = &line[..open];
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad name {name}"
        );
        let mut labels = BTreeMap::new();
        for pair in line[open + 1..close].split("\",") {
            let (k, v) = pair
                .split_once("=\"")
                .unwrap_or_else(|| panic!("bad label {pair} in {line}"));
            labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
        }
        let rest: Vec<&str> = line[close + 1..].trim_start().split(' ').collect();
        assert!(rest.len() == 1 || rest.len() == 2, "bad value part: {line}");
        let value: f64 = rest[0].parse().unwrap_or_else(|_| panic!("bad value: {line}"));
        let ts = rest.get(1).map(|t| t.parse().expect("timestamp"));
        out.push(Line {
            name: name.to_string(),
            labels,
            value,
            ts,
        });
    }
    out
}

/// The value of `name` for the GPU with `uuid`, if the page has it.
pub fn value(lines: &[Line], name: &str, uuid: &str) -> Option<f64> {
    lines
        .iter()
        .find(|l| l.name == name && l.labels.get("UUID").map(String::as_str) == Some(uuid))
        .map(|l| l.value)
}
