//! From a verified token's claims to a [`Principal`]: which role its groups map to, and
//! which tenant it is confined to. Configured, never guessed: a token whose groups map to
//! no role is refused, so a new group at the provider grants nothing here.

use crate::principal::{Principal, Role};
use serde_json::Value;
use std::collections::BTreeMap;

/// `[auth.oidc]`'s claim mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMapping {
    /// The claim holding the caller's groups or roles: a string or an array of strings.
    /// A dotted path reaches into objects (`realm_access.roles` for Keycloak).
    pub role_claim: String,
    /// For each role, the claim values that grant it; the highest granted role wins.
    pub roles: BTreeMap<Role, Vec<String>>,
    /// The claim naming the caller's tenant (a configured `[auth.tenants.NAME]`); a
    /// token without it sees the whole fleet. `None`: tokens are never confined.
    pub tenant_claim: Option<String>,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        ClaimMapping {
            role_claim: "groups".into(),
            roles: BTreeMap::new(),
            tenant_claim: None,
        }
    }
}

/// Why the claims give no principal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("the token has no `sub` claim")]
    NoSubject,
    #[error(
        "none of the token's {claim:?} values ({values:?}) maps to a role here; an admin adds one to \
         [auth.oidc.roles] (viewer, operator or admin)"
    )]
    NoRole { claim: String, values: Vec<String> },
    #[error("the token's tenant claim {claim:?} must be one string, got {got}")]
    BadTenant { claim: String, got: String },
}

/// The value at a dotted path (`a.b.c`) of the claims.
fn at<'a>(claims: &'a serde_json::Map<String, Value>, path: &str) -> Option<&'a Value> {
    // A claim whose name itself contains dots (some providers use URLs) is tried first.
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut cur = claims.get(parts.next()?)?;
    for p in parts {
        cur = cur.as_object()?.get(p)?;
    }
    Some(cur)
}

/// The strings of a claim that is a string or an array (other elements ignored).
fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

impl ClaimMapping {
    /// The principal of verified `claims` from `issuer`: id `oidc:<issuer>#<sub>`.
    pub fn principal(&self, issuer: &str, claims: &serde_json::Map<String, Value>) -> Result<Principal, MappingError> {
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(MappingError::NoSubject)?;
        let values = strings(at(claims, &self.role_claim));
        let role = self
            .roles
            .iter()
            .rev() // Admin, Operator, Viewer: the highest granted role wins.
            .find(|(_, granted)| granted.iter().any(|g| values.contains(g)))
            .map(|(r, _)| *r)
            .ok_or_else(|| MappingError::NoRole {
                claim: self.role_claim.clone(),
                values: values.clone(),
            })?;
        let tenant = match &self.tenant_claim {
            None => None,
            Some(claim) => match at(claims, claim) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                // One tenant in a one-element array is common (group-like claims).
                Some(Value::Array(a)) if a.len() == 1 && a[0].as_str().is_some_and(|s| !s.is_empty()) => {
                    a[0].as_str().map(str::to_owned)
                }
                Some(other) => {
                    return Err(MappingError::BadTenant {
                        claim: claim.clone(),
                        got: other.to_string(),
                    })
                }
            },
        };
        Ok(Principal {
            id: format!("{}{sub}", principal_prefix(issuer)),
            role,
            tenant,
        })
    }
}

/// The start of the ids of principals from `issuer`.
pub fn principal_prefix(issuer: &str) -> String {
    format!("oidc:{issuer}#")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapping() -> ClaimMapping {
        let mut roles = BTreeMap::new();
        roles.insert(Role::Viewer, vec!["gpu-viewers".to_string()]);
        roles.insert(Role::Operator, vec!["gpu-ops".to_string(), "sre".to_string()]);
        roles.insert(Role::Admin, vec!["gpu-admins".to_string()]);
        ClaimMapping {
            role_claim: "groups".into(),
            roles,
            tenant_claim: Some("tenant".into()),
        }
    }

    fn claims(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn the_highest_granted_role_wins() {
        let p = mapping()
            .principal(
                "https://idp",
                &claims(json!({"sub": "alice", "groups": ["gpu-viewers", "sre", "other"]})),
            )
            .unwrap();
        assert_eq!(p.role, Role::Operator);
        assert_eq!(p.id, "oidc:https://idp#alice");
        assert_eq!(p.tenant, None);
        let p = mapping()
            .principal("i", &claims(json!({"sub": "root", "groups": "gpu-admins"})))
            .unwrap();
        assert_eq!(p.role, Role::Admin, "a single string counts as one group");
    }

    #[test]
    fn no_mapped_group_is_denied() {
        for c in [
            json!({"sub": "bob", "groups": ["marketing"]}),
            json!({"sub": "bob"}),
            json!({"sub": "bob", "groups": 7}),
            json!({"sub": "bob", "groups": [{"name": "gpu-admins"}]}),
        ] {
            let err = mapping().principal("i", &claims(c.clone())).unwrap_err();
            assert!(matches!(err, MappingError::NoRole { .. }), "{c}: {err}");
            assert!(err.to_string().contains("[auth.oidc.roles]"), "{err}");
        }
        let err = mapping()
            .principal("i", &claims(json!({"groups": ["gpu-admins"]})))
            .unwrap_err();
        assert_eq!(err, MappingError::NoSubject);
    }

    #[test]
    fn tenants_come_from_their_claim() {
        let p = mapping()
            .principal(
                "i",
                &claims(json!({"sub": "c", "groups": ["gpu-viewers"], "tenant": "team-a"})),
            )
            .unwrap();
        assert_eq!(p.tenant.as_deref(), Some("team-a"));
        let p = mapping()
            .principal(
                "i",
                &claims(json!({"sub": "c", "groups": ["gpu-viewers"], "tenant": ["team-b"]})),
            )
            .unwrap();
        assert_eq!(p.tenant.as_deref(), Some("team-b"));
        for bad in [json!(["a", "b"]), json!(3), json!(""), json!({"x": 1})] {
            let err = mapping()
                .principal(
                    "i",
                    &claims(json!({"sub": "c", "groups": ["gpu-viewers"], "tenant": bad})),
                )
                .unwrap_err();
            assert!(matches!(err, MappingError::BadTenant { .. }), "{err}");
        }
        // Without a tenant claim configured, a `tenant` claim confines nobody.
        let m = ClaimMapping {
            tenant_claim: None,
            ..mapping()
        };
        let p = m
            .principal(
                "i",
                &claims(json!({"sub": "c", "groups": ["gpu-viewers"], "tenant": "team-a"})),
            )
            .unwrap();
        assert_eq!(p.tenant, None);
    }

    #[test]
    fn dotted_paths_reach_nested_claims() {
        let m = ClaimMapping {
            role_claim: "realm_access.roles".into(),
            ..mapping()
        };
        let p = m
            .principal(
                "i",
                &claims(json!({"sub": "k", "realm_access": {"roles": ["gpu-admins"]}})),
            )
            .unwrap();
        assert_eq!(p.role, Role::Admin);
        let m = ClaimMapping {
            role_claim: "https://example.com/groups".into(),
            ..mapping()
        };
        let p = m
            .principal("i", &claims(json!({"sub": "k", "https://example.com/groups": ["sre"]})))
            .unwrap();
        assert_eq!(p.role, Role::Operator);
    }
}
