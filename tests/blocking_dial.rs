//! The blocking client (`silverback::blocking::connect`) over real loopback
//! sockets: against tungstenite (an independent peer), over TLS with a
//! self-signed certificate, through a real tinyproxy (HTTP CONNECT) and a real
//! microsocks (SOCKS5), with cookies, subprotocols, compression and the
//! handshake timeout. Every server here runs on plain threads.
#![cfg(feature = "blocking")]

use std::io::{Read, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use http::HeaderMap;
use silverback::blocking::{connect, connect_on, ClientStream, Conn, Transport};
use silverback::proto::head::HeadLimits;
use silverback::proto::server_handshake::{ServerHandshake, ServerPolicy, ServerStep};
use silverback::{
    CloseCode, CloseFrame, Config, CookieJar, DeflateConfig, Dialer, Error, MemoryCookieJar, MessageType, Proxy, Role,
};
use url::Url;

/// A dialer that ignores the environment's proxies and gives up after 10 s.
fn dialer() -> Dialer {
    Dialer::new().proxy(Proxy::None).handshake_timeout(Some(Duration::from_secs(10)))
}

fn via(proxy: &str) -> Dialer {
    dialer().proxy(Proxy::Url(Url::parse(proxy).unwrap()))
}

fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Echoes messages over `conn` and checks them, small and large.
fn assert_echo<S: Transport>(conn: &mut Conn<S>) {
    conn.write_message(MessageType::Text, "hello").unwrap();
    assert_eq!(conn.read_message().unwrap().as_text(), Some("hello"));
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    conn.write_message(MessageType::Binary, &big).unwrap();
    assert_eq!(conn.read_message().unwrap().data, big);
}

// ---------------------------------------------------------------------------
// Servers

/// What a test server saw of one connection.
#[derive(Debug)]
struct Seen {
    peer: SocketAddr,
    request: http::Request<()>,
}

fn echo_loop<S: Read + std::io::Write>(mut ws: tungstenite::WebSocket<S>) {
    while let Ok(msg) = ws.read() {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).is_err() {
            break;
        }
    }
}

/// Runs tungstenite's server handshake on `stream`, giving the request to `report`.
// tungstenite's callback returns its error response by value.
#[allow(clippy::result_large_err)]
fn tungstenite_accept<S: Read + std::io::Write>(
    stream: S,
    peer: SocketAddr,
    report: impl FnOnce(Seen),
) -> Option<tungstenite::WebSocket<S>> {
    let callback = |request: &tungstenite::handshake::server::Request, response| {
        let mut copy = http::Request::builder().uri(request.uri().clone()).body(()).unwrap();
        *copy.headers_mut() = request.headers().clone();
        report(Seen { peer, request: copy });
        Ok(response)
    };
    tungstenite::accept_hdr(stream, callback).ok()
}

/// A tungstenite echo server taking any number of connections; reports each
/// request it accepts.
fn tungstenite_server(listener: TcpListener) -> mpsc::Receiver<Seen> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let tx = tx.clone();
            thread::spawn(move || {
                let peer = stream.peer_addr().unwrap();
                if let Some(ws) = tungstenite_accept(stream, peer, |seen| drop(tx.send(seen))) {
                    echo_loop(ws);
                }
            });
        }
    });
    rx
}

