//! Caller-supplied strings in the opening handshake: none of them may add a
//! header, split a line or reach the wire in a form the peer would read
//! differently.
//!
//! Client side: each input is dialed against a loopback listener that
//! records what arrives. An input that could break the request must fail the
//! dial with [`Error::InvalidRequest`] before any connection is made; one that
//! is made safe by construction (percent-encoding, `HeaderValue`, base64) is
//! shown to arrive on its own line and nowhere else.
//!
//! Server side: the subprotocol in the `101` response is always a token that
//! the client asked for, and headers given to the response stay on their
//! lines and cannot contradict the handshake.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use common::{http_exchange, listen, request, within, RawClient};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use silverback::{CookieJar, Dialer, Error, Proxy, Upgrader};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use url::Url;

// ---------------------------------------------------------------------------
// Client side

/// A loopback listener that records every connection made to it and the
/// bytes each one sent up to the end of its head (or until it stops sending),
/// then hangs up without answering.
struct Capture {
    addr: SocketAddr,
    connections: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Capture {
    async fn start() -> Capture {
        let (listener, addr) = listen().await;
        let connections = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(Self::serve(listener, connections.clone()));
        Capture { addr, connections }
    }

    async fn serve(listener: TcpListener, connections: Arc<Mutex<Vec<Vec<u8>>>>) {
        while let Ok((mut stream, _)) = listener.accept().await {
            let index = {
                let mut all = connections.lock().unwrap();
                all.push(Vec::new());
                all.len() - 1
            };
            let connections = connections.clone();
            tokio::spawn(async move {
                let mut chunk = [0u8; 4096];
                loop {
                    let read = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut chunk)).await;
                    let n = match read {
                        Ok(Ok(n)) if n > 0 => n,
                        _ => break,
                    };
                    let mut all = connections.lock().unwrap();
                    all[index].extend_from_slice(&chunk[..n]);
                    if all[index].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            });
        }
    }

    fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// What each connection sent, once stragglers have had a moment.
    async fn sent(&self) -> Vec<String> {
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.connections.lock().unwrap().iter().map(|bytes| String::from_utf8_lossy(bytes).into_owned()).collect()
    }
}

/// A dialer that never consults the environment.
fn dialer() -> Dialer {
    Dialer::new().proxy(Proxy::None).handshake_timeout(Some(Duration::from_secs(3)))
}

/// Dials the capture with `dialer` and checks that no connection was made and
/// the dial failed with [`Error::InvalidRequest`] whose message has `says`.
async fn refused_before_connecting(what: &str, dialer: Dialer, says: &str) {
    let capture = Capture::start().await;
    let result = within(dialer.connect(&capture.url("/ws"))).await;
    let sent = capture.sent().await;
    assert!(sent.is_empty(), "{what}: a connection was made, and this was sent on it:\n{sent:#?}");
    match result {
        Err(Error::InvalidRequest(why)) => assert!(why.contains(says), "{what}: {why:?} does not mention {says:?}"),
        other => panic!("{what}: expected Error::InvalidRequest, got {other:?}"),
    }
}

/// Dials the capture (which never answers) and returns the one request head sent.
async fn request_sent(dialer: Dialer, url: &str) -> String {
    let capture = Capture::start().await;
    let url = url.replace("CAPTURE", &capture.addr.to_string());
    let result = within(dialer.connect(&url)).await;
    assert!(result.is_err(), "{url}: the capture never answers, yet the dial succeeded");
    let sent = capture.sent().await;
    assert_eq!(sent.len(), 1, "{url}: {sent:#?}");
    sent.into_iter().next().unwrap()
}

/// The header lines of a request head, as (name, value), after checking
/// that every line of the head is well formed.
fn header_lines(head: &str) -> Vec<(String, String)> {
    let body_start = head.find("\r\n\r\n").expect("no end of head") + 4;
    assert_eq!(body_start, head.len(), "bytes after the head: {head:?}");
    let lines: Vec<&str> = head[..body_start - 4].split("\r\n").collect();
    for line in &lines {
        assert!(!line.contains(['\r', '\n']), "a bare CR or LF in {line:?}");
    }
    lines[1..]
        .iter()
        .map(|line| {
            let (name, value) = line.split_once(": ").unwrap_or_else(|| panic!("not a header line: {line:?}"));
            (name.to_ascii_lowercase(), value.to_owned())
        })
        .collect()
}

