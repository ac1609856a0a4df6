//! The axum extractor (`silverback::axum::WebSocketUpgrade`) in a server
//! built like examples/axum_echo: one port that speaks HTTP/1.1 and HTTP/2
//! with prior knowledge, HTTP/2 with `SETTINGS_ENABLE_CONNECT_PROTOCOL`.
//! HTTP/1.1 clients are silverback's `Dialer` and raw requests; the HTTP/2
//! client is hyper's, sending extended CONNECT requests (RFC 8441) and
//! speaking WebSocket over the upgraded streams with a client-role `Conn`.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use bytes::{Bytes, BytesMut};
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2::SendRequest;
use hyper::ext::Protocol;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use silverback::axum::WebSocketUpgrade;
use silverback::{
    CloseCode, CloseFrame, Config, Conn, DeflateParams, Dialer, Error, MessageType, Role, UpgradedStream, Upgrader,
};
use tokio::sync::mpsc;

/// What the server's handler saw of one WebSocket, sent when it ended.
#[derive(Debug)]
struct Seen {
    path: String,
    http2: bool,
    subprotocol: Option<String>,
    compressed: bool,
    /// The error that ended the echo.
    end: Error,
}

/// The handlers' state: where they report, and how many WebSockets started.
#[derive(Clone)]
struct Recorder {
    seen: mpsc::UnboundedSender<Seen>,
    started: Arc<AtomicUsize>,
}

/// What a test reads back from its server.
struct Server {
    addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
    /// WebSockets whose callback ran.
    started: Arc<AtomicUsize>,
    /// TCP connections accepted.
    connections: Arc<AtomicUsize>,
}

impl Server {
    /// The report of the next WebSocket to end.
    async fn next_seen(&mut self) -> Seen {
        within(self.seen.recv()).await.expect("the server stopped")
    }
}

/// The routes under test:
/// - `/ws`: the echo, subprotocol `chat`, compression on;
/// - `/ws-plain`: the same without compression;
/// - `/`: a page for plain requests, the echo for WebSocket ones;
/// - `/get-only`: the echo routed with `get`, which HTTP/2 cannot reach.
async fn server() -> Server {
    let (seen, seen_rx) = mpsc::unbounded_channel();
    let started = Arc::new(AtomicUsize::new(0));
    let recorder = Recorder { seen, started: started.clone() };
    let app = Router::new()
        .route("/ws", any(echo))
        .route("/ws-plain", any(echo))
        .route("/", any(root))
        .route("/get-only", get(echo))
        .with_state(recorder);
    let (addr, connections) = serve(app).await;
    Server { addr, seen: seen_rx, started, connections }
}

/// Serves `app` on a loopback port as examples/axum_echo does (cleartext);
/// returns the address and a count of the TCP connections accepted.
async fn serve(app: Router) -> (SocketAddr, Arc<AtomicUsize>) {
    let (listener, addr) = listen().await;
    let connections = Arc::new(AtomicUsize::new(0));
    let accepted = connections.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            accepted.fetch_add(1, Ordering::SeqCst);
            let app = app.clone();
            tokio::spawn(async move {
                let mut builder = auto::Builder::new(TokioExecutor::new());
                builder.http2().enable_connect_protocol();
                let service = TowerToHyperService::new(app);
                let _ = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await;
            });
        }
    });
    (addr, connections)
}

async fn echo(State(recorder): State<Recorder>, uri: Uri, upgrade: WebSocketUpgrade) -> Response {
    run_echo(recorder, uri, upgrade)
}

/// The pattern of examples/axum_echo: the page, or the echo on the same route.
async fn root(State(recorder): State<Recorder>, uri: Uri, upgrade: Option<WebSocketUpgrade>) -> Response {
    match upgrade {
        Some(upgrade) => run_echo(recorder, uri, upgrade),
        None => "the page".into_response(),
    }
}

fn run_echo(recorder: Recorder, uri: Uri, upgrade: WebSocketUpgrade) -> Response {
    let path = uri.path().to_owned();
    let http2 = upgrade.is_http2();
    let upgrader = Upgrader::new().subprotocols(["chat"]).enable_compression(path != "/ws-plain");
    upgrade.upgrader(upgrader).on_upgrade(move |mut conn| async move {
        recorder.started.fetch_add(1, Ordering::SeqCst);
        let subprotocol = conn.subprotocol().map(str::to_owned);
        let compressed = conn.compression_negotiated();
        let end = loop {
            let msg = match conn.read_message().await {
                Ok(msg) => msg,
                Err(e) => break e,
            };
            if let Err(e) = conn.write_message(msg.kind, &msg.data).await {
                break e;
            }
        };
        let _ = recorder.seen.send(Seen { path, http2, subprotocol, compressed, end });
    })
}

