//! TLS for `wss://` with rustls: where trust comes from and the client
//! configuration built from it, for the async dial and the blocking one.

// With `tokio` and `rustls` alone nothing dials wss:// (the async dial
// needs `tls`), and only `TlsRoots` is used.
#![cfg_attr(not(any(feature = "tls", feature = "blocking")), allow(dead_code))]

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};

use crate::error::{Cause, Error, Result};

/// Where a [`crate::Dialer`] gets its TLS settings.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum TlsRoots {
    /// The Mozilla roots bundled with `webpki-roots`.
    #[default]
    WebPki,
    /// The operating system's certificate store.
    Platform,
    /// A complete client configuration from the caller.
    Config(Arc<ClientConfig>),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(crate) fn client_config(roots: &TlsRoots) -> Result<Arc<ClientConfig>> {
    let store = match roots {
        TlsRoots::Config(config) => return Ok(config.clone()),
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
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(Cause::with_source("", e)))?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(Arc::new(config))
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
    stream: super::BoxedStream,
) -> Result<super::ClientStream> {
    if !alpn.is_empty() {
        let mut with_alpn = (*config).clone();
        with_alpn.alpn_protocols = alpn.to_vec();
        config = Arc::new(with_alpn);
    }
    let connector = tokio_rustls::TlsConnector::from(config);
    let tls = connector.connect(server_name(host)?, stream).await.map_err(|e| Error::Tls(Cause::with_source("", e)))?;
    Ok(super::ClientStream::tls(tls))
}
