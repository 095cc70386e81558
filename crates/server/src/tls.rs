//! The one TLS module: server certificates loaded from PEM files and reloaded from disk without
//! dropping sessions (RTMPS and every HTTPS listener), and the client side of `rtmps://` destinations.
//!
//! Everything runs on rustls with the aws-lc-rs provider, passed explicitly (no process-wide
//! default is needed). PEM is read with rustls-pki-types' `PemObject`.
//!
//! **Reload.** A [`TlsServer`]'s certificate is chosen per handshake by a [`ResolvesServerCert`]
//! that reads the current [`CertifiedKey`] behind a lock: a reload swaps it, so running sessions
//! keep the certificate they were made with and new ones get the new one. The files are watched
//! through their directories (an atomic rename or a symlink swap, as certbot and Kubernetes
//! secrets do it, is seen) and re-read on SIGHUP; a new pair that does not load (a key that does
//! not match, half-written files) is logged and the previous one kept.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::RwLock;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// ALPN protocols of an HTTPS listener; RTMPS announces none.
pub const ALPN_HTTP: &[&[u8]] = &[b"h2", b"http/1.1"];

/// The provider every TLS configuration of ours uses.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// Why a certificate pair does not load; worded for the operator, with the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate chain {file}: {reason}")]
    Cert { file: PathBuf, reason: String },
    #[error("cannot read the private key {file}: {reason}")]
    Key { file: PathBuf, reason: String },
    #[error("the private key {key} does not belong to the certificate {cert}: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// A certificate chain file and its private key file.
#[derive(Debug, Clone)]
struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
}

impl CertFiles {
    /// Both files' contents, or which one cannot be read.
    fn read(&self) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
        let cert = std::fs::read(&self.cert).map_err(|e| TlsError::Cert {
            file: self.cert.clone(),
            reason: e.to_string(),
        })?;
        let key = std::fs::read(&self.key).map_err(|e| TlsError::Key {
            file: self.key.clone(),
            reason: e.to_string(),
        })?;
        Ok((cert, key))
    }

    /// Parses the two files' contents into a certified key.
    fn load(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
        let cert_err = |reason: String| TlsError::Cert {
            file: self.cert.clone(),
            reason,
        };
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| cert_err(e.to_string()))?;
        if chain.is_empty() {
            return Err(cert_err("no CERTIFICATE in it".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key {
            file: self.key.clone(),
            reason: e.to_string(),
        })?;
        CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Mismatch {
            cert: self.cert.clone(),
            key: self.key.clone(),
            reason: e.to_string(),
        })
    }
}

/// The current certificate of a [`TlsServer`], and the file contents it was made from (a reload
/// that finds the same bytes does nothing).
struct Current {
    key: Arc<CertifiedKey>,
    files: (Vec<u8>, Vec<u8>),
}

/// Hands every handshake the certificate in force.
struct Resolver {
    current: RwLock<Current>,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Resolver")
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().key.clone())
    }
}

/// A TLS server configuration whose certificate is reloaded from its files.
pub struct TlsServer {
    files: CertFiles,
    resolver: Arc<Resolver>,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServer")
            .field("cert", &self.files.cert)
            .field("key", &self.files.key)
            .finish()
    }
}

