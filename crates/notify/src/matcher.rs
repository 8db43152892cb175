//! Matchers over a [`Notification`]: what routes and silences select by (severity, kind,
//! rule, node, namespace, GPU, transition). An empty list matches anything; several
//! values in one list are alternatives; different lists must all match.
//!
//! Patterns are globs where `*` stands for any run of characters (`xid.*`, `node-1*`):
//! enough for rule families and node groups, without the surprises of regexes in
//! operators' hands.

use crate::message::{Notification, Transition};
use gpuwarden_model::{FindingKind, Severity};
use serde::{Deserialize, Serialize};

/// A selection of notifications.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matchers {
    /// At least this severity (info < warning < critical < fatal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<Severity>,
    /// Finding kinds: health, anomaly, prediction, security.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<FindingKind>,
    /// Rule id globs, e.g. `xid.*`, `ecc.dbe`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
    /// Node name globs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    /// Kubernetes namespace globs (a notification without a namespace never matches a
    /// non-empty list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// GPU UUID globs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<String>,
    /// Transitions: opened, reopened, escalated, flapped, acknowledged, resolved, detected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transitions: Vec<Transition>,
}

impl Matchers {
    pub fn matches(&self, n: &Notification) -> bool {
        self.min_severity.is_none_or(|s| n.severity >= s)
            && (self.kinds.is_empty() || self.kinds.contains(&n.kind))
            && any_glob(&self.rules, Some(&n.rule))
            && any_glob(&self.nodes, Some(&n.node))
            && any_glob(&self.namespaces, n.namespace.as_deref())
            && any_glob(&self.gpus, n.gpu.as_deref())
            && (self.transitions.is_empty() || self.transitions.contains(&n.transition))
    }

    /// True when nothing is constrained (matches everything).
    pub fn is_empty(&self) -> bool {
        *self == Matchers::default()
    }
}

fn any_glob(patterns: &[String], value: Option<&str>) -> bool {
    if patterns.is_empty() {
        return true;
    }
    match value {
        Some(v) => patterns.iter().any(|p| glob(p, v)),
        None => false,
    }
}

/// `*` matches any run of characters (also empty); everything else is literal.
pub fn glob(pattern: &str, value: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = value.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty(); // no `*` at all: exact match
    };
    for m in middle {
        match rest.find(m) {
            Some(i) => rest = &rest[i + m.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::tests::sample;

    #[test]
    fn globs() {
        assert!(glob("xid.*", "xid.79"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXXbYc"));
        assert!(!glob("a*b*c", "aXXcYb"));
        assert!(glob("ecc.dbe", "ecc.dbe"));
        assert!(!glob("ecc.dbe", "ecc.dbe2"));
        assert!(!glob("ab*ba", "aba"));
    }

    #[test]
    fn all_lists_must_match() {
        let n = sample(Transition::Opened); // critical health ecc.dbe on node-a, ns ml-team
        let m = Matchers {
            min_severity: Some(Severity::Critical),
            rules: vec!["xid.*".into(), "ecc.*".into()],
            namespaces: vec!["ml-*".into()],
            ..Default::default()
        };
        assert!(m.matches(&n));
        let m = Matchers {
            min_severity: Some(Severity::Fatal),
            ..Default::default()
        };
        assert!(!m.matches(&n));
        let m = Matchers {
            transitions: vec![Transition::Resolved],
            ..Default::default()
        };
        assert!(!m.matches(&n));
        assert!(Matchers::default().matches(&n));
    }
}