/// A silverback echo server on the sans-IO server handshake and the
/// blocking connection, with `policy`; `headers` answers each request with
/// extra response headers.
fn silverback_server(
    policy: ServerPolicy,
    headers: impl Fn(&http::Request<()>) -> HeaderMap + Send + Sync + 'static,
) -> (SocketAddr, mpsc::Receiver<Seen>) {
    let (listener, addr) = listen();
    let (tx, rx) = mpsc::channel();
    let policy = Arc::new(policy);
    let headers = Arc::new(headers);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let (tx, policy, headers) = (tx.clone(), policy.clone(), headers.clone());
            thread::spawn(move || {
                let peer = stream.peer_addr().unwrap();
                let limits = HeadLimits { max_bytes: 16 * 1024, max_headers: 64 };
                let mut handshake = ServerHandshake::new(&policy, limits, |request: &http::Request<()>| {
                    let mut copy = http::Request::builder().uri(request.uri().clone()).body(()).unwrap();
                    *copy.headers_mut() = request.headers().clone();
                    let _ = tx.send(Seen { peer, request: copy });
                    Ok(headers(request))
                });
                let mut buf = [0u8; 1024];
                let accepted = loop {
                    let n = stream.read(&mut buf).unwrap();
                    assert!(n > 0, "the client hung up during the handshake");
                    match handshake.receive(&buf[..n]) {
                        ServerStep::NeedMore => {}
                        ServerStep::Accept(accepted) => break accepted,
                        ServerStep::Reject(refusal) => {
                            let _ = stream.write_all(&refusal.response_bytes());
                            return;
                        }
                        other => panic!("unexpected step {other:?}"),
                    }
                };
                stream.write_all(&accepted.response_bytes()).unwrap();
                let mut config = Config::default();
                config.deflate = accepted.deflate;
                let mut conn = Conn::from_raw(stream, Role::Server, config, accepted.protocol, &accepted.early);
                while let Ok(msg) = conn.read_message() {
                    if conn.write_message(msg.kind, &msg.data).is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, rx)
}

fn recv<T>(rx: &mpsc::Receiver<T>) -> T {
    rx.recv_timeout(Duration::from_secs(10)).expect("the server saw nothing")
}

// ---------------------------------------------------------------------------
// ws://

#[test]
fn ws_against_tungstenite() {
    let (listener, addr) = listen();
    let seen = tungstenite_server(listener);
    let url = format!("ws://localhost:{}/chat?room=1", addr.port());
    let (mut conn, response) = connect(&dialer(), &url).unwrap();
    assert_eq!(response.status(), 101);
    assert!(!conn.get_ref().is_tls());
    assert_eq!(conn.get_ref().peer_addr().unwrap(), addr);
    let request = recv(&seen).request;
    assert_eq!(request.uri(), "/chat?room=1");
    assert_eq!(request.headers()["host"], format!("localhost:{}", addr.port()));
    assert_echo(&mut conn);
    // The handshake timeout is over once the connection is handed over.
    assert_eq!(conn.get_ref().tcp_stream().read_timeout().unwrap(), None);
    conn.close(CloseFrame::new(CloseCode::NORMAL, "bye")).unwrap();
}

#[test]
fn connect_on_a_stream_of_the_callers() {
    let (listener, addr) = listen();
    let seen = tungstenite_server(listener);
    let stream = TcpStream::connect(addr).unwrap();
    let (mut conn, _) = connect_on(&dialer(), stream, "ws://example.test/on").unwrap();
    let request = recv(&seen).request;
    assert_eq!((request.uri().path(), &request.headers()["host"]), ("/on", &"example.test".parse().unwrap()));
    assert_echo(&mut conn);
}

#[test]
fn refusals_are_bad_handshakes_with_the_body() {
    let (listener, addr) = listen();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        stream.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nnot here!").unwrap();
        thread::sleep(Duration::from_secs(2));
    });
    match connect(&dialer(), &format!("ws://{addr}/")) {
        Err(Error::BadResponse { reason, response }) => {
            assert!(reason.contains("403"), "{reason}");
            assert_eq!(response.status(), 403);
            assert_eq!(&response.body()[..], b"not here!");
        }
        other => panic!("expected Error::BadResponse, got {other:?}"),
    }
}

#[test]
fn urls_and_requests_are_checked_before_connecting() {
    assert!(matches!(connect(&dialer(), "http://example.test/"), Err(Error::InvalidUrl(_))));
    let bad = dialer().subprotocols(["a b"]);
    assert!(matches!(connect(&bad, "ws://example.test/"), Err(Error::InvalidRequest(_))));
}

// ---------------------------------------------------------------------------
// Cookies, subprotocols, compression

