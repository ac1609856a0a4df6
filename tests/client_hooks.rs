//! The client's hooks and TLS choices: a custom TLS connector (client
//! certificates made with rcgen, directly and through tinyproxy),
//! `https://` proxies, a proxy chosen per URL by a function, request
//! headers and subprotocols per call, certificate checks turned off for
//! tests, the crate's crypto provider, and the addresses of `wss://`
//! connections.

#![cfg(feature = "tls")]

mod client_support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use client_support::*;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use silverback::dial::BoxedStream;
use silverback::{Error, Proxy, TlsRoots, Upgrader};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use url::Url;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate for `names` and its key.
fn certified(names: &[&str]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let made = rcgen::generate_simple_self_signed(names).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.key_pair.serialize_der()));
    (made.cert.der().clone(), key)
}

/// A TLS acceptor for "localhost" that requires a client certificate
/// signed by (here: equal to) `client`.
fn requiring_client_cert(client: &CertificateDer<'static>) -> (TlsAcceptor, CertificateDer<'static>) {
    let (cert, key) = certified(&["localhost"]);
    let mut roots = RootCertStore::empty();
    roots.add(client.clone()).unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider()).build().unwrap();
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    (TlsAcceptor::from(Arc::new(config)), cert)
}

/// A custom TLS connector: tokio-rustls trusting `server`, presenting the
/// client certificate; counts its calls and the hosts it is given.
fn client_cert_connector(
    server: &CertificateDer<'static>,
    client: (CertificateDer<'static>, PrivateKeyDer<'static>),
    hosts: Arc<Mutex<Vec<String>>>,
) -> impl silverback::dial::TlsConnect {
    let mut roots = RootCertStore::empty();
    roots.add(server.clone()).unwrap();
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![client.0], client.1)
        .unwrap();
    let connector = TlsConnector::from(Arc::new(config));
    move |host: String, stream: BoxedStream| {
        hosts.lock().unwrap().push(host.clone());
        let connector = connector.clone();
        async move {
            let name =
                ServerName::try_from(host).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            Ok(Box::new(connector.connect(name, stream).await?) as BoxedStream)
        }
    }
}

#[tokio::test]
async fn a_custom_tls_connector_presents_a_client_certificate() {
    let (client_cert, client_key) = certified(&["client"]);
    let (acceptor, server_cert) = requiring_client_cert(&client_cert);
    let (server, mut seen) = spawn_tls_echo_server(acceptor).await;
    let url = format!("wss://localhost:{}/mtls", server.port());

    // The built-in TLS, trusting the server but with no client certificate:
    // the server refuses.
    let plain = dialer().tls(TlsRoots::Config(tls::trusting(&server_cert)));
    assert!(within(plain.connect(&url)).await.is_err());
    assert!(within(seen.recv()).await.unwrap().tls_error.is_some());

    let hosts = Arc::default();
    let d = dialer().tls_connector(client_cert_connector(&server_cert, (client_cert, client_key), Arc::clone(&hosts)));
    let (mut conn, response) = within(d.connect(&url)).await.unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(*hosts.lock().unwrap(), vec!["localhost".to_owned()]);
    assert!(conn.with_stream(|s| s.is_tls()));
    let info = within(seen.recv()).await.unwrap();
    assert_eq!(info.tls_error, None);
    assert_eq!(info.path.as_deref(), Some("/mtls"));
    // The addresses are those of the TCP connection under the custom TLS.
    assert_eq!(conn.remote_addr().unwrap(), server);
    assert_eq!(conn.local_addr().unwrap(), info.peer);
    conn.write_text("client certified").await.unwrap();
    assert_eq!(within(conn.read_message()).await.unwrap().as_text(), Some("client certified"));
}

