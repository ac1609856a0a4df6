//! A real browser's WebSockets over HTTP/2 (RFC 8441).
//!
//! Headless Chromium loads a page over HTTPS from an axum server built like
//! examples/axum_echo (TLS with ALPN `h2`, `http/1.1`; HTTP/2 with
//! `SETTINGS_ENABLE_CONNECT_PROTOCOL`), with a certificate made here and
//! trusted through its key's hash. The page (tests/browser/page.html) echoes
//! text and binary messages through `/ws` (compression on) and `/ws-plain`
//! (off) and reports back with a POST to `/result`. What proves HTTP/2 is
//! the server's own view: the TLS connections chose `h2`, the requests were
//! HTTP/2, and the WebSockets were extended CONNECTs on the page's own
//! connection.
//!
//! Chromium must be installed (Debian's `chromium`; `.ci/run` installs it),
//! or named by `$CHROMIUM`: without it the test fails.

mod browser_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::Version;
use axum::response::{Html, Response};
use axum::routing::{any, get, post};
use axum::{Extension, Router};
use base64::Engine;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use silverback::axum::WebSocketUpgrade;
use silverback::{CloseCode, Error, Upgrader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// The page the browser loads.
const PAGE: &str = include_str!("browser/page.html");

/// The bound on the whole run, from starting Chromium to the last report:
/// only reached when something is broken.
const DEADLINE: Duration = Duration::from_secs(60);

/// Which TLS connection a request came on (numbered from 1 as accepted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ConnId(u64);

/// What the server saw.
#[derive(Debug)]
enum Event {
    /// A TLS connection, with the protocol chosen by ALPN.
    Connection { id: ConnId, alpn: Option<String> },
    /// A request for the page.
    Page { conn: ConnId, version: Version },
    /// A WebSocket that ended.
    WebSocket { conn: ConnId, path: String, http2: bool, compressed: bool, messages: usize, end: Error },
    /// The page's report.
    Result { conn: ConnId, version: Version, body: String },
}

type Events = mpsc::UnboundedSender<Event>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_runs_websockets_over_http2() {
    let chromium = browser_support::find_chromium();
    let (certificate, key, spki_hash) = certificate();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let addr = serve_https(certificate, key, events_tx).await;

    let mut browser = Browser::start(&chromium, &spki_hash, &format!("https://{addr}/"));
    let mut seen = Vec::new();
    let outcome = tokio::time::timeout(DEADLINE, async {
        // Until the page has reported and both WebSockets have ended.
        let done = |seen: &[Event]| {
            seen.iter().any(|e| matches!(e, Event::Result { .. }))
                && seen.iter().filter(|e| matches!(e, Event::WebSocket { .. })).count() == 2
        };
        while !done(&seen) {
            tokio::select! {
                event = events.recv() => seen.push(event.expect("the server stopped")),
                status = browser.child.wait() => return Err(format!("Chromium exited early: {status:?}")),
            }
        }
        Ok(())
    })
    .await;
    browser.stop().await;
    let log = browser.log();
    match outcome {
        Err(_) => {
            panic!("no result from the page within {DEADLINE:?}; the server saw {seen:#?}\nChromium's log:\n{log}")
        }
        Ok(Err(e)) => panic!("{e}; the server saw {seen:#?}\nChromium's log:\n{log}"),
        Ok(Ok(())) => {}
    }

    // The page's own verdict: every echo matched, each endpoint negotiated
    // compression as the page expected, both closed cleanly with 1000.
    let result = seen.iter().find_map(|e| match e {
        Event::Result { conn, version, body } => Some((*conn, *version, body.as_str())),
        _ => None,
    });
    let (result_conn, result_version, body) = result.unwrap();
    assert_eq!(body, "ok", "the page failed; the server saw {seen:#?}");

    // The page came over HTTP/2, on a connection that chose h2 by ALPN.
    let page_conn = seen
        .iter()
        .find_map(|e| match e {
            Event::Page { conn, version } => {
                assert_eq!(*version, Version::HTTP_2, "the page was not loaded over HTTP/2");
                Some(*conn)
            }
            _ => None,
        })
        .expect("the page was never requested");
    let alpn = seen.iter().find_map(|e| match e {
        Event::Connection { id, alpn } if *id == page_conn => Some(alpn.as_deref()),
        _ => None,
    });
    assert_eq!(alpn, Some(Some("h2")), "{seen:#?}");
    assert_eq!(result_version, Version::HTTP_2);
    assert_eq!(result_conn, page_conn);

    // Both WebSockets were extended CONNECTs on that same HTTP/2 connection,
    // compressed on `/ws` only.
    for (expected_path, expected_compressed) in [("/ws", true), ("/ws-plain", false)] {
        let websocket = seen.iter().find(|e| matches!(e, Event::WebSocket { path, .. } if path == expected_path));
        let Some(Event::WebSocket { conn, http2, compressed, messages, end, .. }) = websocket else {
            panic!("no WebSocket on {expected_path}: {seen:#?}");
        };
        assert!(*http2, "the WebSocket on {expected_path} did not come over HTTP/2");
        assert_eq!(*conn, page_conn, "the WebSocket on {expected_path} did not use the page's connection");
        assert_eq!(*compressed, expected_compressed, "compression on {expected_path}");
        assert_eq!(*messages, 8, "messages echoed on {expected_path}");
        assert!(end.is_close(&[CloseCode::NORMAL]), "{expected_path} ended with {end:?}");
    }
}

/// A self-signed certificate for 127.0.0.1 and localhost, its key, and the
/// base64 SHA-256 of its SubjectPublicKeyInfo, the form Chromium's
/// `--ignore-certificate-errors-spki-list` takes.
fn certificate() -> (CertificateDer<'static>, PrivateKeyDer<'static>, String) {
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let spki = ring::digest::digest(&ring::digest::SHA256, &key_pair.public_key_der());
    let hash = base64::engine::general_purpose::STANDARD.encode(spki.as_ref());
    let key = PrivateKeyDer::Pkcs8(key_pair.serialize_der().into());
    (cert.der().clone(), key, hash)
}

/// Serves the page, `/ws`, `/ws-plain` and `/result` over HTTPS on a
/// loopback port, as examples/axum_echo does with `--tls`.
async fn serve_https(certificate: CertificateDer<'static>, key: PrivateKeyDer<'static>, events: Events) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certificate], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));

    let app = Router::new()
        .route("/", get(page))
        .route("/ws", any(echo))
        .route("/ws-plain", any(echo))
        .route("/result", post(result))
        .with_state(events.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for id in 1.. {
            let (stream, _) = listener.accept().await.unwrap();
            let id = ConnId(id);
            let (acceptor, events) = (acceptor.clone(), events.clone());
            // Every request carries the id of its connection.
            let app = app.clone().layer(Extension(id));
            tokio::spawn(async move {
                let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await else {
                    return;
                };
                let alpn = tls.get_ref().1.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned());
                let _ = events.send(Event::Connection { id, alpn });
                let mut builder = auto::Builder::new(TokioExecutor::new());
                builder.http2().enable_connect_protocol();
                let service = TowerToHyperService::new(app);
                let _ = builder.serve_connection_with_upgrades(TokioIo::new(tls), service).await;
            });
        }
    });
    addr
}

