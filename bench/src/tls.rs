//! How a PostgreSQL URL asks for TLS, with libpq's meanings: `sslmode=require` encrypts without
//! checking the certificate (what hosted PostgreSQL such as Supabase documents), `verify-ca` and
//! `verify-full` also check it against the web PKI roots or the `sslrootcert` file.
//!
//! The same rules as Wharf's journal (`src/journal/postgres/tls.rs`), copied so the bench links
//! nothing of the product: any `--postgres` URL Wharf accepts, the bench accepts too.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use anyhow::Context as _;

/// What the URL asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsChoice {
    pub(crate) mode: SslMode,
    /// Check the server's certificate (`verify-ca`, `verify-full`).
    pub(crate) verify: bool,
    pub(crate) root_cert: Option<String>,
}

/// Splits the TLS options libpq knows but `tokio_postgres` does not parse out of the URL.
/// Returns the URL `tokio_postgres` can parse and what was asked.
pub(crate) fn split_url(url: &str) -> (String, TlsChoice) {
    let mut choice = TlsChoice {
        mode: SslMode::Disable,
        verify: false,
        root_cert: None,
    };
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), choice);
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "sslmode" => match value {
                "disable" | "allow" => choice.mode = SslMode::Disable,
                "prefer" => choice.mode = SslMode::Prefer,
                "require" => choice.mode = SslMode::Require,
                "verify-ca" | "verify-full" => {
                    choice.mode = SslMode::Require;
                    choice.verify = true;
                }
                _ => kept.push(pair),
            },
            "sslrootcert" => choice.root_cert = Some(value.to_owned()),
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (url, choice)
}

/// The connector for that choice. Without TLS it is never used for a handshake.
pub(crate) fn connector(choice: &TlsChoice) -> anyhow::Result<MakeRustlsConnect> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS")?;
    let config = if choice.verify {
        builder
            .with_root_certificates(roots(choice.root_cert.as_deref())?)
            .with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
            .with_no_client_auth()
    };
    Ok(MakeRustlsConnect::new(config))
}

fn roots(root_cert: Option<&str>) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match root_cert {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let pem = std::fs::read(path).with_context(|| format!("sslrootcert {path}"))?;
            for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
                let cert: CertificateDer<'static> =
                    cert.with_context(|| format!("sslrootcert {path}"))?;
                roots
                    .add(cert)
                    .with_context(|| format!("sslrootcert {path}"))?;
            }
        }
    }
    Ok(roots)
}

/// libpq's `sslmode=require`: the channel is encrypted and the handshake's signatures are
/// checked, but the certificate chain is not (hosted providers often use private CAs).
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_tls_options_are_taken_out_of_the_url() {
        let (url, choice) = split_url(
            "postgres://u:p@db:5432/app?sslmode=verify-full&sslrootcert=/ca.pem&application_name=w",
        );
        assert_eq!(url, "postgres://u:p@db:5432/app?application_name=w");
        assert_eq!(choice.mode, SslMode::Require);
        assert!(choice.verify);
        assert_eq!(choice.root_cert.as_deref(), Some("/ca.pem"));
    }

    #[test]
    fn require_encrypts_without_verifying_and_no_mode_means_plain() {
        let (url, choice) = split_url("postgres://db/app?sslmode=require");
        assert_eq!(url, "postgres://db/app");
        assert_eq!(choice.mode, SslMode::Require);
        assert!(!choice.verify);
        assert_eq!(split_url("postgres://db/app").1.mode, SslMode::Disable);
    }
}
