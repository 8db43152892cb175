//! The accept loop of gpuwarden's HTTP listeners, with the limits `axum::serve` lacks.
//!
//! - **Header-read timeout**: a connection that has not sent a complete request head
//!   within [`ServeLimits::header_read_timeout`] is closed (hyper's
//!   `http1::Builder::header_read_timeout`), so slow or idle clients cannot hold
//!   connections open forever.
//! - **Request timeout**: a request not answered within
//!   [`ServeLimits::request_timeout`] is answered 408 with the JSON error body
//!   (tower-http's `TimeoutLayer`; the JSON comes from [`crate::json_errors`]).
//! - **Connection limit**: at most [`ServeLimits::max_connections`] connections are
//!   served at once. Past it a new connection is accepted and closed at once (the client
//!   sees a reset and may retry), rather than left waiting in the kernel backlog where
//!   it would hold a socket and tell the client nothing.
//! - **Graceful shutdown**: when `shutdown` turns true the loop stops accepting, asks
//!   every connection to finish its current request, and waits at most
//!   [`ServeLimits::shutdown_grace`] for them, so SIGTERM ends the process promptly even
//!   with clients that never finish.
//! - **TLS** (optional, [`crate::tls`]): the handshake runs inside the connection's slot
//!   and under the header-read timeout, so a client that connects and says nothing, or
//!   handshakes slowly, holds a slot no longer than one that never sends its headers. A
//!   connection whose first byte is not a TLS handshake record gets a plain-HTTP 400
//!   telling the client to use https. A verified client certificate's names go into
//!   every request's extensions ([`crate::tls::ClientCertificate`]).

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

/// Limits of one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeLimits {
    /// Time to receive a request head (request line and headers). Default 10 s.
    pub header_read_timeout: Duration,
    /// Time to answer one request, body included. Default 60 s.
    pub request_timeout: Duration,
    /// Connections served at once. Default 1024.
    pub max_connections: usize,
    /// Longest wait for open connections at shutdown. Default 5 s.
    pub shutdown_grace: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Serves `router` on `listener` under `limits` until `shutdown` turns true.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: watch::Receiver<bool>,
    limits: ServeLimits,
) -> std::io::Result<()> {
    serve_tls(listener, router, shutdown, limits, None).await
}

/// [`serve_with`], over TLS when `tls` is given (its current configuration at each
/// handshake, so reloaded certificates apply to new connections).
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    mut shutdown: watch::Receiver<bool>,
    limits: ServeLimits,
    tls: Option<Arc<crate::tls::TlsReloader>>,
) -> std::io::Result<()> {
    let router = crate::json_errors::wrap(router, limits.request_timeout);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let refused = AtomicU64::new(0);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // Headers past the count json_errors allows still get hyper's bare 431.
        .max_headers(crate::json_errors::MAX_HEADERS * 2);
    loop {
        let accepted = tokio::select! {
            _ = wait_for(&mut shutdown) => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait a little instead of spinning.
                tracing::warn!("accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            let n = refused.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() {
                tracing::warn!(
                    "{} connections open (the limit): closing new ones ({} so far), e.g. from {peer}",
                    limits.max_connections,
                    n + 1
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let handshake_timeout = limits.header_read_timeout;
        let mut stopping = shutdown.clone();
        tokio::spawn(async move {
            let Some(tls) = tls else {
                serve_connection(&builder, watcher, stream, router, peer, None).await;
                drop(permit);
                return;
            };
            // The handshake counts against the header-read timeout: a silent or slow
            // client may not hold its slot longer than a plain one could.
            let handshake = async {
                if !starts_with_tls_record(&stream).await {
                    answer_plain_http(stream).await;
                    return None;
                }
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
                match acceptor.accept(stream).await {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::debug!("TLS handshake with {peer} failed: {e}");
                        None
                    }
                }
            };
            // Shutdown does not wait for handshakes (hyper's graceful shutdown only knows
            // connections it serves).
            let handshake = tokio::select! {
                r = tokio::time::timeout(handshake_timeout, handshake) => r,
                _ = wait_for(&mut stopping) => Ok(None),
            };
            match handshake {
                Ok(Some(stream)) => {
                    let cert = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|c| crate::tls::ClientCertificate::from_der(c));
                    serve_connection(&builder, watcher, stream, router, peer, cert).await;
                }
                Ok(None) => {}
                Err(_) => tracing::debug!("TLS handshake with {peer} timed out"),
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "connections still open {} s after shutdown began; closing them",
            limits.shutdown_grace.as_secs()
        );
    }
    Ok(())
}

/// Serves one connection (plain or TLS) until it ends or shutdown closes it.
async fn serve_connection<I>(
    builder: &hyper::server::conn::http1::Builder,
    watcher: hyper_util::server::graceful::Watcher,
    io: I,
    router: axum::Router,
    peer: SocketAddr,
    cert: Option<crate::tls::ClientCertificate>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = tower::ServiceExt::map_request(router, move |mut req: axum::http::Request<_>| {
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo::<SocketAddr>(peer));
        if let Some(c) = &cert {
            req.extensions_mut().insert(c.clone());
        }
        req
    });
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(svc));
    // Errors here are the client's doing (reset, timeout, bad request).
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!("connection from {peer}: {e}");
    }
}

/// Whether the client's first byte is a TLS handshake record (0x16). Waits for it (the
/// caller bounds the wait); `false` when the client closed without sending anything.
async fn starts_with_tls_record(stream: &tokio::net::TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(stream.peek(&mut first).await, Ok(1) if first[0] == 0x16)
}

/// Tells a plain-HTTP client on a TLS port what went wrong, instead of a reset it cannot
/// explain, and closes the connection.
async fn answer_plain_http(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Read what the client sent first: closing a socket with unread data resets it, and
    // the client would see the reset instead of the answer.
    let mut head = [0u8; 8192];
    let _ = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut head)).await;
    let body = r#"{"error":{"code":"tls_required","message":"this port speaks HTTPS only; use an https:// URL"}}"#;
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn wait_for(shutdown: &mut watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            // The sender is gone: as before (axum::serve), that ends serving.
            return;
        }
    }
}
