//! Parse errors. Every error but the body-size one names the 1-based line, and where it
//! helps the 1-based byte column, so an operator can open the exporter page and look.

use std::fmt;

/// Why an exposition body was refused. Columns count bytes from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Refused by its length before parsing: no line is read.
    #[error("body is {len} bytes, over the limit of {limit} bytes")]
    BodyTooLarge { len: usize, limit: usize },
    #[error("line {line}, column {column}: invalid UTF-8")]
    InvalidUtf8 { line: usize, column: usize },
    #[error("line {line}: line is {len} bytes long, over the limit of {limit} bytes")]
    LineTooLong { line: usize, len: usize, limit: usize },
    #[error("line {line}: more than {limit} samples in one body")]
    TooManySamples { line: usize, limit: usize },
    #[error("line {line}, column {column}: expected {expected}, found {found}")]
    Unexpected {
        line: usize,
        column: usize,
        expected: &'static str,
        found: Found,
    },
    #[error("line {line}: unterminated label value (started at column {column})")]
    UnterminatedLabelValue { line: usize, column: usize },
    #[error(
        "line {line}, column {column}: invalid escape `\\{}` in label value (only `\\\\`, `\\\"` and `\\n` are allowed)",
        found.escape_debug()
    )]
    BadEscape { line: usize, column: usize, found: char },
    #[error("line {line}, column {column}: label value is over the limit of {limit} bytes")]
    LabelValueTooLong { line: usize, column: usize, limit: usize },
    #[error("line {line}, column {column}: more than {limit} labels on one sample")]
    TooManyLabels { line: usize, column: usize, limit: usize },
    #[error("line {line}, column {column}: invalid sample value `{text}`")]
    BadValue { line: usize, column: usize, text: String },
    #[error("line {line}, column {column}: invalid timestamp `{text}` (expected integer milliseconds)")]
    BadTimestamp { line: usize, column: usize, text: String },
    #[error("line {line}, column {column}: unknown metric type `{text}` in TYPE line")]
    UnknownType { line: usize, column: usize, text: String },
}

impl ParseError {
    /// The 1-based line the error is on; `None` for a body refused by its size.
    pub fn line(&self) -> Option<usize> {
        match self {
            ParseError::BodyTooLarge { .. } => None,
            ParseError::InvalidUtf8 { line, .. }
            | ParseError::LineTooLong { line, .. }
            | ParseError::TooManySamples { line, .. }
            | ParseError::Unexpected { line, .. }
            | ParseError::UnterminatedLabelValue { line, .. }
            | ParseError::BadEscape { line, .. }
            | ParseError::LabelValueTooLong { line, .. }
            | ParseError::TooManyLabels { line, .. }
            | ParseError::BadValue { line, .. }
            | ParseError::BadTimestamp { line, .. }
            | ParseError::UnknownType { line, .. } => Some(*line),
        }
    }
}

/// What the parser found where it expected something else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    EndOfLine,
    Char(char),
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::EndOfLine => f.write_str("end of line"),
            Found::Char(c) => write!(f, "`{}`", c.escape_debug()),
        }
    }
}

/// Keeps error messages short when the offending token is huge (a value of 60 KiB of
/// garbage must not become a 60 KiB log line).
pub(crate) fn snippet(text: &str) -> String {
    const MAX_CHARS: usize = 40;
    match text.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}