#[tokio::test]
async fn a_custom_tls_connector_through_tinyproxy() {
    let proxy = start_tinyproxy(None);
    let (client_cert, client_key) = certified(&["client"]);
    let (acceptor, server_cert) = requiring_client_cert(&client_cert);
    let (server, mut seen) = spawn_tls_echo_server(acceptor).await;
    let hosts = Arc::default();
    let d = dialer()
        .proxy(Proxy::Url(Url::parse(&format!("http://127.0.0.1:{}", proxy.port)).unwrap()))
        .tls_connector(client_cert_connector(&server_cert, (client_cert, client_key), Arc::clone(&hosts)));
    let url = format!("wss://localhost:{}/tunnelled", server.port());
    let (mut conn, _) = within(d.connect(&url)).await.unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    assert_eq!(*hosts.lock().unwrap(), vec!["localhost".to_owned()]);
    let info = within(seen.recv()).await.unwrap();
    assert_eq!(info.tls_error, None);
    // Over a proxy, the addresses are those of the connection to the proxy.
    assert_eq!(conn.remote_addr().unwrap(), proxy.addr());
    assert_ne!(conn.local_addr().unwrap(), info.peer);
    conn.write_text("via tinyproxy").await.unwrap();
    assert_eq!(within(conn.read_message()).await.unwrap().as_text(), Some("via tinyproxy"));
    let log = proxy.log();
    assert!(log.contains("CONNECT") && log.contains(&server.port().to_string()), "tinyproxy log:\n{log}");
}

#[tokio::test]
async fn a_failing_tls_connector_is_a_tls_error_with_its_source() {
    let (acceptor, _cert) = tls::self_signed(&["localhost"]);
    let (server, _seen) = spawn_tls_echo_server(acceptor).await;
    let d = dialer().tls_connector(|_host: String, _stream: BoxedStream| async {
        Err::<BoxedStream, _>(std::io::Error::new(std::io::ErrorKind::PermissionDenied, "pin mismatch"))
    });
    match within(d.connect(&format!("wss://localhost:{}/", server.port()))).await {
        Err(Error::Tls(cause)) => {
            let io = cause.downcast_ref::<std::io::Error>().expect("the connector's error is the source");
            assert_eq!(io.kind(), std::io::ErrorKind::PermissionDenied);
            assert!(cause.to_string().contains("pin mismatch"), "{cause}");
        }
        other => panic!("expected Error::Tls, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// https:// proxies

/// A CONNECT proxy behind TLS (certificate for "localhost"): counts the TLS
/// handshakes it completed and records the CONNECT lines it got.
struct TlsProxy {
    addr: SocketAddr,
    handshakes: Arc<AtomicUsize>,
    lines: Arc<Mutex<Vec<String>>>,
}

async fn spawn_tls_proxy(acceptor: TlsAcceptor) -> TlsProxy {
    let (listener, addr) = listen().await;
    let handshakes = Arc::new(AtomicUsize::new(0));
    let lines = Arc::new(Mutex::new(Vec::new()));
    let proxy = TlsProxy { addr, handshakes: handshakes.clone(), lines: lines.clone() };
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, handshakes, lines) = (acceptor.clone(), handshakes.clone(), lines.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else { return };
                handshakes.fetch_add(1, Ordering::SeqCst);
                let Some(head) = read_head(&mut tls).await else { return };
                lines.lock().unwrap().push(head.request_line.clone());
                let target = head.request_line.split(' ').nth(1).unwrap_or_default().to_owned();
                let Ok(mut upstream) = TcpStream::connect(target.as_str()).await else {
                    let _ = tls.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                if tls.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.is_err() {
                    return;
                }
                if !head.rest.is_empty() && upstream.write_all(&head.rest).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    });
    proxy
}

#[tokio::test]
async fn https_proxies_carry_ws_and_wss() {
    // One certificate, for "localhost", serves the proxy and the wss server.
    let (acceptor, cert) = tls::self_signed(&["localhost"]);
    let proxy = spawn_tls_proxy(acceptor.clone()).await;
    let proxy_url = Url::parse(&format!("https://localhost:{}", proxy.addr.port())).unwrap();
    let d = dialer().proxy(Proxy::Url(proxy_url.clone())).tls(TlsRoots::Config(tls::trusting(&cert)));

    // ws:// through the TLS proxy.
    let (server, mut peers) = spawn_echo_server_multi(Upgrader::new()).await;
    let (mut conn, _) = within(d.connect(&ws_url(server, "/plain"))).await.unwrap();
    assert_eq!(proxy.handshakes.load(Ordering::SeqCst), 1, "the proxy saw no TLS");
    assert_eq!(proxy.lines.lock().unwrap()[0], format!("CONNECT 127.0.0.1:{} HTTP/1.1", server.port()));
    assert!(conn.with_stream(|s| s.is_tls()), "the connection to the proxy is encrypted");
    assert_eq!(conn.remote_addr().unwrap(), proxy.addr);
    assert_ne!(within(peers.recv()).await.unwrap(), conn.local_addr().unwrap());
    conn.write_text("inside proxy tls").await.unwrap();
    assert_eq!(within(conn.read_message()).await.unwrap().as_text(), Some("inside proxy tls"));

    // wss:// through the TLS proxy: TLS inside TLS.
    let (tls_server, mut seen) = spawn_tls_echo_server(acceptor).await;
    let (mut conn, _) = within(d.connect(&format!("wss://localhost:{}/nested", tls_server.port()))).await.unwrap();
    assert_eq!(proxy.handshakes.load(Ordering::SeqCst), 2);
    let info = within(seen.recv()).await.unwrap();
    assert_eq!((info.tls_error, info.path.as_deref()), (None, Some("/nested")));
    let big = vec![7u8; 200_000];
    conn.write_binary(&big).await.unwrap();
    assert_eq!(within(conn.read_message()).await.unwrap().data, big);

    // The proxy's certificate is checked: with the bundled roots it is refused.
    let untrusting = dialer().proxy(Proxy::Url(proxy_url));
    let result = within(untrusting.connect(&ws_url(server, "/"))).await;
    assert!(matches!(result, Err(Error::Tls(_))), "{result:?}");
    assert_eq!(proxy.handshakes.load(Ordering::SeqCst), 2);
}

// ---------------------------------------------------------------------------
// A proxy chosen per URL

#[derive(Debug)]
struct NoRoute(String);

impl std::fmt::Display for NoRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no route to {}", self.0)
    }
}

