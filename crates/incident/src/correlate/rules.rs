//! The correlation rule file (`rules/correlation.toml`): loading, validation, and the
//! question "which cause does this finding belong to".

use crate::duration_serde;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// The built-in rule file, compiled in.
pub const BUILTIN: &str = include_str!("../../rules/correlation.toml");

/// Why a correlation rule file was refused. Each message names the rule and what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorrelationError {
    #[error("reading correlation rules {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("correlation rules are not valid TOML or have unknown keys: {0}")]
    Parse(String),
    #[error("correlation cause {0:?}: the id must start with \"cause.\" and use only a-z, 0-9, '_' and '.'")]
    BadCauseId(String),
    #[error("correlation link {0:?}: the id must use only a-z, 0-9 and '_'")]
    BadLinkId(String),
    #[error("correlation rule {0:?} is defined twice; ids must be unique")]
    Duplicate(String),
    #[error("correlation cause {id:?}: {what} is empty; say what the cause is and why its signals follow from it")]
    Empty { id: String, what: &'static str },
    #[error(
        "correlation cause {id:?}: signal pattern {pattern:?} is not a rule id (a-z, 0-9, '_', '.', '*'; no spaces)"
    )]
    BadPattern { id: String, pattern: String },
    #[error("correlation cause {id:?}: signal {pattern:?} mixes security and health rules; a cause lists only security rules (\"sec.*\") or only health rules — relate the two kinds with [[link]]")]
    MixedCause { id: String, pattern: String },
    #[error("correlation cause {id:?}: node_wide_min_gpus must be at least 2 (got {got})")]
    NodeWideTooSmall { id: String, got: u32 },
    #[error("correlation link {id:?}: after_cause {cause:?} is not a health cause of this file")]
    UnknownCause { id: String, cause: String },
    #[error("correlation link {id:?}: {pattern:?} is not a security rule id (must start with \"sec.\")")]
    NotSecurity { id: String, pattern: String },
}

/// One cause: the signals (rule ids) that are consequences of it, in causal order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cause {
    pub id: String,
    pub title: String,
    pub explanation: String,
    pub signals: Vec<String>,
    /// Signals that are what this cause does to the GPU (lower clocks, less power) but
    /// may also have causes of their own: they join an incident of this cause on their
    /// GPU when one is active or shows at the same evaluation, and otherwise go where
    /// they would anyway.
    #[serde(default)]
    pub consequences: Vec<String>,
    #[serde(default)]
    pub node_wide_min_gpus: Option<u32>,
}

impl Cause {
    /// Position of `rule` in the causal chain, if this cause lists it.
    pub fn position(&self, rule: &str) -> Option<usize> {
        self.signals.iter().position(|p| glob_match(p, rule))
    }

    /// Whether `rule` is one of this cause's consequences.
    pub fn has_consequence(&self, rule: &str) -> bool {
        self.consequences.iter().any(|p| glob_match(p, rule))
    }

    /// Whether this cause groups security findings (every signal a `sec.` rule). A cause
    /// is either all security or all health: the file refuses a mix.
    pub fn is_security(&self) -> bool {
        self.signals.iter().all(|p| p.starts_with("sec."))
    }

    /// The explanation on one line (the file wraps it for reading).
    pub fn explanation_line(&self) -> String {
        self.explanation.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// A security finding that follows a health cause on the same GPU or node.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub id: String,
    pub security: Vec<String>,
    pub after_cause: String,
    #[serde(with = "duration_serde")]
    pub within: Duration,
    pub note: String,
}

/// The whole rule file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CorrelationRules {
    #[serde(default, rename = "cause")]
    pub causes: Vec<Cause>,
    #[serde(default, rename = "link")]
    pub links: Vec<Link>,
}

impl CorrelationRules {
    /// The built-in rules (`rules/correlation.toml`), validated by the tests.
    pub fn builtin() -> Self {
        // The built-in file is checked by `builtin_rules_are_valid`; an empty rule set
        // (no correlation) is the safe fallback, never a panic.
        Self::parse(BUILTIN).unwrap_or_default()
    }

    /// No correlation at all: one incident per rule and GPU, as before correlation.
    pub fn none() -> Self {
        Self::default()
    }

    /// Parses and validates a rule file's text.
    pub fn parse(text: &str) -> Result<Self, CorrelationError> {
        let rules: CorrelationRules = toml::from_str(text).map_err(|e| CorrelationError::Parse(e.to_string()))?;
        rules.validate()?;
        Ok(rules)
    }