#[test]
fn cookies_set_by_the_server_are_sent_back() {
    let (addr, seen) = silverback_server(ServerPolicy::default(), |request| {
        let mut headers = HeaderMap::new();
        if !request.headers().contains_key("cookie") {
            headers.append("set-cookie", "session=abc123; Path=/; HttpOnly".parse().unwrap());
            headers.append("set-cookie", "elsewhere=1; Path=/other".parse().unwrap());
        }
        headers
    });
    let jar = Arc::new(MemoryCookieJar::new());
    let d = dialer().cookie_jar(jar.clone());
    let url = format!("ws://{addr}/chat");

    let (mut conn, response) = connect(&d, &url).unwrap();
    assert_eq!(response.headers().get_all("set-cookie").iter().count(), 2);
    assert_eq!(recv(&seen).request.headers().get("cookie"), None);
    assert_echo(&mut conn);
    let stored = jar.cookies(&Url::parse(&format!("http://{addr}/chat")).unwrap());
    assert_eq!(stored.as_deref(), Some("session=abc123"));

    let (_conn, _) = connect(&d, &url).unwrap();
    assert_eq!(recv(&seen).request.headers()["cookie"], "session=abc123");
}

#[test]
fn subprotocol_and_compression_are_agreed() {
    let policy = ServerPolicy {
        subprotocols: vec!["v2".into(), "v1".into()],
        compression: Some(DeflateConfig::default()),
        ..ServerPolicy::default()
    };
    let (addr, seen) = silverback_server(policy, |_| HeaderMap::new());
    let d = dialer().subprotocols(["v1", "v2"]).enable_compression(true);
    let (mut conn, response) = connect(&d, &format!("ws://{addr}/")).unwrap();
    let request = recv(&seen).request;
    assert_eq!(request.headers()["sec-websocket-protocol"], "v1, v2");
    assert!(request.headers()["sec-websocket-extensions"].to_str().unwrap().starts_with("permessage-deflate"));
    // The server takes the client's first choice that it supports.
    assert_eq!(conn.subprotocol(), Some("v1"));
    assert_eq!(response.headers()["sec-websocket-protocol"], "v1");
    assert!(conn.compression_negotiated());
    assert!(response.headers()["sec-websocket-extensions"].to_str().unwrap().starts_with("permessage-deflate"));
    let text = "compressible text, again and again. ".repeat(10_000);
    for _ in 0..3 {
        conn.write_message(MessageType::Text, &text).unwrap();
        assert_eq!(conn.read_message().unwrap().as_text(), Some(text.as_str()));
    }
    assert_echo(&mut conn);

    // Without an offer, nothing is agreed.
    let (conn, response) = connect(&dialer(), &format!("ws://{addr}/")).unwrap();
    assert!(!conn.compression_negotiated());
    assert_eq!(conn.subprotocol(), None);
    assert!(response.headers().get("sec-websocket-extensions").is_none());
}

#[test]
fn every_ping_gets_its_pong_before_the_next_write() {
    // A raw server: ten pings at once, then a text message in two fragments
    // with a ping between them, all in one write.
    let (listener, addr) = listen();
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let key = head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(name, _)| name.eq_ignore_ascii_case("sec-websocket-key")))
            .unwrap()
            .1
            .trim()
            .to_owned();
        let accept = silverback::proto::handshake::accept_key(key.as_bytes());
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        let frame = |first: u8, payload: &[u8]| [&[first, payload.len() as u8][..], payload].concat();
        let mut frames: Vec<u8> = (0..10).flat_map(|i| frame(0x89, format!("payload-{i}").as_bytes())).collect();
        frames.extend(frame(0x01, b"fragment1"));
        frames.extend(frame(0x89, b"between"));
        frames.extend(frame(0x80, b"fragment2"));
        stream.write_all(&[response.as_bytes(), &frames].concat()).unwrap();
        // What the client sends back, in order: (opcode, unmasked payload).
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut received = Vec::new();
        while received.len() < 12 {
            let mut header = [0u8; 6];
            stream.read_exact(&mut header).unwrap();
            let mut payload = vec![0u8; usize::from(header[1] & 0x7f)];
            stream.read_exact(&mut payload).unwrap();
            payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= header[2 + i % 4]);
            received.push((header[0] & 0x0f, String::from_utf8(payload).unwrap()));
        }
        received
    });
    let (mut conn, _) = connect(&dialer(), &format!("ws://{addr}/")).unwrap();
    let message = conn.read_message().unwrap();
    assert_eq!(message.as_text(), Some("fragment1fragment2"));
    conn.write_message(message.kind, &message.data).unwrap();
    let mut expected: Vec<(u8, String)> = (0..10).map(|i| (0xA, format!("payload-{i}"))).collect();
    expected.push((0xA, "between".into()));
    expected.push((0x1, "fragment1fragment2".into()));
    assert_eq!(server.join().unwrap(), expected);
}

