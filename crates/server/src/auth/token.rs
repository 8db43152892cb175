//! API tokens: the secret a client sends, the hash kept of it, and the record around it.
//!
//! A token is 256 random bits from the operating system's RNG, shown once as
//! `gpw_<base64url>`. Only its SHA-256 is stored: a stolen `tokens.json` gives no
//! usable credential. 256 bits of entropy make a slow password hash pointless — nobody
//! can guess a preimage — and keep verification cheap enough for every request.

use super::AuthError;
use crate::principal::Role;
use base64::Engine;
use rand::TryRngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Every API token starts with this (so secret scanners and log filters can spot one,
/// and a verifier knows the credential is one of these rather than, say, a JWT).
pub const PREFIX: &str = "gpw_";

/// A freshly created token: the only time the secret exists outside the client.
/// `Debug` does not show it.
pub struct Secret(String);

impl Secret {
    /// The token to hand to the client, `gpw_…`.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(gpw_…)")
    }
}

/// `n` random bytes from the operating system.
pub(crate) fn os_random<const N: usize>() -> Result<[u8; N], AuthError> {
    let mut bytes = [0u8; N];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(bytes)
}

/// A new secret and the hash to store of it.
pub fn generate() -> Result<(Secret, [u8; 32]), AuthError> {
    let bytes: [u8; 32] = os_random()?;
    let text = format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = Sha256::digest(text.as_bytes()).into();
    Ok((Secret(text), hash))
}

/// The hash of a presented token, or `None` when it is not shaped like one of ours
/// (`gpw_` and 43 base64url characters holding 32 bytes). The whole text is hashed, so
/// a token differing in any character differs in hash.
pub fn hash_presented(token: &str) -> Option<[u8; 32]> {
    let body = token.strip_prefix(PREFIX)?;
    if body.len() != 43 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body).ok()?;
    if bytes.len() != 32 {
        return None;
    }
    Some(Sha256::digest(token.as_bytes()).into())
}

/// A new token id: not secret (it names the token in lists, logs and audit records).
pub fn new_id() -> Result<String, AuthError> {
    let bytes: [u8; 8] = os_random()?;
    Ok(format!("tok-{}", hex(&bytes)))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// What is kept of one token in `tokens.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// `tok-` and 16 hex digits; not secret.
    pub id: String,
    /// What the token is for, e.g. "grafana" or "alice's laptop".
    pub name: String,
    pub role: Role,
    /// The tenant (`[auth.tenants.NAME]`) the token is confined to; none: the whole fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub created_ms: i64,
    /// After this instant the token is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
    /// Last accepted use, persisted lazily (at most about once a minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_ms: Option<i64>,
    #[serde(default)]
    pub revoked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_ms: Option<i64>,
    /// SHA-256 of the whole token text, hex.
    pub sha256: String,
}

/// Whether a token may be used now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TokenStatus {
    Active,
    Expired,
    Revoked,
}

impl TokenRecord {
    pub fn status(&self, now_ms: i64) -> TokenStatus {
        if self.revoked {
            TokenStatus::Revoked
        } else if self.expires_ms.is_some_and(|e| now_ms >= e) {
            TokenStatus::Expired
        } else {
            TokenStatus::Active
        }
    }
}

/// What a new token should be.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub name: String,
    pub role: Role,
    pub tenant: Option<String>,
    /// How long from now until it expires; `None`: never.
    pub expires_in: Option<std::time::Duration>,
}

/// Longest accepted token name.
pub const MAX_NAME_LEN: usize = 100;

impl NewToken {
    /// Checks the name (printable, at most [`MAX_NAME_LEN`] characters) and the expiry
    /// (positive, at most ten years).
    pub fn validate(&self) -> Result<(), AuthError> {
        if self.name.chars().count() > MAX_NAME_LEN || self.name.chars().any(char::is_control) {
            return Err(AuthError::Invalid(format!(
                "token name {:?} must be at most {MAX_NAME_LEN} printable characters",
                self.name
            )));
        }
        if let Some(d) = self.expires_in {
            if d.is_zero() || d > std::time::Duration::from_secs(10 * 366 * 24 * 3600) {
                return Err(AuthError::Invalid(format!(
                    "expiry {} must be more than 0 and at most 10 years",
                    humantime::format_duration(d)
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_hash_back_and_differ() {
        let (a, ha) = generate().unwrap();
        let (b, hb) = generate().unwrap();
        assert!(a.expose().starts_with(PREFIX));
        assert_eq!(a.expose().len(), PREFIX.len() + 43);
        assert_ne!(a.expose(), b.expose());
        assert_eq!(hash_presented(a.expose()), Some(ha));
        assert_eq!(hash_presented(b.expose()), Some(hb));
        assert!(
            !format!("{a:?}").contains(&a.expose()[4..]),
            "Debug must not show the secret"
        );
    }

    #[test]
    fn malformed_tokens_have_no_hash() {
        let (a, _) = generate().unwrap();
        let body = &a.expose()[PREFIX.len()..];
        for bad in [
            "",
            "gpw_",
            body,
            &format!("xyz_{body}"),
            &format!("{}x", a.expose()),
            &a.expose()[..a.expose().len() - 1],
            &format!("gpw_{}", "!".repeat(43)),
        ] {
            assert_eq!(hash_presented(bad), None, "{bad:?}");
        }
        // One character changed: still well-formed, a different hash.
        let mut changed = a.expose().to_string();
        let last = changed.pop().unwrap();
        changed.push(if last == 'A' { 'Q' } else { 'A' });
        if let Some(h) = hash_presented(&changed) {
            assert_ne!(Some(h), hash_presented(a.expose()));
        }
    }

    #[test]
    fn status_follows_revocation_and_expiry() {
        let mut r = TokenRecord {
            id: "tok-1".into(),
            name: String::new(),
            role: Role::Viewer,
            tenant: None,
            created_ms: 0,
            expires_ms: Some(1000),
            last_used_ms: None,
            revoked: false,
            revoked_ms: None,
            sha256: "00".repeat(32),
        };
        assert_eq!(r.status(999), TokenStatus::Active);
        assert_eq!(r.status(1000), TokenStatus::Expired);
        r.revoked = true;
        assert_eq!(r.status(0), TokenStatus::Revoked);
    }

    #[test]
    fn hex_round_trips() {
        let bytes: [u8; 32] = core::array::from_fn(|i| (i * 7) as u8);
        assert_eq!(unhex32(&hex(&bytes)), Some(bytes));
        assert_eq!(unhex32("zz"), None);
        assert_eq!(unhex32(&"g".repeat(64)), None);
    }

    #[test]
    fn new_token_validation() {
        let ok = NewToken {
            name: "grafana".into(),
            role: Role::Viewer,
            tenant: None,
            expires_in: Some(std::time::Duration::from_secs(3600)),
        };
        assert!(ok.validate().is_ok());
        let mut bad = ok.clone();
        bad.name = "a\nb".into();
        assert!(bad.validate().is_err());
        let mut bad = ok;
        bad.expires_in = Some(std::time::Duration::ZERO);
        assert!(bad.validate().is_err());
    }
}
