//! Decisions made per request on the server: the subprotocol chosen by a
//! selector that sees the request, compression decided per request, and a
//! subprotocol set through `accept_with`'s headers; over a raw stream, over
//! hyper and over the axum extractor (HTTP/1.1 and HTTP/2), which all go
//! through the same decision.

mod common;

use bytes::BytesMut;
use common::*;
use http::{HeaderMap, HeaderValue, StatusCode};
use silverback::{DeflateConfig, Error, Upgrader};
use tokio::net::TcpStream;

/// The upgrader under test:
/// - the subprotocol is `chat.v<N>`, where N comes from an `X-Protocol-Version`
///   header or a `v=N` query; without either, the client's first offer;
/// - compression is off for the user agent `BrokenDeflate`, with 1 KiB windows
///   for a `Mobile` one, and on with the defaults for everyone else.
fn per_request() -> Upgrader {
    Upgrader::new()
        .select_subprotocol(|request, offered| {
            let header = request.headers().get("x-protocol-version").and_then(|v| v.to_str().ok());
            let query = request.uri().query().and_then(|q| q.strip_prefix("v="));
            match header.or(query) {
                Some(version) => Some(format!("chat.v{version}")),
                None => offered.first().map(|p| p.to_string()),
            }
        })
        .compression_for(|request| {
            let agent = request.headers().get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or("");
            if agent.contains("BrokenDeflate") {
                None
            } else if agent.contains("Mobile") {
                Some(DeflateConfig { server_max_window_bits: 10, client_max_window_bits: 10, ..Default::default() })
            } else {
                Some(DeflateConfig::default())
            }
        })
}

/// A request for `path` with `extra` header lines.
fn request_for(addr: std::net::SocketAddr, path: &str, extra: &str) -> String {
    request(addr, extra).replacen("/chat?room=1", path, 1)
}

/// What the server's connection says it agreed.
async fn accepted_on(upgrader: Upgrader, path: &str, extra: &str) -> (HttpResponse, Option<String>, bool) {
    let (addr, server) =
        spawn_server(
            upgrader,
            |conn| async move { (conn.subprotocol().map(str::to_owned), conn.compression_negotiated()) },
        )
        .await;
    let (_raw, response) = RawClient::handshake(addr, request_for(addr, path, extra).as_bytes()).await;
    let (protocol, compressed) = within(server).await.unwrap();
    (response, protocol, compressed)
}

#[tokio::test]
async fn the_selector_sees_a_request_header() {
    let offer = "Sec-WebSocket-Protocol: chat.v1, chat.v2\r\n";
    let (response, protocol, _) =
        accepted_on(per_request(), "/chat", &format!("{offer}X-Protocol-Version: 2\r\n")).await;
    assert_eq!(response.header_all("sec-websocket-protocol"), vec!["chat.v2"], "{response:?}");
    assert_eq!(protocol.as_deref(), Some("chat.v2"));
    let (response, protocol, _) = accepted_on(per_request(), "/chat", offer).await;
    assert_eq!(response.header_all("sec-websocket-protocol"), vec!["chat.v1"], "the client's first");
    assert_eq!(protocol.as_deref(), Some("chat.v1"));
}

#[tokio::test]
async fn the_selector_sees_the_query() {
    let offer = "Sec-WebSocket-Protocol: chat.v1, chat.v2\r\n";
    let (response, protocol, _) = accepted_on(per_request(), "/chat?v=2", offer).await;
    assert_eq!(response.header_all("sec-websocket-protocol"), vec!["chat.v2"], "{response:?}");
    assert_eq!(protocol.as_deref(), Some("chat.v2"));
}

#[tokio::test]
async fn the_selector_replaces_the_fixed_list_and_is_not_asked_without_an_offer() {
    let upgrader = Upgrader::new().subprotocols(["chat.v1"]).select_subprotocol(|_, offered| {
        assert!(!offered.is_empty(), "asked without an offer");
        offered.last().map(|p| p.to_string())
    });
    let (response, protocol, _) =
        accepted_on(upgrader.clone(), "/", "Sec-WebSocket-Protocol: chat.v1, x y, chat.v3\r\n").await;
    assert_eq!(response.header_all("sec-websocket-protocol"), vec!["chat.v3"], "{response:?}");
    assert_eq!(protocol.as_deref(), Some("chat.v3"));
    let (response, protocol, _) = accepted_on(upgrader.clone(), "/", "Sec-WebSocket-Protocol: chat.v1, x y\r\n").await;
    assert_eq!(response.header_all("sec-websocket-protocol"), vec!["chat.v1"], "only valid names are offered to it");
    assert_eq!(protocol.as_deref(), Some("chat.v1"));
    let (response, protocol, _) = accepted_on(upgrader, "/", "").await;
    assert!(response.header("sec-websocket-protocol").is_none(), "{response:?}");
    assert_eq!(protocol, None);
}

