//! The async dial (feature `tokio`): [`connect`], [`Dialer::connect`],
//! [`Dialer::connect_on`] and custom connect functions.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use bytes::BytesMut;
use http::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::stream::{BoxedStream, ClientStream};
use super::target::Target;
use super::{tunnel, Answer, Dialer, BODY_EXCERPT_TIME};
use crate::conn::{Conn, Stream};
use crate::error::{Error, Result};
use crate::handshake_io::read_head;
use crate::proto::client_handshake::ClientHandshake;
use crate::proto::Role;

/// Opens the transport to a host and port: the target, or the proxy when one
/// is used. Returns any stream.
pub type ConnectFn =
    Arc<dyn Fn(String, u16) -> Pin<Box<dyn Future<Output = io::Result<BoxedStream>> + Send>> + Send + Sync>;

/// Dials `url` with [`Dialer::default`].
pub async fn connect(url: &str) -> Result<(Conn<ClientStream>, Response<()>)> {
    Dialer::default().connect(url).await
}

impl Dialer {
    /// Opens the transport with `connect` instead of a TCP connection. With a
    /// proxy, it is asked for the proxy's address. Async dials only.
    pub fn connect_fn<F, Fut>(mut self, connect: F) -> Self
    where
        F: Fn(String, u16) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<BoxedStream>> + Send + 'static,
    {
        self.connect = Some(Arc::new(move |host, port| Box::pin(connect(host, port))));
        self
    }

    /// Dials `url` (`ws://` or `wss://`) and runs the opening handshake.
    /// Returns the connection and the server's `101` response.
    ///
    /// Cancel safety: not cancel-safe; dropped part way, the connection
    /// being opened is dropped.
    pub async fn connect(&self, url: &str) -> Result<(Conn<ClientStream>, Response<()>)> {
        let target = Target::parse(url)?;
        let request = self.request(&target)?;
        // Boxed, so that the short-lived dialing state does not stay in the
        // caller's future for the life of the connection.
        let dial = Box::pin(async {
            let stream = self.open(&target).await?;
            self.handshake(stream, &target, request).await
        });
        match self.handshake_timeout {
            Some(limit) => tokio::time::timeout(limit, dial).await.unwrap_or(Err(Error::Timeout)),
            None => dial.await,
        }
    }

    /// Runs the opening handshake for `url` over a stream that is already
    /// connected (gorilla's `NewClient`); no proxy or TLS is added.
    ///
    /// Cancel safety: not cancel-safe; dropped part way, `stream` is dropped.
    pub async fn connect_on<S: Stream>(&self, stream: S, url: &str) -> Result<(Conn<S>, Response<()>)> {
        let target = Target::parse(url)?;
        let request = self.request(&target)?;
        let handshake = Box::pin(self.handshake(stream, &target, request));
        match self.handshake_timeout {
            Some(limit) => tokio::time::timeout(limit, handshake).await.unwrap_or(Err(Error::Timeout)),
            None => handshake.await,
        }
    }

    async fn open_transport(&self, host: &str, port: u16) -> Result<ClientStream> {
        match &self.connect {
            Some(connect) => Ok(ClientStream::boxed(connect(host.to_owned(), port).await?)),
            None => {
                let stream = TcpStream::connect((host, port)).await?;
                let _ = stream.set_nodelay(true);
                Ok(ClientStream::tcp(stream))
            }
        }
    }

    async fn open(&self, target: &Target) -> Result<ClientStream> {
        let mut stream = match self.proxy.resolve(target)? {
            Some(server) => {
                server.check(target)?;
                let mut stream = self.open_transport(&server.host, server.port).await?;
                tunnel::tunnel(&mut stream, &server, target).await?;
                stream
            }
            None => self.open_transport(&target.host, target.port).await?,
        };
        if target.tls {
            #[cfg(feature = "tls")]
            {
                let config = super::tls::client_config(&self.tls)?;
                stream = super::tls::connect(config, &target.host, stream.into_boxed()).await?;
            }
            #[cfg(not(feature = "tls"))]
            {
                let _ = &mut stream;
                return Err(Error::InvalidUrl("wss:// needs the `tls` feature".into()));
            }
        }
        Ok(stream)
    }

    async fn handshake<S: Stream>(
        &self,
        mut stream: S,
        target: &Target,
        mut handshake: ClientHandshake,
    ) -> Result<(Conn<S>, Response<()>)> {
        stream.write_all(handshake.request_bytes()).await?;
        stream.flush().await?;
        let outcome = read_head(&mut stream, &mut handshake, usize::MAX).await?;
        match self.answer(target, outcome)? {
            Answer::Accepted { config, protocol, response, early } => {
                Ok((Conn::from_raw(stream, Role::Client, config, protocol, early), response))
            }
            Answer::Refused(mut refusal) => {
                let want = refusal.body_wanted();
                read_body_excerpt(&mut stream, want, &mut refusal.body).await;
                Err(refusal.into_error())
            }
        }
    }
}

/// Reads a refusal's body until it holds `want` bytes, briefly: the excerpt
/// is for the error message only.
async fn read_body_excerpt<S: Stream>(stream: &mut S, want: usize, body: &mut BytesMut) {
    let read = async {
        while body.len() < want {
            body.reserve(want - body.len());
            match stream.read_buf(body).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(BODY_EXCERPT_TIME, read).await;
}
