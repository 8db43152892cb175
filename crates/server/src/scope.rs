//! What a caller may see: everything (no authentication, or a principal of no tenant),
//! or the part of the fleet a tenant owns. Handlers never look at principals; they ask
//! the [`CallerScope`] (and [`crate::visibility`] for things derived from GPUs:
//! incidents, notifications, predictions, targets, silences).
//!
//! A tenant owns **the union of its parts**: a GPU is visible when its workload's
//! Kubernetes namespace is one of the tenant's `namespaces`, OR its Slurm account one of
//! its `slurm_accounts`, OR its node one of its `nodes`. That is what "tenant = these
//! namespaces, these accounts, these nodes" means to an operator: each list names things
//! the tenant owns, and owning a node means owning every GPU on it. An attribution that
//! is unknown (no namespace label, no account) never matches: a GPU whose owner cannot
//! be told is visible only to tenants that own its node. Node-level things (a node's own
//! incidents, its scrape target, its health beyond the tenant's GPUs) are visible only
//! to tenants that own the node by `nodes`: running a pod on a node is not owning it.

use gpuwarden_model::GpuIdentity;

/// A tenant as the configuration defines it (`[auth.tenants.NAME]`): the parts of the
/// fleet its principals may see. A GPU is visible when it matches any of the lists (a
/// union, see the module documentation); an empty list adds nothing. A tenant with
/// every list empty is refused by the configuration loader (it would see nothing; a
/// fleet-wide principal simply has no tenant).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantDef {
    /// Kubernetes namespaces whose workloads' GPUs the tenant sees.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Slurm accounts whose jobs' GPUs the tenant sees.
    #[serde(default)]
    pub slurm_accounts: Vec<String>,
    /// Nodes whose GPUs (and node-level incidents, targets) the tenant sees.
    #[serde(default)]
    pub nodes: Vec<String>,
}

/// The set of GPUs (and nodes) a caller may see.
///
/// `restricted == false` (the default, [`CallerScope::all`]): everything. Restricted:
/// the union of the three lists (names compared exactly); an empty restricted scope
/// sees nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CallerScope {
    restricted: bool,
    /// GPUs whose workload is in one of these Kubernetes namespaces.
    pub namespaces: Vec<String>,
    /// GPUs whose workload's Slurm account is one of these.
    pub slurm_accounts: Vec<String>,
    /// Every GPU of these nodes, and the nodes' own incidents and targets.
    pub nodes: Vec<String>,
}

impl CallerScope {
    /// Everything (no authentication configured, or a principal of no tenant).
    pub fn all() -> Self {
        CallerScope::default()
    }

    /// The scope of a principal confined to `tenant`.
    pub fn for_tenant(tenant: &TenantDef) -> Self {
        CallerScope {
            restricted: true,
            namespaces: tenant.namespaces.clone(),
            slurm_accounts: tenant.slurm_accounts.clone(),
            nodes: tenant.nodes.clone(),
        }
    }

    /// Whether the caller is confined to a tenant (false: sees the whole fleet).
    pub fn is_restricted(&self) -> bool {
        self.restricted
    }

    /// Refuses a caller confined to a tenant from a route that is fleet-wide by nature
    /// (`what` says what it does, e.g. "/metrics describes the whole fleet"): `403
    /// not_for_tenants`. Authentication's policy table refuses these routes first; the
    /// handlers call this too, so no wiring can forget it.
    pub fn refuse_if_tenant(&self, what: &str) -> Result<(), crate::ApiError> {
        if self.restricted {
            return Err(crate::ApiError {
                status: axum::http::StatusCode::FORBIDDEN,
                code: "not_for_tenants",
                message: format!("{what}; a principal confined to a tenant cannot use it"),
            });
        }
        Ok(())
    }

    /// Whether the caller may see `gpu` (its node, namespace and account as known now).
    pub fn allows(&self, gpu: &GpuIdentity) -> bool {
        self.allows_parts(
            &gpu.node,
            gpu.workload.namespace.as_deref(),
            gpu.workload.account.as_deref(),
        )
    }