/// Sends each message and checks its echo.
async fn echo_round_trips<S: silverback::Stream>(conn: &mut Conn<S>, label: &str) {
    let big_text = text_of(70_000);
    let messages: [(MessageType, Vec<u8>); 5] = [
        (MessageType::Text, format!("hello from {label}").into_bytes()),
        (MessageType::Binary, pattern(100_000)),
        (MessageType::Text, big_text.into_bytes()),
        (MessageType::Binary, Vec::new()),
        (MessageType::Text, "é ✓ 𝄞".repeat(1000).into_bytes()),
    ];
    for (kind, data) in messages {
        within(conn.write_message(kind, &data)).await.unwrap();
        let echo = within(conn.read_message()).await.unwrap();
        assert_eq!(echo.kind, kind, "{label}");
        assert!(echo.data == data, "{label}: the echo of {} bytes differs", data.len());
    }
}

/// A raw HTTP/1.1 request for `path` with these header lines (each ending in
/// CRLF); the connection closes after the response.
fn raw_request(addr: SocketAddr, path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n")
}

/// The header lines of a valid HTTP/1.1 WebSocket request, but for
/// `Connection`, which [`raw_request`] adds.
fn upgrade_headers(version: &str) -> String {
    format!("Upgrade: websocket\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: {version}\r\n")
}

/// Like [`raw_request`] with `Connection: Upgrade`.
fn raw_upgrade(addr: SocketAddr, path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: Upgrade\r\n\r\n")
}

/// Like [`raw_upgrade`], for a request to be refused: the connection closes
/// after the response.
fn refused_upgrade(addr: SocketAddr, path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: Upgrade, close\r\n\r\n")
}

