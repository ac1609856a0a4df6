//! An axum extractor for WebSocket upgrades (feature `axum`), over HTTP/1.1
//! and over HTTP/2 (RFC 8441 extended CONNECT).
//!
//! ```no_run
//! use axum::routing::any;
//! use axum::Router;
//! use silverback::axum::WebSocketUpgrade;
//! use silverback::Upgrader;
//!
//! async fn ws(upgrade: WebSocketUpgrade) -> axum::response::Response {
//!     let upgrader = Upgrader::new().subprotocols(["chat"]).enable_compression(true);
//!     upgrade.upgrader(upgrader).on_upgrade(|mut conn| async move {
//!         while let Ok(message) = conn.read_message().await {
//!             if conn.write_message(message.kind, &message.data).await.is_err() {
//!                 break;
//!             }
//!         }
//!     })
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! // `any`, not `get`: over HTTP/2 a WebSocket is a CONNECT request.
//! let app = Router::new().route("/ws", any(ws));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await
//! # }
//! ```
//!
//! # Routing: `GET` and `CONNECT`
//!
//! An HTTP/1.1 client asks for a WebSocket with `GET`; an HTTP/2 client
//! (Chromium, when the server advertised `SETTINGS_ENABLE_CONNECT_PROTOCOL`,
//! which `axum::serve` does) with `CONNECT`. A route made with `get(ws)`
//! answers the second with 405, so those clients fail. Route WebSocket
//! endpoints with `any(ws)`, or with
//! `on(MethodFilter::GET.or(MethodFilter::CONNECT), ws)`.
//!
//! # Errors
//!
//! A request that is not a WebSocket request at all is refused by the
//! extractor itself (see [`NotWebSocket`]). Every other check — the origin
//! policy, `Sec-WebSocket-Version`, the key — runs in
//! [`WebSocketUpgrade::on_upgrade`] with the [`Upgrader`]'s options, which
//! then returns the error response the upgrader builds (403, 426, 400 …)
//! and never runs the callback.

use std::fmt;
use std::future::Future;

use axum_core::body::Body;
use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;
use http::{Request, StatusCode};
use hyper::upgrade::OnUpgrade;

use crate::conn::Conn;
use crate::proto::handshake::is_websocket_upgrade;
use crate::upgrade::{request_head, UpgradedStream, Upgrader};
use crate::Error;

/// A WebSocket upgrade request, taken by an axum handler; answer it with
/// [`WebSocketUpgrade::on_upgrade`].
pub struct WebSocketUpgrade {
    head: Request<()>,
    on_upgrade: OnUpgrade,
    upgrader: Upgrader,
    on_failed: Option<Box<dyn FnOnce(Error) + Send>>,
}

impl fmt::Debug for WebSocketUpgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocketUpgrade")
            .field("method", self.head.method())
            .field("uri", self.head.uri())
            .field("version", &self.head.version())
            .field("upgrader", &self.upgrader)
            .finish_non_exhaustive()
    }
}

/// The extractor's refusal of a request that is not a WebSocket request: no
/// `Upgrade: websocket` (HTTP/1.1) or extended CONNECT (HTTP/2), or one
/// whose connection cannot be taken over. Answered with 426 (with
/// `Upgrade: websocket` and `Sec-WebSocket-Version: 13`) or 500.
#[derive(Debug)]
#[non_exhaustive]
pub enum NotWebSocket {
    /// The request does not ask for a WebSocket.
    NotUpgrade,
    /// The server gave no way to take the connection over (the request did
    /// not come straight from hyper's server).
    NotUpgradable,
}

impl fmt::Display for NotWebSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotWebSocket::NotUpgrade => "the request is not a WebSocket upgrade",
            NotWebSocket::NotUpgradable => "the connection of this request cannot be upgraded",
        })
    }
}

impl std::error::Error for NotWebSocket {}

