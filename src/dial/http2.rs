//! WebSockets over HTTP/2 for the client (RFC 8441; feature `hyper`).
//!
//! An HTTP/2 connection is opened as any other transport (directly or
//! through a proxy, with TLS offering `h2` by ALPN, or in cleartext with
//! prior knowledge), and hyper runs HTTP/2 on it. Before any WebSocket is
//! asked for, the server's first SETTINGS frame — the first frame a server
//! sends (RFC 9113 §3.4) — is read as it passes, to learn whether the
//! server enabled the extended CONNECT protocol (RFC 8441 §3): a client may
//! not send an extended CONNECT otherwise. Each WebSocket is then a
//! `CONNECT` stream with `:protocol` websocket, opened with
//! [`Http2Connection::open`]; many can share one connection.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use super::stream::ClientStream;
use super::target::Target;
use super::{Answer, Dialer, BODY_EXCERPT_TIME};
use crate::conn::Conn;
use crate::error::{Cause, Error, Result};
use crate::proto::Role;

/// How a [`Dialer`] uses HTTP/2 for WebSockets (RFC 8441).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Http2Mode {
    /// HTTP/1.1 only (the default).
    #[default]
    Off,
    /// For `wss://`: offer `h2` and `http/1.1` by ALPN, and open the
    /// WebSocket on HTTP/2 when the server picks `h2` and enables the
    /// extended CONNECT protocol; otherwise use HTTP/1.1 — on the same
    /// connection when the server picked `http/1.1`, on a new one when it
    /// speaks HTTP/2 without extended CONNECT. `ws://` uses HTTP/1.1.
    Prefer,
    /// HTTP/2 or nothing: `wss://` offers only `h2` by ALPN, and `ws://`
    /// speaks HTTP/2 in cleartext with prior knowledge (h2c). A server
    /// without extended CONNECT fails the dial with [`Error::Http2`].
    Only,
}

/// An HTTP/2 connection that carries WebSockets, from
/// [`Dialer::connect_http2`]. Clones share the connection; it closes when
/// the last clone and the last WebSocket on it are dropped.
///
/// ```no_run
/// # async fn run() -> Result<(), silverback::Error> {
/// use silverback::Dialer;
///
/// let dialer = Dialer::new().enable_compression(true);
/// let http2 = dialer.connect_http2("wss://example.com/").await?;
/// let (mut prices, _) = http2.open("wss://example.com/prices").await?;
/// let (mut news, _) = http2.open("wss://example.com/news").await?;
/// assert!(prices.with_stream(|s| s.is_http2()));
/// prices.write_text("subscribe").await?;
/// news.write_text("subscribe").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Http2Connection {
    send: SendRequest<Empty<Bytes>>,
    dialer: Dialer,
    target: Target,
}

impl std::fmt::Debug for Http2Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http2Connection")
            .field("url", &self.target.url.as_str())
            .field("closed", &self.send.is_closed())
            .finish()
    }
}

impl Http2Connection {
    /// Opens a WebSocket to `url` on a new stream of this connection and
    /// runs its handshake (an extended CONNECT answered with `200`), with
    /// the dialer's subprotocols, compression, headers and cookies, within
    /// its handshake timeout. `url` must name the connection's scheme, host
    /// and port.
    ///
    /// Cancel safety: not cancel-safe; dropped part way, the stream being
    /// opened is reset.
    pub async fn open(&self, url: &str) -> Result<(Conn<ClientStream>, Response<()>)> {
        self.open_target(&Target::parse(url)?).await
    }

    pub(crate) async fn open_target(&self, target: &Target) -> Result<(Conn<ClientStream>, Response<()>)> {
        let url = target.url.as_str();
        let base = &self.target;
        if (target.tls, &target.host, target.port) != (base.tls, &base.host, base.port) {
            return Err(Error::InvalidUrl(format!(
                "{url:?} is not on this HTTP/2 connection's origin ({})",
                base.url.origin().ascii_serialization()
            )));
        }
        let open = Box::pin(self.handshake(target));
        match self.dialer.handshake_timeout {
            Some(limit) => tokio::time::timeout(limit, open).await.unwrap_or(Err(Error::Timeout)),
            None => open.await,
        }
    }

    /// True once the connection is gone: no more WebSockets can be opened.
    pub fn is_closed(&self) -> bool {
        self.send.is_closed()
    }

