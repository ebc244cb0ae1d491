//! The webhook client's TLS. Real receivers are https: rustls with the ring
//! provider, trusting the system's CA certificates (or, on a system with
//! none, such as a bare container, Mozilla's roots compiled in) plus an
//! operator's own CA file for private receivers.
//!
//! The client's provider is passed explicitly, never installed process-wide:
//! an embedder keeps whatever provider it chose.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Extra CA certificates webhooks trust, read from a PEM file
/// (`strut serve --webhook-ca-file`).
#[derive(Debug, Clone)]
pub struct WebhookCa {
    path: PathBuf,
    certs: Vec<CertificateDer<'static>>,
}

/// Why a CA file cannot be used; names the file and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WebhookCaError(String);

impl WebhookCa {
    /// Reads every certificate of a PEM file; each must be usable as a trust
    /// anchor, so a wrong file fails at startup rather than at the first webhook.
    pub fn from_pem_file(path: &Path) -> Result<Self, WebhookCaError> {
        let shown = path.display();
        let text = std::fs::read(path)
            .map_err(|e| WebhookCaError(format!("cannot read the CA file {shown}: {e}")))?;
        let certs = CertificateDer::pem_slice_iter(&text)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| WebhookCaError(format!("the CA file {shown} is not valid PEM: {e}")))?;
        if certs.is_empty() {
            return Err(WebhookCaError(format!(
                "the CA file {shown} holds no `BEGIN CERTIFICATE` block"
            )));
        }
        let mut check = RootCertStore::empty();
        for (i, cert) in certs.iter().enumerate() {
            check.add(cert.clone()).map_err(|e| {
                WebhookCaError(format!(
                    "certificate {} of {shown} cannot be a CA: {e}",
                    i + 1
                ))
            })?;
        }
        Ok(Self {
            path: path.to_owned(),
            certs,
        })
    }
}

/// The HTTP client webhooks are posted with.
pub(super) fn webhook_client(timeout: Duration, extra: Option<&WebhookCa>) -> reqwest::Client {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for err in &native.errors {
        tracing::warn!("reading the system's CA certificates: {err}");
    }
    let (system, _) = roots.add_parsable_certificates(native.certs);
    if system == 0 {
        tracing::warn!(
            "no CA certificates found on the system; https webhooks trust the Mozilla roots \
             built into strut"
        );
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(extra) = extra {
        for cert in &extra.certs {
            // Checked when the file was read.
            let _ = roots.add(cert.clone());
        }
        tracing::info!(
            file = %extra.path.display(),
            certificates = extra.certs.len(),
            "webhooks also trust the CA file"
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Receivers may speak HTTP/2 or HTTP/1.1 (as Baseten's do).
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("strut/", env!("CARGO_PKG_VERSION")))
        .tls_backend_preconfigured(tls)
        .build()
        .expect("building the webhook HTTP client")
}

/// Installs ring as the process's default rustls provider, unless one is
/// installed already. reqwest is built with rustls but without a provider of
/// its own (so that only ring is compiled), and a plain `reqwest::Client`
/// asks for the process default: call this once at startup in a program
/// that builds such clients (the CLI does).
pub fn install_crypto_provider() {
    // An error means a provider is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An error with its causes, outermost first: reqwest's own message says
/// only that sending failed, the cause says why (refused, TLS, timeout).
pub(super) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_must_hold_usable_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = WebhookCa::from_pem_file(&missing).unwrap_err().to_string();
        assert!(err.contains("cannot read the CA file"), "{err}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").unwrap();
        let err = WebhookCa::from_pem_file(&empty).unwrap_err().to_string();
        assert!(err.contains("no `BEGIN CERTIFICATE` block"), "{err}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(
            &junk,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = WebhookCa::from_pem_file(&junk).unwrap_err().to_string();
        assert!(err.contains("certificate 1 of"), "{err}");
    }
}
