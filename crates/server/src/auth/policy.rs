//! Who may call what: one table from (method, route template) to the lowest role, so a
//! test can hold every served route against it. Deny by default: a route not in the
//! table (a new one someone forgot) needs an unscoped admin.
//!
//! `fleet_wide` routes answer about the whole fleet and cannot be narrowed to a tenant
//! (`/metrics`, scrape targets, token administration): a tenant principal is refused
//! them whatever its role.
//!
//! [`PUBLIC`] routes need no credential at all: probes, the UI's static files and the
//! API's documentation (they hold no data; every datum comes from the API), sign-in, and
//! the push routes, which authenticate with their own ingest tokens.

use crate::principal::Role;
use axum::http::Method;

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub method: &'static str,
    /// The route as the router declares it, e.g. `/api/v1/incidents/{id}/ack`.
    pub route: &'static str,
    pub role: Role,
    /// Refused to tenant principals.
    pub fleet_wide: bool,
}

const fn r(method: &'static str, route: &'static str, role: Role) -> Rule {
    Rule {
        method,
        route,
        role,
        fleet_wide: false,
    }
}

const fn fleet(method: &'static str, route: &'static str, role: Role) -> Rule {
    Rule {
        method,
        route,
        role,
        fleet_wide: true,
    }
}

use Role::{Admin, Operator, Scraper, Viewer};

/// The table.
pub const POLICY: &[Rule] = &[
    // Reads.
    // Prometheus scrapes with a `scraper` token that reads nothing else; any fleet-wide
    // role may read it too.
    fleet("GET", "/metrics", Scraper),
    fleet("GET", "/api/v1/targets", Viewer),
    r("GET", "/api/v1/gpus", Viewer),
    r("GET", "/api/v1/gpus/{uuid}", Viewer),
    r("GET", "/api/v1/gpus/{uuid}/series", Viewer),
    r("GET", "/api/v1/gpus/{uuid}/events", Viewer),
    r("GET", "/api/v1/gpus/{uuid}/health/history", Viewer),
    r("GET", "/api/v1/gpus/{uuid}/predictions", Viewer),
    r("GET", "/api/v1/predictions", Viewer),
    r("GET", "/api/v1/models/current", Viewer),
    r("GET", "/api/v1/nodes", Viewer),
    r("GET", "/api/v1/fleet/summary", Viewer),
    r("GET", "/api/v1/incidents", Viewer),
    r("GET", "/api/v1/incidents/{id}", Viewer),
    r("GET", "/api/v1/notifications", Viewer),
    r("GET", "/api/v1/silences", Viewer),
    // The simulator's ground truth covers every GPU.
    fleet("GET", "/api/v1/simulation/labels", Viewer),
    // Changes an operator makes.
    r("POST", "/api/v1/incidents/{id}/ack", Operator),
    r("POST", "/api/v1/incidents/{id}/resolve", Operator),
    r("POST", "/api/v1/silences", Operator),
    r("DELETE", "/api/v1/silences/{id}", Operator),
    // Injecting faults changes what every GPU reports.
    fleet("POST", "/api/v1/simulation/faults", Admin),
    // Who am I, and signing out: any role.
    r("GET", "/api/v1/auth/whoami", Viewer),
    r("POST", "/api/v1/auth/session/logout", Viewer),
    // Token administration: a tenant admin could otherwise mint an unscoped token.
    fleet("GET", "/api/v1/auth/tokens", Admin),
    fleet("POST", "/api/v1/auth/tokens", Admin),
    fleet("DELETE", "/api/v1/auth/tokens/{id}", Admin),
    // The audit trail names every tenant's actions and clients.
    fleet("GET", "/api/v1/audit", Admin),
];

/// Routes anyone may call (see the module doc). Matched on the route template.
pub const PUBLIC: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/"),
    ("GET", "/ui/{*path}"),
    ("GET", "/api/openapi.json"),
    ("POST", "/api/v1/auth/session"),
    // How one may sign in (shown on the sign-in page), and the OpenID sign-in itself.
    ("GET", "/api/v1/auth/methods"),
    ("GET", "/auth/oidc/login"),
    ("GET", "/auth/oidc/callback"),
    ("POST", "/api/v1/ingest"),
    ("POST", "/api/v1/write"),
];

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    Needs { role: Role, fleet_wide: bool },
}

/// The access rule of `method` on `route` (a template; `path` is the literal path, for
/// the documentation pages whose routes Swagger UI declares). HEAD is treated as GET.
pub fn access(method: &Method, route: &str, path: &str) -> Access {
    let m = if method == Method::HEAD { "GET" } else { method.as_str() };
    if (m == "GET" && (path == "/api/docs" || path.starts_with("/api/docs/")))
        || PUBLIC.iter().any(|(pm, pr)| *pm == m && *pr == route)
    {
        return Access::Public;
    }
    match POLICY.iter().find(|rule| rule.method == m && rule.route == route) {
        Some(rule) => Access::Needs {
            role: rule.role,
            fleet_wide: rule.fleet_wide,
        },
        None => Access::Needs {
            role: Role::Admin,
            fleet_wide: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_no_duplicates_and_gets_are_viewer() {
        let mut seen = std::collections::HashSet::new();
        for rule in POLICY {
            assert!(seen.insert((rule.method, rule.route)), "{rule:?} twice");
            if rule.method == "GET" && !rule.route.starts_with("/api/v1/auth/tokens") && rule.route != "/api/v1/audit" {
                // `/metrics` alone is readable by the scrape token.
                let reader = if rule.route == "/metrics" {
                    Role::Scraper
                } else {
                    Role::Viewer
                };
                assert_eq!(rule.role, reader, "{rule:?}: reads are for viewers");
            }
            if rule.route != "/metrics" {
                assert!(
                    rule.role > Role::Scraper,
                    "{rule:?}: a scrape token reads /metrics only"
                );
            }
            assert!(
                !PUBLIC.iter().any(|(m, r)| *m == rule.method && *r == rule.route),
                "{rule:?} is also public"
            );
        }
    }

    #[test]
    fn unknown_routes_need_an_unscoped_admin() {
        assert_eq!(
            access(&Method::POST, "/api/v1/brand-new", "/api/v1/brand-new"),
            Access::Needs {
                role: Role::Admin,
                fleet_wide: true
            }
        );
        // A method the table does not list for a known route is not borrowed from it.
        assert_eq!(
            access(&Method::PUT, "/api/v1/gpus", "/api/v1/gpus"),
            Access::Needs {
                role: Role::Admin,
                fleet_wide: true
            }
        );
    }

    #[test]
    fn changes_need_operators_and_tokens_need_admins() {
        let needs = |m: Method, r: &str| access(&m, r, r);
        assert_eq!(
            needs(Method::POST, "/api/v1/incidents/{id}/ack"),
            Access::Needs {
                role: Role::Operator,
                fleet_wide: false
            }
        );
        assert_eq!(
            needs(Method::GET, "/api/v1/auth/tokens"),
            Access::Needs {
                role: Role::Admin,
                fleet_wide: true
            }
        );
        assert_eq!(
            needs(Method::HEAD, "/api/v1/gpus"),
            Access::Needs {
                role: Role::Viewer,
                fleet_wide: false
            }
        );
        assert_eq!(needs(Method::GET, "/healthz"), Access::Public);
        assert_eq!(
            access(&Method::GET, "/api/docs/{*rest}", "/api/docs/index.css"),
            Access::Public
        );
        assert_eq!(
            needs(Method::GET, "/metrics"),
            Access::Needs {
                role: Role::Scraper,
                fleet_wide: true
            }
        );
    }
}
