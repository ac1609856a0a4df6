//! Echo servers, one per implementation, each written the way its crate's own
//! documentation and examples write one.
//!
//! Common to all of them, so that the comparison is about the WebSocket code:
//! - a tokio multi-thread runtime with `--workers N` worker threads (default 1;
//!   `run.sh` pins the process to one core);
//! - `TCP_NODELAY` on every accepted socket;
//! - tasks are spawned normally (no `tokio::task::unconstrained`, which the
//!   fastwebsockets and tokio-websockets examples use);
//! - every text and binary message is echoed with its type; pings are answered
//!   by each library itself; a close from the client ends the connection;
//! - text is validated as UTF-8 by every library (yawc needs `with_utf8()` for
//!   that; the others do it by default);
//! - messages up to 64 MiB are accepted (the default of all but yawc, whose
//!   default bound of 1 MiB is raised);
//! - with `--deflate`, permessage-deflate at level 1 with context takeover and
//!   no size threshold (silverback's defaults; yawc's `low_latency` preset is
//!   the same; sockudo-ws is configured to match).
//!
//! The `*-hyper` servers and `axum` (the http2 scenario's) all run on the same
//! hyper-util automatic builder, which speaks HTTP/1.1 with upgrades and
//! HTTP/2 (prior knowledge) with the extended CONNECT protocol enabled
//! (RFC 8441), with hyper's defaults otherwise; each accepts WebSockets both
//! ways with the library's own hyper integration.
//!
//! On SIGTERM or SIGINT the server prints one summary line to stderr:
//! connections accepted (TCP; the hyper-based servers also count WebSockets,
//! several of which can share one HTTP/2 connection), and connections or
//! WebSockets that ended in an error other than a normal close (the first few
//! are printed as they happen).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::{flag_value, has_flag};

mod broadcast;

pub const IMPLS: &[&str] = &[
    "silverback",
    "tokio-tungstenite",
    "fastwebsockets",
    "yawc",
    "tokio-websockets",
    "sockudo-ws",
    "raw-tcp",
    "silverback-hyper",
    "yawc-hyper",
    "axum",
];

/// The implementations that can negotiate permessage-deflate.
pub const DEFLATE_IMPLS: &[&str] = &["silverback", "yawc", "sockudo-ws", "silverback-hyper", "yawc-hyper"];

/// The implementations served by hyper's automatic HTTP/1.1 + HTTP/2 builder.
const HYPER_IMPLS: &[&str] = &["silverback-hyper", "yawc-hyper", "axum"];

static ACCEPTED: AtomicU64 = AtomicU64::new(0);
/// WebSockets upgraded, counted by the hyper-based servers only.
static WEBSOCKETS: AtomicU64 = AtomicU64::new(0);
static ERRORS: AtomicU64 = AtomicU64::new(0);
const ERRORS_PRINTED: u64 = 10;

/// Counts a connection that ended in an error; prints the first few.
fn report(what: &str, error: impl std::fmt::Display) {
    let n = ERRORS.fetch_add(1, Ordering::Relaxed) + 1;
    if n <= ERRORS_PRINTED {
        eprintln!("server error #{n} ({what}): {error}");
    }
}

