//! Errors of the security rule pack's configuration: the rule files, the `[security]`
//! config section and its overrides.
//!
//! Evaluation never fails: NaN, missing fields and counters going backwards are data,
//! handled by the rules, not errors.

use thiserror::Error;

/// Why the rule catalog or the security policy could not be built.
#[derive(Debug, Error)]
pub enum SecurityError {
    /// A rule file does not parse.
    #[error("parsing security rule file '{file}': {source}")]
    RuleFile {
        file: String,
        #[source]
        source: toml::de::Error,
    },
    /// A rule file is inconsistent (duplicate id, a parameter without a default, …).
    #[error("security rule '{rule}': {problem}")]
    InvalidRule { rule: String, problem: String },
    /// A config override names a rule that does not exist.
    #[error("[security.rules]: unknown rule '{0}'")]
    UnknownRule(String),
    /// A config override names a parameter the rule does not have.
    #[error("[security.rules.\"{rule}\"]: unknown setting '{key}' (known: {known})")]
    UnknownParam { rule: String, key: String, known: String },
    /// A value of the `[security]` section is out of range or malformed.
    #[error("[security] {key}: {problem}")]
    InvalidValue { key: String, problem: String },
}
