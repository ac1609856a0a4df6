//! Upgrades served by a hyper 1.x HTTP/1 server.

#![cfg(feature = "hyper")]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use silverback::{CloseCode, Error, Upgrader};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// What the server saw: the error that ended each echo connection, or the
/// error of each refused upgrade.
type Events = mpsc::UnboundedReceiver<Result<Error, Error>>;

/// A hyper server whose service upgrades every request with `upgrader` and
/// echoes on the connection; plain (non-upgrade) requests get "not websocket".
async fn hyper_server(upgrader: Upgrader) -> (SocketAddr, Events) {
    let (listener, addr) = listen().await;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let upgrader = upgrader.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let upgrader = upgrader.clone();
                    let tx = tx.clone();
                    async move { Ok::<_, Infallible>(serve(&upgrader, req, tx)) }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).with_upgrades().await;
            });
        }
    });
    (addr, rx)
}

fn serve(
    upgrader: &Upgrader,
    req: Request<Incoming>,
    tx: mpsc::UnboundedSender<Result<Error, Error>>,
) -> Response<Full<Bytes>> {
    if req.uri().path() == "/plain" {
        assert!(!silverback::is_websocket_upgrade(&req));
        return Response::new(Full::new(Bytes::from_static(b"not websocket")));
    }
    match upgrader.upgrade(req) {
        Ok((response, upgrading)) => {
            tokio::spawn(async move {
                let mut conn = match upgrading.await {
                    Ok(conn) => conn,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let end = loop {
                    match conn.read_message().await {
                        Ok(msg) => {
                            if let Err(e) = conn.write_message(msg.kind, &msg.data).await {
                                break e;
                            }
                        }
                        Err(e) => break e,
                    }
                };
                let _ = tx.send(Ok(end));
            });
            response
        }
        Err(rejected) => {
            let _ = tx.send(Err(rejected.error));
            rejected.response
        }
    }
}

#[tokio::test]
async fn hyper_upgrade_echoes_with_tungstenite() {
    let (addr, mut events) = hyper_server(Upgrader::new().subprotocols(["chat"])).await;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!("ws://{addr}/ws"))
            .unwrap();
    request.headers_mut().insert("sec-websocket-protocol", "chat".parse().unwrap());
    let (mut ws, response) = within(tokio_tungstenite::client_async(request, tcp)).await.unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers().get("sec-websocket-protocol").unwrap(), "chat");
    for msg in [
        WsMessage::text("through hyper"),
        WsMessage::binary(pattern(200_000)),
        WsMessage::text(""),
        WsMessage::text(text_of(70_000)),
    ] {
        within(ws.send(msg.clone())).await.unwrap();
        assert_eq!(within(ws.next()).await.unwrap().unwrap(), msg);
    }
    within(ws.send(WsMessage::Ping(Bytes::from_static(b"hp")))).await.unwrap();
    assert_eq!(within(ws.next()).await.unwrap().unwrap(), WsMessage::Pong(Bytes::from_static(b"hp")));
    within(ws.close(None)).await.unwrap();
    let end = within(events.recv()).await.unwrap().expect("the upgrade should have succeeded");
    assert!(end.is_close(&[CloseCode::NO_STATUS_RECEIVED]), "{end:?}");
}

#[tokio::test]
async fn hyper_upgrade_keeps_bytes_sent_with_the_request() {
    let (addr, mut events) = hyper_server(Upgrader::new()).await;
    let mut raw = request(addr, "").into_bytes();
    raw.extend(masked(true, TEXT, b"early through hyper"));
    let (mut client, response) = RawClient::handshake(addr, &raw).await;
    assert_eq!(response.header("upgrade").map(str::to_ascii_lowercase).as_deref(), Some("websocket"));
    assert_eq!(client.message().await, (TEXT, b"early through hyper".to_vec(), 1));
    client.send_close(1000, "").await;
    assert_eq!(client.read_close().await, Some((1000, String::new())));
    client.expect_eof().await;
    let end = within(events.recv()).await.unwrap().unwrap();
    assert!(end.is_close(&[CloseCode::NORMAL]), "{end:?}");
}

#[tokio::test]
async fn rejected_hyper_upgrade_returns_the_status() {
    let (addr, mut events) = hyper_server(Upgrader::new()).await;
    // Cross-origin: 403.
    let response =
        http_exchange(addr, request(addr, "Origin: http://evil.example\r\nConnection: close\r\n").as_bytes()).await;
    assert_eq!(response.status, 403, "{response:?}");
    assert_eq!(response.header("sec-websocket-version"), Some("13"));
    let error = within(events.recv()).await.unwrap().unwrap_err();
    assert!(matches!(error, Error::RequestRefused { status, .. } if status == 403), "{error:?}");

    // Wrong version: 426.
    let headers: Vec<_> = good_headers(addr)
        .into_iter()
        .map(|(n, v)| if n == "Sec-WebSocket-Version" { (n, "8".to_string()) } else { (n, v) })
        .chain([("Connection".to_string(), "close".to_string())])
        .collect();
    let response = http_exchange(addr, request_with("GET", &headers).as_bytes()).await;
    assert_eq!(response.status, 426, "{response:?}");
    assert_eq!(response.header("sec-websocket-version"), Some("13"));
    let error = within(events.recv()).await.unwrap().unwrap_err();
    assert!(matches!(error, Error::RequestRefused { status, .. } if status == 426), "{error:?}");

    // tungstenite sees the refusal as an HTTP error with the status.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!("ws://{addr}/ws"))
            .unwrap();
    request.headers_mut().insert("origin", "http://evil.example".parse().unwrap());
    match within(tokio_tungstenite::client_async(request, tcp)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected an HTTP error, got {:?}", other.map(|(_, r)| r)),
    }
}

#[tokio::test]
async fn plain_requests_pass_through() {
    let (addr, _events) = hyper_server(Upgrader::new()).await;
    let raw = format!("GET /plain HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let response = http_exchange(addr, raw.as_bytes()).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"not websocket");
}
