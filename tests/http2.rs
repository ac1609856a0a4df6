//! WebSockets over HTTP/2 (RFC 8441), our client against our server on
//! hyper: cleartext with prior knowledge, TLS with ALPN, several WebSockets
//! on one connection, compression and subprotocols as over HTTP/1.1, the
//! fallbacks to HTTP/1.1 (a server that picks `http/1.1` by ALPN, one that
//! speaks HTTP/2 without extended CONNECT) and the refusals.

#![cfg(all(feature = "hyper", feature = "tls"))]

mod client_support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use client_support::{dialer, start_tinyproxy, tls, within};
use http::{Request, StatusCode, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use silverback::{Error, Http2Mode, MemoryCookieJar, MessageType, Proxy, TlsRoots, Upgrader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// How the test server speaks.
#[derive(Clone, Copy, PartialEq)]
enum Speaks {
    /// HTTP/1.1 and HTTP/2 (prior knowledge, or `h2` by ALPN), with
    /// extended CONNECT enabled.
    Both,
    /// HTTP/1.1 and HTTP/2, without extended CONNECT.
    BothWithoutConnect,
}

/// What the server saw of each WebSocket request.
#[derive(Debug)]
struct Seen {
    version: Version,
    path: String,
    cookie: Option<String>,
}

struct Server {
    addr: SocketAddr,
    /// TCP connections accepted.
    accepts: Arc<AtomicUsize>,
    seen: mpsc::UnboundedReceiver<Seen>,
}

/// An echo server on hyper's automatic HTTP/1.1 + HTTP/2 builder; with
/// `tls`, behind rustls offering `alpn`.
async fn spawn(
    speaks: Speaks,
    upgrader: Upgrader,
    tls: Option<(tokio_rustls::TlsAcceptor, Vec<&'static str>)>,
) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepts = Arc::new(AtomicUsize::new(0));
    let (tx, seen) = mpsc::unbounded_channel();
    let counted = accepts.clone();
    let acceptor = tls.map(|(acceptor, alpn)| {
        let mut config = (*acceptor.config().clone()).clone();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            counted.fetch_add(1, Ordering::SeqCst);
            let (upgrader, tx, acceptor) = (upgrader.clone(), tx.clone(), acceptor.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let (upgrader, tx) = (upgrader.clone(), tx.clone());
                    async move {
                        let cookie =
                            request.headers().get(http::header::COOKIE).map(|v| v.to_str().unwrap().to_owned());
                        let path = request.uri().path().to_owned();
                        let _ = tx.send(Seen { version: request.version(), path, cookie });
                        Ok::<_, Infallible>(match upgrader.upgrade(request) {
                            Ok((mut response, upgrading)) => {
                                response
                                    .headers_mut()
                                    .insert(http::header::SET_COOKIE, "session=h2; Path=/".parse().unwrap());
                                tokio::spawn(async move {
                                    let Ok(mut conn) = upgrading.await else { return };
                                    while let Ok(message) = conn.read_message().await {
                                        if conn.write_message(message.kind, &message.data).await.is_err() {
                                            break;
                                        }
                                    }
                                });
                                response
                            }
                            Err(refused) => refused.response,
                        })
                    }
                });
                let mut builder = auto::Builder::new(TokioExecutor::new());
                if speaks == Speaks::Both {
                    builder.http2().enable_connect_protocol();
                }
                match acceptor {
                    Some(acceptor) => {
                        let Ok(stream) = acceptor.accept(stream).await else { return };
                        let _ = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await;
                    }
                    None => {
                        let _ = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await;
                    }
                }
            });
        }
    });
    Server { addr, accepts, seen }
}

async fn echo_round(conn: &mut silverback::Conn<silverback::ClientStream>, seed: usize) {
    let text = format!("hello {seed}");
    conn.write_text(&text).await.unwrap();
    assert_eq!(within(conn.read_message()).await.unwrap().as_text(), Some(text.as_str()));
    let big: Vec<u8> = (0..150_000).map(|i| (i * 31 + seed) as u8).collect();
    conn.write_binary(&big).await.unwrap();
    let echoed = within(conn.read_message()).await.unwrap();
    assert_eq!((echoed.kind, echoed.data.len()), (MessageType::Binary, big.len()));
    assert!(echoed.data == big, "the large message came back changed");
}

