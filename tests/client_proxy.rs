//! Dialing through proxies: a real tinyproxy (HTTP CONNECT) and a real
//! microsocks (SOCKS5), each started by the test on a free loopback port, and
//! hand-written fake proxies for the odd cases.
//!
//! That traffic really goes through the proxy is checked three ways: the
//! client's TCP peer is the proxy, the server's TCP peer is not the client's
//! socket, and once the proxy is killed the same dial fails.

mod client_support;

use std::net::SocketAddr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use client_support::*;
use silverback::{ClientStream, Conn, Error, Proxy, Upgrader};
use tokio::sync::mpsc::UnboundedReceiver;
use url::Url;

fn via(proxy: &str) -> silverback::Dialer {
    dialer().proxy(Proxy::Url(Url::parse(proxy).unwrap()))
}

/// Echoes one message over `conn` and checks that the connection runs through
/// `proxy`: the client's peer is the proxy, the server's peer is not the client.
async fn assert_tunnelled(mut conn: Conn<ClientStream>, proxy: SocketAddr, peers: &mut UnboundedReceiver<SocketAddr>) {
    assert_eq!(conn.remote_addr().unwrap(), proxy, "the client is not connected to the proxy");
    let server_peer = within(peers.recv()).await.unwrap();
    assert_ne!(server_peer, conn.local_addr().unwrap(), "the server sees the client's own socket: no proxy in between");
    conn.write_text("through the tunnel").await.unwrap();
    assert_eq!(within(conn.read_message()).await.unwrap().as_text(), Some("through the tunnel"));
    let big = vec![0xA5u8; 300_000];
    conn.write_binary(&big).await.unwrap();
    assert_eq!(within(conn.read_message()).await.unwrap().data.len(), big.len());
}

