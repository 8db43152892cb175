//! Bearer-token check for the ingest endpoints.
//!
//! Tokens come from a file (one per line, so a new token can be added before the old one
//! is removed). The comparison is constant-time per token and every configured token is
//! compared, so the time taken does not tell an attacker how much of a guess was right;
//! only the length of the presented token can be learned, which a random 32-byte token
//! makes worthless.

use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

/// The accepted tokens; empty means "no authentication" (loopback-only deployments).
#[derive(Clone, Default)]
pub struct IngestTokens(Vec<Vec<u8>>);

impl std::fmt::Debug for IngestTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IngestTokens({} configured)", self.0.len())
    }
}

impl IngestTokens {
    /// Parses a token file: one token per line; blank lines and `#` comments ignored.
    pub fn parse(text: &str) -> IngestTokens {
        IngestTokens(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| l.as_bytes().to_vec())
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the request carries an accepted `Authorization: Bearer …`.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let Some(presented) = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim().as_bytes())
        else {
            return false;
        };
        let mut ok = subtle::Choice::from(0u8);
        for token in &self.0 {
            // `ct_eq` on slices of different lengths is false without looking at bytes.
            ok |= token.as_slice().ct_eq(presented);
        }
        ok.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn bearer_token_is_checked() {
        let t = IngestTokens::parse("# rotate me\nold-token\n\nnew-token\n");
        assert!(t.allows(&headers("Bearer new-token")));
        assert!(t.allows(&headers("bearer old-token")));
        assert!(!t.allows(&headers("Bearer new-toke")));
        assert!(!t.allows(&headers("Basic new-token")));
        assert!(!t.allows(&HeaderMap::new()));
    }

    #[test]
    fn no_tokens_means_open() {
        assert!(IngestTokens::default().allows(&HeaderMap::new()));
    }
}