impl std::error::Error for NoRoute {}

#[tokio::test]
async fn a_proxy_function_chooses_per_url() {
    let (server, mut peers) = spawn_echo_server_multi(Upgrader::new()).await;
    let fake = spawn_fake_proxy(FakeProxy::Tunnel {
        reply: b"HTTP/1.1 200 Connection established\r\n\r\n".to_vec(),
        upstream: Some(server),
    })
    .await;
    let proxy_url = Url::parse(&format!("http://{}", fake.addr)).unwrap();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let record = asked.clone();
    let d = dialer().proxy(Proxy::custom(move |url| {
        record.lock().unwrap().push(url.to_string());
        match url.host_str() {
            Some("localhost") => Ok(Some(proxy_url.clone())),
            Some("127.0.0.1") => Ok(None),
            other => Err(Box::new(NoRoute(format!("{other:?}")))),
        }
    }));

    // "localhost" goes through the proxy.
    let (mut conn, _) = within(d.connect(&format!("ws://localhost:{}/a", server.port()))).await.unwrap();
    assert_eq!(fake.connections(), 1);
    assert_eq!(fake.heads()[0].request_line, format!("CONNECT localhost:{} HTTP/1.1", server.port()));
    assert_eq!(conn.remote_addr().unwrap(), fake.addr);
    within(peers.recv()).await.unwrap();
    conn.write_text("proxied").await.unwrap();
    assert_eq!(within(conn.read_message()).await.unwrap().as_text(), Some("proxied"));

    // "127.0.0.1" goes direct.
    let (conn, _) = within(d.connect(&format!("ws://127.0.0.1:{}/b", server.port()))).await.unwrap();
    assert_eq!(fake.connections(), 1, "the direct dial went through the proxy");
    assert_eq!(conn.remote_addr().unwrap(), server);
    assert_eq!(within(peers.recv()).await.unwrap(), conn.local_addr().unwrap());

    // Any other host: the function's error, typed, with context; no connection.
    match within(d.connect("ws://elsewhere.test:9/c")).await {
        Err(Error::Proxy(cause)) => {
            assert_eq!(cause.downcast_ref::<NoRoute>().map(|e| e.0.as_str()), Some("Some(\"elsewhere.test\")"));
            assert!(cause.context().contains("elsewhere.test:9"), "{cause}");
            assert!(cause.to_string().contains("no route to"), "{cause}");
        }
        other => panic!("expected Error::Proxy, got {other:?}"),
    }
    assert_eq!(
        *asked.lock().unwrap(),
        vec![
            format!("ws://localhost:{}/a", server.port()),
            format!("ws://127.0.0.1:{}/b", server.port()),
            "ws://elsewhere.test:9/c".to_owned()
        ]
    );
    assert!(peers.try_recv().is_err());
}

// ---------------------------------------------------------------------------
// Headers and subprotocols per call

