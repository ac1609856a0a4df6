//! An axum server with a WebSocket echo, over HTTP/1.1 and HTTP/2.
//!
//! ```text
//! cargo run --release --example axum_echo --features axum -- 127.0.0.1:9004
//! cargo run --release --example axum_echo --features axum -- 127.0.0.1:9004 --tls cert.pem key.pem
//! ```
//!
//! - `/ws` echoes every text and binary message, with permessage-deflate
//!   when the client offers it.
//! - `/` serves a page that opens a WebSocket to `/ws` on the same origin and
//!   shows the echo of what is typed; a WebSocket request to `/` itself is
//!   echoed too, for clients that always dial `/` (the Autobahn TestSuite's
//!   fuzzing client drives this example in CI that way).
//!
//! Cleartext, the port speaks HTTP/1.1 and HTTP/2 with prior knowledge
//! (h2c). With `--tls CERT KEY` (PEM files) it speaks HTTPS instead and
//! offers `h2` and `http/1.1` by ALPN: a browser then loads the page over
//! HTTP/2 and opens its WebSocket on the same connection (RFC 8441), because
//! the server's SETTINGS advertise the extended CONNECT.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use silverback::axum::WebSocketUpgrade;
use silverback::{CloseCode, Upgrader};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a client may take over its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let (addr, tls_files) = parse_args()?;
    let tls = match tls_files {
        Some((cert, key)) => Some(tls_acceptor(&cert, &key)?),
        None => None,
    };

    // One upgrader for every WebSocket, shared through the router's state.
    let upgrader = Upgrader::new().enable_compression(true);
    // `any`, not `get`: over HTTP/2 a WebSocket is a CONNECT request.
    let app = Router::new().route("/", any(root)).route("/ws", any(ws)).with_state(upgrader);

    let listener = TcpListener::bind(&addr).await?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("axum_echo listening on {scheme}://{}", listener.local_addr()?);
    loop {
        let (stream, peer) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let served = match tls {
                None => serve_connection(stream, app).await,
                Some(acceptor) => match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => serve_connection(stream, app).await,
                    Ok(Err(e)) => Err(e.into()),
                    Err(_) => Err("TLS handshake timed out".into()),
                },
            };
            if let Err(e) = served {
                eprintln!("{peer}: {e}");
            }
        });
    }
}

/// Serves one connection, HTTP/1.1 or HTTP/2 as its first bytes say.
async fn serve_connection<IO>(io: IO, app: Router) -> Result<(), BoxError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441): without it HTTP/2
    // clients cannot ask for a WebSocket, and browsers fall back to a
    // separate HTTP/1.1 connection.
    builder.http2().enable_connect_protocol();
    // With upgrades, so that HTTP/1.1 connections can become WebSockets.
    builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(app)).await
}

/// `/`: the page for a browser, the echo for a WebSocket client.
async fn root(State(upgrader): State<Upgrader>, upgrade: Option<WebSocketUpgrade>) -> Response {
    match upgrade {
        Some(upgrade) => echo(upgrader, upgrade),
        None => Html(PAGE).into_response(),
    }
}

/// `/ws`: the echo. A request that is not a WebSocket one is refused by the
/// extractor with 426.
async fn ws(State(upgrader): State<Upgrader>, upgrade: WebSocketUpgrade) -> Response {
    echo(upgrader, upgrade)
}

/// Answers the handshake, then echoes every message until the connection ends.
fn echo(upgrader: Upgrader, upgrade: WebSocketUpgrade) -> Response {
    upgrade.upgrader(upgrader).on_upgrade(|mut conn| async move {
        let end = loop {
            let msg = match conn.read_message().await {
                Ok(msg) => msg,
                Err(e) => break e,
            };
            // Fed replies leave together when the next read would wait.
            if let Err(e) = conn.feed_message(msg.kind, &msg.data).await {
                break e;
            }
        };
        if !end.is_close(&[CloseCode::NORMAL, CloseCode::GOING_AWAY, CloseCode::NO_STATUS_RECEIVED]) {
            eprintln!("{end}");
        }
    })
}

/// The command line: `[ADDR] [--tls CERT KEY]`.
fn parse_args() -> Result<(String, Option<(String, String)>), BoxError> {
    let mut addr = None;
    let mut tls = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--tls" {
            match (args.next(), args.next()) {
                (Some(cert), Some(key)) => tls = Some((cert, key)),
                _ => return Err("usage: axum_echo [ADDR] [--tls CERT.pem KEY.pem]".into()),
            }
        } else if addr.is_none() && !arg.starts_with('-') {
            addr = Some(arg);
        } else {
            return Err(format!("unexpected argument {arg:?}; usage: axum_echo [ADDR] [--tls CERT.pem KEY.pem]").into());
        }
    }
    Ok((addr.unwrap_or_else(|| "127.0.0.1:9004".to_owned()), tls))
}

/// A TLS acceptor for the certificate chain and key in these PEM files that
/// offers HTTP/2 first, then HTTP/1.1.
fn tls_acceptor(cert: &str, key: &str) -> Result<TlsAcceptor, BoxError> {
    let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The page at `/`: a WebSocket to `/ws` on the page's own origin, a box to
/// type in and the echoes. Everything shown goes through `textContent`.
const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>silverback echo</title>
<style>
  body { font-family: sans-serif; max-width: 40em; margin: 2em auto; }
  #log { white-space: pre-wrap; border: 1px solid #ccc; padding: 0.5em; min-height: 10em; }
</style>
</head>
<body>
<h1>silverback echo</h1>
<form id="form">
  <input id="text" autocomplete="off" placeholder="a message" autofocus>
  <label><input id="binary" type="checkbox"> as binary</label>
  <button>Send</button>
</form>
<div id="log"></div>
<script>
  const log = (line) => { document.getElementById("log").textContent += line + "\n"; };
  const url = (location.protocol === "https:" ? "wss:" : "ws:") + "//" + location.host + "/ws";
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => log("connected to " + url + (ws.extensions ? " with " + ws.extensions : ""));
  ws.onmessage = (event) => {
    if (typeof event.data === "string") {
      log("echo: " + event.data);
    } else {
      log("echo (binary, " + event.data.byteLength + " bytes): " + new TextDecoder().decode(event.data));
    }
  };
  ws.onclose = (event) => log("closed: " + event.code + " " + event.reason);
  ws.onerror = () => log("error");
  document.getElementById("form").onsubmit = (event) => {
    event.preventDefault();
    const input = document.getElementById("text");
    if (ws.readyState !== WebSocket.OPEN) {
      log("not connected");
      return;
    }
    if (document.getElementById("binary").checked) {
      ws.send(new TextEncoder().encode(input.value));
    } else {
      ws.send(input.value);
    }
    log("sent: " + input.value);
    input.value = "";
  };
</script>
</body>
</html>
"#;
