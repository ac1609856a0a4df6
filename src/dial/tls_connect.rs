//! The caller's own TLS step (gorilla's `NetDialTLSContext`): a
//! [`TlsConnect`] wraps the stream the dialer opened — to the server, or a
//! tunnel through a proxy — in TLS made by the caller (another TLS library,
//! client certificates, certificate pinning). With feature `native-tls`,
//! the system's TLS library is offered this way too.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use super::stream::{BoxedStream, ClientStream};
use super::Dialer;
use crate::error::{Cause, Error, Result};

/// A boxed, sendable future, as a [`TlsConnect`] returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Wraps a connected stream in TLS for `host`: the TLS step of a dial when
/// set with [`Dialer::tls_connector`].
///
/// Closures `Fn(String, BoxedStream) -> impl Future<Output =
/// io::Result<BoxedStream>>` implement it. The stream is already connected
/// to the server (through any proxy tunnel); `host` is the URL's host (the
/// proxy's host for the TLS to an `https://` proxy), for the server name
/// and the certificate check. An error fails the dial with
/// [`Error::Tls`], the error as the cause's source.
pub trait TlsConnect: Send + Sync + 'static {
    /// Runs the TLS handshake over `stream` and returns the encrypted stream.
    fn connect(&self, host: String, stream: BoxedStream) -> BoxFuture<io::Result<BoxedStream>>;
}

impl<F, Fut> TlsConnect for F
where
    F: Fn(String, BoxedStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<BoxedStream>> + Send + 'static,
{
    fn connect(&self, host: String, stream: BoxedStream) -> BoxFuture<io::Result<BoxedStream>> {
        Box::pin(self(host, stream))
    }
}

/// A shared [`TlsConnect`].
pub(crate) type TlsConnector = Arc<dyn TlsConnect>;

impl Dialer {
    /// Makes TLS with `connector` instead of the built-in rustls, for
    /// `wss://` and for `https://` proxies. The dialer's [`crate::TlsRoots`]
    /// are then not used, and no ALPN is offered (so HTTP/2 is not
    /// negotiated: [`crate::Http2Mode::Prefer`] dials HTTP/1.1, `Only`
    /// fails). Async dials only.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), silverback::Error> {
    /// use std::sync::Arc;
    /// use silverback::dial::BoxedStream;
    /// use silverback::Dialer;
    ///
    /// # fn my_config() -> Arc<rustls::ClientConfig> { unimplemented!() }
    /// let config: Arc<rustls::ClientConfig> = my_config(); // with a client certificate, say
    /// let dialer = Dialer::new().tls_connector(move |host: String, stream: BoxedStream| {
    ///     let connector = tokio_rustls::TlsConnector::from(config.clone());
    ///     async move {
    ///         let name = rustls::pki_types::ServerName::try_from(host)
    ///             .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    ///         Ok(Box::new(connector.connect(name, stream).await?) as BoxedStream)
    ///     }
    /// });
    /// let (conn, _) = dialer.connect("wss://example.com/").await?;
    /// # Ok(()) }
    /// ```
    pub fn tls_connector(mut self, connector: impl TlsConnect) -> Self {
        self.tls_connector = Some(Arc::new(connector));
        self
    }

    /// Makes TLS with the system's library through `native-tls` (feature
    /// `native-tls`), configured by `connector` (its roots, client identity,
    /// …); shorthand for a [`Dialer::tls_connector`] that calls it. Without
    /// the `tls` feature, `wss://` uses native-tls with its default settings
    /// anyway.
    #[cfg(feature = "native-tls")]
    pub fn native_tls(self, connector: native_tls::TlsConnector) -> Self {
        let connector = tokio_native_tls::TlsConnector::from(connector);
        self.tls_connector(move |host: String, stream: BoxedStream| {
            let connector = connector.clone();
            async move {
                let tls = connector.connect(&host, stream).await.map_err(io::Error::other)?;
                Ok(Box::new(tls) as BoxedStream)
            }
        })
    }

    /// Wraps `stream` in TLS for `host`: the caller's connector, else
    /// rustls (feature `tls`), else native-tls (feature `native-tls`).
    pub(crate) async fn wrap_tls(&self, host: &str, stream: ClientStream, alpn: &[Vec<u8>]) -> Result<ClientStream> {
        if let Some(connector) = &self.tls_connector {
            let addrs = stream.addrs();
            let tls = connector
                .connect(host.to_owned(), stream.into_boxed())
                .await
                .map_err(|e| Error::Tls(Cause::with_source("the TLS connector failed", e)))?;
            return Ok(ClientStream::custom_tls(tls, addrs));
        }
        #[cfg(feature = "tls")]
        {
            let config = super::tls::client_config(&self.tls)?;
            super::tls::connect(config, alpn, host, stream).await
        }
        #[cfg(all(not(feature = "tls"), feature = "native-tls"))]
        {
            let _ = alpn;
            let connector = native_tls::TlsConnector::new()
                .map_err(|e| Error::Tls(Cause::with_source("native-tls configuration", e)))?;
            let addrs = stream.addrs();
            let tls = tokio_native_tls::TlsConnector::from(connector)
                .connect(host, stream.into_boxed())
                .await
                .map_err(|e| Error::Tls(Cause::with_source("", e)))?;
            Ok(ClientStream::native_tls(tls, addrs))
        }
        #[cfg(not(any(feature = "tls", feature = "native-tls")))]
        {
            let _ = (alpn, stream);
            Err(Error::InvalidUrl("wss:// and https:// proxies need the `tls` or `native-tls` feature".into()))
        }
    }
}
