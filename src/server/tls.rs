//! https for clients (rustls): `: .tls-cert FILE` and `: .tls-key FILE` (PEM) under `+ .proxy`,
//! and optionally `: .tls-client-ca FILE` to require client certificates signed by that CA.
//!
//! The certificate is read again when its files change (checked at most once a second, on a
//! handshake), so a renewed certificate is served without a restart; a bad new pair is
//! reported and the old one kept. HTTP/2 and HTTP/1.1 are offered (ALPN).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

/// The TLS settings of a proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

fn load(files: &TlsFiles) -> Result<Arc<CertifiedKey>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| format!("cannot read {}: {e}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not PEM certificates: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("{} holds no PEM private key: {e}", files.key.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("{}: unsupported key: {e}", files.key.display()))?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|e| {
        format!(
            "{} and {} do not belong together: {e}",
            files.cert.display(),
            files.key.display()
        )
    })?;
    Ok(Arc::new(ck))
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Serves the current certificate, reloading it when its files change.
#[derive(Debug)]
struct Reloading {
    files: TlsFiles,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    checked: Instant,
    stamps: (Option<SystemTime>, Option<SystemTime>),
    key: Arc<CertifiedKey>,
}

impl Reloading {
    fn current(&self) -> Option<Arc<CertifiedKey>> {
        let mut s = self.state.lock().ok()?;
        if s.checked.elapsed().as_millis() >= 1000 {
            s.checked = Instant::now();
            let stamps = (mtime(&self.files.cert), mtime(&self.files.key));
            if stamps != s.stamps {
                match load(&self.files) {
                    Ok(k) => {
                        tracing::info!(cert = %self.files.cert.display(), "serving the renewed certificate");
                        s.key = k;
                        s.stamps = stamps;
                    }
                    // A half-written pair: try again at the next check.
                    Err(e) => tracing::warn!("keeping the current certificate: {e}"),
                }
            }
        }
        Some(s.key.clone())
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

/// The acceptor for a proxy's TLS settings.
pub fn acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, String> {
    let key = load(files)?;
    let resolver = Arc::new(Reloading {
        files: files.clone(),
        state: Mutex::new(State {
            checked: Instant::now(),
            stamps: (mtime(&files.cert), mtime(&files.key)),
            key,
        }),
    });
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)
                .map_err(|e| format!("cannot read {}: {e}", ca.display()))?
            {
                let cert = cert.map_err(|e| format!("{} is not PEM: {e}", ca.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("client CA {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
