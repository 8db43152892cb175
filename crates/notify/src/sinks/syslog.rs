//! Syslog, RFC 5424, with a CEF record as the message: UDP (RFC 5426, one message per
//! datagram), TCP with octet-counting framing (RFC 6587 §3.4.1: `LEN SP MSG`), and TLS
//! (RFC 5425, same framing, rustls).
//!
//! `<PRI>1 TIMESTAMP HOSTNAME gpuwarden PROCID MSGID - CEF:0|…`: PRI = facility × 8 +
//! severity (info → 6 informational, warning → 4, critical → 2, fatal → 1 alert),
//! MSGID = the transition, no structured data (every field is in the CEF record).
//!
//! Plain syslog has no acknowledgement: a TCP write can succeed into a connection the
//! collector already closed. Before each write the connection is checked for an EOF
//! from the collector and re-opened if so, which catches a restarted collector; a
//! message lost in the last instant of a crash cannot be detected without RELP.

use super::{cef, BoxFuture, BuildContext, BuildError, Sink, SinkError};
use crate::config::{SyslogConfig, SyslogTransport};
use crate::message::{rfc3339, Notification};
use gpuwarden_model::Severity;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio_rustls::client::TlsStream;

pub struct Syslog {
    name: String,
    address: String,
    transport: SyslogTransport,
    facility: u8,
    hostname: String,
    tls: Option<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>)>,
    conn: tokio::sync::Mutex<Option<Conn>>,
    timeout: Duration,
}

enum Conn {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

fn facility(name: &str) -> Option<u8> {
    Some(match name {
        "kern" => 0,
        "user" => 1,
        "mail" => 2,
        "daemon" => 3,
        "auth" => 4,
        "syslog" => 5,
        "authpriv" => 10,
        "local0" => 16,
        "local1" => 17,
        "local2" => 18,
        "local3" => 19,
        "local4" => 20,
        "local5" => 21,
        "local6" => 22,
        "local7" => 23,
        _ => return None,
    })
}

/// Syslog severity (RFC 5424 table 2) of a gpuwarden severity.
pub fn syslog_severity(s: Severity) -> u8 {
    match s {
        Severity::Info => 6,
        Severity::Warning => 4,
        Severity::Critical => 2,
        Severity::Fatal => 1,
    }
}

/// This machine's host name, for the HOSTNAME field ("-" when unknown, as RFC 5424 says).
fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "-".into())
}

/// RFC 5424 fields are PRINTUSASCII without spaces.
fn field(s: &str, max: usize) -> String {
    let f: String = s.chars().filter(|c| c.is_ascii_graphic()).take(max).collect();
    if f.is_empty() {
        "-".into()
    } else {
        f
    }
}

/// The RFC 5424 message of `n`.
pub fn format(n: &Notification, facility: u8, hostname: &str) -> String {
    let pri = u16::from(facility) * 8 + u16::from(syslog_severity(n.severity));
    format!(
        "<{pri}>1 {} {} gpuwarden {} {} - {}",
        rfc3339(n.ts_ms),
        field(hostname, 255),
        std::process::id(),
        field(n.transition.as_str(), 32),
        cef::format(n)
    )
}

