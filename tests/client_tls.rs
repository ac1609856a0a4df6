//! `wss://` against a tokio-rustls server with a self-signed certificate made
//! by rcgen for "localhost".

#![cfg(feature = "tls")]

mod client_support;

use client_support::*;
use silverback::{CloseCode, CloseFrame, Error, TlsRoots, Upgrader};

fn tls_error<T: std::fmt::Debug>(result: silverback::Result<T>) -> String {
    match result {
        Err(Error::Tls(cause)) => cause.to_string(),
        other => panic!("expected Error::Tls, got {other:?}"),
    }
}

#[tokio::test]
async fn wss_succeeds_when_the_certificate_is_trusted() {
    let (acceptor, cert) = tls::self_signed(&["localhost"]);
    let (server, mut seen) = spawn_tls_echo_server(acceptor).await;
    let d = dialer().tls(TlsRoots::Config(tls::trusting(&cert)));
    let url = format!("wss://localhost:{}/secure?room=7", server.port());
    let (mut conn, response) = within(d.connect(&url)).await.unwrap();
    assert_eq!(response.status(), 101);
    assert!(conn.with_stream(|s| s.is_tls()));
    assert!(conn.with_stream(|s| s.as_tcp().is_none()));
    let info = within(seen.recv()).await.unwrap();
    assert_eq!(info.tls_error, None);
    assert_eq!(info.path.as_deref(), Some("/secure?room=7"));
    assert_eq!(info.host, Some(format!("localhost:{}", server.port())));

    conn.write_text("over tls").await.unwrap();
    assert_eq!(within(conn.read_message()).await.unwrap().as_text(), Some("over tls"));
    let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    conn.write_binary(&big).await.unwrap();
    assert_eq!(within(conn.read_message()).await.unwrap().data, big);
    within(conn.close(CloseFrame::new(CloseCode::NORMAL, "bye"))).await.unwrap();
}

#[tokio::test]
async fn wss_fails_with_the_default_roots() {
    let (acceptor, _cert) = tls::self_signed(&["localhost"]);
    let (server, mut seen) = spawn_tls_echo_server(acceptor).await;
    let url = format!("wss://localhost:{}/", server.port());

    let message = tls_error(within(dialer().connect(&url)).await);
    assert!(!message.is_empty());
    // The TLS library's own error is kept, typed, as the source.
    match within(dialer().connect(&url)).await {
        Err(Error::Tls(cause)) => {
            let rustls_error = cause.downcast_ref::<rustls::Error>();
            assert!(
                matches!(rustls_error, Some(rustls::Error::InvalidCertificate(_))),
                "{cause:?} should carry rustls' certificate error"
            );
        }
        other => panic!("expected Error::Tls, got {other:?}"),
    }
    let info = within(seen.recv()).await.unwrap();
    assert!(info.tls_error.is_some(), "the server got past TLS: {info:?}");

    let message = tls_error(within(dialer().tls(TlsRoots::WebPki).connect(&url)).await);
    assert!(!message.is_empty());
}

#[tokio::test]
async fn wss_fails_with_the_platform_roots() {
    let (acceptor, _cert) = tls::self_signed(&["localhost"]);
    let (server, _seen) = spawn_tls_echo_server(acceptor).await;
    let url = format!("wss://localhost:{}/", server.port());
    // Either no platform store or a store without this certificate: a TLS error.
    tls_error(within(dialer().tls(TlsRoots::Platform).connect(&url)).await);
}

#[tokio::test]
async fn wss_checks_the_server_name() {
    let (acceptor, cert) = tls::self_signed(&["localhost"]);
    let (server, _seen) = spawn_tls_echo_server(acceptor).await;
    let d = dialer().tls(TlsRoots::Config(tls::trusting(&cert)));
    // The certificate names localhost only, not 127.0.0.1.
    tls_error(within(d.connect(&format!("wss://127.0.0.1:{}/", server.port()))).await);
}

#[tokio::test]
async fn wss_to_a_plain_server_is_a_tls_error() {
    let (_acceptor, cert) = tls::self_signed(&["localhost"]);
    let (server, _peers) = spawn_echo_server_multi(Upgrader::new()).await;
    let d = dialer().tls(TlsRoots::Config(tls::trusting(&cert)));
    let result = within(d.connect(&format!("wss://localhost:{}/", server.port()))).await;
    assert!(matches!(&result, Err(Error::Tls(_))), "{result:?}");
}

#[tokio::test]
async fn ws_to_a_tls_server_fails_cleanly() {
    let (acceptor, _cert) = tls::self_signed(&["localhost"]);
    let (server, _seen) = spawn_tls_echo_server(acceptor).await;
    let result = within(dialer().connect(&format!("ws://localhost:{}/", server.port()))).await;
    assert!(matches!(&result, Err(Error::InvalidResponse(_)) | Err(Error::Io(_))), "{result:?}");
}

#[tokio::test]
async fn wss_default_port_is_443() {
    let (acceptor, cert) = tls::self_signed(&["localhost", "secure.test"]);
    let (server, mut seen) = spawn_tls_echo_server(acceptor).await;
    for (url, host, host_header) in
        [("wss://localhost/", "localhost", "localhost"), ("wss://secure.test:443/x", "secure.test", "secure.test")]
    {
        let redirect = Redirect::default();
        let d = redirect.install(dialer().tls(TlsRoots::Config(tls::trusting(&cert))), server);
        let (mut conn, _) = within(d.connect(url)).await.unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(redirect.asked(), vec![(host.to_owned(), 443)], "{url}");
        assert!(conn.with_stream(|s| s.is_tls()));
        let info = within(seen.recv()).await.unwrap();
        assert_eq!(info.host.as_deref(), Some(host_header), "{url}");
        conn.write_text("x").await.unwrap();
        assert_eq!(within(conn.read_message()).await.unwrap().as_text(), Some("x"));
    }
}

#[tokio::test]
async fn stalled_tls_handshake_hits_the_handshake_timeout() {
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let d = dialer().handshake_timeout(Some(std::time::Duration::from_millis(300)));
    let started = std::time::Instant::now();
    let result = within(d.connect(&format!("wss://localhost:{}/", addr.port()))).await;
    assert!(matches!(result, Err(Error::Timeout)), "{result:?}");
    assert!(started.elapsed() < std::time::Duration::from_millis(1500));
}