// ---------------------------------------------------------------------------
// Handshake timeout

/// A listener that accepts connections and never answers; keeps them open.
fn silent_server() -> SocketAddr {
    let (listener, addr) = listen();
    thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    addr
}

fn assert_times_out(d: &Dialer, url: &str) {
    let started = Instant::now();
    let result = connect(d, url);
    assert!(matches!(result, Err(Error::Timeout)), "{result:?}");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(280) && elapsed < Duration::from_millis(1500), "{elapsed:?}");
}

#[test]
fn a_server_that_never_answers_hits_the_handshake_timeout() {
    let addr = silent_server();
    let d = dialer().handshake_timeout(Some(Duration::from_millis(300)));
    assert_times_out(&d, &format!("ws://{addr}/"));
    #[cfg(feature = "rustls")]
    assert_times_out(&d, &format!("wss://localhost:{}/", addr.port()));
    // A proxy that never answers, either protocol.
    for scheme in ["http", "socks5"] {
        let d = via(&format!("{scheme}://{addr}")).handshake_timeout(Some(Duration::from_millis(300)));
        assert_times_out(&d, "ws://example.test/");
    }
    // On the caller's stream too.
    let stream = TcpStream::connect(addr).unwrap();
    let started = Instant::now();
    let result = connect_on(&d, stream, "ws://example.test/");
    assert!(matches!(result, Err(Error::Timeout)), "{result:?}");
    assert!(started.elapsed() < Duration::from_millis(1500));
}

#[test]
fn a_refused_connection_is_an_io_error() {
    let (listener, addr) = listen();
    drop(listener);
    let result = connect(&dialer(), &format!("ws://{addr}/"));
    assert!(matches!(result, Err(Error::Io(_))), "{result:?}");
}

// ---------------------------------------------------------------------------
// TLS

#[cfg(feature = "rustls")]
mod tls {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::{ClientConfig, RootCertStore, ServerConfig, ServerConnection, StreamOwned};
    use silverback::TlsRoots;

    use super::*;

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// A certificate for `name` and its key.
    fn certified(name: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let certified = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
        (certified.cert.der().clone(), key)
    }

    /// A tungstenite echo server over TLS with a self-signed certificate for
    /// `localhost`; reports each request, or the TLS error.
    fn tls_server() -> (SocketAddr, CertificateDer<'static>, mpsc::Receiver<Result<Seen, String>>) {
        tls_server_requiring(None)
    }

