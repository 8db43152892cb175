//! Scrape targets: static URLs and Prometheus `file_sd` JSON target lists.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One exporter endpoint to scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    /// Full URL, e.g. `http://gpu-node-1:9400/metrics`.
    pub url: String,
    /// Node name to use when the exporter's samples carry no `Hostname` label.
    pub node_hint: String,
    /// `static`, or the path of the target file it came from.
    pub source: String,
}

impl TargetSpec {
    /// A target from a URL or a bare `host:port` (then `http://` and `/metrics` are
    /// added, as Prometheus does). The node hint is the host part.
    pub fn from_address(address: &str, source: &str) -> TargetSpec {
        let url = if address.contains("://") {
            address.to_string()
        } else {
            format!("http://{address}/metrics")
        };
        let host = url
            .split("://")
            .nth(1)
            .unwrap_or(&url)
            .split(['/', ':'])
            .next()
            .unwrap_or("")
            .to_string();
        TargetSpec {
            url,
            node_hint: host,
            source: source.to_string(),
        }
    }
}

/// A target file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TargetFileError {
    #[error("reading target file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("target file {path} is not Prometheus file_sd JSON ([{{\"targets\": [\"host:9400\"], \"labels\": {{...}}}}]): {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Deserialize)]
struct FileSdGroup {
    targets: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Reads a `file_sd` JSON file. A `node` or `__meta_node` label, when present, becomes
/// the targets' node hint.
pub fn load_target_file(path: &Path) -> Result<Vec<TargetSpec>, TargetFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TargetFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let groups: Vec<FileSdGroup> = serde_json::from_str(&text).map_err(|source| TargetFileError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    let source = path.display().to_string();
    let mut out = Vec::new();
    for group in groups {
        for address in &group.targets {
            let mut spec = TargetSpec::from_address(address, &source);
            if let Some(node) = group.labels.get("node").or_else(|| group.labels.get("__meta_node")) {
                spec.node_hint = node.clone();
            }
            out.push(spec);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_address_gets_scheme_and_path() {
        let t = TargetSpec::from_address("gpu-node-1:9400", "static");
        assert_eq!(t.url, "http://gpu-node-1:9400/metrics");
        assert_eq!(t.node_hint, "gpu-node-1");
    }

    #[test]
    fn file_sd_with_node_label() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        std::fs::write(
            &path,
            r#"[{"targets":["10.0.0.1:9400","http://b:9400/metrics"],"labels":{"node":"n1"}},{"targets":["c:9400"]}]"#,
        )
        .unwrap();
        let t = load_target_file(&path).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].node_hint, "n1");
        assert_eq!(t[1].url, "http://b:9400/metrics");
        assert_eq!(t[2].node_hint, "c");
    }

    #[test]
    fn malformed_target_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.json");
        std::fs::write(&path, "{not json").unwrap();
        let err = load_target_file(&path).unwrap_err().to_string();
        assert!(err.contains("bad.json"), "{err}");
    }
}