/// The header names of a request head, in order.
fn header_names(head: &str) -> Vec<String> {
    header_lines(head).into_iter().map(|(name, _)| name).collect()
}

#[tokio::test]
async fn a_subprotocol_with_a_line_break_cannot_add_a_header() {
    refused_before_connecting(
        "subprotocol \"chat\\r\\nX-Injected: 1\"",
        dialer().subprotocols(["chat\r\nX-Injected: 1"]),
        "invalid subprotocol name \"chat\\r\\nX-Injected: 1\"",
    )
    .await;
}

#[tokio::test]
async fn subprotocol_names_must_be_tokens_offered_once() {
    for name in ["", "a b", "a,b", "\"chat\"", "chat;v=1", "caf\u{e9}", "chat\0", "chat\t", "a/b", "x\u{7f}"] {
        let what = format!("subprotocol {name:?}");
        let says = format!("invalid subprotocol name {name:?}");
        refused_before_connecting(&what, dialer().subprotocols(["v1", name]), &says).await;
    }
    refused_before_connecting(
        "a subprotocol offered twice",
        dialer().subprotocols(["chat", "v2", "chat"]),
        "\"chat\" is offered twice",
    )
    .await;
}

#[tokio::test]
async fn token_subprotocols_are_sent_as_given() {
    let every_tchar = "!#$%&'*+-.^_`|~09AZaz";
    let head = request_sent(dialer().subprotocols(["chat", every_tchar]), "ws://CAPTURE/").await;
    let protocols: Vec<_> =
        header_lines(&head).into_iter().filter(|(name, _)| name == "sec-websocket-protocol").collect();
    assert_eq!(protocols, vec![("sec-websocket-protocol".to_owned(), format!("chat, {every_tchar}"))], "{head}");
}

#[tokio::test]
async fn a_host_override_must_be_a_host() {
    let values: [&[u8]; 9] = [
        b"evil.example X-Injected: 1",
        b"user@evil.example",
        b"evil.example/path",
        b"evil.example:port",
        b"evil.example:",
        b"evil.example\tx",
        b"",
        b"h\xffst",
        b"[::1",
    ];
    for value in values {
        let what = format!("Host {:?}", String::from_utf8_lossy(value));
        let dialer = dialer().header(header::HOST, HeaderValue::from_bytes(value).unwrap());
        refused_before_connecting(&what, dialer, "invalid Host").await;
    }
    let two = dialer()
        .header(header::HOST, HeaderValue::from_static("a.example"))
        .header(header::HOST, HeaderValue::from_static("b.example"));
    refused_before_connecting("two Host headers", two, "more than one Host header").await;
}

#[tokio::test]
async fn a_valid_host_override_replaces_the_urls_host() {
    for host in ["virtual.example", "virtual.example:8080", "[::1]:9001", "10.0.0.1"] {
        let head = request_sent(dialer().header(header::HOST, HeaderValue::from_static(host)), "ws://CAPTURE/").await;
        let hosts: Vec<_> = header_lines(&head).into_iter().filter(|(name, _)| name == "host").collect();
        assert_eq!(hosts, vec![("host".to_owned(), host.to_owned())], "{head}");
    }
}

#[tokio::test]
async fn header_values_cannot_hold_line_breaks_and_are_written_on_their_line() {
    // The type of `Dialer::header`'s value refuses them: no such header can
    // be handed to the dialer.
    for bad in ["a\r\nX-Injected: 1", "a\rb", "a\nb", "a\0b", "a\u{7f}b"] {
        assert!(HeaderValue::from_str(bad).is_err(), "{bad:?}");
        assert!(HeaderValue::from_bytes(bad.as_bytes()).is_err(), "{bad:?}");
    }
    assert!(HeaderName::from_bytes(b"x-a\r\nx-injected").is_err());
    // What it does allow (tab, obs-text) arrives on one line, byte for byte.
    let dialer = dialer()
        .header(HeaderName::from_static("x-tab"), HeaderValue::from_static("a\tb"))
        .header(HeaderName::from_static("x-obs"), HeaderValue::from_bytes(b"caf\xe9").unwrap());
    let capture = Capture::start().await;
    let _ = within(dialer.connect(&capture.url("/"))).await;
    let raw = capture.connections.lock().unwrap().clone();
    assert_eq!(raw.len(), 1);
    let has = |line: &[u8]| raw[0].windows(line.len()).any(|w| w == line);
    assert!(has(b"\r\nx-tab: a\tb\r\n"), "{:?}", String::from_utf8_lossy(&raw[0]));
    assert!(has(b"\r\nx-obs: caf\xe9\r\n"), "{:?}", String::from_utf8_lossy(&raw[0]));
}