impl IntoResponse for NotWebSocket {
    fn into_response(self) -> Response {
        let status = match self {
            NotWebSocket::NotUpgrade => StatusCode::UPGRADE_REQUIRED,
            NotWebSocket::NotUpgradable => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut response = Response::new(Body::from(format!("{self}\n")));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
        headers.insert(http::header::SEC_WEBSOCKET_VERSION, http::HeaderValue::from_static("13"));
        if status == StatusCode::UPGRADE_REQUIRED {
            headers.insert(http::header::UPGRADE, http::HeaderValue::from_static("websocket"));
        }
        response
    }
}

impl<S: Send + Sync> FromRequestParts<S> for WebSocketUpgrade {
    type Rejection = NotWebSocket;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let head = request_head(&parts.method, &parts.uri, parts.version, &parts.headers, &parts.extensions);
        if !is_websocket_upgrade(&head) {
            return Err(NotWebSocket::NotUpgrade);
        }
        let on_upgrade = parts.extensions.remove::<OnUpgrade>().ok_or(NotWebSocket::NotUpgradable)?;
        Ok(WebSocketUpgrade { head, on_upgrade, upgrader: Upgrader::new(), on_failed: None })
    }
}

/// `Option<WebSocketUpgrade>`: `None` for a request that does not ask for a
/// WebSocket, so that one handler can serve a page and a WebSocket on the
/// same path; a WebSocket request whose connection cannot be taken over is
/// still refused ([`NotWebSocket::NotUpgradable`]).
impl<S: Send + Sync> OptionalFromRequestParts<S> for WebSocketUpgrade {
    type Rejection = NotWebSocket;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Option<Self>, Self::Rejection> {
        match <Self as FromRequestParts<S>>::from_request_parts(parts, state).await {
            Ok(upgrade) => Ok(Some(upgrade)),
            Err(NotWebSocket::NotUpgrade) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl WebSocketUpgrade {
    /// Answers with `upgrader`'s options: origin policy, subprotocols,
    /// compression (fixed, or decided per request by
    /// [`Upgrader::select_subprotocol`] and [`Upgrader::compression_for`]),
    /// limits, buffers, keepalive (the default is `Upgrader::new()`).
    pub fn upgrader(mut self, upgrader: Upgrader) -> Self {
        self.upgrader = upgrader;
        self
    }

    /// The subprotocols the client asks for, in its order.
    pub fn requested_subprotocols(&self) -> Vec<&str> {
        crate::subprotocols(&self.head)
    }

    /// Whether the request came over HTTP/2 (an extended CONNECT).
    pub fn is_http2(&self) -> bool {
        self.head.version() == http::Version::HTTP_2
    }

    /// Runs `f` when the handshake was accepted but the connection could not
    /// be taken over (the client went away before the response arrived);
    /// such failures are otherwise dropped.
    pub fn on_failed_upgrade(mut self, f: impl FnOnce(Error) + Send + 'static) -> Self {
        self.on_failed = Some(Box::new(f));
        self
    }

    /// Decides on the request with the upgrader's options and returns the
    /// response for the handler to return: `101` (HTTP/1.1) or `200`
    /// (HTTP/2) when accepted — `callback` then runs in a task of its own
    /// with the [`Conn`] once the response has gone out — or the upgrader's
    /// error response when refused.
    pub fn on_upgrade<F, Fut>(self, callback: F) -> Response
    where
        F: FnOnce(Conn<UpgradedStream>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let WebSocketUpgrade { head, on_upgrade, upgrader, on_failed } = self;
        match upgrader.upgrade_head(&head, on_upgrade) {
            Ok((response, upgrading)) => {
                tokio::spawn(async move {
                    match upgrading.await {
                        Ok(conn) => callback(conn).await,
                        Err(e) => {
                            if let Some(on_failed) = on_failed {
                                on_failed(e);
                            }
                        }
                    }
                });
                response.map(|_| Body::empty())
            }
            Err(refused) => refused.response.map(Body::new),
        }
    }
}
