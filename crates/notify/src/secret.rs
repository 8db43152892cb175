//! Secrets (HMAC keys, tokens, routing keys, webhook URLs that embed a token): read from
//! an environment variable or a file, never written in the config itself, and redacted
//! wherever they could be printed (`Debug`, logs, API answers).

use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;

/// Where a sink's secret comes from. Exactly one of the two.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// Name of the environment variable holding the secret.
    pub secret_env: Option<String>,
    /// File holding the secret (surrounding whitespace is trimmed).
    pub secret_file: Option<PathBuf>,
}

/// A resolved secret. `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a secret could not be read. Names the variable or file, never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("sink '{sink}': environment variable {var} is not set or not UTF-8")]
    MissingEnv { sink: String, var: String },
    #[error("sink '{sink}': reading secret file {path}: {source}")]
    File {
        sink: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("sink '{sink}': secret file {path} is empty")]
    EmptyFile { sink: String, path: PathBuf },
    #[error("sink '{sink}': set either secret_env or secret_file, not both")]
    Both { sink: String },
    #[error("sink '{sink}': needs a secret: set secret_env or secret_file")]
    Missing { sink: String },
}

impl SecretRef {
    /// The secret, or `None` when neither source is configured.
    pub fn resolve(&self, sink: &str) -> Result<Option<Secret>, SecretError> {
        match (&self.secret_env, &self.secret_file) {
            (Some(_), Some(_)) => Err(SecretError::Both { sink: sink.into() }),
            (Some(var), None) => std::env::var(var)
                .map(|v| Some(Secret(v)))
                .map_err(|_| SecretError::MissingEnv {
                    sink: sink.into(),
                    var: var.clone(),
                }),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|source| SecretError::File {
                    sink: sink.into(),
                    path: path.clone(),
                    source,
                })?;
                let v = text.trim();
                if v.is_empty() {
                    return Err(SecretError::EmptyFile {
                        sink: sink.into(),
                        path: path.clone(),
                    });
                }
                Ok(Some(Secret(v.to_string())))
            }
            (None, None) => Ok(None),
        }
    }

    /// The secret, which this sink cannot work without.
    pub fn require(&self, sink: &str) -> Result<Secret, SecretError> {
        self.resolve(sink)?
            .ok_or_else(|| SecretError::Missing { sink: sink.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
    }

    #[test]
    fn file_secret_is_trimmed_and_errors_name_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        std::fs::write(&p, "abc\n").unwrap();
        let r = SecretRef {
            secret_env: None,
            secret_file: Some(p),
        };
        assert_eq!(r.require("hook").unwrap().expose(), "abc");
        let r = SecretRef {
            secret_env: Some("GPUWARDEN_TEST_SURELY_UNSET".into()),
            secret_file: None,
        };
        let e = r.require("hook").unwrap_err().to_string();
        assert!(e.contains("GPUWARDEN_TEST_SURELY_UNSET") && e.contains("hook"), "{e}");
    }
}
