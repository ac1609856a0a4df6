//! TLS for `wss://` with rustls: where trust comes from, the crypto provider,
//! and the client configuration built from them, for the async dial and the
//! blocking one.

// With `tokio` and `rustls` alone nothing dials wss:// (the async dial
// needs `tls`), and only `TlsRoots` is used.
#![cfg_attr(not(any(feature = "tls", feature = "blocking")), allow(dead_code))]

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};

use crate::error::{Cause, Error, Result};

/// Where a [`crate::Dialer`] gets its TLS settings.
///
/// The configurations built from the first three are made with the crate's
/// crypto provider, chosen at build time: `aws-lc-rs` with the feature of
/// that name, else `ring` (feature `ring`, on by default), else the
/// provider installed process-wide
/// (`rustls::crypto::CryptoProvider::install_default`); with none of them
/// a `wss://` dial fails with [`Error::Tls`] (it does not panic).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum TlsRoots {
    /// The Mozilla roots bundled with `webpki-roots`.
    #[default]
    WebPki,
    /// The operating system's certificate store.
    Platform,
    /// A complete client configuration from the caller (client
    /// certificates, own roots, own provider, …).
    Config(Arc<ClientConfig>),
    /// No certificate checks at all; made only by
    /// [`TlsRoots::dangerous_accept_any_certificate_for_tests`].
    DangerousAcceptAnyCertificate(AcceptAnyCertificate),
}

/// The mark of [`TlsRoots::DangerousAcceptAnyCertificate`]; it cannot be
/// made outside this crate but by
/// [`TlsRoots::dangerous_accept_any_certificate_for_tests`].
#[derive(Clone, Debug)]
pub struct AcceptAnyCertificate(());

impl TlsRoots {
    /// Turns certificate checks off: any certificate, for any name, signed
    /// by anyone, is accepted (the TLS handshake's signatures are still
    /// checked, so the session is encrypted, but with whoever answered).
    ///
    /// **For tests against self-signed servers only.** A client built with
    /// this is open to any man in the middle. To trust a test server's own
    /// certificate and nothing else, prefer [`TlsRoots::Config`] with a
    /// root store holding that certificate.
    pub fn dangerous_accept_any_certificate_for_tests() -> TlsRoots {
        TlsRoots::DangerousAcceptAnyCertificate(AcceptAnyCertificate(()))
    }
}

/// The crypto provider the crate's own configurations use.
#[cfg(feature = "aws-lc-rs")]
pub(crate) fn provider() -> Result<Arc<CryptoProvider>> {
    Ok(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// The crypto provider the crate's own configurations use.
#[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
pub(crate) fn provider() -> Result<Arc<CryptoProvider>> {
    Ok(Arc::new(rustls::crypto::ring::default_provider()))
}

/// The crypto provider the crate's own configurations use: none is built
/// in, so the process-wide default, if one was installed.
#[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
pub(crate) fn provider() -> Result<Arc<CryptoProvider>> {
    CryptoProvider::get_default().cloned().ok_or_else(|| {
        Error::Tls(Cause::new(
            "no rustls crypto provider: build with the `ring` or `aws-lc-rs` feature, or install one \
             with rustls::crypto::CryptoProvider::install_default",
        ))
    })
}

pub(crate) fn client_config(roots: &TlsRoots) -> Result<Arc<ClientConfig>> {
    let store = match roots {
        TlsRoots::Config(config) => return Ok(config.clone()),
        TlsRoots::DangerousAcceptAnyCertificate(_) => return accept_any(),
        TlsRoots::WebPki => RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() },
        TlsRoots::Platform => {
            let mut store = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = store.add(cert);
            }
            if store.is_empty() {
                return Err(Error::Tls(Cause::new("no usable certificates in the platform's store")));
            }
            store
        }
    };
    let config = ClientConfig::builder_with_provider(provider()?)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(Cause::with_source("", e)))?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn accept_any() -> Result<Arc<ClientConfig>> {
    let provider = provider()?;
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(Cause::with_source("", e)))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(danger::AcceptAny(provider)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

mod danger {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    /// Accepts any certificate; checks only the handshake's signatures.
    #[derive(Debug)]
    pub(super) struct AcceptAny(pub(super) Arc<CryptoProvider>);

    impl ServerCertVerifier for AcceptAny {
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
            verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

/// The name the server's certificate must carry: the URL's host.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(host.to_owned())
        .map_err(|e| Error::Tls(Cause::with_source(format!("server name {host:?}"), e)))
}

#[cfg(feature = "tls")]
pub(crate) async fn connect(
    mut config: Arc<ClientConfig>,
    alpn: &[Vec<u8>],
    host: &str,
    stream: super::ClientStream,
) -> Result<super::ClientStream> {
    if !alpn.is_empty() {
        let mut with_alpn = (*config).clone();
        with_alpn.alpn_protocols = alpn.to_vec();
        config = Arc::new(with_alpn);
    }
    let addrs = stream.addrs();
    let connector = tokio_rustls::TlsConnector::from(config);
    let tls = connector
        .connect(server_name(host)?, stream.into_boxed())
        .await
        .map_err(|e| Error::Tls(Cause::with_source("", e)))?;
    Ok(super::ClientStream::tls(tls, addrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(any(feature = "ring", feature = "aws-lc-rs"))]
    fn kx_groups(provider: &CryptoProvider) -> String {
        format!("{:?}", provider.kx_groups)
    }

    #[cfg(feature = "aws-lc-rs")]
    #[test]
    fn aws_lc_rs_is_chosen_when_built_in() {
        let config = client_config(&TlsRoots::WebPki).unwrap();
        let expected = rustls::crypto::aws_lc_rs::default_provider();
        assert_eq!(kx_groups(config.crypto_provider()), kx_groups(&expected));
        assert!(CryptoProvider::get_default().is_none(), "nothing was installed process-wide");
    }

    #[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
    #[test]
    fn ring_is_the_default_provider() {
        let config = client_config(&TlsRoots::dangerous_accept_any_certificate_for_tests()).unwrap();
        let expected = rustls::crypto::ring::default_provider();
        assert_eq!(kx_groups(config.crypto_provider()), kx_groups(&expected));
        assert!(CryptoProvider::get_default().is_none(), "nothing was installed process-wide");
    }

    #[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
    #[test]
    fn without_a_provider_a_dial_fails_without_panicking() {
        let error = client_config(&TlsRoots::WebPki).unwrap_err();
        assert!(matches!(error, Error::Tls(_)), "{error:?}");
        assert!(error.to_string().contains("crypto provider"), "{error}");
    }
}