    /// As [`tls_server`], requiring the client certificate `client` when given.
    fn tls_server_requiring(
        client: Option<&CertificateDer<'static>>,
    ) -> (SocketAddr, CertificateDer<'static>, mpsc::Receiver<Result<Seen, String>>) {
        let (cert, key) = certified("localhost");
        let builder = ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().unwrap();
        let builder = match client {
            Some(client) => {
                let mut roots = RootCertStore::empty();
                roots.add(client.clone()).unwrap();
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                    .build()
                    .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = Arc::new(builder.with_single_cert(vec![cert.clone()], key).unwrap());
        let (listener, addr) = listen();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let (tx, config) = (tx.clone(), config.clone());
                thread::spawn(move || {
                    let peer = stream.peer_addr().unwrap();
                    let mut tls = ServerConnection::new(config).unwrap();
                    while tls.is_handshaking() {
                        if let Err(e) = tls.complete_io(&mut stream) {
                            let _ = tx.send(Err(e.to_string()));
                            return;
                        }
                    }
                    let report = |seen| drop(tx.send(Ok(seen)));
                    if let Some(ws) = tungstenite_accept(StreamOwned::new(tls, stream), peer, report) {
                        echo_loop(ws);
                    }
                });
            }
        });
        (addr, cert, rx)
    }

    fn trusting(cert: &CertificateDer<'static>) -> TlsRoots {
        let mut roots = RootCertStore::empty();
        roots.add(cert.clone()).unwrap();
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsRoots::Config(Arc::new(config))
    }

    fn tls_error<T: std::fmt::Debug>(result: silverback::Result<T>) -> String {
        match result {
            Err(Error::Tls(cause)) => cause.to_string(),
            other => panic!("expected Error::Tls, got {other:?}"),
        }
    }

    #[test]
    fn wss_with_a_trusted_self_signed_certificate() {
        let (addr, cert, seen) = tls_server();
        let d = dialer().tls(trusting(&cert));
        let url = format!("wss://localhost:{}/secure?room=7", addr.port());
        let (mut conn, response) = connect(&d, &url).unwrap();
        assert_eq!(response.status(), 101);
        let stream: &ClientStream = conn.get_ref();
        assert!(stream.is_tls());
        assert!(stream.tls_connection().unwrap().protocol_version().is_some());
        let request = recv(&seen).unwrap().request;
        assert_eq!(request.uri(), "/secure?room=7");
        assert_eq!(request.headers()["host"], format!("localhost:{}", addr.port()));
        assert_echo(&mut conn);
        assert_eq!(conn.get_ref().tcp_stream().read_timeout().unwrap(), None);
        conn.close(CloseFrame::new(CloseCode::NORMAL, "bye")).unwrap();
    }

    #[test]
    fn wss_with_an_untrusted_certificate_or_wrong_name_is_a_tls_error() {
        let (addr, cert, seen) = tls_server();
        let message = tls_error(connect(&dialer(), &format!("wss://localhost:{}/", addr.port())));
        assert!(message.contains("certificate"), "{message}");
        assert!(recv(&seen).is_err(), "the server got past TLS");
        // The certificate names localhost only, not 127.0.0.1.
        tls_error(connect(&dialer().tls(trusting(&cert)), &format!("wss://127.0.0.1:{}/", addr.port())));
    }

    #[test]
    fn wss_to_a_plain_server_is_a_tls_error() {
        let (listener, addr) = listen();
        let _seen = tungstenite_server(listener);
        let (_, cert, _) = tls_server();
        tls_error(connect(&dialer().tls(trusting(&cert)), &format!("wss://localhost:{}/", addr.port())));
    }

    /// A blocking TLS connector with rustls' own stream, trusting `server`
    /// and presenting `client`; records the hosts it is given.
    fn client_cert_connector(
        server: &CertificateDer<'static>,
        client: (CertificateDer<'static>, PrivateKeyDer<'static>),
        hosts: Arc<std::sync::Mutex<Vec<String>>>,
    ) -> impl silverback::blocking::TlsConnect {
        let mut roots = RootCertStore::empty();
        roots.add(server.clone()).unwrap();
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![client.0], client.1)
            .unwrap();
        let config = Arc::new(config);
        move |host: &str, mut stream: ClientStream| {
            hosts.lock().unwrap().push(host.to_owned());
            let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let mut tls = rustls::ClientConnection::new(config.clone(), name).map_err(std::io::Error::other)?;
            while tls.is_handshaking() {
                tls.complete_io(&mut stream)?;
            }
            Ok(Box::new(StreamOwned::new(tls, stream)) as Box<dyn silverback::blocking::ReadWrite>)
        }
    }

    #[test]
    fn a_custom_tls_connector_presents_a_client_certificate() {
        let (client_cert, client_key) = certified("client");
        let (addr, server_cert, seen) = tls_server_requiring(Some(&client_cert));
        let url = format!("wss://localhost:{}/mtls", addr.port());

        // The built-in TLS trusts the server but has no client certificate.
        assert!(connect(&dialer().tls(trusting(&server_cert)), &url).is_err());
        assert!(recv(&seen).is_err(), "the server accepted a client without a certificate");

        let hosts = Arc::default();
        let d = dialer().blocking_tls_connector(client_cert_connector(
            &server_cert,
            (client_cert, client_key),
            Arc::clone(&hosts),
        ));
        let (mut conn, response) = connect(&d, &url).unwrap();
        assert_eq!(response.status(), 101);
        assert_eq!(*hosts.lock().unwrap(), vec!["localhost".to_owned()]);
        let seen = recv(&seen).unwrap();
        assert_eq!(seen.request.uri(), "/mtls");
        let stream: &ClientStream = conn.get_ref();
        assert!(stream.is_tls());
        assert!(stream.tls_connection().is_none(), "not the built-in TLS");
        assert_eq!(stream.peer_addr().unwrap(), addr);
        assert_eq!(stream.local_addr().unwrap(), seen.peer);
        // The handshake's timeouts are cleared before the connection is handed over.
        assert_eq!(stream.tcp_stream().read_timeout().unwrap(), None);
        assert_echo(&mut conn);
        conn.close(CloseFrame::new(CloseCode::NORMAL, "bye")).unwrap();
    }

    #[test]
    fn a_custom_tls_connector_through_tinyproxy() {
        let proxy = start_tinyproxy(None);
        let (client_cert, client_key) = certified("client");
        let (addr, server_cert, seen) = tls_server_requiring(Some(&client_cert));
        let hosts = Arc::default();
        let d = via(&format!("http://127.0.0.1:{}", proxy.port)).blocking_tls_connector(client_cert_connector(
            &server_cert,
            (client_cert, client_key),
            Arc::clone(&hosts),
        ));
        let url = format!("wss://localhost:{}/tunnelled", addr.port());
        let (mut conn, _) = connect(&d, &url).unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
        assert_eq!(*hosts.lock().unwrap(), vec!["localhost".to_owned()]);
        assert_eq!(conn.get_ref().peer_addr().unwrap(), proxy.addr());
        assert_eq!(recv(&seen).unwrap().request.uri(), "/tunnelled");
        assert_echo(&mut conn);
        assert!(proxy.log().contains(&format!("localhost:{}", addr.port())), "{}", proxy.log());
    }

    #[test]
    fn a_failing_tls_connector_is_a_tls_error_with_its_source() {
        let (addr, _, _seen) = tls_server();
        let d = dialer().blocking_tls_connector(
            |_: &str, _: ClientStream| -> std::io::Result<Box<dyn silverback::blocking::ReadWrite>> {
                Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, "pin mismatch"))
            },
        );
        let err = connect(&d, &format!("wss://localhost:{}/", addr.port())).unwrap_err();
        let Error::Tls(cause) = &err else { panic!("expected Error::Tls, got {err:?}") };
        let source = std::error::Error::source(cause).and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(source.map(|e| e.to_string()).as_deref(), Some("pin mismatch"), "{err:?}");
    }

    /// The async API's hooks cannot run in the blocking dial: it refuses
    /// them rather than dial without them.
    #[cfg(feature = "tokio")]
    #[test]
    fn async_hooks_are_refused_not_ignored() {
        let (addr, cert, _seen) = tls_server();
        let url = format!("wss://localhost:{}/", addr.port());
        let async_tls =
            dialer().tls(trusting(&cert)).tls_connector(|_: String, _: silverback::dial::BoxedStream| async {
                Err::<silverback::dial::BoxedStream, _>(std::io::Error::other("unused"))
            });
        let refused = connect(&async_tls, &url);
        assert!(
            matches!(&refused, Err(Error::InvalidRequest(m)) if m.contains("blocking_tls_connector")),
            "{refused:?}"
        );
        // Without TLS the async TLS step is not needed.
        let (listener, plain) = listen();
        let _server = tungstenite_server(listener);
        let (mut conn, _) = connect(&async_tls, &format!("ws://{plain}/")).unwrap();
        assert_echo(&mut conn);

        let async_connect = dialer().connect_fn(|host: String, port: u16| async move {
            let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            Ok(Box::new(stream) as silverback::dial::BoxedStream)
        });
        let refused = connect(&async_connect, &format!("ws://{plain}/"));
        assert!(matches!(&refused, Err(Error::InvalidRequest(m)) if m.contains("connect_fn")), "{refused:?}");
    }

    #[test]
    fn wss_through_tinyproxy() {
        let proxy = start_tinyproxy(None);
        let (addr, cert, seen) = tls_server();
        let d = via(&format!("http://127.0.0.1:{}", proxy.port)).tls(trusting(&cert));
        let url = format!("wss://localhost:{}/secure", addr.port());
        let (mut conn, _) = connect(&d, &url).unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
        assert!(conn.get_ref().is_tls());
        assert_eq!(conn.get_ref().peer_addr().unwrap(), proxy.addr());
        assert_eq!(recv(&seen).unwrap().request.uri(), "/secure");
        assert_echo(&mut conn);
        assert!(proxy.log().contains(&format!("localhost:{}", addr.port())), "{}", proxy.log());
    }
}

