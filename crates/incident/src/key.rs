//! The dedup key that groups findings into one incident.

use gpuwarden_model::Finding;

/// `"{rule}@{gpu uuid}"` for a GPU finding, `"{rule}@node:{node}"` for a node finding.
///
/// The `node:` prefix keeps a node-level key from ever colliding with a GPU key (a GPU
/// UUID never starts with `node:`).
pub fn dedup_key(finding: &Finding) -> String {
    match &finding.gpu {
        Some(gpu) => format!("{}@{}", finding.rule, gpu),
        None => format!("{}@node:{}", finding.rule, finding.node),
    }
}