    async fn handshake(&self, target: &Target) -> Result<(Conn<ClientStream>, Response<()>)> {
        let handshake = self.dialer.http2_request(target)?;
        let head = handshake.request();
        let mut request = Request::new(Empty::<Bytes>::new());
        *request.method_mut() = head.method().clone();
        *request.version_mut() = head.version();
        *request.uri_mut() = head.uri().clone();
        *request.headers_mut() = head.headers().clone();
        request.extensions_mut().insert(hyper::ext::Protocol::from_static("websocket"));
        let mut send = self.send.clone();
        send.ready().await.map_err(|e| http2_error("the connection is closed", e))?;
        let mut response = send.send_request(request).await.map_err(|e| http2_error("the request failed", e))?;
        let upgrade = hyper::upgrade::on(&mut response);
        let (parts, mut body) = response.into_parts();
        match self.dialer.answer(target, Some(handshake.check(Response::from_parts(parts, ()))))? {
            Answer::Accepted { config, protocol, response, early } => {
                let upgraded = upgrade.await.map_err(|e| http2_error("the stream was not handed over", e))?;
                let stream = ClientStream::http2(Box::new(TokioIo::new(upgraded)), target.tls);
                Ok((Conn::from_raw(stream, Role::Client, config, protocol, early), response))
            }
            Answer::Refused(mut refusal) => {
                let want = refusal.body_wanted().max(1024);
                let read = async {
                    while refusal.body.len() < want {
                        match body.frame().await {
                            Some(Ok(frame)) => {
                                if let Some(data) = frame.data_ref() {
                                    refusal.body.extend_from_slice(data);
                                }
                            }
                            _ => break,
                        }
                    }
                };
                let _ = tokio::time::timeout(BODY_EXCERPT_TIME, read).await;
                Err(refusal.into_error())
            }
        }
    }
}

fn http2_error(context: &str, e: hyper::Error) -> Error {
    Error::Http2(Cause::with_source(context, e))
}

impl Dialer {
    /// Opens an HTTP/2 connection to the origin of `url` for WebSockets
    /// (RFC 8441): `wss://` with TLS offering only `h2` by ALPN, `ws://` in
    /// cleartext with prior knowledge (h2c); through the dialer's proxy when
    /// one is set. Fails with [`Error::Http2`] when the server does not
    /// speak HTTP/2 or has not enabled the extended CONNECT protocol. Open
    /// WebSockets on it with [`Http2Connection::open`].
    ///
    /// Cancel safety: not cancel-safe; dropped part way, the connection
    /// being opened is dropped.
    pub async fn connect_http2(&self, url: &str) -> Result<Http2Connection> {
        let target = Target::parse(url)?;
        let dial = Box::pin(async {
            let stream = self.open(&target, Alpn::H2).await?;
            match self.start_http2(stream, &target).await? {
                Some(connection) => Ok(connection),
                None => Err(no_extended_connect()),
            }
        });
        match self.handshake_timeout {
            Some(limit) => tokio::time::timeout(limit, dial).await.unwrap_or(Err(Error::Timeout)),
            None => dial.await,
        }
    }

    /// Runs HTTP/2 on `stream` and waits for the server's SETTINGS: the
    /// connection when they enable extended CONNECT, `None` when not (the
    /// connection is then dropped).
    pub(crate) async fn start_http2(&self, stream: ClientStream, target: &Target) -> Result<Option<Http2Connection>> {
        if target.tls && !stream.alpn_is_h2() {
            return Err(Error::Http2(Cause::new("the server did not choose h2 by ALPN")));
        }
        let (verdict_tx, verdict) = oneshot::channel();
        let sniffer = SettingsSniffer { inner: stream, sniff: Some(Sniff { buf: Vec::new(), verdict: verdict_tx }) };
        let (send, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake::<_, Empty<Bytes>>(TokioIo::new(sniffer))
            .await
            .map_err(|e| http2_error("handshake", e))?;
        // The connection runs in its own task for as long as it is used.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        match verdict.await {
            Ok(true) => Ok(Some(Http2Connection { send, dialer: self.clone(), target: target.clone() })),
            Ok(false) => Ok(None),
            Err(_) => Err(Error::Http2(Cause::new("the connection ended before the server's SETTINGS"))),
        }
    }
}

/// The error for a server that speaks HTTP/2 without extended CONNECT.
pub(crate) fn no_extended_connect() -> Error {
    Error::Http2(Cause::new(
        "the server did not enable the extended CONNECT protocol (SETTINGS_ENABLE_CONNECT_PROTOCOL)",
    ))
}

/// What a TLS dial offers by ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alpn {
    /// Nothing: HTTP/1.1 is implied.
    None,
    /// `h2` only.
    H2,
    /// `h2`, then `http/1.1`.
    H2OrHttp1,
}

impl Alpn {
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn protocols(self) -> Vec<Vec<u8>> {
        match self {
            Alpn::None => Vec::new(),
            Alpn::H2 => vec![b"h2".to_vec()],
            Alpn::H2OrHttp1 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        }
    }
}