fn tls_connector(name: &str, c: &SyslogConfig) -> Result<tokio_rustls::TlsConnector, BuildError> {
    let invalid = |problem: String| BuildError::Invalid {
        sink: name.into(),
        problem,
    };
    let mut roots = rustls::RootCertStore::empty();
    match &c.ca_file {
        Some(path) => {
            use rustls::pki_types::pem::PemObject;
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| invalid(format!("reading ca_file {}: {e}", path.display())))?;
            for cert in certs {
                let cert = cert.map_err(|e| invalid(format!("ca_file {}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| invalid(format!("ca_file {}: {e}", path.display())))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

impl Syslog {
    pub fn new(name: &str, c: &SyslogConfig, ctx: &BuildContext<'_>) -> Result<Self, BuildError> {
        let invalid = |problem: String| BuildError::Invalid {
            sink: name.into(),
            problem,
        };
        let transport = c.transport.unwrap_or(SyslogTransport::Udp);
        let facility = match &c.facility {
            Some(f) => facility(f).ok_or_else(|| invalid(format!("unknown facility '{f}'")))?,
            None => 16,
        };
        let host = c
            .address
            .rsplit_once(':')
            .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']').to_string())
            .ok_or_else(|| invalid(format!("address '{}' needs a port (HOST:PORT)", c.address)))?;
        let tls = if transport == SyslogTransport::Tls {
            let sn = c.server_name.clone().unwrap_or(host);
            let server_name = rustls::pki_types::ServerName::try_from(sn.clone())
                .map_err(|e| invalid(format!("server name '{sn}': {e}")))?;
            Some((tls_connector(name, c)?, server_name))
        } else {
            None
        };
        Ok(Syslog {
            name: name.into(),
            address: c.address.clone(),
            transport,
            facility,
            hostname: c.hostname.clone().unwrap_or_else(local_hostname),
            tls,
            conn: tokio::sync::Mutex::new(None),
            timeout: ctx.settings.timeout,
        })
    }

    fn io(&self, what: &str, source: std::io::Error) -> SinkError {
        SinkError::Io {
            sink: self.name.clone(),
            what: format!("{what} {} ({:?})", self.address, self.transport).to_lowercase(),
            source,
        }
    }

    async fn connect(&self) -> Result<Conn, SinkError> {
        let tcp = TcpStream::connect(&self.address)
            .await
            .map_err(|e| self.io("connecting to", e))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(Conn::Tcp(tcp)),
            Some((connector, server_name)) => {
                let tls = connector
                    .connect(server_name.clone(), tcp)
                    .await
                    .map_err(|e| self.io("TLS handshake with", e))?;
                Ok(Conn::Tls(Box::new(tls)))
            }
        }
    }

    async fn send_stream(&self, frames: &[u8]) -> Result<(), SinkError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            if closed_by_peer(c).await {
                *guard = None;
            }
        }
        if guard.is_none() {
            *guard = Some(self.connect().await?);
        }
        let conn = guard.as_mut().expect("connected above");
        let res = match conn {
            Conn::Tcp(s) => {
                async {
                    s.write_all(frames).await?;
                    s.flush().await
                }
                .await
            }
            Conn::Tls(s) => {
                async {
                    s.write_all(frames).await?;
                    s.flush().await
                }
                .await
            }
        };
        if let Err(e) = res {
            *guard = None;
            return Err(self.io("writing to", e));
        }
        Ok(())
    }
}

/// Whether the collector has closed its side (EOF pending on the socket). Polls once,
/// without waiting.
async fn closed_by_peer(c: &Conn) -> bool {
    let tcp = match c {
        Conn::Tcp(s) => s,
        Conn::Tls(s) => s.get_ref().0,
    };
    let mut buf = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::ZERO, tcp.peek(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

impl Sink for Syslog {
    fn name(&self) -> &str {
        &self.name
    }
    fn type_name(&self) -> &'static str {
        "syslog"
    }
    fn max_batch(&self) -> usize {
        64
    }
    fn deliver<'a>(&'a self, batch: &'a [Arc<Notification>]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let messages: Vec<String> = batch.iter().map(|n| format(n, self.facility, &self.hostname)).collect();
            match self.transport {
                SyslogTransport::Udp => {
                    let sock = UdpSocket::bind(if self.address.starts_with('[') {
                        "[::]:0"
                    } else {
                        "0.0.0.0:0"
                    })
                    .await
                    .map_err(|e| self.io("opening a UDP socket for", e))?;
                    sock.connect(&self.address).await.map_err(|e| self.io("resolving", e))?;
                    for m in &messages {
                        sock.send(m.as_bytes()).await.map_err(|e| self.io("sending to", e))?;
                    }
                    Ok(())
                }
                SyslogTransport::Tcp | SyslogTransport::Tls => {
                    let mut frames = Vec::new();
                    for m in &messages {
                        frames.extend_from_slice(format!("{} ", m.len()).as_bytes());
                        frames.extend_from_slice(m.as_bytes());
                    }
                    match tokio::time::timeout(self.timeout, self.send_stream(&frames)).await {
                        Ok(r) => r,
                        Err(_) => {
                            *self.conn.lock().await = None;
                            Err(SinkError::Timeout {
                                sink: self.name.clone(),
                                receiver: self.address.clone(),
                                seconds: self.timeout.as_secs_f64(),
                            })
                        }
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::tests::sample;
    use crate::message::Transition;

    #[test]
    fn rfc5424_header() {
        let m = format(&sample(Transition::Opened), 16, "gw host");
        // local0 (16) * 8 + critical (2) = 130
        let expected = format!(
            "<130>1 2023-11-14T22:14:20.000Z gwhost gpuwarden {} opened - CEF:0|",
            std::process::id()
        );
        assert!(m.starts_with(&expected), "{m}");
    }
}
