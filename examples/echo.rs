//! gorilla/websocket's echo server: a page with Open, Send and Close buttons,
//! and a WebSocket that sends every message back.
//!
//! ```text
//! cargo run --example echo                      # http://127.0.0.1:8080/
//! cargo run --example echo -- 127.0.0.1:0       # any free port; the URL is printed
//! cargo run --example client -- ws://127.0.0.1:8080/echo
//! ```
//!
//! It shows how to serve an ordinary page and a WebSocket from one hyper
//! server: `/` answers with HTML, `/echo` hands the request to
//! [`Upgrader::upgrade`], which returns the `101` response for hyper to send
//! and a future of the connection. The connection echoes each message with
//! its type (text or binary), with permessage-deflate when the browser offers
//! it, until the peer closes.
//!
//! The page's output area gets one line per event: `OPEN`, `SEND: ...`,
//! `RESPONSE: ...`, `CLOSE` (and `ERROR`). `examples/client.rs` is the
//! command-line client for the same endpoint.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use silverback::{CloseCode, Conn, UpgradedStream, Upgrader};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    println!("echo: open http://{}/", listener.local_addr()?);

    let upgrader = Upgrader::new().enable_compression(true);
    loop {
        let (stream, peer) = listener.accept().await?;
        let upgrader = upgrader.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let upgrader = upgrader.clone();
                async move { Ok::<_, Infallible>(route(&upgrader, request)) }
            });
            // `with_upgrades`: without it hyper never hands over the connection.
            let served = http1::Builder::new().serve_connection(TokioIo::new(stream), service).with_upgrades().await;
            if let Err(e) = served {
                eprintln!("{peer}: {e}");
            }
        });
    }
}

/// `/` is the page, `/echo` the WebSocket.
fn route(upgrader: &Upgrader, request: Request<Incoming>) -> Response<Full<Bytes>> {
    match request.uri().path() {
        "/" if request.method() == Method::GET => html(PAGE),
        "/" => status(StatusCode::METHOD_NOT_ALLOWED),
        "/echo" => match upgrader.upgrade(request) {
            Ok((response, upgrading)) => {
                // The connection exists once hyper has sent the response.
                tokio::spawn(async move {
                    match upgrading.await {
                        Ok(conn) => echo(conn).await,
                        Err(e) => eprintln!("upgrade: {e}"),
                    }
                });
                response
            }
            // Not a valid WebSocket request (a plain GET, a foreign origin...).
            Err(refused) => refused.response,
        },
        _ => status(StatusCode::NOT_FOUND),
    }
}

/// Sends every message back until the connection ends.
async fn echo(mut conn: Conn<UpgradedStream>) {
    let end = loop {
        let msg = match conn.read_message().await {
            Ok(msg) => msg,
            Err(e) => break e,
        };
        eprintln!("recv: {}", String::from_utf8_lossy(&msg.data));
        if let Err(e) = conn.write_message(msg.kind, &msg.data).await {
            break e;
        }
    };
    // A browser closing its tab (1001) or the page calling `close()` (1005,
    // no code) is the normal end; anything else is worth a line.
    if !end.is_close(&[CloseCode::NORMAL, CloseCode::GOING_AWAY, CloseCode::NO_STATUS_RECEIVED]) {
        eprintln!("echo: {end}");
    }
}

fn html(page: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(page.as_bytes())));
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/html; charset=utf-8"));
    response
}

fn status(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(status.to_string())));
    *response.status_mut() = status;
    response
}

/// gorilla's page, with the WebSocket URL taken from the page's own address.
/// Everything shown goes through `textContent`.
const PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>silverback echo</title>
<script>
window.addEventListener("load", function () {
    const output = document.getElementById("output");
    const input = document.getElementById("input");
    const url = (location.protocol === "https:" ? "wss:" : "ws:") + "//" + location.host + "/echo";
    let ws = null;
    const print = function (message) {
        const line = document.createElement("div");
        line.textContent = message;
        output.appendChild(line);
        output.scroll(0, output.scrollHeight);
    };
    document.getElementById("open").onclick = function () {
        if (ws) {
            return false;
        }
        ws = new WebSocket(url);
        ws.onopen = function () { print("OPEN"); };
        ws.onclose = function () { print("CLOSE"); ws = null; };
        ws.onmessage = function (event) { print("RESPONSE: " + event.data); };
        ws.onerror = function () { print("ERROR"); };
        return false;
    };
    document.getElementById("send").onclick = function () {
        if (!ws) {
            return false;
        }
        print("SEND: " + input.value);
        ws.send(input.value);
        return false;
    };
    document.getElementById("close").onclick = function () {
        if (!ws) {
            return false;
        }
        ws.close();
        return false;
    };
});
</script>
</head>
<body>
<table>
<tr><td valign="top" width="50%">
<p>Click "Open" to create a connection to the server, "Send" to send a message to the server
and "Close" to close the connection. You can change the message and send multiple times.</p>
<form>
<button id="open">Open</button>
<button id="close">Close</button>
<p><input id="input" type="text" value="Hello world!">
<button id="send">Send</button></p>
</form>
</td><td valign="top" width="50%">
<div id="output" style="max-height: 70vh; overflow-y: scroll;"></div>
</td></tr></table>
</body>
</html>
"#;
