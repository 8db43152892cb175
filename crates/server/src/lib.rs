//! gpuwarden's HTTP face: the JSON API under `/api/v1`, `/healthz` and `/metrics`.
//!
//! Handlers read the store and the live fleet view; they never scrape or analyze. Every
//! handler that returns GPUs takes the caller's [`scope::CallerScope`], so that
//! authentication and tenants (a later step) only have to fill the scope in.

pub mod api;
pub mod cache;
pub mod derived_metrics;
pub mod error;
pub mod exposition;
pub mod openapi;
pub mod scope;
mod time_param;
pub mod ui;

pub use api::{router, AppState};
pub use error::ApiError;

use std::net::SocketAddr;
use tokio::sync::watch;

/// Serves `router` on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
        })
        .await
}