#[tokio::test]
async fn http1_upgrade_negotiates_and_echoes() {
    let mut server = server().await;
    let dialer = Dialer::new().subprotocols(["chat"]).enable_compression(true);
    let url = format!("ws://{}/ws", server.addr);
    let (mut conn, response) = within(dialer.connect(&url)).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(response.headers()["sec-websocket-protocol"], "chat");
    let extensions = response.headers()["sec-websocket-extensions"].to_str().unwrap();
    assert!(extensions.starts_with("permessage-deflate"), "{extensions}");
    assert_eq!(conn.subprotocol(), Some("chat"));
    assert!(conn.compression_negotiated());

    echo_round_trips(&mut conn, "HTTP/1.1").await;
    within(conn.close(CloseFrame::new(CloseCode::NORMAL, "bye"))).await.unwrap();

    let seen = server.next_seen().await;
    assert_eq!(seen.path, "/ws");
    assert!(!seen.http2, "an HTTP/1.1 upgrade seen as HTTP/2");
    assert_eq!(seen.subprotocol.as_deref(), Some("chat"));
    assert!(seen.compressed);
    assert!(seen.end.is_close(&[CloseCode::NORMAL]), "{:?}", seen.end);

    // Without compression on the server's side, the offer is declined.
    let (mut conn, response) = within(dialer.connect(&format!("ws://{}/ws-plain", server.addr))).await.unwrap();
    assert!(response.headers().get("sec-websocket-extensions").is_none());
    assert!(!conn.compression_negotiated());
    echo_round_trips(&mut conn, "HTTP/1.1, uncompressed").await;
    within(conn.close(CloseFrame::new(CloseCode::NORMAL, ""))).await.unwrap();
    let seen = server.next_seen().await;
    assert_eq!(seen.path, "/ws-plain");
    assert!(!seen.compressed && !seen.http2);
    assert_eq!(server.started.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn one_route_serves_the_page_and_the_websocket() {
    let mut server = server().await;
    let response = http_exchange(server.addr, raw_request(server.addr, "/", "").as_bytes()).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"the page");

    let (mut conn, response) = within(silverback::connect(&format!("ws://{}/", server.addr))).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    echo_round_trips(&mut conn, "/").await;
    within(conn.close(CloseFrame::new(CloseCode::NORMAL, ""))).await.unwrap();
    let seen = server.next_seen().await;
    assert_eq!(seen.path, "/");
    assert!(seen.end.is_close(&[CloseCode::NORMAL]), "{:?}", seen.end);
}

#[tokio::test]
async fn refusals_become_responses() {
    let mut server = server().await;
    let addr = server.addr;

    // Another site's page: refused by the upgrader's origin policy in
    // `on_upgrade`, 403.
    let extra = format!("{}Origin: http://evil.example\r\n", upgrade_headers("13"));
    let response = http_exchange(addr, refused_upgrade(addr, "/ws", &extra).as_bytes()).await;
    assert_eq!(response.status, 403, "{response:?}");
    assert_eq!(response.header("sec-websocket-version"), Some("13"));
    assert_eq!(response.header("content-type"), Some("text/plain; charset=utf-8"));
    assert!(response.header("sec-websocket-accept").is_none());

    // An unsupported version: 426 from `on_upgrade`.
    let response = http_exchange(addr, refused_upgrade(addr, "/ws", &upgrade_headers("8")).as_bytes()).await;
    assert_eq!(response.status, 426, "{response:?}");
    assert_eq!(response.header("sec-websocket-version"), Some("13"));
    assert_eq!(response.header("upgrade"), Some("websocket"));

    // A plain GET: refused by the extractor itself, 426.
    let response = http_exchange(addr, raw_request(addr, "/ws", "").as_bytes()).await;
    assert_eq!(response.status, 426, "{response:?}");
    assert_eq!(response.header("upgrade"), Some("websocket"));
    assert_eq!(response.header("sec-websocket-version"), Some("13"));
    assert_eq!(response.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(response.body, b"the request is not a WebSocket upgrade\n");

    // The same origin is welcome.
    let extra = format!("{}Origin: http://{addr}\r\n", upgrade_headers("13"));
    let (mut client, response) = RawClient::handshake(addr, raw_upgrade(addr, "/ws", &extra).as_bytes()).await;
    assert_eq!(response.header("sec-websocket-protocol"), None);
    client.send_close(1000, "").await;
    assert_eq!(client.read_close().await, Some((1000, String::new())));
    assert!(server.next_seen().await.end.is_close(&[CloseCode::NORMAL]));

    // Of all these, only the same-origin request reached the callback.
    assert_eq!(server.started.load(Ordering::SeqCst), 1);
}

/// A refusal in `on_upgrade` should answer with the upgrader's whole error
/// response: the reason as the plain-text body, or the body built by
/// `Upgrader::error`.
#[tokio::test]
async fn refusal_bodies_reach_the_client() {
    let upgrader = || {
        Upgrader::new().error(|rejection| {
            let mut response = http::Response::new(Bytes::from(format!("refused: {}", rejection.status.as_u16())));
            *response.status_mut() = rejection.status;
            response
        })
    };
    let app = Router::new()
        .route("/default", any(|upgrade: WebSocketUpgrade| async move { upgrade.on_upgrade(|_| async {}) }))
        .route(
            "/custom",
            any(move |upgrade: WebSocketUpgrade| async move { upgrade.upgrader(upgrader()).on_upgrade(|_| async {}) }),
        );
    let (addr, _) = serve(app).await;
    let extra = format!("{}Origin: http://evil.example\r\n", upgrade_headers("13"));

    let response = http_exchange(addr, refused_upgrade(addr, "/default", &extra).as_bytes()).await;
    assert_eq!(response.status, 403);
    let body = String::from_utf8(response.body).unwrap();
    assert!(body.contains("origin"), "{body:?}");

    let response = http_exchange(addr, refused_upgrade(addr, "/custom", &extra).as_bytes()).await;
    assert_eq!(response.status, 403);
    assert_eq!(response.body, b"refused: 403");
}

/// An HTTP/2 connection with prior knowledge (h2c) to `addr`.
async fn h2_connect(addr: SocketAddr) -> SendRequest<Empty<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, connection) =
        within(hyper::client::conn::http2::Builder::new(TokioExecutor::new()).handshake(TokioIo::new(tcp)))
            .await
            .unwrap();
    tokio::spawn(connection);
    sender
}

/// An extended CONNECT for a WebSocket at `path` (RFC 8441 §4).
fn extended_connect(addr: SocketAddr, path: &str) -> hyper::http::request::Builder {
    Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://{addr}{path}"))
        .extension(Protocol::from_static("websocket"))
        .header("sec-websocket-version", "13")
}

