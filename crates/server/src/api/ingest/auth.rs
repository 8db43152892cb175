//! Bearer-token check for the ingest endpoints, and the nodes each token may write.
//!
//! Tokens come from a file, one per line, so a new token can be added before the old one
//! is removed. A line is `TOKEN`, optionally followed by its scope:
//!
//! ```text
//! # one host
//! 3f9c…e1 node=host-a
//! # a comma-separated list of node globs (`*` matches any run of characters)
//! 7b20…4d nodes=gpu-*,dgx-01
//! # no scope: may write any node (accepted with a warning at start)
//! 9a1e…07
//! ```
//!
//! Every token must be at least [`MIN_TOKEN_LEN`] characters: short tokens can be
//! guessed. `gpuwarden serve --generate-ingest-token` prints a 256-bit random one.
//!
//! The comparison is constant-time per token and every configured token is compared, so
//! the time taken does not tell an attacker how much of a guess was right; only the
//! length of the presented token can be learned, which a random 32-byte token makes
//! worthless.

use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

/// Shortest token accepted (characters): 32 hex digits are 128 bits.
pub const MIN_TOKEN_LEN: usize = 32;

/// Which nodes a token may write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeScope {
    /// A bare token line: any node (kept for token files written before scopes).
    Any,
    /// Node name globs (`*` matches any run of characters; no `*` is an exact name).
    Nodes(Vec<String>),
    /// The agent presented a client certificate: only the nodes it names (common name or
    /// DNS name, exact, ASCII case-insensitive), and only those the token allows.
    Certified { names: Vec<String>, token: Box<NodeScope> },
}

impl NodeScope {
    /// Whether a token of this scope may write data of `node`.
    pub fn allows(&self, node: &str) -> bool {
        match self {
            NodeScope::Any => true,
            NodeScope::Nodes(patterns) => patterns.iter().any(|p| gpuwarden_notify::matcher::glob(p, node)),
            NodeScope::Certified { names, token } => {
                names.iter().any(|n| n.eq_ignore_ascii_case(node)) && token.allows(node)
            }
        }
    }

    /// This scope narrowed to the names of the client certificate the agent presented.
    pub fn bound_to(self, cert: &crate::tls::ClientCertificate) -> NodeScope {
        let mut names: Vec<String> = Vec::new();
        for n in cert.names() {
            if !names.iter().any(|m| m.eq_ignore_ascii_case(n)) {
                names.push(n.to_owned());
            }
        }
        NodeScope::Certified {
            names,
            token: Box::new(self),
        }
    }

    /// Whether the client certificate (if any) is what refuses `node`, rather than the
    /// token: the answer then says to fix the certificate, not the token.
    pub fn certificate_refuses(&self, node: &str) -> bool {
        matches!(self, NodeScope::Certified { names, .. } if !names.iter().any(|n| n.eq_ignore_ascii_case(node)))
    }
}

/// Why a token file was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error(
        "token file line {line}: the token is {len} characters; at least {MIN_TOKEN_LEN} are required \
         (generate one with `gpuwarden serve --generate-ingest-token`)"
    )]
    TooShort { line: usize, len: usize },
    #[error(
        "token file line {line}: '{word}' is not a scope; write `TOKEN`, `TOKEN node=NAME` or \
         `TOKEN nodes=GLOB,GLOB`"
    )]
    BadScope { line: usize, word: String },
}

#[derive(Clone)]
struct Token {
    secret: Vec<u8>,
    scope: NodeScope,
}

/// The accepted tokens; empty means "no authentication" (loopback-only deployments).
#[derive(Clone, Default)]
pub struct IngestTokens(Vec<Token>);

impl std::fmt::Debug for IngestTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IngestTokens({} configured)", self.0.len())
    }
}

/// What a request may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// No token configured (loopback only): anything.
    Open,
    /// An accepted token with this scope.
    Token(NodeScope),
    /// No accepted token.
    Denied,
}

