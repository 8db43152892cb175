//! What `run` and `serve` share about their listeners: TLS from the config and flags
//! (loaded at start, then watched for changes), the plain-HTTP warning for non-loopback
//! addresses, and the API's rate limits.

use crate::config::RunConfig;
use anyhow::{bail, Context, Result};
use gpuwarden_server::tls::{TlsFiles, TlsReloader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

/// `--tls-cert`/`--tls-key` (and `serve`'s ingest flags) over the config's sections.
pub(crate) fn apply_flags(
    cfg: &mut RunConfig,
    api: (Option<PathBuf>, Option<PathBuf>),
    ingest: (Option<PathBuf>, Option<PathBuf>),
    ingest_client_ca: Option<PathBuf>,
) -> Result<()> {
    if let (Some(cert), Some(key)) = api {
        let files = TlsFiles {
            cert,
            key,
            client_ca: cfg.tls.as_ref().and_then(|t| t.client_ca.clone()),
        };
        // Without its own section the ingest listener follows the API's certificate.
        if cfg.ingest_tls == cfg.tls {
            cfg.ingest_tls = Some(files.clone());
        }
        cfg.tls = Some(files);
    }
    if let (Some(cert), Some(key)) = ingest {
        let client_ca = cfg.ingest_tls.as_ref().and_then(|t| t.client_ca.clone());
        cfg.ingest_tls = Some(TlsFiles { cert, key, client_ca });
    }
    if let Some(ca) = ingest_client_ca {
        match cfg.ingest_tls.as_mut() {
            Some(t) => t.client_ca = Some(ca),
            None => bail!(
                "--ingest-client-ca needs TLS on the ingest listener: give --ingest-tls-cert and \
                 --ingest-tls-key (or --tls-cert/--tls-key, or [ingest.tls] in the config)"
            ),
        }
    }
    Ok(())
}

/// Loads a listener's TLS files (an error stops the start: there is no older
/// certificate to fall back to) and watches them for changes until shutdown.
pub(crate) fn start_tls(
    files: Option<&TlsFiles>,
    cfg: &RunConfig,
    what: &str,
    shutdown: watch::Receiver<bool>,
) -> Result<Option<Arc<TlsReloader>>> {
    let Some(files) = files else { return Ok(None) };
    let tls = TlsReloader::new(files.clone()).with_context(|| format!("setting up TLS for the {what}"))?;
    tls.spawn_watcher(cfg.tls_reload_interval, shutdown);
    Ok(Some(tls))
}

/// Warns loudly when a non-loopback address serves plain HTTP: tokens and data would
/// cross the network readable by anyone on the path.
pub(crate) fn warn_if_plain(addr: SocketAddr, tls: bool, what: &str) {
    if !tls && !addr.ip().is_loopback() {
        let msg = format!(
            "the {what} on {addr} speaks plain HTTP on a non-loopback address: bearer tokens and \
             fleet data cross the network unencrypted. Configure [tls] cert/key (or --tls-cert/--tls-key), \
             or terminate TLS in a reverse proxy on this host"
        );
        tracing::warn!("{msg}");
        eprintln!("WARNING: {msg}");
    }
}

/// The configured rate limits (none when disabled), for [`gpuwarden_server::router_with_auth`].
pub(crate) fn rate_limits(cfg: &RunConfig) -> Option<Arc<gpuwarden_server::rate_limit::RateLimits>> {
    cfg.rate_limit
        .as_ref()
        .map(|c| gpuwarden_server::rate_limit::RateLimits::new(c.clone()))
}

/// `http` or `https`, for the banner.
pub(crate) fn scheme(tls: &Option<Arc<TlsReloader>>) -> &'static str {
    if tls.is_some() {
        "https"
    } else {
        "http"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(toml_text: &str) -> RunConfig {
        crate::config::build(toml::from_str(toml_text).unwrap(), None, None, None).unwrap()
    }

    #[test]
    fn flags_override_sections_and_the_ingest_listener_follows_the_api() {
        let mut c = cfg("");
        apply_flags(
            &mut c,
            (Some("a.pem".into()), Some("ak.pem".into())),
            (None, None),
            None,
        )
        .unwrap();
        assert_eq!(c.tls.as_ref().unwrap().cert, PathBuf::from("a.pem"));
        assert_eq!(c.ingest_tls, c.tls);

        let mut c = cfg("");
        apply_flags(
            &mut c,
            (Some("a.pem".into()), Some("ak.pem".into())),
            (Some("i.pem".into()), Some("ik.pem".into())),
            Some("ca.pem".into()),
        )
        .unwrap();
        let i = c.ingest_tls.unwrap();
        assert_eq!(
            (i.cert, i.client_ca),
            (PathBuf::from("i.pem"), Some(PathBuf::from("ca.pem")))
        );
        assert_eq!(
            c.tls.unwrap().client_ca,
            None,
            "the client CA is the ingest listener's only"
        );

        let mut c = cfg("");
        let e = apply_flags(&mut c, (None, None), (None, None), Some("ca.pem".into())).unwrap_err();
        assert!(e.to_string().contains("--ingest-tls-cert"), "{e}");
    }
}