#[tokio::test]
async fn headers_and_subprotocols_per_call() {
    let (server, mut requests) = spawn_accepting_raw().await;
    let d = dialer().header(http::header::ORIGIN, http::HeaderValue::from_static("https://app.example"));
    let first = http::Request::get(ws_url(server, "/one?x=1"))
        .header("Authorization", "Bearer first")
        .header("Sec-WebSocket-Protocol", "chat.v2, chat.v1")
        .body(())
        .unwrap();
    let second = http::Request::get(ws_url(server, "/two"))
        .header("X-Trace", "a")
        .header("X-Trace", "b")
        .header("Sec-WebSocket-Protocol", "telemetry")
        .body(())
        .unwrap();
    let (_one, _) = within(d.connect_with(first)).await.unwrap();
    let (_two, _) = within(d.connect_with(second)).await.unwrap();

    let one = within(requests.recv()).await.unwrap();
    assert_eq!(one.request_line, "GET /one?x=1 HTTP/1.1");
    assert_eq!(one.header("Authorization"), Some("Bearer first"));
    assert_eq!(one.header("Origin"), Some("https://app.example"));
    assert_eq!(one.all("Sec-WebSocket-Protocol"), vec!["chat.v2, chat.v1"]);
    assert_eq!(one.header("X-Trace"), None);

    let two = within(requests.recv()).await.unwrap();
    assert_eq!(two.request_line, "GET /two HTTP/1.1");
    assert_eq!(two.header("Authorization"), None);
    assert_eq!(two.header("Origin"), Some("https://app.example"));
    assert_eq!(two.all("X-Trace"), vec!["a", "b"]);
    assert_eq!(two.all("Sec-WebSocket-Protocol"), vec!["telemetry"]);

    // The dialer itself is unchanged.
    let (_three, _) = within(d.connect(&ws_url(server, "/three"))).await.unwrap();
    let three = within(requests.recv()).await.unwrap();
    assert_eq!(three.header("Sec-WebSocket-Protocol"), None);
    assert_eq!(three.header("Authorization"), None);

    // The handshake's own headers, a method other than GET and a relative
    // URI are refused before connecting.
    let reserved = http::Request::get(ws_url(server, "/")).header("Sec-WebSocket-Key", "x").body(()).unwrap();
    assert!(matches!(within(d.connect_with(reserved)).await, Err(Error::InvalidRequest(_))));
    let post = http::Request::post(ws_url(server, "/")).body(()).unwrap();
    assert!(matches!(within(d.connect_with(post)).await, Err(Error::InvalidRequest(_))));
    let relative = http::Request::get("/only-a-path").body(()).unwrap();
    assert!(matches!(within(d.connect_with(relative)).await, Err(Error::InvalidUrl(_))));
    assert!(requests.try_recv().is_err());
}

// ---------------------------------------------------------------------------
// Certificates, providers, addresses

#[tokio::test]
async fn dangerous_roots_accept_a_self_signed_server() {
    // Nothing in this process installs a default crypto provider: the
    // dialer builds its configurations with its own.
    assert!(rustls::crypto::CryptoProvider::get_default().is_none());
    let (acceptor, _cert) = tls::self_signed(&["localhost"]);
    let (server, mut seen) = spawn_tls_echo_server(acceptor).await;
    // Refused by default …
    let url = format!("wss://localhost:{}/", server.port());
    assert!(matches!(within(dialer().connect(&url)).await, Err(Error::Tls(_))));
    within(seen.recv()).await.unwrap();
    // … accepted with checks off, even for a name the certificate lacks.
    let d = dialer().tls(TlsRoots::dangerous_accept_any_certificate_for_tests());
    let (mut conn, _) = within(d.connect(&format!("wss://127.0.0.1:{}/", server.port()))).await.unwrap();
    assert_eq!(within(seen.recv()).await.unwrap().tls_error, None);
    conn.write_text("unchecked").await.unwrap();
    assert_eq!(within(conn.read_message()).await.unwrap().as_text(), Some("unchecked"));
}

#[tokio::test]
async fn wss_connections_know_their_addresses() {
    let (acceptor, cert) = tls::self_signed(&["localhost"]);
    let (server, mut seen) = spawn_tls_echo_server(acceptor).await;
    let d = dialer().tls(TlsRoots::Config(tls::trusting(&cert)));
    let (conn, _) = within(d.connect(&format!("wss://localhost:{}/", server.port()))).await.unwrap();
    let info = within(seen.recv()).await.unwrap();
    assert!(conn.with_stream(|s| s.is_tls()));
    assert_eq!(conn.remote_addr().unwrap(), server);
    assert_eq!(conn.local_addr().unwrap(), info.peer);
    let (read, _write) = conn.split();
    drop(read);
}