fn proxy_error<T: std::fmt::Debug>(result: silverback::Result<T>) -> String {
    match result {
        Err(Error::Proxy(cause)) => cause.to_string(),
        other => panic!("expected Error::Proxy, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// tinyproxy

#[tokio::test]
async fn tinyproxy_connect_tunnel() {
    let mut proxy = start_tinyproxy(None);
    let (server, mut peers) = spawn_echo_server_multi(Upgrader::new()).await;
    let d = via(&format!("http://127.0.0.1:{}", proxy.port));
    let url = ws_url(server, "/chat");

    let (conn, response) = within(d.connect(&url)).await.unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    assert_eq!(response.status(), 101);
    assert_tunnelled(conn, proxy.addr(), &mut peers).await;
    let log = proxy.log();
    assert!(log.contains("CONNECT") && log.contains(&server.port().to_string()), "tinyproxy log:\n{log}");

    // Without the proxy, the same dialer cannot connect.
    proxy.kill();
    let result = within(d.connect(&url)).await;
    assert!(matches!(&result, Err(Error::Io(_))), "{result:?}");
    assert!(peers.try_recv().is_err(), "the server was reached without the proxy");
}

#[tokio::test]
async fn tinyproxy_with_basic_auth() {
    let proxy = start_tinyproxy(Some(("alice", "s3cret")));
    let (server, mut peers) = spawn_echo_server_multi(Upgrader::new()).await;
    let url = ws_url(server, "/");

    let d = via(&format!("http://alice:s3cret@127.0.0.1:{}", proxy.port));
    let (conn, _) = within(d.connect(&url)).await.unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    assert_tunnelled(conn, proxy.addr(), &mut peers).await;

    // No credentials: 407.
    let message = proxy_error(within(via(&format!("http://127.0.0.1:{}", proxy.port)).connect(&url)).await);
    assert!(message.contains("407"), "{message}");
    // Wrong password: tinyproxy 1.11 answers "401 Unauthorized" here rather than 407;
    // either way the refusal and its status must be reported.
    let message = proxy_error(within(via(&format!("http://alice:wrong@127.0.0.1:{}", proxy.port)).connect(&url)).await);
    assert!(message.contains("407") || message.contains("401"), "{message}");
    assert!(message.contains("refused"), "{message}");
    assert!(peers.try_recv().is_err(), "a refused tunnel reached the server");
}

#[tokio::test]
async fn tinyproxy_refusing_an_unreachable_target() {
    let proxy = start_tinyproxy(None);
    let (listener, closed) = listen().await;
    drop(listener);
    let d = via(&format!("http://127.0.0.1:{}", proxy.port));
    let message = proxy_error(within(d.connect(&ws_url(closed, "/"))).await);
    assert!(message.contains(&closed.port().to_string()) && message.contains("CONNECT"), "{message}");
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn wss_through_tinyproxy() {
    let proxy = start_tinyproxy(None);
    let (acceptor, cert) = tls::self_signed(&["localhost"]);
    let (server, mut seen) = spawn_tls_echo_server(acceptor).await;
    let d = via(&format!("http://127.0.0.1:{}", proxy.port)).tls(silverback::TlsRoots::Config(tls::trusting(&cert)));
    let url = format!("wss://localhost:{}/secure", server.port());
    let (mut conn, _) = within(d.connect(&url)).await.unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    assert!(conn.with_stream(|s| s.is_tls()));
    let info = within(seen.recv()).await.unwrap();
    assert_eq!(info.path.as_deref(), Some("/secure"));
    assert_eq!(info.host, Some(format!("localhost:{}", server.port())));
    conn.write_text("secret").await.unwrap();
    assert_eq!(within(conn.read_message()).await.unwrap().as_text(), Some("secret"));
    assert!(proxy.log().contains(&format!("localhost:{}", server.port())), "{}", proxy.log());
}

// ---------------------------------------------------------------------------
// microsocks

#[tokio::test]
async fn microsocks_without_auth() {
    let mut proxy = start_microsocks(None);
    let (server, mut peers) = spawn_echo_server_multi(Upgrader::new()).await;
    let d = via(&format!("socks5://127.0.0.1:{}", proxy.port));
    let url = ws_url(server, "/");

    let (conn, response) = within(d.connect(&url)).await.unwrap();
    assert_eq!(response.status(), 101);
    assert_tunnelled(conn, proxy.addr(), &mut peers).await;

    // A host name is resolved by the proxy (socks5h is the same thing here).
    for scheme in ["socks5", "socks5h"] {
        let d = via(&format!("{scheme}://127.0.0.1:{}", proxy.port));
        let (conn, _) = within(d.connect(&format!("ws://localhost:{}/", server.port()))).await.unwrap();
        assert_tunnelled(conn, proxy.addr(), &mut peers).await;
    }

    // An IPv6 literal target.
    let listener = tokio::net::TcpListener::bind("[::1]:0").await.expect("IPv6 loopback ([::1]) is not available");
    let v6 = listener.local_addr().unwrap();
    let mut requests = spawn_accepting_raw_on(listener).await;
    let (conn, _) = within(d.connect(&format!("ws://[::1]:{}/six", v6.port()))).await.unwrap();
    assert_eq!(conn.remote_addr().unwrap(), proxy.addr());
    assert_eq!(within(requests.recv()).await.unwrap().request_line, "GET /six HTTP/1.1");

    proxy.kill();
    let result = within(d.connect(&url)).await;
    assert!(matches!(&result, Err(Error::Io(_))), "{result:?}");
    assert!(peers.try_recv().is_err(), "the server was reached without the proxy");
}

#[tokio::test]
async fn microsocks_with_username_and_password() {
    let proxy = start_microsocks(Some(("bob", "hunter2")));
    let (server, mut peers) = spawn_echo_server_multi(Upgrader::new()).await;
    let url = ws_url(server, "/");

    let d = via(&format!("socks5://bob:hunter2@127.0.0.1:{}", proxy.port));
    let (conn, _) = within(d.connect(&url)).await.unwrap();
    assert_tunnelled(conn, proxy.addr(), &mut peers).await;

    let message = proxy_error(within(via(&format!("socks5://bob:wrong@127.0.0.1:{}", proxy.port)).connect(&url)).await);
    assert!(message.contains("authentication failed"), "{message}");
    let message = proxy_error(within(via(&format!("socks5://127.0.0.1:{}", proxy.port)).connect(&url)).await);
    assert!(message.contains("authentication"), "{message}");
    assert!(peers.try_recv().is_err(), "a refused tunnel reached the server");
}

#[tokio::test]
async fn microsocks_reports_an_unreachable_target() {
    let proxy = start_microsocks(None);
    let (listener, closed) = listen().await;
    drop(listener);
    let d = via(&format!("socks5://127.0.0.1:{}", proxy.port));
    let message = proxy_error(within(d.connect(&ws_url(closed, "/"))).await);
    assert!(message.contains(&closed.port().to_string()), "{message}");
}

// ---------------------------------------------------------------------------
// Fake HTTP proxies

#[tokio::test]
async fn connect_reply_without_reason_phrase_works() {
    let (server, mut peers) = spawn_echo_server_multi(Upgrader::new()).await;
    let fake = spawn_fake_proxy(FakeProxy::Tunnel { reply: b"HTTP/1.1 200\r\n\r\n".to_vec(), upstream: None }).await;
    let d = via(&format!("http://{}", fake.addr));
    let (conn, _) = within(d.connect(&ws_url(server, "/"))).await.unwrap();
    assert_tunnelled(conn, fake.addr, &mut peers).await;
    assert_eq!(fake.connections(), 1);
    let head = &fake.heads()[0];
    assert_eq!(head.request_line, format!("CONNECT 127.0.0.1:{} HTTP/1.1", server.port()));
    assert_eq!(head.header("Host"), Some(format!("127.0.0.1:{}", server.port()).as_str()));
    assert_eq!(head.header("Proxy-Authorization"), None);
}

#[tokio::test]
async fn connect_request_to_an_ipv6_target_and_with_credentials() {
    let listener = tokio::net::TcpListener::bind("[::1]:0").await.expect("IPv6 loopback ([::1]) is not available");
    let port = listener.local_addr().unwrap().port();
    let _requests = spawn_accepting_raw_on(listener).await;
    let fake = spawn_fake_proxy(FakeProxy::Tunnel {
        reply: b"HTTP/1.1 200 Connection established\r\nProxy-Agent: fake\r\n\r\n".to_vec(),
        upstream: None,
    })
    .await;
    let d = via(&format!("http://us%40er:p%3Ass@{}", fake.addr));
    let (conn, _) = within(d.connect(&format!("ws://[::1]:{port}/v6"))).await.unwrap();
    assert_eq!(conn.remote_addr().unwrap(), fake.addr);
    let head = &fake.heads()[0];
    assert_eq!(head.request_line, format!("CONNECT [::1]:{port} HTTP/1.1"));
    assert_eq!(head.header("Host"), Some(format!("[::1]:{port}").as_str()));
    let expected = format!("Basic {}", BASE64.encode("us@er:p:ss"));
    assert_eq!(head.header("Proxy-Authorization"), Some(expected.as_str()));
}

#[tokio::test]
async fn connect_refused_by_the_proxy() {
    let fake = spawn_fake_proxy(FakeProxy::ReplyAndClose(
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\n\r\nno way".to_vec(),
    ))
    .await;
    let message = proxy_error(within(via(&format!("http://{}", fake.addr)).connect("ws://127.0.0.1:9/")).await);
    assert!(message.contains("403") && message.contains("Forbidden"), "{message}");
}

#[tokio::test]
async fn proxy_auth_refusal_mentions_407() {
    let fake = spawn_fake_proxy(FakeProxy::ReplyAndClose(
        b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"x\"\r\n\r\n".to_vec(),
    ))
    .await;
    let d = via(&format!("http://alice:wrong@{}", fake.addr));
    let message = proxy_error(within(d.connect("ws://127.0.0.1:9/")).await);
    assert!(message.contains("407"), "{message}");
    let expected = format!("Basic {}", BASE64.encode("alice:wrong"));
    assert_eq!(fake.heads()[0].header("Proxy-Authorization"), Some(expected.as_str()));
}

#[tokio::test]
async fn proxy_answering_garbage_is_a_proxy_error() {
    for garbage in [&b"SSH-2.0-OpenSSH_9.6\r\n\r\n"[..], b"\x00\x01\x02\x03\r\n\r\n", b"HTTP/1.1 abc\r\n\r\n"] {
        let fake = spawn_fake_proxy(FakeProxy::ReplyAndClose(garbage.to_vec())).await;
        let result = within(via(&format!("http://{}", fake.addr)).connect("ws://127.0.0.1:9/")).await;
        let message = proxy_error(result);
        assert!(message.contains("malformed"), "{garbage:?}: {message}");
    }
    // A reply that never ends its head.
    let fake =
        spawn_fake_proxy(FakeProxy::Flood(b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n".to_vec()))
            .await;
    let message = proxy_error(within(via(&format!("http://{}", fake.addr)).connect("ws://127.0.0.1:9/")).await);
    assert!(message.contains("too large"), "{message}");
}

#[tokio::test]
async fn proxy_closing_the_connection_is_a_proxy_error() {
    // Reads the CONNECT and closes without a word.
    let fake = spawn_fake_proxy(FakeProxy::ReplyAndClose(Vec::new())).await;
    let message = proxy_error(within(via(&format!("http://{}", fake.addr)).connect("ws://127.0.0.1:9/")).await);
    assert!(message.contains("closed"), "{message}");
    // Closes halfway through the reply.
    let fake = spawn_fake_proxy(FakeProxy::ReplyAndClose(b"HTTP/1.1 200 OK\r\n".to_vec())).await;
    let message = proxy_error(within(via(&format!("http://{}", fake.addr)).connect("ws://127.0.0.1:9/")).await);
    assert!(message.contains("closed"), "{message}");
}

#[tokio::test]
async fn unsupported_proxy_scheme_is_a_proxy_error() {
    let (listener, addr) = listen().await;
    let message = proxy_error(within(via(&format!("ftp://{addr}")).connect("ws://127.0.0.1:9/")).await);
    assert!(message.contains("ftp"), "{message}");
    let accepted = tokio::time::timeout(std::time::Duration::from_millis(100), listener.accept()).await;
    assert!(accepted.is_err(), "a connection was made to an unsupported proxy");
}

#[tokio::test]
async fn explicit_proxy_applies_to_loopback_targets_and_connect_fn_is_asked_for_the_proxy() {
    // With a connect function, it is asked for the proxy's address, not the target's.
    let (server, mut peers) = spawn_echo_server_multi(Upgrader::new()).await;
    let fake =
        spawn_fake_proxy(FakeProxy::Tunnel { reply: b"HTTP/1.1 200 OK\r\n\r\n".to_vec(), upstream: Some(server) })
            .await;
    let redirect = Redirect::default();
    let d = redirect.install(via("http://proxy.test:3128"), fake.addr);
    let (mut conn, _) = within(d.connect("ws://target.test/x")).await.unwrap();
    assert_eq!(redirect.asked(), vec![("proxy.test".to_owned(), 3128)]);
    assert_eq!(fake.heads()[0].request_line, "CONNECT target.test:80 HTTP/1.1");
    within(peers.recv()).await.unwrap();
    conn.write_text("hi").await.unwrap();
    assert_eq!(within(conn.read_message()).await.unwrap().as_text(), Some("hi"));
}

#[tokio::test]
async fn proxy_at_an_ipv6_address() {
    let (server, mut peers) = spawn_echo_server_multi(Upgrader::new()).await;
    let listener = tokio::net::TcpListener::bind("[::1]:0").await.expect("IPv6 loopback ([::1]) is not available");
    let proxy_addr = listener.local_addr().unwrap();
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = heads.clone();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let head = read_head(&mut stream).await.unwrap();
        record.lock().unwrap().push(head.request_line);
        let upstream = tokio::net::TcpStream::connect(server).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stream, b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        relay(stream, upstream).await;
    });
    let d = via(&format!("http://[::1]:{}", proxy_addr.port()));
    let (conn, _) = within(d.connect(&ws_url(server, "/"))).await.unwrap();
    assert_tunnelled(conn, proxy_addr, &mut peers).await;
    assert_eq!(*heads.lock().unwrap(), vec![format!("CONNECT 127.0.0.1:{} HTTP/1.1", server.port())]);
}

#[tokio::test]
async fn proxy_that_never_answers_hits_the_handshake_timeout() {
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    for scheme in ["http", "socks5"] {
        let d = via(&format!("{scheme}://{addr}")).handshake_timeout(Some(std::time::Duration::from_millis(300)));
        let started = std::time::Instant::now();
        let result = within(d.connect("ws://127.0.0.1:9/")).await;
        assert!(matches!(result, Err(Error::Timeout)), "{scheme}: {result:?}");
        assert!(started.elapsed() < std::time::Duration::from_millis(1500), "{scheme}");
    }
}

// ---------------------------------------------------------------------------
// Fake SOCKS5 proxies

#[tokio::test]
async fn socks5_proxy_answering_garbage_is_a_proxy_error() {
    let fake = spawn_fake_proxy(FakeProxy::Flood(b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec())).await;
    let message = proxy_error(within(via(&format!("socks5://{}", fake.addr)).connect("ws://127.0.0.1:9/")).await);
    assert!(message.contains("SOCKS5"), "{message}");
}

#[tokio::test]
async fn socks5_proxy_closing_the_connection_is_a_proxy_error() {
    let fake = spawn_fake_proxy(FakeProxy::ReadThenClose).await;
    let result = within(via(&format!("socks5://{}", fake.addr)).connect("ws://127.0.0.1:9/")).await;
    let message = proxy_error(result);
    assert!(message.contains("SOCKS5"), "{message}");
}
