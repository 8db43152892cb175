//! The rule catalog: one TOML file per rule under `crates/security/rules/`, embedded in
//! the binary, with the config's `[security.rules]` overrides merged in.
//!
//! A rule file is both the engine's input (severity, action, thresholds) and the
//! documentation's source (what, why, risk, playbook, SIEM queries): `gpuwarden rules
//! docs` renders `docs/detections/` from it, so the two cannot drift apart. The logic of
//! each rule is code (`crate::rules`); the file says what that code's knobs are, with
//! their defaults, units and reasons.

use crate::error::SecurityError;
use gpuwarden_model::{Action, Severity};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The built-in rule files, in catalog order (file name, text).
pub const BUILTIN_FILES: &[(&str, &str)] = &[
    ("mining.telemetry.toml", include_str!("../rules/mining.telemetry.toml")),
    (
        "use.unapproved_namespace.toml",
        include_str!("../rules/use.unapproved_namespace.toml"),
    ),
    ("use.off_hours.toml", include_str!("../rules/use.off_hours.toml")),
    ("use.ghost.toml", include_str!("../rules/use.ghost.toml")),
    (
        "behaviour.off_hours_change.toml",
        include_str!("../rules/behaviour.off_hours_change.toml"),
    ),
    (
        "drift.driver_floor.toml",
        include_str!("../rules/drift.driver_floor.toml"),
    ),
    ("drift.config.toml", include_str!("../rules/drift.config.toml")),
    (
        "drift.power_limit.toml",
        include_str!("../rules/drift.power_limit.toml"),
    ),
    ("drift.inventory.toml", include_str!("../rules/drift.inventory.toml")),
];

/// A MITRE ATT&CK technique a rule maps to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Technique {
    /// Technique id, e.g. `T1496`.
    pub id: String,
    /// Technique name, e.g. `Resource Hijacking`.
    pub name: String,
    /// ATT&CK tactic, e.g. `Impact`.
    pub tactic: String,
}

impl Technique {
    /// The technique's page on attack.mitre.org.
    pub fn url(&self) -> String {
        format!("https://attack.mitre.org/techniques/{}/", self.id.replace('.', "/"))
    }
}

/// One threshold of a rule: its default, unit and why it has that value.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Param {
    pub default: f64,
    pub unit: String,
    pub about: String,
}

/// The response playbook: the four steps every rule's incident goes through.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Playbook {
    pub contain: Vec<String>,
    pub collect: Vec<String>,
    pub eradicate: Vec<String>,
    pub recover: Vec<String>,
}

/// SIEM query examples over the fields gpuwarden's notifiers send (ECS / CEF names).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Siem {
    /// Splunk SPL.
    pub splunk: String,
    /// Elastic KQL.
    pub kql: String,
    /// Elastic ES|QL.
    pub esql: String,
}

/// A rule file, as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Stable id; findings carry it as `rule`, incidents dedup on `rule@gpu`.
    pub id: String,
    pub title: String,
    #[serde(default = "enabled_default")]
    pub enabled: bool,
    pub severity: Severity,
    /// Recommended action on the fixed ladder (the playbook says the rest).
    pub action: Action,
    /// MITRE ATT&CK techniques, the primary one first.
    pub mitre: Vec<Technique>,
    /// What the rule looks at: DCGM fields, labels, events.
    pub inputs: Vec<String>,
    /// What it detects, in a paragraph.
    pub what: String,
    /// Why that matters.
    pub why: String,
    /// The condition, in words.
    pub condition: String,
    /// What goes wrong if nothing covers this.
    pub risk: String,
    /// Known legitimate causes and how to exempt them.
    pub false_positives: String,
    #[serde(default)]
    pub params: BTreeMap<String, Param>,
    pub playbook: Playbook,
    pub siem: Siem,
}

fn enabled_default() -> bool {
    true
}

/// A rule as the engine runs it: its spec plus the effective settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub spec: Arc<RuleSpec>,
    pub enabled: bool,
    pub severity: Severity,
    /// Effective thresholds: defaults with overrides applied.
    pub params: BTreeMap<String, f64>,
}

impl Rule {
    /// A threshold. The names a rule's code reads are checked when the catalog is built
    /// (see [`crate::rules::required_params`]), so a miss here is a bug; it yields NaN,
    /// which every comparison treats as "condition not met".
    pub fn p(&self, name: &str) -> f64 {
        self.params.get(name).copied().unwrap_or(f64::NAN)
    }

    pub fn id(&self) -> &str {
        &self.spec.id
    }

    /// Relative path of the rule's generated page (from the docs root).
    pub fn playbook_path(&self) -> String {
        format!("docs/detections/{}.md", self.spec.id)
    }
}

/// Every rule, in catalog order.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    rules: Vec<Rule>,
}

impl Catalog {
    /// The built-in rule pack. The files are part of the binary and tested, so a parse
    /// error is a build defect: this panics only if a test would have failed.
    pub fn builtin() -> Catalog {
        Catalog::from_files(BUILTIN_FILES).expect("built-in security rules are valid (tested)")
    }