#[tokio::test]
async fn a_selected_subprotocol_the_client_did_not_offer_is_refused() {
    let (addr, server) = spawn_accept(per_request()).await;
    let raw = request_for(addr, "/chat", "Sec-WebSocket-Protocol: chat.v1\r\nX-Protocol-Version: 3\r\n");
    let response = http_exchange(addr, raw.as_bytes()).await;
    assert_eq!(response.status, 500, "{response:?}");
    assert!(response.header("sec-websocket-protocol").is_none(), "{response:?}");
    assert!(String::from_utf8_lossy(&response.body).contains("\"chat.v3\""), "{response:?}");
    match within(server).await.unwrap() {
        Err(Error::RequestRefused { status, reason }) => {
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
            assert!(reason.contains("did not offer"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn compression_is_decided_per_request() {
    let offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
    let (response, _, compressed) =
        accepted_on(per_request(), "/", &format!("{offer}User-Agent: BrokenDeflate/1.0\r\n")).await;
    assert!(response.header("sec-websocket-extensions").is_none(), "{response:?}");
    assert!(!compressed);
    let (response, _, compressed) = accepted_on(per_request(), "/", &format!("{offer}User-Agent: Desktop\r\n")).await;
    assert_eq!(response.header("sec-websocket-extensions"), Some("permessage-deflate"), "{response:?}");
    assert!(compressed);
    let (response, _, compressed) = accepted_on(per_request(), "/", &format!("{offer}User-Agent: Mobile\r\n")).await;
    let extensions = response.header("sec-websocket-extensions").unwrap_or_default();
    assert!(extensions.contains("server_max_window_bits=10"), "{response:?}");
    assert!(extensions.contains("client_max_window_bits=10"), "{response:?}");
    assert!(compressed);
}

#[tokio::test]
async fn the_compression_decision_replaces_enable_compression() {
    let upgrader = Upgrader::new().enable_compression(true).compression_for(|_| None);
    let offer = "Sec-WebSocket-Extensions: permessage-deflate\r\n";
    let (response, _, compressed) = accepted_on(upgrader, "/", offer).await;
    assert!(response.header("sec-websocket-extensions").is_none(), "{response:?}");
    assert!(!compressed);
    let upgrader = Upgrader::new().compression_for(|_| Some(DeflateConfig::default()));
    let (response, _, compressed) = accepted_on(upgrader, "/", offer).await;
    assert_eq!(response.header("sec-websocket-extensions"), Some("permessage-deflate"), "{response:?}");
    assert!(compressed);
}

/// `accept_with` on one connection, with `extra` request lines and the
/// callback's `headers`: the response and the server's result.
async fn accept_with(
    extra: &str,
    headers: HeaderMap,
) -> (HttpResponse, silverback::Result<silverback::Conn<TcpStream>>) {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        Upgrader::new().subprotocols(["chat"]).accept_with(stream, move |_| Ok(headers)).await
    });
    let mut stream = TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, request(addr, extra).as_bytes()).await.unwrap();
    let head = read_head(&mut stream, &mut BytesMut::new()).await;
    let result = within(server).await.unwrap();
    (HttpResponse::parse(&head, Vec::new()), result)
}

#[tokio::test]
async fn a_subprotocol_from_accept_with_is_the_connections() {
    let mut headers = HeaderMap::new();
    headers.insert("sec-websocket-protocol", HeaderValue::from_static("v2"));
    let (response, result) = accept_with("Sec-WebSocket-Protocol: chat, v2\r\n", headers).await;
    assert_eq!(response.status, 101);
    assert_eq!(response.header_all("sec-websocket-protocol"), vec!["v2"], "it replaces the list's choice");
    assert_eq!(result.unwrap().subprotocol(), Some("v2"));
}

#[tokio::test]
async fn a_subprotocol_from_accept_with_the_client_did_not_offer_is_refused() {
    let mut headers = HeaderMap::new();
    headers.insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
    let (response, result) = accept_with("Sec-WebSocket-Protocol: chat\r\n", headers).await;
    assert_eq!(response.status, 500);
    assert!(response.header("sec-websocket-protocol").is_none(), "{response:?}");
    match result {
        Err(Error::RequestRefused { status, reason }) => {
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
            assert!(reason.contains("not requested"), "{reason}");
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}

#[cfg(feature = "hyper")]
mod hyper_path {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::body::Incoming;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;
    use tokio::io::AsyncWriteExt;
    use tokio::sync::mpsc;

    use super::*;

    /// A hyper server upgrading with [`per_request`]; reports each
    /// connection's subprotocol and compression, or the refusal's error.
    async fn hyper_server() -> (std::net::SocketAddr, mpsc::UnboundedReceiver<Result<(Option<String>, bool), Error>>) {
        let (listener, addr) = listen().await;
        let (tx, rx) = mpsc::unbounded_channel();
        let upgrader = per_request();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (upgrader, tx) = (upgrader.clone(), tx.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let tx = tx.clone();
                        let answer: Response<Full<Bytes>> = match upgrader.upgrade(req) {
                            Ok((response, upgrading)) => {
                                tokio::spawn(async move {
                                    if let Ok(conn) = upgrading.await {
                                        let agreed =
                                            (conn.subprotocol().map(str::to_owned), conn.compression_negotiated());
                                        let _ = tx.send(Ok(agreed));
                                    }
                                });
                                response
                            }
                            Err(refused) => {
                                let _ = tx.send(Err(refused.error));
                                refused.response
                            }
                        };
                        async move { Ok::<_, Infallible>(answer) }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).with_upgrades().await;
                });
            }
        });
        (addr, rx)
    }

    /// Sends a request for `path` with `extra` lines; the response head.
    async fn exchange(addr: std::net::SocketAddr, path: &str, extra: &str) -> (HttpResponse, TcpStream) {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request_for(addr, path, extra).as_bytes()).await.unwrap();
        let head = read_head(&mut stream, &mut BytesMut::new()).await;
        (HttpResponse::parse(&head, Vec::new()), stream)
    }

    #[tokio::test]
    async fn hyper_upgrades_decide_per_request() {
        let (addr, mut events) = hyper_server().await;
        let offers = "Sec-WebSocket-Protocol: chat.v1, chat.v2\r\nSec-WebSocket-Extensions: permessage-deflate\r\n";

        let (response, _stream) = exchange(addr, "/ws?v=2", &format!("{offers}User-Agent: BrokenDeflate\r\n")).await;
        assert_eq!(response.status, 101, "{response:?}");
        assert_eq!(response.header_all("sec-websocket-protocol"), vec!["chat.v2"]);
        assert!(response.header("sec-websocket-extensions").is_none(), "{response:?}");
        let agreed = within(events.recv()).await.unwrap().unwrap();
        assert_eq!(agreed, (Some("chat.v2".to_owned()), false));

        let (response, _stream) = exchange(addr, "/ws", &format!("{offers}X-Protocol-Version: 1\r\n")).await;
        assert_eq!(response.status, 101, "{response:?}");
        assert_eq!(response.header_all("sec-websocket-protocol"), vec!["chat.v1"]);
        assert_eq!(response.header("sec-websocket-extensions"), Some("permessage-deflate"));
        let agreed = within(events.recv()).await.unwrap().unwrap();
        assert_eq!(agreed, (Some("chat.v1".to_owned()), true));

        let (response, _stream) = exchange(addr, "/ws?v=9", offers).await;
        assert_eq!(response.status, 500, "{response:?}");
        assert!(response.header("sec-websocket-protocol").is_none(), "{response:?}");
        let refused = within(events.recv()).await.unwrap().unwrap_err();
        assert!(
            matches!(refused, Error::RequestRefused { status: StatusCode::INTERNAL_SERVER_ERROR, .. }),
            "{refused:?}"
        );
    }
}