/// A cookie jar that always answers with `value`.
struct FixedJar(&'static str);

impl CookieJar for FixedJar {
    fn set_cookies(&self, _url: &Url, _set_cookie: &[&str]) {}
    fn cookies(&self, _url: &Url) -> Option<String> {
        Some(self.0.to_owned())
    }
}

#[tokio::test]
async fn a_cookie_value_with_a_line_break_is_refused_not_dropped() {
    for value in ["session=secret\r\nX-Injected: 1", "session=secret\nX-Injected: 1", "session=se\0cret"] {
        let capture = Capture::start().await;
        let dialer = dialer().cookie_jar(Arc::new(FixedJar(value)));
        let result = within(dialer.connect(&capture.url("/"))).await;
        let sent = capture.sent().await;
        assert!(sent.is_empty(), "{value:?}: a connection was made, and this was sent on it:\n{sent:#?}");
        match result {
            Err(Error::InvalidRequest(why)) => {
                assert!(why.contains("cookie jar"), "{why}");
                assert!(!why.contains("secret"), "the error repeats the cookie: {why}");
            }
            other => panic!("{value:?}: expected Error::InvalidRequest, got {other:?}"),
        }
    }
    // A good value is sent as one Cookie header.
    let head = request_sent(dialer().cookie_jar(Arc::new(FixedJar("a=1; b=2"))), "ws://CAPTURE/").await;
    let cookies: Vec<_> = header_lines(&head).into_iter().filter(|(name, _)| name == "cookie").collect();
    assert_eq!(cookies, vec![("cookie".to_owned(), "a=1; b=2".to_owned())], "{head}");
}

#[tokio::test]
async fn url_paths_and_queries_reach_the_request_line_encoded() {
    let cases = [
        ("/a b?c d", Some("/a%20b?c%20d")),
        ("/a\u{7f}b", Some("/a%7Fb")),
        ("/caf\u{e9}?q=\u{e9}", Some("/caf%C3%A9?q=%C3%A9")),
        ("/?q=\"<>", Some("/?q=%22%3C%3E")),
        // The URL parser drops tabs and line breaks: these cannot split the line either.
        ("/a\r\nX-Injected: 1", None),
        ("/a\tb?x\r\ny", None),
        ("/%0D%0AX-Injected:%201", Some("/%0D%0AX-Injected:%201")),
    ];
    for (path, expected) in cases {
        let head = request_sent(dialer(), &format!("ws://CAPTURE{path}")).await;
        let line = head.split("\r\n").next().unwrap();
        let target = line.strip_prefix("GET ").and_then(|rest| rest.strip_suffix(" HTTP/1.1"));
        let target = target.unwrap_or_else(|| panic!("{path:?}: malformed request line {line:?}"));
        assert!(target.starts_with('/') && target.bytes().all(|b| b.is_ascii_graphic()), "{path:?}: {line:?}");
        if let Some(expected) = expected {
            assert_eq!(target, expected, "{path:?}");
        }
        assert_eq!(
            header_names(&head),
            ["host", "upgrade", "connection", "sec-websocket-key", "sec-websocket-version"],
            "{path:?}: {head}"
        );
    }
}

#[tokio::test]
async fn a_url_host_that_could_break_a_line_never_parses() {
    let capture = Capture::start().await;
    let port = capture.addr.port();
    for host in ["a%0D%0AX-Injected:%201", "a%20b", "a%00b", "a%0Ab"] {
        let result = within(dialer().connect(&format!("ws://{host}:{port}/"))).await;
        assert!(matches!(result, Err(Error::InvalidUrl(_))), "{host}: {result:?}");
    }
    assert!(capture.sent().await.is_empty());
}

#[tokio::test]
async fn proxy_credentials_and_target_stay_on_their_lines() {
    let proxy = Capture::start().await;
    let proxy_url = format!("http://us%0D%0Aer:p%0D%0AX-Injected:%201@{}", proxy.addr);
    let dialer = dialer().proxy(Proxy::Url(Url::parse(&proxy_url).unwrap()));
    let result = within(dialer.connect("ws://target.example:8080/ws")).await;
    assert!(matches!(result, Err(Error::Proxy(_))), "the capture never answers: {result:?}");
    let sent = proxy.sent().await;
    assert_eq!(sent.len(), 1, "{sent:#?}");
    let head = &sent[0];
    assert!(head.starts_with("CONNECT target.example:8080 HTTP/1.1\r\n"), "{head:?}");
    let lines = header_lines(head);
    let names: Vec<&str> = lines.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["host", "proxy-authorization"], "{head:?}");
    assert_eq!(lines[0].1, "target.example:8080");
    let credentials = lines[1].1.strip_prefix("Basic ").expect("Basic credentials");
    assert_eq!(BASE64.decode(credentials).unwrap(), b"us\r\ner:p\r\nX-Injected: 1");
}