    /// Parses rule files (name, text).
    pub fn from_files(files: &[(&str, &str)]) -> Result<Catalog, SecurityError> {
        let mut rules: Vec<Rule> = Vec::with_capacity(files.len());
        for (file, text) in files {
            let spec: RuleSpec = toml::from_str(text).map_err(|source| SecurityError::RuleFile {
                file: file.to_string(),
                source,
            })?;
            if rules.iter().any(|r| r.spec.id == spec.id) {
                return Err(invalid(&spec.id, "the id is used by another rule file"));
            }
            if spec.mitre.is_empty() {
                return Err(invalid(&spec.id, "maps to no MITRE ATT&CK technique"));
            }
            for name in crate::rules::required_params(&spec.id) {
                let Some(p) = spec.params.get(*name) else {
                    return Err(invalid(
                        &spec.id,
                        &format!("the rule's code reads parameter '{name}', which the file does not define"),
                    ));
                };
                if !p.default.is_finite() {
                    return Err(invalid(
                        &spec.id,
                        &format!("parameter '{name}' has a non-finite default"),
                    ));
                }
            }
            let params = spec.params.iter().map(|(k, p)| (k.clone(), p.default)).collect();
            rules.push(Rule {
                enabled: spec.enabled,
                severity: spec.severity,
                params,
                spec: Arc::new(spec),
            });
        }
        Ok(Catalog { rules })
    }

    /// Applies `[security.rules."ID"]` overrides: `enabled`, `severity`, or any parameter
    /// by name. Unknown rules and parameters are errors that name them.
    pub fn with_overrides(mut self, overrides: &toml::Table) -> Result<Catalog, SecurityError> {
        for (id, value) in overrides {
            let rule = self
                .rules
                .iter_mut()
                .find(|r| &r.spec.id == id)
                .ok_or_else(|| SecurityError::UnknownRule(id.clone()))?;
            let table = value.as_table().ok_or_else(|| SecurityError::InvalidValue {
                key: format!("rules.\"{id}\""),
                problem: "must be a table of settings".into(),
            })?;
            for (key, v) in table {
                let bad = |problem: &str| SecurityError::InvalidValue {
                    key: format!("rules.\"{id}\".{key}"),
                    problem: problem.into(),
                };
                match key.as_str() {
                    "enabled" => rule.enabled = v.as_bool().ok_or_else(|| bad("must be true or false"))?,
                    "severity" => {
                        rule.severity = v
                            .clone()
                            .try_into()
                            .map_err(|_| bad("must be info, warning, critical or fatal"))?
                    }
                    name => {
                        let slot = rule.params.get_mut(name).ok_or_else(|| SecurityError::UnknownParam {
                            rule: id.clone(),
                            key: name.to_string(),
                            known: rule.spec.params.keys().cloned().collect::<Vec<_>>().join(", "),
                        })?;
                        let x = v
                            .as_float()
                            .or_else(|| v.as_integer().map(|i| i as f64))
                            .filter(|x| x.is_finite())
                            .ok_or_else(|| bad("must be a finite number"))?;
                        *slot = x;
                    }
                }
            }
        }
        Ok(self)
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn get(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.spec.id == id)
    }
}

fn invalid(rule: &str, problem: &str) -> SecurityError {
    SecurityError::InvalidRule {
        rule: rule.to_string(),
        problem: problem.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_parses_and_every_rule_is_documented() {
        let c = Catalog::from_files(BUILTIN_FILES).unwrap();
        assert_eq!(c.rules().len(), BUILTIN_FILES.len());
        for r in c.rules() {
            let s = &r.spec;
            assert!(s.mitre[0].id.starts_with('T'), "{}", s.id);
            for text in [&s.what, &s.why, &s.condition, &s.risk, &s.false_positives] {
                assert!(text.trim().len() > 20, "{}: a documentation field is too short", s.id);
            }
            let pb = &s.playbook;
            for steps in [&pb.contain, &pb.collect, &pb.eradicate, &pb.recover] {
                assert!(!steps.is_empty(), "{}: a playbook step list is empty", s.id);
            }
            for q in [&s.siem.splunk, &s.siem.kql, &s.siem.esql] {
                assert!(q.contains(&s.id), "{}: SIEM queries must select the rule id", s.id);
            }
            assert!(!s.inputs.is_empty());
        }
        assert_eq!(c.rules()[0].spec.mitre[0].id, "T1496", "resource hijacking comes first");
    }

    #[test]
    fn overrides_change_params_severity_and_enabled() {
        let t: toml::Table = toml::from_str(
            "[\"sec.mining.telemetry\"]\nsm_active_min = 0.7\nseverity = \"warning\"\n[\"sec.use.ghost\"]\nenabled = false\n",
        )
        .unwrap();
        let c = Catalog::builtin().with_overrides(&t).unwrap();
        let m = c.get("sec.mining.telemetry").unwrap();
        assert_eq!(m.p("sm_active_min"), 0.7);
        assert_eq!(m.severity, Severity::Warning);
        assert!(!c.get("sec.use.ghost").unwrap().enabled);
    }

    #[test]
    fn unknown_rule_or_param_is_named_in_the_error() {
        let t: toml::Table = toml::from_str("[\"sec.nope\"]\nx = 1\n").unwrap();
        let e = Catalog::builtin().with_overrides(&t).unwrap_err();
        assert!(e.to_string().contains("sec.nope"), "{e}");
        let t: toml::Table = toml::from_str("[\"sec.mining.telemetry\"]\nsm_activ = 1\n").unwrap();
        let e = Catalog::builtin().with_overrides(&t).unwrap_err();
        assert!(
            e.to_string().contains("sm_activ") && e.to_string().contains("sm_active_min"),
            "{e}"
        );
        let t: toml::Table = toml::from_str("[\"sec.mining.telemetry\"]\nsm_active_min = \"high\"\n").unwrap();
        assert!(Catalog::builtin().with_overrides(&t).is_err());
    }

    #[test]
    fn a_rule_missing_a_parameter_its_code_reads_is_rejected() {
        let text = BUILTIN_FILES[0].1.replace("[params.sm_active_min]", "[params.renamed]");
        let e = Catalog::from_files(&[("x.toml", &text)]).unwrap_err();
        assert!(e.to_string().contains("sm_active_min"), "{e}");
    }
}
