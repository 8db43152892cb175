//! What a caller may see. Today every caller sees everything; authentication and
//! tenants will narrow the scope (namespaces, accounts, nodes) without touching handlers.

use gpuwarden_model::GpuIdentity;

/// A tenant as the configuration defines it (`[auth.tenants.NAME]`): the parts of the
/// fleet its principals may see. Empty lists do not restrict; a tenant with every list
/// empty is refused by the configuration loader (it would see the whole fleet).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantDef {
    /// Kubernetes namespaces whose workloads' GPUs the tenant sees.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Slurm accounts whose jobs' GPUs the tenant sees.
    #[serde(default)]
    pub slurm_accounts: Vec<String>,
    /// Nodes whose GPUs the tenant sees.
    #[serde(default)]
    pub nodes: Vec<String>,
}

/// The set of GPUs a caller may see.
#[derive(Debug, Clone, Default)]
pub struct CallerScope {
    /// `None`: all namespaces. `Some(list)`: only GPUs whose workload is in one of them.
    pub namespaces: Option<Vec<String>>,
    /// `None`: all nodes. `Some(list)`: only these nodes.
    pub nodes: Option<Vec<String>>,
}

impl CallerScope {
    /// Everything (no authentication configured, loopback only).
    pub fn all() -> Self {
        CallerScope::default()
    }

    pub fn allows(&self, gpu: &GpuIdentity) -> bool {
        let ns_ok = match &self.namespaces {
            None => true,
            Some(list) => gpu
                .workload
                .namespace
                .as_ref()
                .is_some_and(|ns| list.iter().any(|n| n == ns)),
        };
        let node_ok = match &self.nodes {
            None => true,
            Some(list) => list.iter().any(|n| n == &gpu.node),
        };
        ns_ok && node_ok
    }

    /// The scope of a principal confined to `tenant`.
    pub fn for_tenant(tenant: &TenantDef) -> Self {
        let some = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        CallerScope {
            namespaces: some(&tenant.namespaces),
            nodes: some(&tenant.nodes),
        }
    }

    /// A short string that differs between scopes, for keys of cached answers.
    pub fn cache_key(&self) -> String {
        format!("{:?}|{:?}", self.namespaces, self.nodes)
    }

    /// Whether node-level things (incidents, node health) of `node` are visible.
    /// Namespace-scoped callers see incidents of nodes they may see at all; finer
    /// filtering by the incident's GPU comes with tenants.
    pub fn allows_node(&self, node: &str) -> bool {
        match &self.nodes {
            None => true,
            Some(list) => list.iter().any(|n| n == node),
        }
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