    /// Reads, parses and validates a rule file.
    pub fn load(path: &Path) -> Result<Self, CorrelationError> {
        let text = std::fs::read_to_string(path).map_err(|e| CorrelationError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&text)
    }

    fn validate(&self) -> Result<(), CorrelationError> {
        let mut ids = BTreeSet::new();
        for c in &self.causes {
            let id_ok = c.id.starts_with("cause.")
                && c.id.len() > "cause.".len()
                && c.id
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_' || ch == '.');
            if !id_ok {
                return Err(CorrelationError::BadCauseId(c.id.clone()));
            }
            if !ids.insert(c.id.clone()) {
                return Err(CorrelationError::Duplicate(c.id.clone()));
            }
            for (what, text) in [("title", &c.title), ("explanation", &c.explanation)] {
                if text.trim().is_empty() {
                    return Err(CorrelationError::Empty { id: c.id.clone(), what });
                }
            }
            if c.signals.is_empty() {
                return Err(CorrelationError::Empty {
                    id: c.id.clone(),
                    what: "signals",
                });
            }
            let security = c.is_security();
            for p in c.signals.iter().chain(&c.consequences) {
                if !is_pattern(p) {
                    return Err(CorrelationError::BadPattern {
                        id: c.id.clone(),
                        pattern: p.clone(),
                    });
                }
                // A wildcard of a health cause ("*.gpu_temp") never claims a security
                // finding: `cause_of` only looks at causes of the finding's kind.
                if p.starts_with("sec.") != security {
                    return Err(CorrelationError::MixedCause {
                        id: c.id.clone(),
                        pattern: p.clone(),
                    });
                }
            }
            if let Some(n) = c.node_wide_min_gpus {
                if n < 2 {
                    return Err(CorrelationError::NodeWideTooSmall {
                        id: c.id.clone(),
                        got: n,
                    });
                }
            }
        }
        for l in &self.links {
            let id_ok = !l.id.is_empty()
                && l.id
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_');
            if !id_ok {
                return Err(CorrelationError::BadLinkId(l.id.clone()));
            }
            if !ids.insert(l.id.clone()) {
                return Err(CorrelationError::Duplicate(l.id.clone()));
            }
            if !self.causes.iter().any(|c| c.id == l.after_cause && !c.is_security()) {
                return Err(CorrelationError::UnknownCause {
                    id: l.id.clone(),
                    cause: l.after_cause.clone(),
                });
            }
            if l.security.is_empty() {
                return Err(CorrelationError::Empty {
                    id: l.id.clone(),
                    what: "security",
                });
            }
            if l.note.trim().is_empty() {
                return Err(CorrelationError::Empty {
                    id: l.id.clone(),
                    what: "note",
                });
            }
            for p in &l.security {
                if !is_pattern(p) || !p.starts_with("sec.") {
                    return Err(CorrelationError::NotSecurity {
                        id: l.id.clone(),
                        pattern: p.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The cause a finding of `rule` belongs to: the first in file order that lists it.
    /// A security rule only ever belongs to a security cause, a health rule to a health
    /// cause: the two kinds are never grouped.
    pub fn cause_of(&self, rule: &str) -> Option<&Cause> {
        let security = rule.starts_with("sec.");
        self.causes
            .iter()
            .find(|c| c.is_security() == security && c.position(rule).is_some())
    }

    /// The cause with this id.
    pub fn cause(&self, id: &str) -> Option<&Cause> {
        self.causes.iter().find(|c| c.id == id)
    }

    /// The links a security finding of `rule` may follow.
    pub fn links_of<'a>(&'a self, rule: &'a str) -> impl Iterator<Item = &'a Link> + 'a {
        self.links
            .iter()
            .filter(move |l| l.security.iter().any(|p| glob_match(p, rule)))
    }
}

fn is_pattern(p: &str) -> bool {
    !p.is_empty()
        && p.chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '_' | '.' | '*'))
}

/// `*` matches any run of characters (also none); everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_rules_are_valid() {
        let r = CorrelationRules::parse(BUILTIN).expect("built-in correlation rules");
        assert!(r.causes.len() >= 5);
        assert_eq!(CorrelationRules::builtin(), r);
    }

    #[test]
    fn glob_matches_runs_of_characters() {
        assert!(glob_match("anomaly.*.gpu_temp", "anomaly.series.gpu_temp"));
        assert!(glob_match("anomaly.*.gpu_temp", "anomaly.cohort.gpu_temp"));
        assert!(!glob_match("anomaly.*.gpu_temp", "anomaly.cohort.memory_temp"));
        assert!(!glob_match("anomaly.*.gpu_temp", "anomaly.gpu_temp"));
        assert!(glob_match(
            "anomaly.*.nvlink_crc_*",
            "anomaly.series.nvlink_crc_flit_rate"
        ));
        assert!(glob_match("xid.48", "xid.48"));
        assert!(!glob_match("xid.48", "xid.480"));
        assert!(glob_match("*", "anything"));
    }

    /// Each built-in cause: the signals it must hold (true cases) and look-alikes it must
    /// not (false cases).
    #[test]
    fn builtin_causes_claim_their_signals_and_nothing_else() {
        let r = CorrelationRules::builtin();
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "cause.thermal",
                &[
                    "anomaly.series.gpu_temp",
                    "anomaly.cohort.gpu_temp",
                    "anomaly.cohort.memory_temp",
                    "thermal.memory",
                    "thermal.margin",
                    "throttle.thermal",
                    "thermal.slowdown",
                ],
                &["throttle.power_brake", "anomaly.series.power_usage", "thermal.marginal"],
            ),
            (
                "cause.memory",
                &[
                    "ecc.sbe_rate",
                    "ecc.dbe",
                    "xid.48",
                    "xid.63",
                    "xid.64",
                    "remap.correctable_rows",
                    "remap.uncorrectable_rows",
                    "remap.failure",
                    "anomaly.series.ecc_sbe_rate",
                ],
                &["xid.79", "xid.13", "xid.31", "pcie.replay"],
            ),
            (
                "cause.bus",
                &["xid.79", "gpu.fallen_off_bus"],
                &["xid.43", "target.gpus_vanished", "sec.drift.inventory"],
            ),
            (
                "cause.nvlink",
                &[
                    "nvlink.crc",
                    "nvlink.replay",
                    "nvlink.recovery",
                    "anomaly.series.nvlink_crc_flit_rate",
                    "xid.74",
                ],
                &["pcie.replay", "anomaly.series.nvlink_tx"],
            ),
            (
                "cause.pcie",
                &["pcie.replay", "anomaly.series.pcie_replay_rate"],
                &["anomaly.series.pcie_tx", "nvlink.replay"],
            ),
            (
                "cause.power",
                &["throttle.power_brake", "throttle.sw_power_cap", "power.over_limit"],
                &["throttle.thermal", "anomaly.series.power_usage"],
            ),
            (
                "cause.slow_clocks",
                &["clocks.straggler", "anomaly.cohort.sm_clock"],
                &["anomaly.cohort.mem_clock"],
            ),
        ];
        for (cause, yes, no) in cases {
            for rule in *yes {
                assert_eq!(
                    r.cause_of(rule).map(|c| c.id.as_str()),
                    Some(*cause),
                    "{rule} should be {cause}"
                );
            }
            for rule in *no {
                assert_ne!(
                    r.cause_of(rule).map(|c| c.id.as_str()),
                    Some(*cause),
                    "{rule} must not be {cause}"
                );
            }
        }
        // Uncorrelated: application XIDs, utilisation, configuration drift.
        for rule in [
            "xid.13",
            "xid.31",
            "anomaly.cohort.gpu_util",
            "sec.drift.inventory",
            "sec.drift.driver_floor",
            "sec.drift.power_limit",
            "sec.drift.config",
        ] {
            assert!(r.cause_of(rule).is_none(), "{rule}");
        }
        // The workload on a GPU: mining by an unknown or unapproved workload is one
        // security cause; never a health cause, and health rules never join it.
        for rule in [
            "sec.use.ghost",
            "sec.use.unapproved_namespace",
            "sec.use.off_hours",
            "sec.mining.telemetry",
            "sec.behaviour.off_hours_change",
        ] {
            let c = r.cause_of(rule).map(|c| c.id.as_str());
            assert_eq!(c, Some("cause.unauthorized_workload"), "{rule}");
        }
        for c in &r.causes {
            for rule in ["thermal.margin", "ecc.dbe", "xid.79", "anomaly.cohort.gpu_util"] {
                assert!(!(c.is_security() && c.position(rule).is_some()), "{rule} in {}", c.id);
            }
        }
        // Causal order: the temperature climb comes before the slowdown.
        let thermal = r.cause("cause.thermal").expect("thermal");
        assert!(thermal.position("anomaly.series.gpu_temp") < thermal.position("thermal.slowdown"));
    }

    #[test]
    fn builtin_link_ties_inventory_change_to_bus_loss_only() {
        let r = CorrelationRules::builtin();
        let links: Vec<&str> = r
            .links_of("sec.drift.inventory")
            .map(|l| l.after_cause.as_str())
            .collect();
        assert_eq!(links, ["cause.bus"]);
        assert_eq!(r.links_of("sec.mining.telemetry").count(), 0);
        assert_eq!(r.links_of("xid.79").count(), 0);
    }

    #[test]
    fn invalid_files_are_refused_with_the_rule_named() {
        let cause = |extra: &str| {
            format!("[[cause]]\nid = \"cause.x\"\ntitle = \"X\"\nexplanation = \"why\"\nsignals = [\"a.b\"]\n{extra}")
        };
        let err = |text: &str| CorrelationRules::parse(text).expect_err(text);
        assert!(matches!(err(&cause("color = 1")), CorrelationError::Parse(_)));
        assert!(matches!(
            err(&cause("node_wide_min_gpus = 1")),
            CorrelationError::NodeWideTooSmall { .. }
        ));
        let twice = format!("{}\n{}", cause(""), cause(""));
        assert_eq!(err(&twice), CorrelationError::Duplicate("cause.x".into()));
        let bad_id = cause("").replace("cause.x", "thermal");
        assert!(matches!(err(&bad_id), CorrelationError::BadCauseId(_)));
        let mixed = cause("").replace("\"a.b\"", "\"a.b\", \"sec.mining.telemetry\"");
        let e = err(&mixed);
        assert!(matches!(e, CorrelationError::MixedCause { .. }));
        assert!(e.to_string().contains("cause.x"), "{e}");
        let mixed = cause("").replace("\"a.b\"", "\"sec.mining.telemetry\", \"a.b\"");
        assert!(matches!(err(&mixed), CorrelationError::MixedCause { .. }));
        // A cause of security rules only is fine; a link may not follow it.
        let sec = cause("").replace("\"a.b\"", "\"sec.mining.telemetry\", \"sec.use.*\"");
        let rules = CorrelationRules::parse(&sec).expect("security-only cause");
        assert!(rules.causes[0].is_security());
        let link_to_sec = format!(
            "{sec}\n[[link]]\nid = \"l\"\nsecurity = [\"sec.drift.inventory\"]\nafter_cause = \"cause.x\"\nwithin = \"5m\"\nnote = \"n\"\n"
        );
        assert!(matches!(err(&link_to_sec), CorrelationError::UnknownCause { .. }));
        let spaces = cause("").replace("\"a.b\"", "\"a b\"");
        assert!(matches!(err(&spaces), CorrelationError::BadPattern { .. }));
        let no_signals = cause("").replace("[\"a.b\"]", "[]");
        assert!(matches!(
            err(&no_signals),
            CorrelationError::Empty { what: "signals", .. }
        ));
        let link = |after: &str, sec: &str| {
            format!(
                "{}\n[[link]]\nid = \"l\"\nsecurity = [\"{sec}\"]\nafter_cause = \"{after}\"\nwithin = \"5m\"\nnote = \"n\"\n",
                cause("")
            )
        };
        assert!(CorrelationRules::parse(&link("cause.x", "sec.drift.inventory")).is_ok());
        assert!(matches!(
            err(&link("cause.y", "sec.drift.inventory")),
            CorrelationError::UnknownCause { .. }
        ));
        assert!(matches!(
            err(&link("cause.x", "xid.79")),
            CorrelationError::NotSecurity { .. }
        ));
        let bad_within = link("cause.x", "sec.a").replace("\"5m\"", "\"soon\"");
        assert!(matches!(err(&bad_within), CorrelationError::Parse(_)));
    }

    #[test]
    fn load_names_the_missing_file() {
        let e = CorrelationRules::load(Path::new("/nonexistent/correlation.toml")).expect_err("missing");
        assert!(e.to_string().contains("/nonexistent/correlation.toml"), "{e}");
    }
}
