//! TLS on the accept loop with certificates generated here (rcgen): https works, plain
//! http is told to use https, client certificates are required and read, files are
//! reloaded without a restart, and a broken file keeps the old certificate.

use super::*;
use crate::listener::{serve_tls, ServeLimits};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use std::net::SocketAddr;

pub(crate) struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    pub(crate) fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        Ca {
            issuer: CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    pub(crate) fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf for `names` (the first is also the CN): (certificate PEM, key PEM, DER).
    pub(crate) fn leaf(&self, names: &[&str], client: bool) -> (String, String, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, names[0]);
        if client {
            p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        }
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

struct Server {
    addr: SocketAddr,
    _stop: watch::Sender<bool>,
}

fn router() -> axum::Router {
    axum::Router::new().route(
        "/who",
        axum::routing::get(|req: axum::extract::Request| async move {
            match req.extensions().get::<ClientCertificate>() {
                Some(c) => c.names().collect::<Vec<_>>().join(","),
                None => "no certificate".to_owned(),
            }
        }),
    )
}

async fn start(tls: Arc<TlsReloader>, limits: ServeLimits) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = watch::channel(false);
    tokio::spawn(serve_tls(listener, router(), rx, limits, Some(tls)));
    Server { addr, _stop: tx }
}

fn write_files(dir: &Path, cert: &str, key: &str) -> TlsFiles {
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
    TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        client_ca: None,
    }
}

/// Replaces a file the way deploy tools do: write beside, then rename over.
fn replace(path: &Path, content: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn client(ca: &Ca) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The DER of the certificate the server presents to a new connection.
async fn presented(addr: SocketAddr, ca: &Ca) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn https_works_and_plain_http_is_told_to_use_https() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let (cert, key, _) = ca.leaf(&["localhost"], false);
    let tls = TlsReloader::new(write_files(dir.path(), &cert, &key)).unwrap();
    let s = start(tls, ServeLimits::default()).await;

    let r = client(&ca)
        .get(format!("https://localhost:{}/who", s.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "no certificate");

    let r = reqwest::get(format!("http://127.0.0.1:{}/who", s.addr.port()))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "tls_required");

    // A client that does not trust the CA fails the handshake (no silent downgrade).
    let untrusting = reqwest::Client::builder().build().unwrap();
    assert!(untrusting
        .get(format!("https://localhost:{}/who", s.addr.port()))
        .send()
        .await
        .is_err());
}

#[tokio::test]
async fn client_certificates_are_required_and_their_names_reach_the_request() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::new("server CA");
    let agent_ca = Ca::new("agent CA");
    let (cert, key, _) = server_ca.leaf(&["localhost"], false);
    let mut files = write_files(dir.path(), &cert, &key);
    std::fs::write(dir.path().join("agents.pem"), agent_ca.pem()).unwrap();
    files.client_ca = Some(dir.path().join("agents.pem"));
    let tls = TlsReloader::new(files).unwrap();
    assert!(tls.requires_client_certificates());
    let s = start(tls, ServeLimits::default()).await;
    let url = format!("https://localhost:{}/who", s.addr.port());

    // Without a client certificate: the handshake is refused.
    assert!(client(&server_ca).get(&url).send().await.is_err());

    // With one from the agents' CA: accepted, and the names are in the request.
    let (c, k, _) = agent_ca.leaf(&["node-a", "node-a.example.com"], true);
    let with_cert = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(server_ca.pem().as_bytes()).unwrap())
        .identity(reqwest::Identity::from_pem(format!("{c}{k}").as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = with_cert.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "node-a,node-a,node-a.example.com");

    // A certificate from another CA (here: the server's) is refused.
    let (c, k, _) = server_ca.leaf(&["node-a"], true);
    let foreign = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(server_ca.pem().as_bytes()).unwrap())
        .identity(reqwest::Identity::from_pem(format!("{c}{k}").as_bytes()).unwrap())
        .build()
        .unwrap();
    assert!(foreign.get(&url).send().await.is_err());
}

#[tokio::test]
async fn replaced_files_are_used_by_new_connections_and_garbage_keeps_the_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let (cert1, key1, der1) = ca.leaf(&["localhost"], false);
    let files = write_files(dir.path(), &cert1, &key1);
    let tls = TlsReloader::new(files.clone()).unwrap();
    let watcher_stop = watch::channel(false);
    let _watcher = tls.spawn_watcher(Duration::from_millis(100), watcher_stop.1.clone());
    let s = start(tls.clone(), ServeLimits::default()).await;
    assert_eq!(presented(s.addr, &ca).await, der1);

    // New certificate and key on disk: picked up by the watcher, no restart.
    let (cert2, key2, der2) = ca.leaf(&["localhost"], false);
    assert_ne!(der1, der2);
    replace(&files.key, &key2);
    replace(&files.cert, &cert2);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while presented(s.addr, &ca).await != der2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Garbage in the certificate file: the reload fails, the last good one keeps serving.
    replace(
        &files.cert,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
    );
    assert!(tls.reload().is_err());
    assert_eq!(presented(s.addr, &ca).await, der2);
    // A key that does not match the certificate: refused too.
    replace(&files.cert, &cert1);
    assert!(matches!(tls.reload(), Err(TlsError::Pair { .. })));
    assert_eq!(presented(s.addr, &ca).await, der2);
    // The same broken files are not tried again until they change.
    assert!(!tls.reload_if_changed().unwrap());
}

#[test]
fn start_errors_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let (cert, _, _) = ca.leaf(&["localhost"], false);
    let files = write_files(dir.path(), &cert, "");
    let e = TlsReloader::new(files.clone()).unwrap_err().to_string();
    assert!(e.contains("key.pem") && e.contains("PRIVATE KEY"), "{e}");
    let mut missing = files;
    missing.cert = dir.path().join("nope.pem");
    let e = TlsReloader::new(missing).unwrap_err().to_string();
    assert!(e.contains("nope.pem"), "{e}");
}

#[tokio::test]
async fn a_silent_client_holds_its_slot_only_until_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let (cert, key, der) = ca.leaf(&["localhost"], false);
    let tls = TlsReloader::new(write_files(dir.path(), &cert, &key)).unwrap();
    let limits = ServeLimits {
        header_read_timeout: Duration::from_millis(400),
        max_connections: 1,
        ..Default::default()
    };
    let s = start(tls, limits).await;
    // Connects and says nothing: no TLS hello ever.
    let silent = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The one slot is taken: a handshake now is closed at once.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap())
        .unwrap();
    let blocked = tokio::time::timeout(Duration::from_secs(5), async {
        let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        let config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect("localhost".try_into().unwrap(), tcp)
            .await
    })
    .await
    .expect("the refused handshake ends at once");
    assert!(blocked.is_err(), "the slot of the silent client was free");
    // After the header-read timeout the silent client is gone and the slot is free.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(presented(s.addr, &ca).await, der);
    drop(silent);
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_silent_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let (cert, key, _) = ca.leaf(&["localhost"], false);
    let tls = TlsReloader::new(write_files(dir.path(), &cert, &key)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = watch::channel(false);
    let server = tokio::spawn(serve_tls(listener, router(), rx, ServeLimits::default(), Some(tls)));
    let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = std::time::Instant::now();
    tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(3), server)
        .await
        .expect("serve_tls ended within 3 s (the grace is 5 s, the handshake timeout 10 s)")
        .unwrap()
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}
