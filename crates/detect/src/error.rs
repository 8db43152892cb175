//! Errors of the health engine's configuration: the XID catalog and the rule file.
//!
//! Evaluation itself never fails: bad samples (NaN, counters going backwards, missing
//! fields) are handled as data, not as errors.

use thiserror::Error;

/// Why a catalog or rule set could not be built.
#[derive(Debug, Error)]
pub enum DetectError {
    /// The XID catalog file does not parse or is inconsistent.
    #[error("parsing the XID catalog: {0}")]
    Catalog(String),
    /// The same XID code appears twice in a catalog.
    #[error("XID catalog: code {0} is listed twice")]
    DuplicateXid(u32),
    /// The rule file (built-in or a user override) does not parse.
    #[error("parsing health rules: {0}")]
    Rules(#[from] toml::de::Error),
    /// An override names a key the rule file does not have.
    #[error("health rules: unknown key '{0}'")]
    UnknownKey(String),
    /// An override gives a table where a value is expected, or the reverse.
    #[error("health rules: '{key}' must be {expected}")]
    WrongShape { key: String, expected: &'static str },
    /// A threshold is out of its valid range.
    #[error("health rules: '{key}' {problem}")]
    InvalidValue { key: String, problem: String },
}