// ---------------------------------------------------------------------------
// Proxies

/// Checks that `conn` runs through `proxy`: the client's peer is the proxy
/// and the server's peer is not the client's socket.
fn assert_tunnelled(conn: &mut Conn<ClientStream>, proxy: SocketAddr, seen: &mpsc::Receiver<Seen>) {
    assert_eq!(conn.get_ref().peer_addr().unwrap(), proxy, "the client is not connected to the proxy");
    let server_peer = recv(seen).peer;
    assert_ne!(server_peer, conn.get_ref().local_addr().unwrap(), "no proxy in between");
    assert_echo(conn);
}

fn proxy_error<T: std::fmt::Debug>(result: silverback::Result<T>) -> String {
    match result {
        Err(Error::Proxy(cause)) => cause.to_string(),
        other => panic!("expected Error::Proxy, got {other:?}"),
    }
}

#[test]
fn http_connect_through_tinyproxy() {
    let mut proxy = start_tinyproxy(None);
    let (listener, addr) = listen();
    let seen = tungstenite_server(listener);
    let d = via(&format!("http://127.0.0.1:{}", proxy.port));
    let url = format!("ws://{addr}/chat");

    let (mut conn, response) = connect(&d, &url).unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    assert_eq!(response.status(), 101);
    assert_tunnelled(&mut conn, proxy.addr(), &seen);
    let log = proxy.log();
    assert!(log.contains("CONNECT") && log.contains(&addr.port().to_string()), "tinyproxy log:\n{log}");

    // Without the proxy, the same dialer cannot connect.
    proxy.kill();
    let result = connect(&d, &url);
    assert!(matches!(&result, Err(Error::Io(_))), "{result:?}");
    assert!(seen.try_recv().is_err(), "the server was reached without the proxy");
}