#[tokio::test]
async fn cleartext_http2_with_prior_knowledge_carries_a_compressed_websocket() {
    let upgrader = Upgrader::new().enable_compression(true).subprotocols(["chat"]);
    let mut server = spawn(Speaks::Both, upgrader, None).await;
    let d = dialer().http2(Http2Mode::Only).enable_compression(true).subprotocols(["other", "chat"]);
    let url = format!("ws://127.0.0.1:{}/echo?x=1", server.addr.port());
    let (mut conn, response) = within(d.connect(&url)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(conn.with_stream(|s| s.is_http2()));
    assert!(!conn.with_stream(|s| s.is_tls()));
    assert_eq!(conn.subprotocol(), Some("chat"));
    assert!(conn.compression_negotiated());
    let seen = within(server.seen.recv()).await.unwrap();
    assert_eq!((seen.version, seen.path.as_str()), (Version::HTTP_2, "/echo"));
    for seed in 0..3 {
        echo_round(&mut conn, seed).await;
    }
    within(conn.close(silverback::CloseFrame::new(silverback::CloseCode::NORMAL, ""))).await.unwrap();
}

#[tokio::test]
async fn many_websockets_share_one_http2_connection() {
    let server = spawn(Speaks::Both, Upgrader::new().enable_compression(true), None).await;
    let d = dialer().enable_compression(true);
    let base = format!("ws://127.0.0.1:{}", server.addr.port());
    let http2 = within(d.connect_http2(&base)).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (mut conn, _) = within(http2.open(&format!("{base}/room/{i}"))).await.unwrap();
        assert!(conn.with_stream(|s| s.is_http2()));
        tasks.push(tokio::spawn(async move {
            for round in 0..5 {
                echo_round(&mut conn, i * 10 + round).await;
            }
            conn
        }));
    }
    for task in tasks {
        within(task).await.unwrap();
    }
    assert_eq!(server.accepts.load(Ordering::SeqCst), 1, "every WebSocket on the one connection");
    assert!(!http2.is_closed());
    // Another origin is refused before anything is sent.
    let other = format!("ws://localhost:{}/", server.addr.port());
    assert!(matches!(http2.open(&other).await, Err(Error::InvalidUrl(_))));
}

#[tokio::test]
async fn wss_over_http2_by_alpn() {
    let (acceptor, cert) = tls::self_signed(&["localhost"]);
    let mut server = spawn(Speaks::Both, Upgrader::new(), Some((acceptor, vec!["h2", "http/1.1"]))).await;
    let d = dialer().tls(TlsRoots::Config(tls::trusting(&cert))).http2(Http2Mode::Prefer);
    let url = format!("wss://localhost:{}/secure", server.addr.port());
    let (mut conn, _) = within(d.connect(&url)).await.unwrap();
    assert!(conn.with_stream(|s| s.is_http2() && s.is_tls()));
    assert_eq!(within(server.seen.recv()).await.unwrap().version, Version::HTTP_2);
    echo_round(&mut conn, 1).await;
}

#[tokio::test]
async fn prefer_falls_back_to_http1_on_the_same_connection_when_alpn_picks_it() {
    let (acceptor, cert) = tls::self_signed(&["localhost"]);
    let mut server = spawn(Speaks::Both, Upgrader::new(), Some((acceptor, vec!["http/1.1"]))).await;
    let d = dialer().tls(TlsRoots::Config(tls::trusting(&cert))).http2(Http2Mode::Prefer);
    let url = format!("wss://localhost:{}/", server.addr.port());
    let (mut conn, response) = within(d.connect(&url)).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert!(conn.with_stream(|s| !s.is_http2() && s.is_tls()));
    assert_eq!(within(server.seen.recv()).await.unwrap().version, Version::HTTP_11);
    echo_round(&mut conn, 2).await;
    assert_eq!(server.accepts.load(Ordering::SeqCst), 1);
    // `Only` offers nothing but `h2`: such a server fails the TLS handshake
    // (no common application protocol).
    let only = dialer().tls(TlsRoots::Config(tls::trusting(&cert))).http2(Http2Mode::Only);
    let refused = within(only.connect(&url)).await;
    assert!(matches!(refused, Err(Error::Tls(_) | Error::Http2(_))), "{refused:?}");
}

