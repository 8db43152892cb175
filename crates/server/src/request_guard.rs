//! Browser safety for the API/UI listener, before any sign-in exists.
//!
//! gpuwarden's API has no authentication on loopback, and the operator's browser runs on
//! that loopback too: without these checks any web page the operator visits could
//! resolve incidents or create silences with a plain HTML form or a `text/plain` fetch
//! (browsers send those cross-origin without asking the server first), and a DNS
//! rebinding page (`evil.example.com` re-pointed at 127.0.0.1) could read the whole API.
//! Three checks close that:
//!
//! - **Content type** ([`state_change`]): every state-changing request (POST, PUT, PATCH,
//!   DELETE) must say `Content-Type: application/json` (parameters such as
//!   `; charset=utf-8` allowed), even when the route takes no body. A cross-origin page
//!   cannot send that header without a CORS preflight, which gpuwarden never approves.
//!   Otherwise `415 unsupported_media_type`. The push routes (`/api/v1/ingest`,
//!   `/api/v1/write`) are exempt from this one: agents and Prometheus send their own
//!   formats (remote_write is protobuf).
//! - **Origin** ([`state_change`]): when a state-changing request carries `Origin` (every
//!   browser sends it on a cross-origin POST), its `host[:port]` must be the request's own
//!   `Host` and an allowed host; `Origin: null` is refused. Otherwise `403 cross_origin`.
//!   No `Origin` at all (curl, agents, the CLI) is allowed.
//! - **Host** ([`host`]): on every method, the `Host` header must name an allowed host:
//!   `localhost`, `127.0.0.1` and `[::1]` always, the listen address's own IP when it is
//!   not a wildcard, and the names given with `allowed_hosts` in the config file or
//!   `--allowed-host` (any port). That stops DNS rebinding: the rebound page's requests
//!   carry `Host: evil.example.com`. Otherwise `421 host_not_allowed`. A request without
//!   a `Host` (HTTP/1.0) is refused too: it cannot be told apart from a rebinding one.
//!   `/healthz` and `/readyz` are exempt (probes may address the pod by any name; they
//!   reveal nothing).
//!
//! The guard sits on the API/UI router only ([`crate::router`]). The separate ingest
//! listener ([`crate::api::ingest::ingest_router`]) serves non-browser agents with bearer
//! tokens and is not guarded here.

use crate::ApiError;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The names the `Host` header may carry (lower case, no port; IPv6 in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHosts {
    names: Vec<String>,
}

/// The loopback names, always allowed.
pub const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

impl Default for AllowedHosts {
    /// The loopback names only.
    fn default() -> Self {
        AllowedHosts {
            names: LOOPBACK_NAMES.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl AllowedHosts {
    /// The loopback names, the IP of `listen` when it is not a wildcard, and `extra`
    /// (host names or IP literals, without scheme, port or path). Fails on a malformed
    /// name, saying which.
    pub fn new(listen: Option<SocketAddr>, extra: &[String]) -> Result<Self, String> {
        let mut hosts = AllowedHosts::default();
        if let Some(addr) = listen {
            if !addr.ip().is_unspecified() {
                hosts.push(ip_name(addr.ip()));
            }
        }
        for name in extra {
            let n = normalize_name(name)?;
            hosts.push(n);
        }
        Ok(hosts)
    }

    fn push(&mut self, name: String) {
        if !self.names.contains(&name) {
            self.names.push(name);
        }
    }

    /// The allowed names, loopback first.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether `authority` (a `Host` value, `host[:port]`) names an allowed host.
    pub fn allows(&self, authority: &str) -> bool {
        split_authority(authority).is_some_and(|(h, _)| self.names.contains(&h))
    }
}

/// Checks one name of `allowed_hosts`: a DNS name or an IP literal, no scheme, port,
/// path or wildcard. Returns it lower-cased, IPv6 in brackets.
pub fn normalize_name(raw: &str) -> Result<String, String> {
    let s = raw.trim().to_ascii_lowercase();
    if let Ok(ip) = s.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok(ip_name(ip));
    }
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(s)
    } else {
        Err(format!(
            "allowed host {raw:?} is not a host name or IP address (give the name alone, e.g. \
             \"gpuwarden.example.com\": no scheme, port, path or wildcard)"
        ))
    }
}

fn ip_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// `host[:port]` → (lower-cased host, IPv6 in brackets and normalized; port). `None`
/// when malformed.
fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    let a = authority.trim();
    if a.is_empty() || a.contains(['/', '@', ' ', '?', '#']) {
        return None;
    }
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let end = rest.find(']')?;
        let ip: std::net::Ipv6Addr = rest[..end].parse().ok()?;
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        (format!("[{ip}]"), port)
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) => (h.to_ascii_lowercase(), Some(p.parse().ok()?)),
            None => (a.to_ascii_lowercase(), None),
        }
    };
    if host.is_empty() || (host.contains(':') && !host.starts_with('[')) {
        return None;
    }
    Some((host, port))
}