impl IngestTokens {
    /// Parses a token file: `TOKEN [node=NAME | nodes=GLOB,…]` per line; blank lines and
    /// `#` comments ignored.
    pub fn parse(text: &str) -> Result<IngestTokens, TokenFileError> {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let secret = words.next().unwrap_or_default();
            if secret.chars().count() < MIN_TOKEN_LEN {
                return Err(TokenFileError::TooShort {
                    line: line_no,
                    len: secret.chars().count(),
                });
            }
            let mut patterns: Option<Vec<String>> = None;
            for word in words {
                let list = match word.split_once('=') {
                    Some(("node", v)) if !v.is_empty() && !v.contains(',') => vec![v.to_owned()],
                    Some(("nodes", v)) if !v.is_empty() => {
                        v.split(',').filter(|p| !p.is_empty()).map(str::to_owned).collect()
                    }
                    _ => {
                        return Err(TokenFileError::BadScope {
                            line: line_no,
                            word: word.to_owned(),
                        })
                    }
                };
                patterns.get_or_insert_with(Vec::new).extend(list);
            }
            out.push(Token {
                secret: secret.as_bytes().to_vec(),
                scope: patterns.map_or(NodeScope::Any, NodeScope::Nodes),
            });
        }
        Ok(IngestTokens(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many tokens may write any node (bare lines), for a warning at start.
    pub fn unscoped(&self) -> usize {
        self.0.iter().filter(|t| t.scope == NodeScope::Any).count()
    }

    /// Whether the request carries an accepted `Authorization: Bearer …`.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        !matches!(self.access(headers), Access::Denied)
    }

    /// What the request's `Authorization: Bearer …` lets it do.
    pub fn access(&self, headers: &HeaderMap) -> Access {
        if self.0.is_empty() {
            return Access::Open;
        }
        let Some(presented) = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim().as_bytes())
        else {
            return Access::Denied;
        };
        let mut found = None;
        for token in &self.0 {
            // `ct_eq` on slices of different lengths is false without looking at bytes.
            // Every token is compared; the branch only picks the scope once one matched.
            let hit: bool = token.secret.as_slice().ct_eq(presented).into();
            if hit && found.is_none() {
                found = Some(token.scope.clone());
            }
        }
        found.map_or(Access::Denied, Access::Token)
    }
}

/// A new random token: 256 bits, hex.
pub fn generate() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_certificate_narrows_the_scope_to_its_names() {
        let cert = crate::tls::ClientCertificate {
            common_names: vec!["node-a".into()],
            dns_names: vec!["node-a.dc1.example.com".into()],
        };
        let any = NodeScope::Any.bound_to(&cert);
        assert!(any.allows("node-a") && any.allows("NODE-A") && any.allows("node-a.dc1.example.com"));
        assert!(!any.allows("node-b"));
        assert!(any.certificate_refuses("node-b"));
        // The token's scope still applies inside the certificate's names.
        let token = NodeScope::Nodes(vec!["node-b*".into()]).bound_to(&cert);
        assert!(!token.allows("node-a"));
        assert!(
            !token.certificate_refuses("node-a"),
            "the token refuses it, not the certificate"
        );
        // A wildcard DNS name is not expanded.
        let wild = NodeScope::Any.bound_to(&crate::tls::ClientCertificate {
            common_names: vec![],
            dns_names: vec!["*.example.com".into()],
        });
        assert!(!wild.allows("node-a.example.com"));
    }

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn bearer_token_is_checked() {
        let t = IngestTokens::parse(&format!("# rotate me\n{A}\n\n{B} node=host-b\n")).unwrap();
        assert!(t.allows(&headers(&format!("Bearer {B}"))));
        assert!(t.allows(&headers(&format!("bearer {A}"))));
        assert!(!t.allows(&headers(&format!("Bearer {}", &B[1..]))));
        assert!(!t.allows(&headers(&format!("Basic {B}"))));
        assert!(!t.allows(&HeaderMap::new()));
        assert_eq!(t.unscoped(), 1);
    }

    #[test]
    fn scopes_are_parsed_and_matched() {
        let t = IngestTokens::parse(&format!("{A} node=host-a\n{B} nodes=gpu-*,dgx-01\n")).unwrap();
        let Access::Token(a) = t.access(&headers(&format!("Bearer {A}"))) else {
            panic!("A accepted")
        };
        assert!(a.allows("host-a") && !a.allows("host-b") && !a.allows("host-a2"));
        let Access::Token(b) = t.access(&headers(&format!("Bearer {B}"))) else {
            panic!("B accepted")
        };
        assert!(b.allows("gpu-17") && b.allows("dgx-01") && !b.allows("dgx-02"));
    }

    #[test]
    fn short_tokens_and_bad_scopes_are_refused() {
        let e = IngestTokens::parse("x\n").err().unwrap().to_string();
        assert!(e.contains("--generate-ingest-token"), "{e}");
        assert!(IngestTokens::parse(&format!("{A} host=a\n")).is_err());
        assert!(IngestTokens::parse(&format!("{A} node=\n")).is_err());
    }

    #[test]
    fn generated_tokens_are_long_and_different() {
        let (a, b) = (generate(), generate());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(IngestTokens::parse(&a).is_ok());
    }

    #[test]
    fn no_tokens_means_open() {
        assert!(IngestTokens::default().allows(&HeaderMap::new()));
    }
}
