//! The proxy taken from the environment (`Proxy::FromEnvironment`, the
//! proxy of `Dialer::from_env`), and `Dialer::new`, which ignores it.
//!
//! Environment variables are global to the process, so this binary has a
//! single test that sets them step by step. Loopback targets bypass the
//! environment's proxy by design, so the targets are names (`example.test`)
//! and a connect function, which records the host and port it is asked for,
//! stands in for DNS: the proxy's name leads to a local fake proxy, the
//! target's name to a local WebSocket server.

mod client_support;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use client_support::*;
use silverback::dial::BoxedStream;
use silverback::{Dialer, Proxy, Upgrader};
use tokio::net::TcpStream;

const VARS: [&str; 8] =
    ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"];

fn set_env(pairs: &[(&str, &str)]) {
    for var in VARS {
        std::env::remove_var(var);
    }
    for (name, value) in pairs {
        std::env::set_var(name, value);
    }
}

type Asked = Arc<Mutex<Vec<(String, u16)>>>;

/// `base` with a connect function that resolves `names` to local addresses
/// (anything else fails) and records each request.
fn resolving(base: Dialer, names: Vec<(&'static str, SocketAddr)>) -> (Dialer, Asked) {
    let asked: Asked = Arc::default();
    let record = asked.clone();
    let d = base.handshake_timeout(Some(LIMIT)).connect_fn(move |host, port| {
        record.lock().unwrap().push((host.clone(), port));
        let found = names.iter().find(|(name, _)| *name == host).map(|(_, addr)| *addr);
        async move {
            let addr = found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no such host {host}")))?;
            Ok(Box::new(TcpStream::connect(addr).await?) as BoxedStream)
        }
    });
    (d, asked)
}

fn take(asked: &Asked) -> Vec<(String, u16)> {
    std::mem::take(&mut *asked.lock().unwrap())
}

fn pair(host: &str, port: u16) -> Vec<(String, u16)> {
    vec![(host.to_owned(), port)]
}

#[tokio::test]
async fn proxy_from_environment_and_no_proxy() {
    let (server, mut peers) = spawn_echo_server_multi(Upgrader::new()).await;
    let fake = spawn_fake_proxy(FakeProxy::Tunnel {
        reply: b"HTTP/1.1 200 Connection established\r\n\r\n".to_vec(),
        upstream: Some(server),
    })
    .await;
    let names = vec![
        ("proxy.invalid", fake.addr),
        ("lower.invalid", fake.addr),
        ("example.test", server),
        ("127.0.0.1", server),
    ];
    let (d, asked) = resolving(Dialer::from_env(), names.clone());
    let (plain, plain_asked) = resolving(Dialer::new(), names);

    // HTTP_PROXY is used for ws://: the connect function is asked for the proxy.
    set_env(&[("HTTP_PROXY", "http://proxy.invalid:3128")]);
    let (mut conn, _) = within(d.connect("ws://example.test/env")).await.unwrap();
    assert_eq!(take(&asked), pair("proxy.invalid", 3128));
    assert_eq!(fake.heads()[0].request_line, "CONNECT example.test:80 HTTP/1.1");
    within(peers.recv()).await.unwrap();
    conn.write_text("proxied").await.unwrap();
    assert_eq!(within(conn.read_message()).await.unwrap().as_text(), Some("proxied"));
    drop(conn);

    // Dialer::new (and Dialer::default) ignore the environment: direct.
    let (_conn, _) = within(plain.connect("ws://example.test/env")).await.unwrap();
    assert_eq!(take(&plain_asked), pair("example.test", 80));
    assert_eq!(fake.connections(), 1, "Dialer::new used the environment's proxy");
    within(peers.recv()).await.unwrap();
    let (_conn, _) =
        within(resolving(Dialer::default(), vec![("example.test", server)]).0.connect("ws://example.test/"))
            .await
            .unwrap();
    assert_eq!(fake.connections(), 1, "Dialer::default used the environment's proxy");
    within(peers.recv()).await.unwrap();

    // NO_PROXY naming the host: straight to example.test:80, the proxy is not used.
    set_env(&[("HTTP_PROXY", "http://proxy.invalid:3128"), ("NO_PROXY", "example.test")]);
    let (_conn, _) = within(d.connect("ws://example.test/direct")).await.unwrap();
    assert_eq!(take(&asked), pair("example.test", 80));
    assert_eq!(fake.connections(), 1, "the proxy was used despite NO_PROXY");

    // A domain suffix in NO_PROXY, in lower case, among other entries.
    set_env(&[("HTTP_PROXY", "http://proxy.invalid:3128"), ("no_proxy", "other.example, .test")]);
    let (_conn, _) = within(d.connect("ws://example.test/")).await.unwrap();
    assert_eq!(take(&asked), pair("example.test", 80));

    // NO_PROXY for another host does not apply.
    set_env(&[("HTTP_PROXY", "http://proxy.invalid:3128"), ("NO_PROXY", "example.org,test.example")]);
    let (_conn, _) = within(d.connect("ws://example.test/")).await.unwrap();
    assert_eq!(take(&asked), pair("proxy.invalid", 3128));
    assert_eq!(fake.connections(), 2);

    // Lower-case http_proxy, and a bare host:port meaning an HTTP proxy.
    set_env(&[("http_proxy", "lower.invalid:8080")]);
    let (_conn, _) = within(d.connect("ws://example.test/")).await.unwrap();
    assert_eq!(take(&asked), pair("lower.invalid", 8080));
    assert_eq!(fake.connections(), 3);

    // ALL_PROXY when HTTP_PROXY is not set.
    set_env(&[("ALL_PROXY", "http://proxy.invalid:1111")]);
    let (_conn, _) = within(d.connect("ws://example.test/")).await.unwrap();
    assert_eq!(take(&asked), pair("proxy.invalid", 1111));
    assert_eq!(fake.connections(), 4);

    // Loopback targets are never proxied.
    set_env(&[("HTTP_PROXY", "http://proxy.invalid:3128")]);
    let (_conn, _) = within(d.connect(&format!("ws://127.0.0.1:{}/", server.port()))).await.unwrap();
    assert_eq!(take(&asked), pair("127.0.0.1", server.port()));

    // wss:// reads HTTPS_PROXY, not HTTP_PROXY. (The connect function refuses
    // these names: only the address asked for matters here.)
    set_env(&[("HTTP_PROXY", "http://proxy.invalid:3128")]);
    let _ = within(d.connect("wss://secure.test/")).await;
    assert_eq!(take(&asked), pair("secure.test", 443));
    set_env(&[("HTTP_PROXY", "http://proxy.invalid:3128"), ("HTTPS_PROXY", "http://secure-proxy.invalid:8443")]);
    let _ = within(d.connect("wss://secure.test/")).await;
    assert_eq!(take(&asked), pair("secure-proxy.invalid", 8443));

    // An explicit Proxy::None ignores the environment.
    set_env(&[("HTTP_PROXY", "http://proxy.invalid:3128")]);
    let (_conn, _) = within(d.clone().proxy(Proxy::None).connect("ws://example.test/")).await.unwrap();
    assert_eq!(take(&asked), pair("example.test", 80));
    assert_eq!(fake.connections(), 4);

    set_env(&[]);
}