fn is_state_changing(m: &Method) -> bool {
    matches!(*m, Method::POST | Method::PUT | Method::PATCH | Method::DELETE)
}

/// Paths exempt from the `Host` check: probes.
fn host_exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
}

/// Paths exempt from the content-type check: pushes from agents and Prometheus.
fn content_type_exempt(path: &str) -> bool {
    matches!(path, "/api/v1/ingest" | "/api/v1/write")
}

/// The `Host` the request was sent to: the header, else the request target's authority.
fn request_host(headers: &HeaderMap, uri: &axum::http::Uri) -> Option<String> {
    match headers.get(header::HOST) {
        Some(v) => v.to_str().ok().map(str::to_owned),
        None => uri.authority().map(|a| a.as_str().to_owned()),
    }
}

/// The `Host` check alone (every method).
pub fn check_host(
    hosts: &AllowedHosts,
    path: &str,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
) -> Result<(), ApiError> {
    if host_exempt(path) {
        return Ok(());
    }
    match request_host(headers, uri) {
        Some(h) if hosts.allows(&h) => Ok(()),
        Some(h) => Err(host_error(format!(
            "this gpuwarden does not answer to the host name {h:?} (a DNS rebinding page looks like this); \
             if that name is yours, add it to `allowed_hosts` in the config file or give --allowed-host NAME"
        ))),
        None => Err(host_error(
            "the request has no Host header; send one (HTTP/1.1) naming an allowed host, e.g. 127.0.0.1".into(),
        )),
    }
}

fn host_error(message: String) -> ApiError {
    ApiError {
        status: StatusCode::MISDIRECTED_REQUEST,
        code: "host_not_allowed",
        message,
    }
}

/// The content-type and `Origin` checks of a state-changing request (others pass).
pub fn check_state_change(
    hosts: &AllowedHosts,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
) -> Result<(), ApiError> {
    if !is_state_changing(method) {
        return Ok(());
    }
    if !content_type_exempt(path) && !is_json(headers) {
        return Err(ApiError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "unsupported_media_type",
            message: format!(
                "{method} requests must send `Content-Type: application/json`, even without a body \
                 (this is what keeps other web pages from changing gpuwarden)"
            ),
        });
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let refuse = |why: String| ApiError {
        status: StatusCode::FORBIDDEN,
        code: "cross_origin",
        message: format!(
            "{why}; changes are accepted only from gpuwarden's own pages or from clients that send no Origin"
        ),
    };
    let origin = origin
        .to_str()
        .map_err(|_| refuse("the Origin header is not readable".into()))?;
    let Some(host) = request_host(headers, uri) else {
        return Err(refuse("the request has an Origin but no Host".into()));
    };
    if same_origin(hosts, origin, &host) {
        Ok(())
    } else {
        Err(refuse(format!("Origin {origin:?} is not this server ({host:?})")))
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// Whether `origin` (`scheme://host[:port]`) is the server named by `host` (a `Host`
/// value) and that server is allowed. `null` and malformed origins are not.
fn same_origin(hosts: &AllowedHosts, origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return false,
    };
    let (Some((oh, op)), Some((hh, hp))) = (split_authority(authority), split_authority(host)) else {
        return false;
    };
    let op = op.unwrap_or(default_port);
    let port_ok = match hp {
        Some(hp) => hp == op,
        // A Host without port: the scheme's default port.
        None => op == default_port,
    };
    oh == hh && port_ok && hosts.allows(host)
}

/// Middleware: the `Host` check (see the module doc).
pub async fn host(State(hosts): State<Arc<AllowedHosts>>, req: Request, next: Next) -> Response {
    match check_host(&hosts, req.uri().path(), req.headers(), req.uri()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Middleware: the content-type and `Origin` checks of state-changing requests (see the
/// module doc).
pub async fn state_change(State(hosts): State<Arc<AllowedHosts>>, req: Request, next: Next) -> Response {
    match check_state_change(&hosts, req.method(), req.uri().path(), req.headers(), req.uri()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// `router` with the guard: the `Host` check on everything, the state-change checks on
/// its routes (so an unknown route is still 404; a state-changing method a route does
/// not take is 415 without the JSON content type, 405 with it).
pub fn wrap(router: axum::Router, hosts: Arc<AllowedHosts>) -> axum::Router {
    router
        .route_layer(axum::middleware::from_fn_with_state(hosts.clone(), state_change))
        .layer(axum::middleware::from_fn_with_state(hosts, host))
}

#[cfg(test)]
mod tests;