impl TlsServer {
    /// Loads the certificate chain (PEM, the server's certificate first) and its private key
    /// (PEM: PKCS#8, PKCS#1 or SEC1); `alpn` is what the server offers ([`ALPN_HTTP`] for HTTPS,
    /// nothing for RTMPS).
    pub fn new(cert: &Path, key: &Path, alpn: &[&[u8]]) -> Result<Self, TlsError> {
        let files = CertFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        };
        let contents = files.read()?;
        let key = Arc::new(files.load(&contents.0, &contents.1)?);
        tracing::info!(
            cert = %files.cert.display(),
            sha256 = %fingerprint(&key),
            "TLS certificate loaded"
        );
        let resolver = Arc::new(Resolver {
            current: RwLock::new(Current { key, files: contents }),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the aws-lc-rs provider supports the default versions")
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(TlsServer {
            files,
            resolver,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The acceptor for new connections (cheap to clone).
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        self.acceptor.clone()
    }

    /// Re-reads the files; a changed pair that loads replaces the certificate for the
    /// handshakes that follow. Returns whether it changed; on an error the previous certificate
    /// stays in force.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let contents = self.files.read()?;
        if self.resolver.current.read().files == contents {
            return Ok(false);
        }
        let key = Arc::new(self.files.load(&contents.0, &contents.1)?);
        tracing::info!(
            cert = %self.files.cert.display(),
            sha256 = %fingerprint(&key),
            "TLS certificate reloaded: new connections get it, running sessions keep theirs"
        );
        *self.resolver.current.write() = Current { key, files: contents };
        Ok(true)
    }

    /// The SHA-256 of the certificate in force (hex), as `openssl x509 -fingerprint -sha256`
    /// prints it without the colons.
    #[allow(dead_code)] // For the API (certificate status) and tests.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.resolver.current.read().key)
    }

    /// Reloads when the files change (a watcher of their directories, events debounced) and on
    /// SIGHUP, until `stop`. `what` names the listener in the log ("RTMPS").
    pub fn spawn_reload(self: &Arc<Self>, what: &'static str, stop: CancellationToken) {
        let wake = Arc::new(tokio::sync::Notify::new());
        #[cfg(unix)]
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(mut hup) => {
                let wake = wake.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            r = hup.recv() => if r.is_none() { return },
                        }
                        wake.notify_one();
                    }
                });
            }
            Err(e) => tracing::warn!("{what}: cannot handle SIGHUP (no certificate reload on it): {e}"),
        }
        let watcher = self.watch(what, wake.clone());
        let this = self.clone();
        tokio::spawn(async move {
            let _watcher = watcher;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = wake.notified() => {}
                }
                // Debounce: a copy or a renewal writes two files, in several events.
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(300)) => break,
                        _ = wake.notified() => {}
                    }
                }
                let t = this.clone();
                match tokio::task::spawn_blocking(move || t.reload()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(
                        "{what}: TLS certificate not reloaded, the previous one stays in force: {e}"
                    ),
                    Err(e) => tracing::warn!("{what}: TLS certificate reload failed: {e}"),
                }
            }
        });
    }

    /// A watcher of the files' directories that wakes `wake` on anything but reads and
    /// metadata changes; `None` (logged) when the platform cannot watch.
    fn watch(&self, what: &str, wake: Arc<tokio::sync::Notify>) -> Option<notify::RecommendedWatcher> {
        use notify::Watcher;
        let dir_of = |f: &Path| match f.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut dirs = vec![dir_of(&self.files.cert)];
        let key_dir = dir_of(&self.files.key);
        if !dirs.contains(&key_dir) {
            dirs.push(key_dir);
        }
        let handler = move |ev: notify::Result<notify::Event>| {
            use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
            if let Ok(ev) = ev {
                let noise = match ev.kind {
                    EventKind::Access(AccessKind::Close(AccessMode::Write)) => false,
                    EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_)) => true,
                    _ => false,
                };
                if !noise {
                    wake.notify_one();
                }
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!("{what}: cannot watch the certificate files (reload with SIGHUP): {e}");
                return None;
            }
        };
        for d in &dirs {
            if let Err(e) = watcher.watch(d, notify::RecursiveMode::NonRecursive) {
                tracing::warn!(
                    "{what}: cannot watch {} for certificate changes: {e}",
                    d.display()
                );
            }
        }
        Some(watcher)
    }
}

fn fingerprint(key: &CertifiedKey) -> String {
    let der = key.cert.first().map_or(&[][..], |c| c.as_ref());
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    digest.as_ref().iter().map(|b| format!("{b:02X}")).collect()
}

