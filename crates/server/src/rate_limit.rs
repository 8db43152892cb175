//! Rate limits on the API/UI router: token buckets per client address and per principal,
//! answered `429 Too Many Requests` with `Retry-After` (whole seconds) and the usual JSON
//! error body.
//!
//! - **Per client address** ([`by_address`]): the peer address the accept loop puts in
//!   the request (`ConnectInfo<SocketAddr>`). IPv6 clients are keyed by their /64 (one
//!   host usually owns a whole /64, so per-address buckets would be free to multiply);
//!   IPv4-mapped IPv6 addresses count as their IPv4 address. Loopback clients are exempt
//!   by default ([`RateLimitConfig::exempt_loopback`]): on loopback the client is the
//!   operator on the host or a reverse proxy, and behind a proxy every user shares
//!   127.0.0.1 — one bucket for all of them would throttle everyone together (rate-limit
//!   at the proxy instead).
//! - **Per principal** ([`by_principal`]): the authenticated [`Principal`] in the
//!   request's extensions, when there is one and it is not `anonymous`. This layer must
//!   sit *inside* the authentication middleware (which inserts the principal); the
//!   address layer should sit outside it, so that guessing tokens is limited too.
//!   [`RateLimits::check_principal`] serves an authentication middleware that prefers to
//!   call it itself.
//! - `/healthz` and `/readyz` are never limited (probes must not fail because a client
//!   was greedy).
//!
//! Memory is bounded: buckets live in two generations ([`KeyedBuckets`]); when the
//! current one is half of [`RateLimitConfig::max_tracked`] full, or has not rotated for a
//! full refill time, it becomes the previous one and the old previous one is dropped. A
//! bucket used again is moved forward, so active clients keep their state while idle
//! ones (whose buckets would have refilled anyway) and a flood of one-shot addresses are
//! forgotten: at most `max_tracked` buckets exist, however many addresses call.

use crate::principal::Principal;
use crate::ApiError;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One token bucket's shape: `rate` requests per second on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    /// Tokens added per second.
    pub rate: f64,
    /// Bucket size: requests allowed at once after a pause.
    pub burst: u32,
}

impl Limit {
    /// Seconds an empty bucket takes to fill.
    fn refill(&self) -> Duration {
        Duration::from_secs_f64((f64::from(self.burst) / self.rate).clamp(1.0, 86_400.0))
    }
}

/// Settings of the API's rate limits (`[api.rate_limit]` in the configuration).
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    /// Per client address (IPv6: per /64). Default 20/s, burst 200.
    pub client: Limit,
    /// Per authenticated principal (all its clients together). Default 50/s, burst 500.
    pub principal: Limit,
    /// Loopback clients skip the per-address limit (default true; see the module doc).
    pub exempt_loopback: bool,
    /// Most buckets kept per kind (client, principal). Default 100,000 (~5 MB).
    pub max_tracked: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            client: Limit { rate: 20.0, burst: 200 },
            principal: Limit { rate: 50.0, burst: 500 },
            exempt_loopback: true,
            max_tracked: 100_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

struct Generations<K> {
    current: HashMap<K, Bucket>,
    previous: HashMap<K, Bucket>,
    rotated_at: Instant,
}

/// Token buckets by key, at most `max` of them (two generations, see the module doc).
pub struct KeyedBuckets<K> {
    limit: Limit,
    max: usize,
    inner: Mutex<Generations<K>>,
}

impl<K: Hash + Eq + Clone> KeyedBuckets<K> {
    pub fn new(limit: Limit, max: usize) -> Self {
        KeyedBuckets {
            limit,
            max: max.max(2),
            inner: Mutex::new(Generations {
                current: HashMap::new(),
                previous: HashMap::new(),
                rotated_at: Instant::now(),
            }),
        }
    }

    /// Takes one token of `key`'s bucket at `now`; `Err(wait)` when it is empty, with the
    /// time until a token is back.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let limit = self.limit;
        let mut g = self.inner.lock();
        let bucket = match g.current.get(key) {
            Some(b) => *b,
            None => {
                let found = g.previous.remove(key);
                if g.current.len() >= self.max / 2 || now.saturating_duration_since(g.rotated_at) >= limit.refill() {
                    g.previous = std::mem::take(&mut g.current);
                    g.rotated_at = now;
                }
                found.unwrap_or(Bucket {
                    tokens: f64::from(limit.burst),
                    last: now,
                })
            }
        };
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        let tokens = (bucket.tokens + elapsed * limit.rate).min(f64::from(limit.burst));
        let (tokens, result) = if tokens >= 1.0 {
            (tokens - 1.0, Ok(()))
        } else {
            (tokens, Err(Duration::from_secs_f64((1.0 - tokens) / limit.rate)))
        };
        g.current.insert(key.clone(), Bucket { tokens, last: now });
        result
    }

    /// Buckets held now (both generations).
    pub fn len(&self) -> usize {
        let g = self.inner.lock();
        g.current.len() + g.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The key of a client address: IPv4 as is, IPv6 by its /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    V4(u32),
    V6Prefix(u64),
}

