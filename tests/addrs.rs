//! `local_addr` / `remote_addr` on connections over every transport: a
//! server-side TLS stream, hyper's upgraded connection and axum's (both
//! told the addresses through a `silverback::Addrs` request extension), and
//! a `wss://` client.

#![cfg(all(feature = "tls", feature = "hyper", feature = "axum"))]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use silverback::axum::WebSocketUpgrade;
use silverback::{Addrs, Dialer, TlsRoots, Upgrader};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

const WAIT: Duration = Duration::from_secs(10);

/// What the server's connection reported: its local and remote address.
type Seen = (std::io::Result<SocketAddr>, std::io::Result<SocketAddr>);

fn acceptor() -> TlsAcceptor {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.key_pair.serialize_der()));
    let cert: CertificateDer<'static> = made.cert.der().clone();
    let config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

#[tokio::test]
async fn a_server_side_tls_connection_knows_both_addresses() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = acceptor();
    let (tx, rx) = oneshot::channel::<Seen>();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await.unwrap();
        let mut conn = Upgrader::new().accept(tls).await.unwrap();
        let _ = tx.send((conn.local_addr(), conn.remote_addr()));
        let _ = conn.read_message().await;
    });
    let dialer = Dialer::new().tls(TlsRoots::dangerous_accept_any_certificate_for_tests());
    let (client, _) = tokio::time::timeout(WAIT, dialer.connect(&format!("wss://{addr}/"))).await.unwrap().unwrap();
    let (local, remote) = tokio::time::timeout(WAIT, rx).await.unwrap().unwrap();
    assert_eq!(local.unwrap(), addr);
    assert_eq!(remote.unwrap(), client.local_addr().unwrap(), "the server sees the client's address");
    assert_eq!(client.remote_addr().unwrap(), addr, "the wss:// client sees the server's address");
}

/// A hyper server whose service upgrades every request, inserting the
/// connection's addresses into the request when `tell` is set.
async fn hyper_server(tell: bool) -> (SocketAddr, oneshot::Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<Seen>();
    let tx = Arc::new(std::sync::Mutex::new(Some(tx)));
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let addrs = Addrs::of(&tcp).unwrap();
        let service = service_fn(move |mut request: Request<Incoming>| {
            let tx = tx.clone();
            async move {
                if tell {
                    request.extensions_mut().insert(addrs);
                }
                let (response, upgrading) = Upgrader::new().upgrade(request).unwrap();
                tokio::spawn(async move {
                    let mut conn = upgrading.await.unwrap();
                    if let Some(tx) = tx.lock().unwrap().take() {
                        let _ = tx.send((conn.local_addr(), conn.remote_addr()));
                    }
                    let _ = conn.read_message().await;
                });
                Ok::<Response<Full<Bytes>>, Infallible>(response)
            }
        });
        let _ = http1::Builder::new().serve_connection(TokioIo::new(tcp), service).with_upgrades().await;
    });
    (addr, rx)
}

#[tokio::test]
async fn a_hyper_upgrade_reports_the_addresses_its_request_carried() {
    let (addr, rx) = hyper_server(true).await;
    let (client, _) =
        tokio::time::timeout(WAIT, Dialer::new().connect(&format!("ws://{addr}/"))).await.unwrap().unwrap();
    let (local, remote) = tokio::time::timeout(WAIT, rx).await.unwrap().unwrap();
    assert_eq!(local.unwrap(), addr);
    assert_eq!(remote.unwrap(), client.local_addr().unwrap());
}

#[tokio::test]
async fn a_hyper_upgrade_without_addresses_says_so() {
    let (addr, rx) = hyper_server(false).await;
    let _client = tokio::time::timeout(WAIT, Dialer::new().connect(&format!("ws://{addr}/"))).await.unwrap().unwrap();
    let (local, remote) = tokio::time::timeout(WAIT, rx).await.unwrap().unwrap();
    assert_eq!(local.unwrap_err().kind(), std::io::ErrorKind::Unsupported);
    assert_eq!(remote.unwrap_err().kind(), std::io::ErrorKind::Unsupported);
}

#[tokio::test]
async fn an_axum_upgrade_reports_the_addresses_its_request_carried() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<Seen>();
    let tx = Arc::new(std::sync::Mutex::new(Some(tx)));
    let app = Router::new().route(
        "/ws",
        get(move |ws: WebSocketUpgrade| {
            let tx = tx.clone();
            async move {
                ws.on_upgrade(move |mut conn| async move {
                    if let Some(tx) = tx.lock().unwrap().take() {
                        let _ = tx.send((conn.local_addr(), conn.remote_addr()));
                    }
                    let _ = conn.read_message().await;
                })
            }
        }),
    );
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let addrs = Addrs::of(&tcp).unwrap();
        // What a middleware would do: the connection's addresses go into
        // every request it carries.
        let service = service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(addrs);
            hyper::service::Service::call(&TowerToHyperService::new(app.clone()), request)
        });
        let _ = http1::Builder::new().serve_connection(TokioIo::new(tcp), service).with_upgrades().await;
    });
    let (client, _) =
        tokio::time::timeout(WAIT, Dialer::new().connect(&format!("ws://{addr}/ws"))).await.unwrap().unwrap();
    let (local, remote) = tokio::time::timeout(WAIT, rx).await.unwrap().unwrap();
    assert_eq!(local.unwrap(), addr);
    assert_eq!(remote.unwrap(), client.local_addr().unwrap());
}