/// Client configurations: one over the system roots (loaded once), or one per CA file.
fn client_config(ca_file: Option<&Path>) -> io::Result<Arc<rustls::ClientConfig>> {
    let build = |roots: rustls::RootCertStore| {
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("the aws-lc-rs provider supports the default versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    };
    if let Some(file) = ca_file {
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(file)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| io::Error::other(format!("cannot read the CA file {}: {e}", file.display())))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(io::Error::other(format!(
                "the CA file {} holds no usable CA certificate",
                file.display()
            )));
        }
        return Ok(build(roots));
    }
    static SYSTEM: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    SYSTEM
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::debug!("system CA certificates: {e}");
            }
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(
                    "no system CA certificates found (install ca-certificates, or set a CA file)".into(),
                );
            }
            tracing::debug!(roots = added, "system CA certificates loaded");
            Ok(build(roots))
        })
        .clone()
        .map_err(io::Error::other)
}

/// Opens TLS over `tcp` to `host` (a name or an IP address; `[v6]` brackets allowed), verifying
/// its certificate against the system roots, or only against `ca_file` (PEM) when given. No
/// ALPN. A refused certificate reads "certificate verify failed: UnknownIssuer for host X".
pub async fn connect(
    host: &str,
    tcp: TcpStream,
    ca_file: Option<&Path>,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let ca = ca_file.map(Path::to_path_buf);
    let config = tokio::task::spawn_blocking(move || client_config(ca.as_deref()))
        .await
        .map_err(io::Error::other)??;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(bare.to_owned()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{host:?} is not a valid TLS server name"),
        )
    })?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| describe_client_error(host, e))
}