    /// Whether the caller may see a GPU on `node` attributed to `namespace` and
    /// `account` (either unknown: `None`, which matches no tenant list).
    pub fn allows_parts(&self, node: &str, namespace: Option<&str>, account: Option<&str>) -> bool {
        if !self.restricted {
            return true;
        }
        let has = |list: &[String], v: Option<&str>| v.is_some_and(|v| list.iter().any(|x| x == v));
        self.owns_node(node) || has(&self.namespaces, namespace) || has(&self.slurm_accounts, account)
    }

    /// Whether node-level things of `node` (its own incidents and findings, its scrape
    /// target, its whole health) are visible: only to a caller that owns the node by
    /// `nodes` (or sees everything).
    pub fn owns_node(&self, node: &str) -> bool {
        !self.restricted || self.nodes.iter().any(|n| n == node)
    }

    /// An unambiguous string that differs between scopes, for keys of cached answers
    /// (JSON: a name cannot end one list and begin the next).
    pub fn cache_key(&self) -> String {
        if !self.restricted {
            return "all".to_string();
        }
        serde_json::to_string(self).unwrap_or_else(|_| format!("{self:?}"))
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for CallerScope {
    type Rejection = crate::ApiError;

    /// The scope authentication put into the request's extensions; without one
    /// (authentication off, loopback only) everything.
    async fn from_request_parts(parts: &mut axum::http::request::Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<CallerScope>()
            .cloned()
            .unwrap_or_else(CallerScope::all))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpuwarden_model::GpuUuid;

    fn gpu(node: &str, ns: Option<&str>, account: Option<&str>) -> GpuIdentity {
        let mut g = GpuIdentity::new(GpuUuid::new("GPU-1"), node);
        g.workload.namespace = ns.map(Into::into);
        g.workload.account = account.map(Into::into);
        g
    }

    #[test]
    fn everything_without_a_tenant() {
        let s = CallerScope::all();
        assert!(!s.is_restricted());
        assert!(s.allows(&gpu("n1", None, None)));
        assert!(s.owns_node("n1"));
        assert_eq!(s.cache_key(), "all");
    }

    #[test]
    fn a_tenant_sees_the_union_of_its_parts() {
        let s = CallerScope::for_tenant(&TenantDef {
            namespaces: vec!["ml".into()],
            slurm_accounts: vec!["physics".into()],
            nodes: vec!["n9".into()],
        });
        assert!(s.allows(&gpu("n1", Some("ml"), None)), "by namespace");
        assert!(s.allows(&gpu("n1", None, Some("physics"))), "by account");
        assert!(
            s.allows(&gpu("n9", Some("other"), Some("chem"))),
            "by node: every GPU of it"
        );
        assert!(!s.allows(&gpu("n1", Some("other"), Some("chem"))));
        assert!(!s.allows(&gpu("n1", None, None)), "unknown attribution is denied");
        assert!(s.owns_node("n9") && !s.owns_node("n1"), "a pod on n1 does not own n1");
    }

    #[test]
    fn an_account_tenant_denies_gpus_of_unknown_account() {
        let s = CallerScope::for_tenant(&TenantDef {
            slurm_accounts: vec!["physics".into()],
            ..TenantDef::default()
        });
        let mut job = gpu("n1", None, None);
        job.workload.job = Some("4242".into());
        assert!(!s.allows(&job), "a Slurm job without a known account");
        assert!(
            !s.allows(&gpu("n1", Some("physics"), None)),
            "a namespace is not an account"
        );
    }

    #[test]
    fn cache_keys_differ_and_cannot_be_forged_by_names() {
        let a = CallerScope::for_tenant(&TenantDef {
            namespaces: vec!["a\",\"b".into()],
            ..TenantDef::default()
        });
        let b = CallerScope::for_tenant(&TenantDef {
            namespaces: vec!["a".into(), "b".into()],
            ..TenantDef::default()
        });
        assert_ne!(a.cache_key(), b.cache_key());
        assert_ne!(CallerScope::for_tenant(&TenantDef::default()).cache_key(), "all");
    }
}