pub fn main(args: &[String]) -> Result<(), String> {
    let [name, addr, ..] = args else { return Err("server needs <impl> <addr>".into()) };
    let name = name.as_str();
    if !IMPLS.contains(&name) {
        return Err(format!("unknown impl {name:?}; one of {IMPLS:?}"));
    }
    let addr: SocketAddr = addr.parse().map_err(|e| format!("bad address {addr:?}: {e}"))?;
    let deflate = has_flag(args, "--deflate");
    let broadcast = has_flag(args, "--broadcast");
    if broadcast && (deflate || !broadcast::IMPLS.contains(&name)) {
        return Err(format!("--broadcast: one of {:?}, without --deflate", broadcast::IMPLS));
    }
    if deflate && !DEFLATE_IMPLS.contains(&name) {
        return Err(format!("{name} does not support permessage-deflate (supported: {DEFLATE_IMPLS:?})"));
    }
    let workers: usize = flag_value(args, "--workers")?.unwrap_or(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(addr).await.map_err(|e| format!("bind {addr}: {e}"))?;
        println!("load-bench server {name} listening on {addr} (deflate: {deflate}, workers: {workers})");
        match name {
            _ if broadcast => tokio::spawn(broadcast::serve(name.to_owned(), listener)),
            "silverback" => tokio::spawn(silverback_server(listener, deflate)),
            "tokio-tungstenite" => tokio::spawn(tungstenite_server(listener)),
            "fastwebsockets" => tokio::spawn(fastwebsockets_server(listener)),
            "yawc" => tokio::spawn(yawc_server(listener, deflate)),
            "tokio-websockets" => tokio::spawn(tokio_websockets_server(listener)),
            "sockudo-ws" => tokio::spawn(sockudo_server(listener, deflate)),
            "raw-tcp" => tokio::spawn(raw_tcp_server(listener)),
            "silverback-hyper" => tokio::spawn(silverback_hyper_server(listener, deflate)),
            "yawc-hyper" => tokio::spawn(yawc_hyper_server(listener, deflate)),
            "axum" => tokio::spawn(axum_server(listener)),
            _ => unreachable!(),
        };
        wait_for_signal().await;
        let websockets = if HYPER_IMPLS.contains(&name) {
            format!(" websockets={}", WEBSOCKETS.load(Ordering::Relaxed))
        } else {
            String::new()
        };
        eprintln!(
            "server {name} summary: accepted={}{websockets} errors={}",
            ACCEPTED.load(Ordering::Relaxed),
            ERRORS.load(Ordering::Relaxed)
        );
        Ok::<(), String>(())
    })?;
    // Do not wait for connection tasks to wind down.
    std::process::exit(0);
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Accepts forever; runs `serve` on each connection in its own task.
async fn accept_loop<F, Fut>(listener: TcpListener, serve: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                ACCEPTED.fetch_add(1, Ordering::Relaxed);
                let _ = stream.set_nodelay(true);
                let task = serve(stream);
                tokio::spawn(async move {
                    if let Err(e) = task.await {
                        report("connection", e);
                    }
                });
            }
            Err(e) => {
                // EMFILE and the like: back off and keep serving.
                report("accept", e);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

// ---------------------------------------------------------------- silverback

async fn silverback_server(listener: TcpListener, deflate: bool) {
    use silverback::{CloseCode, Upgrader};
    let upgrader = Upgrader::new().enable_compression(deflate);
    accept_loop(listener, move |stream| {
        let upgrader = upgrader.clone();
        async move {
            match silverback_echo(&upgrader, stream).await {
                Ok(()) => Ok(()),
                Err(e) if e.is_close(&[CloseCode::NORMAL, CloseCode::GOING_AWAY, CloseCode::NO_STATUS_RECEIVED]) => {
                    Ok(())
                }
                Err(e) => Err(format!("silverback: {e}")),
            }
        }
    })
    .await
}

/// As in silverback's README and examples/echo_server.rs.
async fn silverback_echo(upgrader: &silverback::Upgrader, stream: TcpStream) -> Result<(), silverback::Error> {
    let mut conn = upgrader.accept(stream).await?;
    loop {
        let msg = conn.read_message().await?;
        // Replies are batched and leave when the next read would wait.
        conn.feed_message(msg.kind, &msg.data).await?;
    }
}

// ---------------------------------------------------------- tokio-tungstenite

async fn tungstenite_server(listener: TcpListener) {
    use futures_util::{future, StreamExt, TryStreamExt};
    use tokio_tungstenite::tungstenite::Error;
    accept_loop(listener, |stream| async move {
        // As in tokio-tungstenite's examples/echo-server.rs.
        let ws = tokio_tungstenite::accept_async(stream).await.map_err(|e| format!("tungstenite handshake: {e}"))?;
        let (write, read) = ws.split();
        match read.try_filter(|msg| future::ready(msg.is_text() || msg.is_binary())).forward(write).await {
            Ok(()) | Err(Error::ConnectionClosed) | Err(Error::AlreadyClosed) => Ok(()),
            Err(e) => Err(format!("tungstenite: {e}")),
        }
    })
    .await
}

// ------------------------------------------------------------- fastwebsockets

async fn fastwebsockets_server(listener: TcpListener) {
    use fastwebsockets::{upgrade, FragmentCollector, OpCode, WebSocketError};
    use http_body_util::Empty;
    use hyper::body::{Bytes, Incoming};
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Request, Response};

    // As in fastwebsockets' examples/echo_server.rs: hyper serves the request,
    // `upgrade::upgrade` answers it, the connection is read through a
    // FragmentCollector (auto close and auto pong are on by default).
    async fn handle_client(fut: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
        let mut ws = FragmentCollector::new(fut.await?);
        loop {
            let frame = ws.read_frame().await?;
            match frame.opcode {
                OpCode::Close => break,
                OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
                _ => {}
            }
        }
        Ok(())
    }

    async fn server_upgrade(mut req: Request<Incoming>) -> Result<Response<Empty<Bytes>>, WebSocketError> {
        let (response, fut) = upgrade::upgrade(&mut req)?;
        tokio::spawn(async move {
            match handle_client(fut).await {
                Ok(()) | Err(WebSocketError::ConnectionClosed) => {}
                Err(e) => report("fastwebsockets", e),
            }
        });
        Ok(response)
    }

    accept_loop(listener, |stream| async move {
        let io = hyper_util::rt::TokioIo::new(stream);
        http1::Builder::new()
            .serve_connection(io, service_fn(server_upgrade))
            .with_upgrades()
            .await
            .map_err(|e| format!("fastwebsockets (hyper): {e}"))
    })
    .await
}