/// Opens a WebSocket at `path` over the HTTP/2 connection of `sender`, with
/// the subprotocol `chat` and, when `compress`, an offer of
/// permessage-deflate; checks the 200 and returns the client's connection.
async fn h2_websocket(
    sender: &mut SendRequest<Empty<Bytes>>,
    addr: SocketAddr,
    path: &str,
    compress: bool,
) -> Conn<UpgradedStream> {
    let mut request = extended_connect(addr, path).header("sec-websocket-protocol", "chat");
    if compress {
        request = request.header("sec-websocket-extensions", "permessage-deflate");
    }
    within(sender.ready()).await.unwrap();
    let response = within(sender.send_request(request.body(Empty::new()).unwrap())).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{response:?}");
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    let headers = response.headers();
    assert_eq!(headers["sec-websocket-protocol"], "chat");
    // No HTTP/1.1 handshake headers over HTTP/2.
    for name in ["sec-websocket-accept", "upgrade", "connection"] {
        assert!(headers.get(name).is_none(), "{name} in {headers:?}");
    }
    let mut config = Config::default();
    match headers.get("sec-websocket-extensions") {
        Some(extensions) => {
            assert!(compress, "compression without an offer: {extensions:?}");
            // A bare offer is answered with a bare acceptance: context
            // takeover both ways, 32 KiB windows.
            assert_eq!(extensions, "permessage-deflate");
            config.deflate = Some(DeflateParams {
                server_no_context_takeover: false,
                client_no_context_takeover: false,
                server_max_window_bits: 15,
                client_max_window_bits: 15,
            });
        }
        None => assert!(!compress || path == "/ws-plain", "the offer of compression was declined on {path}"),
    }
    let upgraded = within(hyper::upgrade::on(response)).await.unwrap();
    Conn::from_raw(UpgradedStream::new(upgraded, None), Role::Client, config, Some("chat".to_owned()), BytesMut::new())
}

#[tokio::test]
async fn http2_extended_connect_echoes() {
    let mut server = server().await;
    let mut sender = h2_connect(server.addr).await;
    let mut conn = h2_websocket(&mut sender, server.addr, "/ws", false).await;
    assert!(!conn.compression_negotiated());
    echo_round_trips(&mut conn, "HTTP/2").await;
    within(conn.close(CloseFrame::new(CloseCode::NORMAL, "bye"))).await.unwrap();

    let seen = server.next_seen().await;
    assert_eq!(seen.path, "/ws");
    assert!(seen.http2, "the server did not see HTTP/2");
    assert_eq!(seen.subprotocol.as_deref(), Some("chat"));
    assert!(!seen.compressed);
    assert!(seen.end.is_close(&[CloseCode::NORMAL]), "{:?}", seen.end);

    // The HTTP/2 connection outlives the WebSocket: plain requests go on.
    within(sender.ready()).await.unwrap();
    let page = Request::builder().uri(format!("http://{}/", server.addr)).body(Empty::new()).unwrap();
    let response = within(sender.send_request(page)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = within(response.into_body().collect()).await.unwrap().to_bytes();
    assert_eq!(body, "the page");
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn http2_extended_connect_with_compression() {
    let mut server = server().await;
    let mut sender = h2_connect(server.addr).await;
    let mut conn = h2_websocket(&mut sender, server.addr, "/ws", true).await;
    assert!(conn.compression_negotiated());
    echo_round_trips(&mut conn, "HTTP/2, compressed").await;
    within(conn.close(CloseFrame::new(CloseCode::NORMAL, ""))).await.unwrap();
    let seen = server.next_seen().await;
    assert!(seen.http2 && seen.compressed, "{seen:?}");
    assert!(seen.end.is_close(&[CloseCode::NORMAL]), "{:?}", seen.end);

    // `/ws-plain` declines the same offer, and `/` echoes over HTTP/2 too.
    let mut conn = h2_websocket(&mut sender, server.addr, "/ws-plain", true).await;
    assert!(!conn.compression_negotiated());
    echo_round_trips(&mut conn, "HTTP/2, declined").await;
    within(conn.close(CloseFrame::new(CloseCode::NORMAL, ""))).await.unwrap();
    let seen = server.next_seen().await;
    assert!(seen.http2 && !seen.compressed && seen.path == "/ws-plain", "{seen:?}");

    let mut conn = h2_websocket(&mut sender, server.addr, "/", true).await;
    echo_round_trips(&mut conn, "HTTP/2 on /").await;
    within(conn.close(CloseFrame::new(CloseCode::NORMAL, ""))).await.unwrap();
    let seen = server.next_seen().await;
    assert!(seen.http2 && seen.compressed && seen.path == "/", "{seen:?}");
}

#[tokio::test]
async fn several_websockets_share_one_http2_connection() {
    const COUNT: usize = 4;
    let mut server = server().await;
    let mut sender = h2_connect(server.addr).await;
    let mut conns = Vec::new();
    for i in 0..COUNT {
        conns.push(h2_websocket(&mut sender, server.addr, "/ws", i % 2 == 0).await);
    }
    // All open at once, each echoing its own messages while the others do.
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut conn)| {
            tokio::spawn(async move {
                for round in 0..20 {
                    let text = format!("stream {i}, round {round}: {}", text_of(1000 * (i + 1)));
                    within(conn.write_message(MessageType::Text, &text)).await.unwrap();
                    let echo = within(conn.read_message()).await.unwrap();
                    assert_eq!(echo.as_text(), Some(text.as_str()));
                }
                echo_round_trips(&mut conn, &format!("HTTP/2 stream {i}")).await;
                within(conn.close(CloseFrame::new(CloseCode::NORMAL, ""))).await.unwrap();
            })
        })
        .collect();
    for task in tasks {
        within(task).await.unwrap();
    }
    let mut compressed = 0;
    for _ in 0..COUNT {
        let seen = server.next_seen().await;
        assert!(seen.http2);
        assert!(seen.end.is_close(&[CloseCode::NORMAL]), "{:?}", seen.end);
        compressed += usize::from(seen.compressed);
    }
    assert_eq!(compressed, COUNT / 2);
    assert_eq!(server.connections.load(Ordering::SeqCst), 1, "the WebSockets did not share one connection");
}