#[tokio::test]
async fn prefer_falls_back_to_http1_when_http2_has_no_extended_connect() {
    let (acceptor, cert) = tls::self_signed(&["localhost"]);
    let server = spawn(Speaks::BothWithoutConnect, Upgrader::new(), Some((acceptor, vec!["h2", "http/1.1"]))).await;
    let roots = TlsRoots::Config(tls::trusting(&cert));
    let url = format!("wss://localhost:{}/", server.addr.port());
    let (mut conn, _) = within(dialer().tls(roots.clone()).http2(Http2Mode::Prefer).connect(&url)).await.unwrap();
    assert!(conn.with_stream(|s| !s.is_http2()));
    echo_round(&mut conn, 3).await;
    assert_eq!(server.accepts.load(Ordering::SeqCst), 2, "HTTP/2 first, then a new HTTP/1.1 connection");
    match within(dialer().tls(roots).http2(Http2Mode::Only).connect(&url)).await {
        Err(Error::Http2(cause)) => assert!(cause.to_string().contains("extended CONNECT"), "{cause}"),
        other => panic!("expected Error::Http2, got {other:?}"),
    }
    let cleartext = format!("ws://127.0.0.1:{}/", server.addr.port());
    assert!(matches!(within(dialer().connect_http2(&cleartext)).await, Err(Error::Http2(_))));
}

#[tokio::test]
async fn a_refusal_over_http2_is_a_bad_response_with_its_status_and_body() {
    let server = spawn(Speaks::Both, Upgrader::new(), None).await;
    let d = dialer().http2(Http2Mode::Only).header(http::header::ORIGIN, "https://elsewhere.example".parse().unwrap());
    let url = format!("ws://127.0.0.1:{}/", server.addr.port());
    match within(d.connect(&url)).await {
        Err(Error::BadResponse { reason, response }) => {
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{reason}");
            assert!(String::from_utf8_lossy(response.body()).contains("origin"), "{:?}", response.body());
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // A subprotocol the server did not offer is not chosen; the dial works.
    let d = dialer().http2(Http2Mode::Only).subprotocols(["nope"]);
    let (conn, _) = within(d.connect(&url)).await.unwrap();
    assert_eq!(conn.subprotocol(), None);
}

#[tokio::test]
async fn cookies_and_a_proxy_work_over_http2() {
    let (acceptor, cert) = tls::self_signed(&["localhost"]);
    let mut server = spawn(Speaks::Both, Upgrader::new(), Some((acceptor, vec!["h2", "http/1.1"]))).await;
    let proxy = start_tinyproxy(None);
    let jar = Arc::new(MemoryCookieJar::new());
    let d = dialer()
        .tls(TlsRoots::Config(tls::trusting(&cert)))
        .http2(Http2Mode::Only)
        .cookie_jar(jar)
        .proxy(Proxy::Url(url::Url::parse(&format!("http://127.0.0.1:{}", proxy.port)).unwrap()));
    let url = format!("wss://localhost:{}/first", server.addr.port());
    let (mut conn, response) = within(d.connect(&url)).await.unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    assert_eq!(response.headers()[http::header::SET_COOKIE], "session=h2; Path=/");
    assert!(conn.with_stream(|s| s.is_http2() && s.is_tls()));
    echo_round(&mut conn, 4).await;
    let first = within(server.seen.recv()).await.unwrap();
    assert_eq!((first.version, first.cookie), (Version::HTTP_2, None));
    // The cookie set by the first answer goes with the next request.
    let (_again, _) = within(d.connect(&format!("wss://localhost:{}/again", server.addr.port()))).await.unwrap();
    let again = within(server.seen.recv()).await.unwrap();
    assert_eq!((again.path.as_str(), again.cookie.as_deref()), ("/again", Some("session=h2")));
    let log = proxy.log();
    assert!(log.contains("CONNECT") && log.contains(&server.addr.port().to_string()), "tinyproxy log:\n{log}");
}