// ---------------------------------------------------------------------------
// Server side

/// Serves one handshake with `upgrader` and `callback`, answering `extra`
/// request header lines; returns the raw response head and the outcome.
async fn serve_once<F>(upgrader: Upgrader, callback: F, extra: &str) -> (String, Result<Option<String>, Error>)
where
    F: FnOnce(&http::Request<()>) -> Result<HeaderMap, silverback::Rejection> + Send + 'static,
{
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        upgrader.accept_with(stream, callback).await.map(|conn| conn.subprotocol().map(str::to_owned))
    });
    let response = raw_exchange(addr, request(addr, extra).as_bytes()).await;
    (response, within(server).await.unwrap())
}

/// Sends `raw` and returns the response head as text.
async fn raw_exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut stream = within(tokio::net::TcpStream::connect(addr)).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, raw).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    within(async {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "EOF inside the response head: {:?}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn status(head: &str) -> &str {
    head.split(' ').nth(1).unwrap_or_default()
}

/// The values of the `name` header lines of a response head.
fn response_header<'a>(head: &'a str, name: &str) -> Vec<&'a str> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

fn no_headers(_: &http::Request<()>) -> Result<HeaderMap, silverback::Rejection> {
    Ok(HeaderMap::new())
}

#[tokio::test]
async fn the_server_selects_only_a_token_the_client_requested() {
    // Names a client could send in the header that are not tokens are never chosen,
    // even when they are on the server's list.
    let upgrader = Upgrader::new().subprotocols(["a b", "\"q\"", "x;y", "chat"]);
    let (head, outcome) = serve_once(upgrader, no_headers, "Sec-WebSocket-Protocol: a b, \"q\", x;y, chat\r\n").await;
    assert_eq!(status(&head), "101", "{head}");
    assert_eq!(response_header(&head, "sec-websocket-protocol"), ["chat"], "{head}");
    assert_eq!(outcome.unwrap(), Some("chat".to_owned()));

    let upgrader = Upgrader::new().subprotocols(["a b", "\"q\""]);
    let (head, outcome) = serve_once(upgrader, no_headers, "Sec-WebSocket-Protocol: a b, \"q\"\r\n").await;
    assert_eq!(status(&head), "101", "{head}");
    assert_eq!(response_header(&head, "sec-websocket-protocol"), Vec::<&str>::new(), "{head}");
    assert_eq!(outcome.unwrap(), None);
}

#[tokio::test]
async fn a_server_subprotocol_with_a_line_break_never_reaches_the_response() {
    let upgrader = Upgrader::new().subprotocols(["chat\r\nX-Injected: 1", "chat"]);
    let (head, outcome) = serve_once(upgrader, no_headers, "Sec-WebSocket-Protocol: chat\r\n").await;
    assert_eq!(status(&head), "101", "{head}");
    assert_eq!(response_header(&head, "sec-websocket-protocol"), ["chat"], "{head}");
    assert!(response_header(&head, "x-injected").is_empty(), "{head}");
    assert_eq!(outcome.unwrap(), Some("chat".to_owned()));
}