#[cfg(feature = "axum")]
mod axum_path {
    use axum::response::Response;
    use axum::routing::any;
    use axum::Router;
    use bytes::Bytes;
    use http_body_util::Empty;
    use hyper::ext::Protocol;
    use hyper::{Method, Request};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use hyper_util::service::TowerToHyperService;
    use silverback::axum::WebSocketUpgrade;
    use tokio::io::AsyncWriteExt;
    use tokio::sync::mpsc;

    use super::*;

    type Agreed = (bool, Option<String>, bool);

    /// An axum app on HTTP/1.1 and HTTP/2 (extended CONNECT enabled) whose
    /// handler upgrades with [`per_request`] and reports what was agreed.
    async fn axum_server() -> (std::net::SocketAddr, mpsc::UnboundedReceiver<Agreed>) {
        let (tx, rx) = mpsc::unbounded_channel::<Agreed>();
        let app = Router::new().route(
            "/ws",
            any(move |upgrade: WebSocketUpgrade| {
                let tx = tx.clone();
                async move {
                    let http2 = upgrade.is_http2();
                    let response: Response = upgrade.upgrader(per_request()).on_upgrade(move |conn| async move {
                        let _ = tx.send((http2, conn.subprotocol().map(str::to_owned), conn.compression_negotiated()));
                    });
                    response
                }
            }),
        );
        let (listener, addr) = listen().await;
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let app = app.clone();
                tokio::spawn(async move {
                    let mut builder = auto::Builder::new(TokioExecutor::new());
                    builder.http2().enable_connect_protocol();
                    let service = TowerToHyperService::new(app);
                    let _ = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await;
                });
            }
        });
        (addr, rx)
    }

    #[tokio::test]
    async fn axum_http1_upgrades_decide_per_request() {
        let (addr, mut agreed) = axum_server().await;
        let offers = "Sec-WebSocket-Protocol: chat.v1, chat.v2\r\nSec-WebSocket-Extensions: permessage-deflate\r\n";
        for (extra, protocol, compressed) in [
            ("X-Protocol-Version: 2\r\nUser-Agent: BrokenDeflate\r\n", "chat.v2", false),
            ("User-Agent: Desktop\r\n", "chat.v1", true),
        ] {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(request_for(addr, "/ws", &format!("{offers}{extra}")).as_bytes()).await.unwrap();
            let response = HttpResponse::parse(&read_head(&mut stream, &mut BytesMut::new()).await, Vec::new());
            assert_eq!(response.status, 101, "{response:?}");
            assert_eq!(response.header_all("sec-websocket-protocol"), vec![protocol]);
            assert_eq!(response.header("sec-websocket-extensions").is_some(), compressed, "{response:?}");
            let seen = within(agreed.recv()).await.unwrap();
            assert_eq!(seen, (false, Some(protocol.to_owned()), compressed));
        }
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request_for(addr, "/ws?v=7", offers).as_bytes()).await.unwrap();
        let response = HttpResponse::parse(&read_head(&mut stream, &mut BytesMut::new()).await, Vec::new());
        assert_eq!(response.status, 500, "{response:?}");
    }

    #[tokio::test]
    async fn axum_http2_upgrades_decide_per_request() {
        let (addr, mut agreed) = axum_server().await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) =
            within(hyper::client::conn::http2::Builder::new(TokioExecutor::new()).handshake(TokioIo::new(tcp)))
                .await
                .unwrap();
        tokio::spawn(connection);
        let mut streams = Vec::new();
        for (path, agent, status, protocol, compressed) in [
            ("/ws?v=2", "BrokenDeflate", 200, Some("chat.v2"), false),
            ("/ws", "Mobile", 200, Some("chat.v1"), true),
            ("/ws?v=5", "Desktop", 500, None, false),
        ] {
            let request = Request::builder()
                .method(Method::CONNECT)
                .uri(format!("http://{addr}{path}"))
                .extension(Protocol::from_static("websocket"))
                .header("sec-websocket-version", "13")
                .header("sec-websocket-protocol", "chat.v1, chat.v2")
                .header("sec-websocket-extensions", "permessage-deflate; client_max_window_bits")
                .header("user-agent", agent)
                .body(Empty::<Bytes>::new())
                .unwrap();
            within(sender.ready()).await.unwrap();
            let response = within(sender.send_request(request)).await.unwrap();
            assert_eq!(response.status().as_u16(), status, "{response:?}");
            let headers = response.headers();
            assert_eq!(headers.get("sec-websocket-protocol").map(|v| v.to_str().unwrap()), protocol);
            let extensions = headers.get("sec-websocket-extensions").map(|v| v.to_str().unwrap().to_owned());
            assert_eq!(extensions.is_some(), compressed, "{headers:?}");
            if agent == "Mobile" {
                assert!(extensions.unwrap().contains("server_max_window_bits=10"), "{headers:?}");
            }
            if status == 200 {
                streams.push(within(hyper::upgrade::on(response)).await.unwrap());
                let seen = within(agreed.recv()).await.unwrap();
                assert_eq!(seen, (true, protocol.map(str::to_owned), compressed));
            }
        }
    }
}