// ----------------------------------------------------------------------- yawc

async fn yawc_server(listener: TcpListener, deflate: bool) {
    use futures_util::{SinkExt, StreamExt};
    use http_body_util::Empty;
    use hyper::body::{Bytes, Incoming};
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use yawc::frame::OpCode;
    use yawc::{Options, WebSocket};

    let mut options = Options::default().with_utf8().with_max_payload_read(64 << 20);
    if deflate {
        // Level 1, context takeover both ways, no threshold.
        options = options.with_low_latency_compression();
    }

    // As in yawc's crate documentation: hyper serves the request,
    // `WebSocket::upgrade_with_options` answers it, frames are echoed through
    // the Stream and Sink implementations.
    accept_loop(listener, move |stream| {
        let options = options.clone();
        async move {
            let service = service_fn(move |mut req: Request<Incoming>| {
                let options = options.clone();
                async move {
                    let (response, fut) = WebSocket::upgrade_with_options(&mut req, options)?;
                    tokio::spawn(async move {
                        let mut ws = match fut.await {
                            Ok(ws) => ws,
                            Err(e) => return report("yawc upgrade", e),
                        };
                        while let Some(frame) = ws.next().await {
                            match frame.opcode() {
                                OpCode::Text | OpCode::Binary => {
                                    if let Err(e) = ws.send(frame).await {
                                        return report("yawc", e);
                                    }
                                }
                                // yawc answers a close itself and then ends the
                                // stream; breaking here would drop the answer.
                                _ => {}
                            }
                        }
                    });
                    Ok::<Response<Empty<Bytes>>, yawc::WebSocketError>(response)
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            http1::Builder::new()
                .serve_connection(io, service)
                .with_upgrades()
                .await
                .map_err(|e| format!("yawc (hyper): {e}"))
        }
    })
    .await
}

// ----------------------------------------------------------- tokio-websockets

async fn tokio_websockets_server(listener: TcpListener) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_websockets::ServerBuilder;

    // As in tokio-websockets' examples/echo_server.rs, with the default config
    // and limits (64 MiB payloads).
    accept_loop(listener, |stream| async move {
        let (_request, mut ws) =
            ServerBuilder::new().accept(stream).await.map_err(|e| format!("tokio-websockets handshake: {e}"))?;
        while let Some(item) = ws.next().await {
            let item = item.map_err(|e| format!("tokio-websockets: {e}"))?;
            if item.is_text() || item.is_binary() {
                ws.send(item).await.map_err(|e| format!("tokio-websockets: {e}"))?;
            }
        }
        Ok(())
    })
    .await
}

// ----------------------------------------------------------------- sockudo-ws

async fn sockudo_server(listener: TcpListener, deflate: bool) {
    use bytes::BytesMut;
    use sockudo_ws::deflate::{negotiate_server_deflate, DeflateConfig};
    use sockudo_ws::handshake::{build_response, generate_accept_key, parse_request};
    use sockudo_ws::{CompressedWebSocketStream, Config, Role, WebSocketStream};

    // As in sockudo-ws' examples/simple_echo.rs: the handshake with the crate's
    // parse_request/build_response helpers, then WebSocketStream's Stream and
    // Sink. Its raw-stream handshake helpers do not negotiate extensions, so
    // permessage-deflate is negotiated here with the crate's own
    // negotiate_server_deflate and served by CompressedWebSocketStream (what
    // its axum integration does).
    let policy = DeflateConfig { compression_level: 1, compression_threshold: 0, ..DeflateConfig::default() };
    accept_loop(listener, move |mut stream| {
        let policy = policy.clone();
        async move {
            let err = |e: sockudo_ws::Error| format!("sockudo-ws: {e}");
            let mut buf = BytesMut::with_capacity(4096);
            let negotiated = loop {
                let n = stream.read_buf(&mut buf).await.map_err(|e| format!("sockudo-ws handshake: {e}"))?;
                if n == 0 {
                    return Err("sockudo-ws handshake: connection closed".into());
                }
                if buf.len() > 16 * 1024 {
                    return Err("sockudo-ws handshake: request too large".into());
                }
                if let Some((req, consumed)) = parse_request(&buf).map_err(err)? {
                    let accept = generate_accept_key(req.key);
                    let negotiated = match (deflate, req.extensions) {
                        (true, Some(offers)) => negotiate_server_deflate(offers, &policy),
                        _ => None,
                    };
                    let ext = negotiated.as_ref().map(|n| n.to_response_header());
                    let response = build_response(&accept, None, ext.as_deref());
                    stream.write_all(&response).await.map_err(|e| format!("sockudo-ws handshake: {e}"))?;
                    let leftover = buf.split_off(consumed);
                    break (negotiated, leftover);
                }
            };
            let (negotiated, leftover) = negotiated;
            let leftover = (!leftover.is_empty()).then(|| leftover.freeze());
            match negotiated {
                Some(n) => {
                    let ws =
                        CompressedWebSocketStream::server_with_leftover(stream, Config::default(), n.config, leftover);
                    sockudo_echo(ws).await.map_err(err)
                }
                None => {
                    let ws = WebSocketStream::from_raw_with_leftover(stream, Role::Server, Config::default(), leftover);
                    sockudo_echo(ws).await.map_err(err)
                }
            }
        }
    })
    .await
}

async fn sockudo_echo<W>(mut ws: W) -> Result<(), sockudo_ws::Error>
where
    W: futures_util::Stream<Item = Result<sockudo_ws::Message, sockudo_ws::Error>>
        + futures_util::Sink<sockudo_ws::Message, Error = sockudo_ws::Error>
        + Unpin,
{
    use futures_util::{SinkExt, StreamExt};
    use sockudo_ws::Message;
    while let Some(msg) = ws.next().await {
        match msg? {
            Message::Text(text) => ws.send(Message::Text(text)).await?,
            Message::Binary(data) => ws.send(Message::Binary(data)).await?,
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => {}
        }
    }
    Ok(())
}

// ------------------------------------------- hyper, HTTP/1.1 and HTTP/2 (RFC 8441)

/// Serves every connection with hyper-util's automatic builder: HTTP/1.1 with
/// upgrades, or HTTP/2 with the extended CONNECT protocol enabled (what lets
/// a client open WebSockets on it, RFC 8441 §3); hyper's defaults otherwise
/// (1 MiB flow-control windows, 200 concurrent streams).
async fn hyper_accept_loop<S, B>(listener: TcpListener, what: &'static str, service: S)
where
    S: hyper::service::Service<hyper::Request<hyper::body::Incoming>, Response = hyper::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;

    accept_loop(listener, move |stream| {
        let service = service.clone();
        async move {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http2().enable_connect_protocol();
            builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await
                .map_err(|e| format!("{what} (hyper): {e:?}"))
        }
    })
    .await
}

/// silverback's `Upgrader::upgrade` (its documented hyper integration), then
/// the same loop as the `silverback` server.
async fn silverback_hyper_server(listener: TcpListener, deflate: bool) {
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper::Request;
    use silverback::{CloseCode, Upgrader};

    let upgrader = Upgrader::new().enable_compression(deflate);
    let service = service_fn(move |request: Request<Incoming>| {
        let upgrader = upgrader.clone();
        async move {
            Ok::<_, std::convert::Infallible>(match upgrader.upgrade(request) {
                Ok((response, upgrading)) => {
                    tokio::spawn(async move {
                        match silverback_hyper_echo(upgrading).await {
                            Ok(()) => {}
                            Err(e)
                                if e.is_close(&[
                                    CloseCode::NORMAL,
                                    CloseCode::GOING_AWAY,
                                    CloseCode::NO_STATUS_RECEIVED,
                                ]) => {}
                            Err(e) => report("silverback-hyper", e),
                        }
                    });
                    response
                }
                Err(refused) => {
                    report("silverback-hyper upgrade", refused.error);
                    refused.response
                }
            })
        }
    });
    hyper_accept_loop(listener, "silverback-hyper", service).await
}

/// As `silverback_echo`, once hyper has handed the stream over.
async fn silverback_hyper_echo(upgrading: silverback::Upgrading) -> Result<(), silverback::Error> {
    let mut conn = upgrading.await?;
    WEBSOCKETS.fetch_add(1, Ordering::Relaxed);
    loop {
        let msg = conn.read_message().await?;
        conn.feed_message(msg.kind, &msg.data).await?;
    }
}

/// yawc's `WebSocket::upgrade_with_options` (which, with its `http2`
/// feature, takes an extended CONNECT as well as an HTTP/1.1 upgrade), the
/// same options and loop as the `yawc` server.
async fn yawc_hyper_server(listener: TcpListener, deflate: bool) {
    use futures_util::{SinkExt, StreamExt};
    use http_body_util::Empty;
    use hyper::body::{Bytes, Incoming};
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use yawc::frame::OpCode;
    use yawc::{Options, WebSocket};

    let mut options = Options::default().with_utf8().with_max_payload_read(64 << 20);
    if deflate {
        options = options.with_low_latency_compression();
    }
    let service = service_fn(move |mut req: Request<Incoming>| {
        let options = options.clone();
        async move {
            let (response, fut) = WebSocket::upgrade_with_options(&mut req, options)?;
            tokio::spawn(async move {
                let mut ws = match fut.await {
                    Ok(ws) => ws,
                    Err(e) => return report("yawc-hyper upgrade", e),
                };
                WEBSOCKETS.fetch_add(1, Ordering::Relaxed);
                while let Some(frame) = ws.next().await {
                    match frame.opcode() {
                        OpCode::Text | OpCode::Binary => {
                            if let Err(e) = ws.send(frame).await {
                                return report("yawc-hyper", e);
                            }
                        }
                        // yawc answers a close itself, then ends the stream.
                        _ => {}
                    }
                }
            });
            Ok::<Response<Empty<Bytes>>, yawc::WebSocketError>(response)
        }
    });
    hyper_accept_loop(listener, "yawc-hyper", service).await
}

/// axum 0.8's own `WebSocketUpgrade` extractor (tokio-tungstenite 0.29
/// underneath), routed with `any` so that both the HTTP/1.1 `GET` and the
/// HTTP/2 `CONNECT` reach it, as in axum's websockets example; the router is
/// served by the same hyper builder as the other two (what `axum::serve` does,
/// plus `TCP_NODELAY` and the counters).
async fn axum_server(listener: TcpListener) {
    use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
    use axum::response::Response;
    use axum::routing::any;
    use axum::Router;
    use hyper_util::service::TowerToHyperService;

    async fn echo(mut socket: WebSocket) {
        WEBSOCKETS.fetch_add(1, Ordering::Relaxed);
        // tungstenite queues its answer to a close and sends it on the next
        // read, which then ends the stream: keep reading until then.
        while let Some(msg) = socket.recv().await {
            match msg {
                Ok(msg @ (Message::Text(_) | Message::Binary(_))) => {
                    if let Err(e) = socket.send(msg).await {
                        return report("axum", e);
                    }
                }
                Ok(_) => {}
                Err(e) => return report("axum", e),
            }
        }
    }

    async fn handler(ws: WebSocketUpgrade) -> Response {
        ws.on_failed_upgrade(|e| report("axum upgrade", e)).on_upgrade(echo)
    }

    let router = Router::new().route("/", any(handler));
    hyper_accept_loop(listener, "axum", TowerToHyperService::new(router)).await
}

// -------------------------------------------------------------------- raw-tcp

/// Plain TCP echo: the ceiling for what the loopback and the runtime allow.
async fn raw_tcp_server(listener: TcpListener) {
    accept_loop(listener, |mut stream| async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = stream.read(&mut buf).await.map_err(|e| format!("raw-tcp: {e}"))?;
            if n == 0 {
                return Ok(());
            }
            stream.write_all(&buf[..n]).await.map_err(|e| format!("raw-tcp: {e}"))?;
        }
    })
    .await
}