#[tokio::test]
async fn a_callback_may_choose_a_requested_subprotocol_only() {
    let choose = |protocol: &'static str| {
        move |_: &http::Request<()>| {
            let mut extra = HeaderMap::new();
            extra.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
            Ok(extra)
        }
    };
    // Requested: it is the one subprotocol of the response, and of the connection.
    let (head, outcome) = serve_once(Upgrader::new(), choose("v2"), "Sec-WebSocket-Protocol: chat, v2\r\n").await;
    assert_eq!(status(&head), "101", "{head}");
    assert_eq!(response_header(&head, "sec-websocket-protocol"), ["v2"], "{head}");
    assert_eq!(outcome.unwrap(), Some("v2".to_owned()));
    let upgrader = Upgrader::new().subprotocols(["chat"]);
    let (head, outcome) = serve_once(upgrader, choose("v2"), "Sec-WebSocket-Protocol: chat, v2\r\n").await;
    assert_eq!(response_header(&head, "sec-websocket-protocol"), ["v2"], "{head}");
    assert_eq!(outcome.unwrap(), Some("v2".to_owned()));

    // Not requested, or not one token: refused.
    for (chosen, requested) in [("mqtt", "chat"), ("mqtt", ""), ("chat, v2", "chat, v2"), ("a b", "a b")] {
        let extra =
            if requested.is_empty() { String::new() } else { format!("Sec-WebSocket-Protocol: {requested}\r\n") };
        let (head, outcome) = serve_once(Upgrader::new(), choose(chosen), &extra).await;
        assert_eq!(status(&head), "500", "{chosen:?} for {requested:?}: {head}");
        match outcome {
            Err(Error::RequestRefused { status, reason }) => {
                assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
                assert!(reason.contains("Sec-WebSocket-Protocol"), "{reason}");
            }
            other => panic!("{chosen:?} for {requested:?}: expected Error::RequestRefused, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_callback_cannot_set_the_handshakes_own_headers() {
    for (name, value) in [
        ("upgrade", "h2c"),
        ("connection", "close"),
        ("sec-websocket-accept", "AAAA"),
        ("sec-websocket-extensions", "x"),
    ] {
        let callback = move |_: &http::Request<()>| {
            let mut extra = HeaderMap::new();
            extra.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
            Ok(extra)
        };
        let (head, outcome) = serve_once(Upgrader::new(), callback, "").await;
        assert_eq!(status(&head), "500", "{name}: {head}");
        assert!(
            matches!(&outcome, Err(Error::RequestRefused { status, .. }) if *status == StatusCode::INTERNAL_SERVER_ERROR),
            "{name}: {outcome:?}"
        );
    }
}

#[tokio::test]
async fn callback_header_values_stay_on_their_lines() {
    let callback = |_: &http::Request<()>| {
        let mut extra = HeaderMap::new();
        extra.insert("x-tab", HeaderValue::from_static("a\tb"));
        extra.insert("set-cookie", HeaderValue::from_static("a=b; Path=/"));
        Ok(extra)
    };
    let (addr, server) = {
        let (listener, addr) = listen().await;
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            Upgrader::new().accept_with(stream, callback).await.map(drop)
        });
        (addr, server)
    };
    let (_raw, response) = RawClient::connect_with(addr, "").await;
    within(server).await.unwrap().unwrap();
    let names: Vec<&str> = response.headers.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["upgrade", "connection", "sec-websocket-accept", "x-tab", "set-cookie"], "{response:?}");
    assert_eq!(response.header("set-cookie"), Some("a=b; Path=/"));
}

#[tokio::test]
async fn a_refusal_from_a_callback_cannot_split_the_response() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        Upgrader::new()
            .accept_with(stream, |_| {
                Err(silverback::Rejection::new(StatusCode::UNAUTHORIZED, "no\r\nX-Injected: 1\r\n\r\nbody"))
            })
            .await
            .map(drop)
    });
    let response = http_exchange(addr, request(addr, "").as_bytes()).await;
    assert!(within(server).await.unwrap().is_err());
    assert_eq!(response.status, 401);
    assert!(response.header("x-injected").is_none(), "{response:?}");
    assert_eq!(response.body, b"no\r\nX-Injected: 1\r\n\r\nbody\n", "the reason is the body, and only that");
}

#[cfg(feature = "hyper")]
#[test]
fn hyper_upgrades_select_only_a_requested_token() {
    let request = |protocols: &str| {
        http::Request::builder()
            .uri("/")
            .header("host", "example.com")
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-key", common::KEY)
            .header("sec-websocket-version", "13")
            .header("sec-websocket-protocol", protocols)
            .body(())
            .unwrap()
    };
    let upgrader = Upgrader::new().subprotocols(["a b", "chat"]);
    let (response, _upgrading) = upgrader.upgrade(request("a b, chat")).unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(response.headers().get_all(header::SEC_WEBSOCKET_PROTOCOL).iter().collect::<Vec<_>>(), ["chat"]);
    let (response, _upgrading) = upgrader.upgrade(request("a b")).unwrap();
    assert!(response.headers().get(header::SEC_WEBSOCKET_PROTOCOL).is_none(), "{response:?}");
}