/// The largest first SETTINGS frame looked at; a larger one is taken as not
/// enabling extended CONNECT (a real one is a few dozen bytes).
const MAX_SETTINGS: usize = 1024;
/// HTTP/2 frame type SETTINGS, and the setting of RFC 8441 §3.
const SETTINGS: u8 = 0x4;
const ENABLE_CONNECT_PROTOCOL: u16 = 0x8;

/// The server's first frame, as it arrives.
struct Sniff {
    buf: Vec<u8>,
    verdict: oneshot::Sender<bool>,
}

impl Sniff {
    /// Takes bytes read from the server; the verdict once the first frame
    /// is whole (or cannot be a SETTINGS frame worth reading).
    fn take(&mut self, data: &[u8]) -> Option<bool> {
        let need = if self.buf.len() < 9 { 9 - self.buf.len() } else { 9 + frame_len(&self.buf) - self.buf.len() };
        self.buf.extend_from_slice(&data[..need.min(data.len())]);
        if self.buf.len() < 9 {
            return None;
        }
        let len = frame_len(&self.buf);
        if self.buf[3] != SETTINGS || len > MAX_SETTINGS || len % 6 != 0 {
            return Some(false);
        }
        if data.len() > need {
            // The header completed with this read: the payload may be here too.
            let rest = &data[need..];
            let more = (9 + len - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..more]);
        }
        if self.buf.len() < 9 + len {
            return None;
        }
        let enabled = self.buf[9..9 + len].chunks_exact(6).any(|setting| {
            u16::from_be_bytes([setting[0], setting[1]]) == ENABLE_CONNECT_PROTOCOL
                && u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]) == 1
        });
        Some(enabled)
    }
}

fn frame_len(header: &[u8]) -> usize {
    (usize::from(header[0]) << 16) | (usize::from(header[1]) << 8) | usize::from(header[2])
}

/// The transport under hyper's HTTP/2 client, reading the server's first
/// frame as it passes.
struct SettingsSniffer {
    inner: ClientStream,
    sniff: Option<Sniff>,
}

impl AsyncRead for SettingsSniffer {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Some(sniff) = &mut this.sniff {
            if let Poll::Ready(Ok(())) = &polled {
                let data = &buf.filled()[before..];
                let verdict = if data.is_empty() { Some(false) } else { sniff.take(data) };
                if let Some(verdict) = verdict {
                    if let Some(sniff) = this.sniff.take() {
                        let _ = sniff.verdict.send(verdict);
                    }
                }
            }
        }
        polled
    }
}

impl AsyncWrite for SettingsSniffer {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(u16, u32)]) -> Vec<u8> {
        let len = pairs.len() * 6;
        let mut frame = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, SETTINGS, 0, 0, 0, 0, 0];
        for (id, value) in pairs {
            frame.extend_from_slice(&id.to_be_bytes());
            frame.extend_from_slice(&value.to_be_bytes());
        }
        frame
    }

    fn verdict(bytes: &[u8], step: usize) -> Option<bool> {
        let (tx, _rx) = oneshot::channel();
        let mut sniff = Sniff { buf: Vec::new(), verdict: tx };
        for piece in bytes.chunks(step) {
            if let Some(v) = sniff.take(piece) {
                return Some(v);
            }
        }
        None
    }

    #[test]
    fn the_first_settings_frame_says_whether_extended_connect_is_on() {
        let on = settings(&[(0x3, 100), (ENABLE_CONNECT_PROTOCOL, 1), (0x4, 65535)]);
        let off = settings(&[(0x3, 100), (0x4, 65535)]);
        let zero = settings(&[(ENABLE_CONNECT_PROTOCOL, 0)]);
        for step in [1, 2, 5, 9, 10, 100] {
            let mut with_more = on.clone();
            with_more.extend_from_slice(&[0, 0, 0, 4, 1, 0, 0, 0, 0]);
            assert_eq!(verdict(&with_more, step), Some(true), "step {step}");
            assert_eq!(verdict(&off, step), Some(false), "step {step}");
            assert_eq!(verdict(&zero, step), Some(false), "step {step}");
        }
        // Not a SETTINGS frame first, or an absurd one: no extended CONNECT.
        assert_eq!(verdict(&[0, 0, 0, 0, 0, 0, 0, 0, 1], 3), Some(false));
        assert_eq!(verdict(&[0, 0x10, 0, SETTINGS, 0, 0, 0, 0, 0], 9), Some(false));
        assert_eq!(verdict(&on[..12], 4), None);
    }
}