impl ClientKey {
    pub fn of(ip: IpAddr) -> ClientKey {
        match ip {
            IpAddr::V4(v4) => ClientKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey::V4(u32::from(v4)),
                None => ClientKey::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// The API's rate limiter: buckets per client address and per principal.
pub struct RateLimits {
    config: RateLimitConfig,
    clients: KeyedBuckets<ClientKey>,
    principals: KeyedBuckets<String>,
}

impl RateLimits {
    pub fn new(config: RateLimitConfig) -> Arc<RateLimits> {
        Arc::new(RateLimits {
            clients: KeyedBuckets::new(config.client, config.max_tracked),
            principals: KeyedBuckets::new(config.principal, config.max_tracked),
            config,
        })
    }

    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    /// The per-address check; `Err` is the 429 to answer.
    pub fn check_client(&self, ip: IpAddr, now: Instant) -> Result<(), Refused> {
        if self.config.exempt_loopback && ip.is_loopback() {
            return Ok(());
        }
        self.clients
            .check(&ClientKey::of(ip), now)
            .map_err(|wait| Refused::new("this client address".into(), wait))
    }

    /// The per-principal check (anonymous is not limited here); `Err` is the 429 to answer.
    pub fn check_principal(&self, principal: &Principal, now: Instant) -> Result<(), Refused> {
        // The id `Principal::anonymous()` carries: no authentication, nobody to count.
        if principal.id == "anonymous" {
            return Ok(());
        }
        self.principals
            .check(&principal.id, now)
            .map_err(|wait| Refused::new(format!("principal '{}'", principal.id), wait))
    }

    /// Buckets held (client, principal): for tests and diagnostics.
    pub fn tracked(&self) -> (usize, usize) {
        (self.clients.len(), self.principals.len())
    }
}

/// A request refused by a rate limit: renders as 429 with `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Who was limited, for the message ("this client address", "principal 'tok-…'").
    pub who: String,
    /// Whole seconds until a request will be allowed again (at least 1).
    pub retry_after_secs: u64,
}

impl Refused {
    fn new(who: String, wait: Duration) -> Refused {
        Refused {
            who,
            retry_after_secs: (wait.as_secs_f64().ceil() as u64).max(1),
        }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let mut resp = ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "rate_limited",
            message: format!(
                "too many requests from {}; retry after {} s (Retry-After)",
                self.who, self.retry_after_secs
            ),
        }
        .into_response();
        resp.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            HeaderValue::from(self.retry_after_secs),
        );
        resp
    }
}

fn exempt(req: &Request) -> bool {
    matches!(req.uri().path(), "/healthz" | "/readyz")
}

/// Middleware: the per-address limit (outside authentication).
pub async fn by_address(State(limits): State<Arc<RateLimits>>, req: Request, next: Next) -> Response {
    if !exempt(&req) {
        if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>() {
            if let Err(e) = limits.check_client(peer.ip(), Instant::now()) {
                tracing::debug!(client = %peer.ip(), "rate limited");
                return e.into_response();
            }
        }
    }
    next.run(req).await
}

/// Middleware: the per-principal limit (inside authentication, which inserts the
/// [`Principal`]).
pub async fn by_principal(State(limits): State<Arc<RateLimits>>, req: Request, next: Next) -> Response {
    if !exempt(&req) {
        if let Some(p) = req.extensions().get::<Principal>() {
            if let Err(e) = limits.check_principal(p, Instant::now()) {
                tracing::debug!(principal = %p.id, "rate limited");
                return e.into_response();
            }
        }
    }
    next.run(req).await
}

/// `router` with the per-principal layer. With authentication, apply it *before* the
/// authentication layer (layers added later run earlier), so it runs after the principal
/// is known: `wrap_addresses(wrap_principals(r, l).layer(auth), l)`.
pub fn wrap_principals(router: axum::Router, limits: Arc<RateLimits>) -> axum::Router {
    router.layer(axum::middleware::from_fn_with_state(limits, by_principal))
}

/// `router` with the per-address layer (outermost, before authentication runs).
pub fn wrap_addresses(router: axum::Router, limits: Arc<RateLimits>) -> axum::Router {
    router.layer(axum::middleware::from_fn_with_state(limits, by_address))
}

/// Both layers, for a router with no authentication layer between them.
pub fn wrap(router: axum::Router, limits: Arc<RateLimits>) -> axum::Router {
    wrap_addresses(wrap_principals(router, limits.clone()), limits)
}

#[cfg(test)]
mod tests;
