//! gpuwarden's HTTP face: the JSON API under `/api/v1`, `/healthz` and `/metrics`.
//!
//! Handlers read the store and the live fleet view; they never scrape or analyze. Every
//! handler that returns fleet data takes the caller's [`scope::CallerScope`] and filters
//! what it returns (and refuses actions) by it, through [`visibility`]: authentication
//! only has to put a tenant's scope into the request.

pub mod api;
pub mod audit;

pub mod auth;
pub mod cache;
pub mod derived_metrics;
pub mod error;
pub mod exposition;
pub mod json_errors;
pub mod listener;
pub mod openapi;
pub mod principal;
pub mod rate_limit;
pub mod request_guard;
pub mod scope;
mod time_param;
pub mod tls;
pub mod ui;
pub mod visibility;

pub use api::{router, router_with_auth, AppState};
pub use error::ApiError;
pub use listener::{serve_tls, serve_with, ServeLimits};

use tokio::sync::watch;

/// Serves `router` on `listener` with the default [`ServeLimits`] until `shutdown` turns
/// true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    serve_with(listener, router, shutdown, ServeLimits::default()).await
}
