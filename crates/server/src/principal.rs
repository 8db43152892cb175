//! Who is calling: the principal that authentication puts into a request's extensions.
//!
//! The authentication middleware inserts a [`Principal`] into the request's extensions
//! (and copies it into the response's, so that outer layers such as the audit trail can
//! say who a request was); the caller's [`crate::scope::CallerScope`] goes beside it.
//! Without authentication configured (loopback only) no principal is inserted and every
//! request is [`Principal::anonymous`], an admin.

use serde::Serialize;

/// What a principal may do. Ordered: a higher role may do everything a lower one may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads `/metrics` and nothing else: the credential Prometheus holds, so that a
    /// leaked scrape config does not read incidents, processes or the audit trail.
    Scraper,
    /// Reads everything in its scope.
    Viewer,
    /// Also acknowledges and resolves incidents, creates and expires silences.
    Operator,
    /// Also manages tokens, configuration, models and reads the audit trail.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Scraper => "scraper",
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "scraper" => Ok(Role::Scraper),
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?}: expected scraper, viewer, operator or admin"
            )),
        }
    }
}

/// An authenticated caller (or the anonymous one when authentication is off).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Principal {
    /// Stable identifier for audit records and rate limits: a token id (`tok-…`), an
    /// OpenID subject (`oidc:<issuer>#<sub>`), or `anonymous`.
    pub id: String,
    pub role: Role,
    /// The tenant the principal is confined to; `None`: the whole fleet.
    pub tenant: Option<String>,
}

impl Principal {
    /// The caller when authentication is off: loopback only, may do everything.
    pub fn anonymous() -> Self {
        Principal {
            id: "anonymous".to_string(),
            role: Role::Admin,
            tenant: None,
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Principal {
    type Rejection = crate::ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Principal>()
            .cloned()
            .unwrap_or_else(Principal::anonymous))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_parse() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        for r in [Role::Viewer, Role::Operator, Role::Admin] {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert!("root".parse::<Role>().is_err());
    }
}