async fn page(
    State(events): State<Events>,
    Extension(conn): Extension<ConnId>,
    version: Version,
) -> Html<&'static str> {
    let _ = events.send(Event::Page { conn, version });
    Html(PAGE)
}

async fn result(State(events): State<Events>, Extension(conn): Extension<ConnId>, version: Version, body: String) {
    let _ = events.send(Event::Result { conn, version, body });
}

/// The echo; compression on unless the path is `/ws-plain`.
async fn echo(
    State(events): State<Events>,
    Extension(conn): Extension<ConnId>,
    uri: axum::http::Uri,
    upgrade: WebSocketUpgrade,
) -> Response {
    let path = uri.path().to_owned();
    let http2 = upgrade.is_http2();
    let upgrader = Upgrader::new().enable_compression(path == "/ws");
    upgrade.upgrader(upgrader).on_upgrade(move |mut ws| async move {
        let compressed = ws.compression_negotiated();
        let mut messages = 0;
        let end = loop {
            let msg = match ws.read_message().await {
                Ok(msg) => msg,
                Err(e) => break e,
            };
            if let Err(e) = ws.write_message(msg.kind, &msg.data).await {
                break e;
            }
            messages += 1;
        };
        let _ = events.send(Event::WebSocket { conn, path, http2, compressed, messages, end });
    })
}

/// A headless Chromium in a process group of its own, with a profile in a
/// fresh directory; stopped (the whole group) when dropped.
struct Browser {
    child: tokio::process::Child,
    pid: u32,
    dir: PathBuf,
}

impl Browser {
    fn start(chromium: &Path, spki_hash: &str, url: &str) -> Browser {
        let dir = std::env::temp_dir().join(format!("silverback-browser-h2-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("profile")).unwrap();
        let log = std::fs::File::create(dir.join("chromium.log")).unwrap();
        let child = tokio::process::Command::new(chromium)
            .arg("--headless=new")
            .arg("--no-sandbox")
            .arg("--disable-gpu")
            .arg("--disable-dev-shm-usage")
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            // Trusts this one certificate, by its key (honoured only with
            // --user-data-dir).
            .arg(format!("--ignore-certificate-errors-spki-list={spki_hash}"))
            // Nothing but the test's server: no name resolves, and the
            // browser's own background traffic is off.
            .arg("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
            .arg("--no-proxy-server")
            .arg("--disable-background-networking")
            .arg("--disable-component-update")
            .arg("--disable-sync")
            .arg("--disable-default-apps")
            .arg("--disable-extensions")
            .arg("--no-first-run")
            .arg("--no-default-browser-check")
            .arg("--no-pings")
            .arg(url)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true)
            .spawn();
        let child = child.unwrap_or_else(|e| {
            let _ = std::fs::remove_dir_all(&dir);
            panic!("cannot start {}: {e}", chromium.display())
        });
        let pid = child.id().unwrap();
        Browser { child, pid, dir }
    }

    /// Kills Chromium and its helper processes, and waits for it.
    async fn stop(&mut self) {
        self.kill_group();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }

    /// SIGKILL to the process group that Chromium leads.
    fn kill_group(&self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.pid)])
            .stderr(Stdio::null())
            .status();
    }

    /// The end of Chromium's output.
    fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("chromium.log")).unwrap_or_default();
        let lines: Vec<_> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill_group();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