/// Rewords a failed client handshake for the log and the API.
fn describe_client_error(host: &str, e: io::Error) -> io::Error {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return io::Error::new(e.kind(), format!("TLS handshake with {host} failed: {e}"));
    };
    let text = match tls {
        rustls::Error::InvalidCertificate(c) => {
            let name = format!("{c:?}");
            let name = name.split([' ', '(', '{']).next().unwrap_or_default();
            // rustls' richer variants carry context (`...Context`): the name without it.
            let name = name.strip_suffix("Context").unwrap_or(name);
            format!("certificate verify failed: {name} for host {host} ({tls})")
        }
        other => format!("TLS handshake with {host} failed: {other}"),
    };
    io::Error::new(io::ErrorKind::InvalidData, text)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::process::Command;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A CA and a server certificate for localhost/127.0.0.1 made with the openssl CLI (also
    /// used by `http_serve`'s tests).
    pub(crate) struct Pki {
        dir: PathBuf,
    }

    impl Pki {
        pub(crate) fn new(name: &str) -> Pki {
            let dir = std::env::temp_dir().join(format!("sluice-tls-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let pki = Pki { dir };
            pki.openssl(&format!(
                "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key \
                 -out ca.pem -days 2 -subj /CN=Sluice-Test-CA-{name} \
                 -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
            ));
            pki.server_cert("server", 1);
            pki
        }

        /// Runs `openssl` with these whitespace-separated arguments in the directory.
        fn openssl(&self, args: &str) {
            let out = Command::new("openssl")
                .args(args.split_whitespace())
                .current_dir(&self.dir)
                .output()
                .expect("openssl CLI (scripts/install-test-deps.sh)");
            assert!(
                out.status.success(),
                "openssl {args}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }

        /// NAME.pem and NAME.key, signed by the CA, with this serial.
        fn server_cert(&self, name: &str, serial: u32) {
            std::fs::write(
                self.dir.join("ext.cnf"),
                "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
                 keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
            )
            .unwrap();
            self.openssl(&format!(
                "req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout {name}.key \
                 -out {name}.csr -subj /CN=localhost"
            ));
            self.openssl(&format!(
                "x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -set_serial {serial} -days 2 \
                 -extfile ext.cnf -out {name}.pem"
            ));
        }

        pub(crate) fn path(&self, name: &str) -> PathBuf {
            self.dir.join(name)
        }
    }

    impl Drop for Pki {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A server on 127.0.0.1 that echoes one message per connection.
    async fn echo_server(tls: Arc<TlsServer>) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = tls.acceptor();
                tokio::spawn(async move {
                    if let Ok(mut s) = acceptor.accept(tcp).await {
                        let mut buf = [0u8; 5];
                        if s.read_exact(&mut buf).await.is_ok() {
                            let _ = s.write_all(&buf).await;
                            let _ = s.shutdown().await;
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn connect_verifies_against_the_given_ca_only() {
        let pki = Pki::new("connect");
        let tls = TlsServer::new(&pki.path("server.pem"), &pki.path("server.key"), &[]).unwrap();
        let addr = echo_server(Arc::new(tls)).await;

        for host in ["localhost", "127.0.0.1"] {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let mut s = connect(host, tcp, Some(&pki.path("ca.pem"))).await.unwrap();
            s.write_all(b"hello").await.unwrap();
            let mut back = [0u8; 5];
            s.read_exact(&mut back).await.unwrap();
            assert_eq!(&back, b"hello");
        }

        // The system roots do not know our CA.
        let tcp = TcpStream::connect(addr).await.unwrap();
        let e = connect("localhost", tcp, None).await.unwrap_err().to_string();
        assert!(
            e.starts_with("certificate verify failed: UnknownIssuer for host localhost"),
            "{e}"
        );
        // Another CA is no better.
        let other = Pki::new("connect-other");
        let tcp = TcpStream::connect(addr).await.unwrap();
        let e = connect("localhost", tcp, Some(&other.path("ca.pem")))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("UnknownIssuer for host localhost"), "{e}");
        // A name the certificate is not for.
        let tcp = TcpStream::connect(addr).await.unwrap();
        let e = connect("example.com", tcp, Some(&pki.path("ca.pem")))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("certificate verify failed: NotValidForName for host example.com"),
            "{e}"
        );
        // A CA file that is not there.
        let tcp = TcpStream::connect(addr).await.unwrap();
        let e = connect("localhost", tcp, Some(&pki.path("nope.pem")))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot read the CA file") && e.contains("nope.pem"),
            "{e}"
        );
    }

    #[test]
    fn reload_swaps_and_keeps_the_old_on_error() {
        let pki = Pki::new("reload");
        let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
        let tls = TlsServer::new(&cert, &key, ALPN_HTTP).unwrap();
        let first = tls.fingerprint();
        assert!(!tls.reload().unwrap(), "same files: nothing to do");

        // A new certificate with the old key: refused, the old one stays.
        pki.server_cert("next", 2);
        std::fs::copy(pki.path("next.pem"), &cert).unwrap();
        let e = tls.reload().unwrap_err().to_string();
        assert!(e.contains("does not belong to the certificate"), "{e}");
        assert_eq!(tls.fingerprint(), first);
        // Its key arrives: swapped.
        std::fs::copy(pki.path("next.key"), &key).unwrap();
        assert!(tls.reload().unwrap());
        assert_ne!(tls.fingerprint(), first);

        // Garbage and missing files: refused with the file named.
        std::fs::write(&cert, "not a certificate").unwrap();
        let e = tls.reload().unwrap_err().to_string();
        assert!(e.contains("server.pem") && e.contains("no CERTIFICATE"), "{e}");
        std::fs::remove_file(&key).unwrap();
        let e = tls.reload().unwrap_err().to_string();
        assert!(
            e.contains("cannot read the private key") && e.contains("server.key"),
            "{e}"
        );
        std::fs::write(&key, "").unwrap();
        let e = TlsServer::new(&cert, &key, &[]).unwrap_err().to_string();
        assert!(e.contains("server.pem") && e.contains("no CERTIFICATE"), "{e}");
    }
}