#[test]
fn http_connect_with_basic_auth_and_refusals() {
    let proxy = start_tinyproxy(Some(("alice", "s3cret")));
    let (listener, addr) = listen();
    let seen = tungstenite_server(listener);
    let url = format!("ws://{addr}/");

    let d = via(&format!("http://alice:s3cret@127.0.0.1:{}", proxy.port));
    let (mut conn, _) = connect(&d, &url).unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    assert_tunnelled(&mut conn, proxy.addr(), &seen);

    let message = proxy_error(connect(&via(&format!("http://127.0.0.1:{}", proxy.port)), &url));
    assert!(message.contains("407") && message.contains("refused CONNECT"), "{message}");
    assert!(seen.try_recv().is_err(), "a refused tunnel reached the server");
}

#[test]
fn socks5_through_microsocks() {
    let mut proxy = start_microsocks(None);
    let (listener, addr) = listen();
    let seen = tungstenite_server(listener);
    let url = format!("ws://{addr}/");
    let d = via(&format!("socks5://127.0.0.1:{}", proxy.port));

    let (mut conn, response) = connect(&d, &url).unwrap();
    assert_eq!(response.status(), 101);
    assert_tunnelled(&mut conn, proxy.addr(), &seen);

    // A host name is resolved by the proxy.
    for scheme in ["socks5", "socks5h"] {
        let d = via(&format!("{scheme}://127.0.0.1:{}", proxy.port));
        let (mut conn, _) = connect(&d, &format!("ws://localhost:{}/", addr.port())).unwrap();
        assert_tunnelled(&mut conn, proxy.addr(), &seen);
    }

    proxy.kill();
    let result = connect(&d, &url);
    assert!(matches!(&result, Err(Error::Io(_))), "{result:?}");
    assert!(seen.try_recv().is_err(), "the server was reached without the proxy");
}

