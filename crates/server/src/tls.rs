//! TLS for gpuwarden's listeners (rustls, aws-lc-rs): the server certificate and key,
//! optional client certificates, and reloading them without a restart.
//!
//! - [`TlsFiles`] names the PEM files: certificate chain, private key and, optionally, a
//!   CA whose client certificates are *required* (mutual TLS for agents).
//! - [`TlsReloader`] holds the current `rustls::ServerConfig`. [`TlsReloader::reload_if_changed`]
//!   re-reads the files when their modification time or size changed;
//!   [`TlsReloader::spawn_watcher`] calls it every few seconds and on SIGHUP. New
//!   handshakes use the new configuration, open connections keep theirs. A file that does
//!   not load (half-written, garbage, key not matching the certificate) is logged as an
//!   error once and the previous configuration keeps serving: a bad deploy of a
//!   certificate never stops gpuwarden.
//! - [`ClientCertificate`] is what a verified client certificate says about its holder
//!   (common name, DNS names); the accept loop puts it into each request's extensions
//!   so the ingest endpoints can bind an agent to its node.
//!
//! The crypto provider is passed explicitly (`builder_with_provider`, aws-lc-rs, the same
//! one reqwest uses in this workspace) instead of relying on a process-wide default,
//! which panics when two providers are compiled in and none was installed.

use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// How often the watcher looks at the files' modification times by default.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// The files of one listener's TLS setup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the leaf certificate.
    pub key: PathBuf,
    /// PEM CA certificates; when set, every client must present a certificate issued by
    /// one of them (the handshake fails otherwise).
    pub client_ca: Option<PathBuf>,
}

/// Why a TLS setup could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {what} {path}: {source}; check the path and the file's permissions")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {path} holds no PEM {expected}; expected a file with `-----BEGIN {expected}-----`")]
    Empty {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("{what} {path} is not valid PEM: {problem}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        problem: String,
    },
    #[error(
        "the certificate {cert} and key {key} cannot be used: {problem} (is the certificate valid PEM, \
         and the key the certificate's own?)"
    )]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        problem: String,
    },
    #[error("client CA {path}: {problem}")]
    ClientCa { path: PathBuf, problem: String },
}

/// What a verified client certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The subject's common names (normally one).
    pub common_names: Vec<String>,
    /// The DNS names of the subject alternative name extension.
    pub dns_names: Vec<String>,
}

impl ClientCertificate {
    /// Reads the names of a DER certificate; `None` when it does not parse (rustls has
    /// verified it already, so that does not happen with a certificate it accepted).
    pub fn from_der(der: &[u8]) -> Option<ClientCertificate> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let common_names = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
            .collect();
        let dns_names = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        Some(ClientCertificate {
            common_names,
            dns_names,
        })
    }

    /// Every name the certificate vouches for: common names, then DNS names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.common_names.iter().chain(&self.dns_names).map(String::as_str)
    }

    /// Whether `node` is one of the certificate's names (ASCII case-insensitive, as DNS
    /// names are; exact otherwise — a wildcard DNS name is not expanded).
    pub fn vouches_for(&self, node: &str) -> bool {
        self.names().any(|n| n.eq_ignore_ascii_case(node))
    }
}

/// Identity of a file's content for change detection: modification time and size.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            path: path.to_owned(),
            problem: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_owned(),
            expected: "CERTIFICATE",
        });
    }
    Ok(certs)
}

/// Builds the server configuration from the files (no caching, no side effects).
pub fn load(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let chain = certificates("certificate", &files.cert)?;
    let key_pem = read("key", &files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            what: "key",
            path: files.key.clone(),
            expected: "PRIVATE KEY",
        },
        e => TlsError::Pem {
            what: "key",
            path: files.key.clone(),
            problem: e.to_string(),
        },
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Pair {
            cert: files.cert.clone(),
            key: files.key.clone(),
            problem: e.to_string(),
        })?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certificates("client CA", ca)? {
                roots.add(c).map_err(|e| TlsError::ClientCa {
                    path: ca.clone(),
                    problem: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::ClientCa {
                    path: ca.clone(),
                    problem: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| TlsError::Pair {
        cert: files.cert.clone(),
        key: files.key.clone(),
        problem: e.to_string(),
    })?;
    // The accept loop speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

struct Current {
    config: Arc<ServerConfig>,
    /// Stamps of the files the current config was loaded from, or last tried.
    stamps: Vec<Stamp>,
}

/// The current TLS configuration of a listener, reloaded from its files when they change.
pub struct TlsReloader {
    files: TlsFiles,
    current: RwLock<Current>,
}

impl std::fmt::Debug for TlsReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsReloader").field("files", &self.files).finish()
    }
}

impl TlsReloader {
    /// Loads the files; an error here is fatal at start (nothing to fall back to).
    pub fn new(files: TlsFiles) -> Result<Arc<TlsReloader>, TlsError> {
        let stamps = Self::stamps_of(&files);
        let config = Arc::new(load(&files)?);
        Ok(Arc::new(TlsReloader {
            files,
            current: RwLock::new(Current { config, stamps }),
        }))
    }

    fn stamps_of(files: &TlsFiles) -> Vec<Stamp> {
        let mut v = vec![stamp(&files.cert), stamp(&files.key)];
        if let Some(ca) = &files.client_ca {
            v.push(stamp(ca));
        }
        v
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_certificates(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// The configuration new handshakes use.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current.read().config.clone()
    }

    /// Re-reads the files if any changed since the last load or attempt. Returns
    /// `Ok(true)` when a new configuration is in use, `Ok(false)` when nothing changed,
    /// and the error when the changed files do not load (the old configuration stays;
    /// the same files are not tried again until they change once more).
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let stamps = Self::stamps_of(&self.files);
        if stamps == self.current.read().stamps {
            return Ok(false);
        }
        self.reload_with(stamps)
    }

    /// Re-reads the files whether or not they changed (SIGHUP).
    pub fn reload(&self) -> Result<bool, TlsError> {
        self.reload_with(Self::stamps_of(&self.files))
    }

    fn reload_with(&self, stamps: Vec<Stamp>) -> Result<bool, TlsError> {
        let loaded = load(&self.files);
        let mut cur = self.current.write();
        cur.stamps = stamps;
        cur.config = Arc::new(loaded?);
        Ok(true)
    }

    /// Checks the files every `interval` and on SIGHUP until `shutdown` turns true;
    /// logs each reload and each failure (once per change).
    pub fn spawn_watcher(
        self: &Arc<Self>,
        interval: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                #[cfg(unix)]
                let sighup = async {
                    match hup.as_mut() {
                        Some(h) => {
                            h.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                #[cfg(not(unix))]
                let sighup = std::future::pending::<()>();
                let forced = tokio::select! {
                    _ = tick.tick() => false,
                    _ = sighup => true,
                    _ = shutdown.changed() => return,
                };
                if *shutdown.borrow() {
                    return;
                }
                let result = if forced { me.reload() } else { me.reload_if_changed() };
                match result {
                    Ok(true) => tracing::info!(
                        cert = %me.files.cert.display(),
                        "TLS certificate reloaded; new connections use it"
                    ),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!("reloading TLS files failed, still serving the previous certificate: {e}")
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests;