#[cfg(feature = "native-tls")]
#[tokio::test]
async fn native_tls_dials_wss() {
    let (acceptor, cert) = tls::self_signed(&["localhost"]);
    let (server, mut seen) = spawn_tls_echo_server(acceptor).await;
    let url = format!("wss://localhost:{}/native", server.port());
    let connector = native_tls::TlsConnector::builder()
        .add_root_certificate(native_tls::Certificate::from_der(cert.as_ref()).unwrap())
        .build()
        .unwrap();
    let d = dialer().native_tls(connector);
    let (mut conn, _) = within(d.connect(&url)).await.unwrap();
    let info = within(seen.recv()).await.unwrap();
    assert_eq!((info.tls_error, info.path.as_deref()), (None, Some("/native")));
    assert!(conn.with_stream(|s| s.is_tls()));
    assert_eq!(conn.remote_addr().unwrap(), server);
    conn.write_text("system tls").await.unwrap();
    assert_eq!(within(conn.read_message()).await.unwrap().as_text(), Some("system tls"));
    // The system's roots do not know the certificate.
    let refused = within(dialer().native_tls(native_tls::TlsConnector::new().unwrap()).connect(&url)).await;
    assert!(matches!(refused, Err(Error::Tls(_))), "{refused:?}");
}

// ---------------------------------------------------------------------------
// The blocking client shares the proxy function and the dangerous roots

#[cfg(feature = "blocking")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blocking_client_shares_the_dial_rules() {
    let (acceptor, _cert) = tls::self_signed(&["localhost"]);
    let (server, mut seen) = spawn_tls_echo_server(acceptor).await;
    let chosen = Arc::new(AtomicUsize::new(0));
    let count = chosen.clone();
    let d = silverback::Dialer::new()
        .handshake_timeout(Some(LIMIT))
        .tls(TlsRoots::dangerous_accept_any_certificate_for_tests())
        .proxy(Proxy::custom(move |_| {
            count.fetch_add(1, Ordering::SeqCst);
            Ok(None)
        }));
    let url = format!("wss://127.0.0.1:{}/blocking", server.port());
    let request = http::Request::get(url.as_str()).header("X-Call", "1").body(()).unwrap();
    let echoed = tokio::task::spawn_blocking(move || {
        let (mut conn, _) = silverback::blocking::connect_with(&d, request).unwrap();
        assert_eq!(conn.get_ref().peer_addr().unwrap(), server);
        conn.write_message(silverback::MessageType::Text, "blocking").unwrap();
        conn.read_message().unwrap().as_text().map(str::to_owned)
    })
    .await
    .unwrap();
    assert_eq!(echoed.as_deref(), Some("blocking"));
    assert_eq!(chosen.load(Ordering::SeqCst), 1);
    assert_eq!(within(seen.recv()).await.unwrap().path.as_deref(), Some("/blocking"));
}

#[cfg(feature = "blocking")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blocking_client_goes_through_https_proxies() {
    let (acceptor, cert) = tls::self_signed(&["localhost"]);
    let proxy = spawn_tls_proxy(acceptor.clone()).await;
    let (server, mut seen) = spawn_tls_echo_server(acceptor).await;
    let proxy_url = Url::parse(&format!("https://localhost:{}", proxy.addr.port())).unwrap();
    let d = silverback::Dialer::new()
        .handshake_timeout(Some(LIMIT))
        .tls(TlsRoots::Config(tls::trusting(&cert)))
        .proxy(Proxy::Url(proxy_url));
    let url = format!("wss://localhost:{}/nested", server.port());
    let proxy_addr = proxy.addr;
    let echoed = tokio::task::spawn_blocking(move || {
        let (mut conn, _) = silverback::blocking::connect(&d, &url).unwrap();
        assert!(conn.get_ref().is_tls());
        assert_eq!(conn.get_ref().peer_addr().unwrap(), proxy_addr);
        conn.write_message(silverback::MessageType::Text, "tls in tls").unwrap();
        conn.read_message().unwrap().as_text().map(str::to_owned)
    })
    .await
    .unwrap();
    assert_eq!(echoed.as_deref(), Some("tls in tls"));
    assert_eq!(proxy.handshakes.load(Ordering::SeqCst), 1);
    assert_eq!(proxy.lines.lock().unwrap()[0], format!("CONNECT localhost:{} HTTP/1.1", server.port()));
    assert_eq!(within(seen.recv()).await.unwrap().tls_error, None);
}