#[tokio::test]
async fn http2_refusals_become_responses() {
    let server = server().await;
    let addr = server.addr;
    let mut sender = h2_connect(addr).await;

    let send = |request: Request<Empty<Bytes>>| {
        let mut sender = sender.clone();
        async move {
            within(sender.ready()).await.unwrap();
            let response = within(sender.send_request(request)).await.unwrap();
            let status = response.status();
            let headers = response.headers().clone();
            let body = within(response.into_body().collect()).await.unwrap().to_bytes();
            (status, headers, String::from_utf8(body.to_vec()).unwrap())
        }
    };

    // Another site's page: 403.
    let request = extended_connect(addr, "/ws").header("origin", "https://evil.example").body(Empty::new()).unwrap();
    let (status, headers, _) = send(request).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(headers["sec-websocket-version"], "13");
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");

    // No `Sec-WebSocket-Version`: 426.
    let request = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://{addr}/ws"))
        .extension(Protocol::from_static("websocket"))
        .body(Empty::new())
        .unwrap();
    let (status, headers, _) = send(request).await;
    assert_eq!(status, StatusCode::UPGRADE_REQUIRED);
    assert_eq!(headers["sec-websocket-version"], "13");

    // A plain GET over HTTP/2: refused by the extractor, 426.
    let request = Request::builder().uri(format!("http://{addr}/ws")).body(Empty::new()).unwrap();
    let (status, headers, body) = send(request).await;
    assert_eq!(status, StatusCode::UPGRADE_REQUIRED);
    assert_eq!(headers["sec-websocket-version"], "13");
    assert_eq!(body, "the request is not a WebSocket upgrade\n");

    // The connection carries on: a WebSocket still opens on it.
    let mut conn = h2_websocket(&mut sender, addr, "/ws", false).await;
    echo_round_trips(&mut conn, "HTTP/2 after refusals").await;
    assert_eq!(server.started.load(Ordering::SeqCst), 1);
}

/// The routing pitfall of the module docs: `get(handler)` answers an HTTP/2
/// WebSocket (a CONNECT) with 405, while HTTP/1.1 clients get through.
#[tokio::test]
async fn a_get_route_refuses_http2_websockets_with_405() {
    let mut server = server().await;
    let addr = server.addr;

    let (mut conn, response) = within(silverback::connect(&format!("ws://{addr}/get-only"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    within(conn.close(CloseFrame::new(CloseCode::NORMAL, ""))).await.unwrap();
    let seen = server.next_seen().await;
    assert!(!seen.http2 && seen.path == "/get-only", "{seen:?}");

    let mut sender = h2_connect(addr).await;
    within(sender.ready()).await.unwrap();
    let request = extended_connect(addr, "/get-only").body(Empty::new()).unwrap();
    let response = within(sender.send_request(request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = response.headers()["allow"].to_str().unwrap();
    assert!(allow.contains("GET") && !allow.contains("CONNECT"), "{allow}");
    assert_eq!(server.started.load(Ordering::SeqCst), 1);
}