#[test]
fn socks5_with_username_and_password() {
    let proxy = start_microsocks(Some(("bob", "hunter2")));
    let (listener, addr) = listen();
    let seen = tungstenite_server(listener);
    let url = format!("ws://{addr}/");

    let d = via(&format!("socks5://bob:hunter2@127.0.0.1:{}", proxy.port));
    let (mut conn, _) = connect(&d, &url).unwrap();
    assert_tunnelled(&mut conn, proxy.addr(), &seen);

    let message = proxy_error(connect(&via(&format!("socks5://bob:wrong@127.0.0.1:{}", proxy.port)), &url));
    assert!(message.contains("SOCKS5"), "{message}");
    let message = proxy_error(connect(&via(&format!("socks5://127.0.0.1:{}", proxy.port)), &url));
    assert!(message.contains("authentication"), "{message}");
    assert!(seen.try_recv().is_err(), "a refused tunnel reached the server");
}

// ---------------------------------------------------------------------------
// Real proxy processes (tinyproxy, microsocks): a test fails, loudly, when
// one is not installed.

/// A proxy program running on a loopback port, killed when dropped.
struct ProxyProcess {
    port: u16,
    child: Option<Child>,
    dir: PathBuf,
    log: PathBuf,
}

impl ProxyProcess {
    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// What the program wrote so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts `program` with the arguments made for a free port (a few tries,
/// in case the port was taken in between) and waits until it accepts
/// connections. Panics when the program is not installed.
fn start_process(program: &str, args: impl Fn(u16, &std::path::Path) -> Vec<String>) -> ProxyProcess {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let mut last_log = String::new();
    for _ in 0..3 {
        let dir = std::env::temp_dir().join(format!(
            "silverback-blocking-{program}-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let port = listen().1.port();
        let log = dir.join("output.log");
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = match Command::new(program)
            .args(args(port, &dir))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                panic!("`{program}` is needed by this test and could not be started (apt-get install {program}): {e}")
            }
        };
        let mut process = ProxyProcess { port, child: Some(child), dir, log };
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            if TcpStream::connect_timeout(&process.addr(), Duration::from_millis(200)).is_ok() {
                return process;
            }
            let exited = process.child.as_mut().unwrap().try_wait().unwrap();
            if exited.is_some() || Instant::now() > deadline {
                last_log = process.log();
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("`{program}` did not start listening; its output:\n{last_log}")
}

/// A tinyproxy (HTTP CONNECT) on a free loopback port, optionally with basic
/// authentication; it logs every request.
fn start_tinyproxy(basic_auth: Option<(&str, &str)>) -> ProxyProcess {
    let auth = basic_auth.map(|(u, p)| format!("BasicAuth {u} {p}\n")).unwrap_or_default();
    start_process("tinyproxy", move |port, dir| {
        let config = dir.join("tinyproxy.conf");
        // No ConnectPort line: CONNECT to any port is allowed.
        std::fs::write(
            &config,
            format!("Port {port}\nListen 127.0.0.1\nAllow 127.0.0.1\nTimeout 30\nMaxClients 50\nLogLevel Info\n{auth}"),
        )
        .unwrap();
        vec!["-d".into(), "-c".into(), config.display().to_string()]
    })
}

/// A microsocks (SOCKS5) on a free loopback port, optionally requiring a
/// username and password.
fn start_microsocks(auth: Option<(&str, &str)>) -> ProxyProcess {
    let auth: Vec<String> = auth.map(|(u, p)| vec!["-u".into(), u.into(), "-P".into(), p.into()]).unwrap_or_default();
    start_process("microsocks", move |port, _| {
        let mut args = vec!["-i".to_owned(), "127.0.0.1".to_owned(), "-p".to_owned(), port.to_string()];
        args.extend(auth.iter().cloned());
        args
    })
}
