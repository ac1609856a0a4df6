//! gorilla/websocket's filewatch example: a page that shows a file and
//! follows its changes, pushed by the server over a WebSocket.
//!
//! ```text
//! cargo run --example filewatch -- notes.txt                    # http://127.0.0.1:8080/
//! cargo run --example filewatch -- notes.txt 127.0.0.1:0 --poll 200
//! ```
//!
//! The command line is `filewatch FILE [ADDR] [--poll MS]`.
//!
//! It teaches a server that writes on its own schedule while a reader task
//! only drains the connection, and how a page resumes from the state it was
//! rendered with:
//!
//! - `/` renders the file's content (HTML-escaped) into `pre#fileData`, and
//!   the file's modification time (nanoseconds since the Unix epoch, in hex,
//!   as gorilla writes it) into the page's script.
//! - The page opens `/ws?lastMod=<that time>`. The server then looks at the
//!   file's modification time every poll period and sends the whole content
//!   as a text message whenever it is later than the last one sent (or than
//!   `lastMod`, at first), so a change made between rendering the page and
//!   opening the WebSocket is not missed. A file that cannot be read sends
//!   the error's text once.
//!
//! Like gorilla's example, it polls the modification time rather than asking
//! the operating system for change notifications, which keeps it free of any
//! dependency. gorilla polls every 10 s; here the period defaults to 1 s and
//! `--poll MS` sets it.
//!
//! The reader reads only to answer control frames and see the close (read
//! limit 512 bytes); keepalive is gorilla's, a ping every 54 s with a pong due
//! within 60 s of the previous one, and each write may take 10 s.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use silverback::{CloseCode, Conn, UpgradedStream, Upgrader};
use tokio::net::TcpListener;
use tokio::time::MissedTickBehavior;

/// How long one write to the page may take.
const WRITE_WAIT: Duration = Duration::from_secs(10);
/// How long after a pong the next one must arrive.
const PONG_WAIT: Duration = Duration::from_secs(60);
/// How often to ping the page; shorter than [`PONG_WAIT`].
const PING_PERIOD: Duration = Duration::from_secs(54);
/// The largest message accepted from the page (it sends none).
const READ_LIMIT: u64 = 512;
/// How often the file is looked at, unless `--poll` says otherwise.
const DEFAULT_POLL: Duration = Duration::from_secs(1);

const USAGE: &str = "usage: filewatch FILE [ADDR] [--poll MS]   (ADDR default 127.0.0.1:8080, MS default 1000)";

/// The file to watch and how often to look at it.
struct Watch {
    file: PathBuf,
    poll: Duration,
}

#[tokio::main]
async fn main() {
    let (watch, addr) = match parse_args() {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let watch = Arc::new(watch);
    let listener = match TcpListener::bind(&addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!("filewatch: open http://{}/", listener.local_addr().expect("a bound listener has an address"));

    let upgrader = Upgrader::new()
        .read_limit(Some(READ_LIMIT))
        .ping_interval(Some(PING_PERIOD))
        .pong_timeout(PONG_WAIT - PING_PERIOD);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        let upgrader = upgrader.clone();
        let watch = watch.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let upgrader = upgrader.clone();
                let watch = watch.clone();
                async move { Ok::<_, Infallible>(route(&upgrader, &watch, request).await) }
            });
            let served = http1::Builder::new().serve_connection(TokioIo::new(stream), service).with_upgrades().await;
            if let Err(e) = served {
                eprintln!("{peer}: {e}");
            }
        });
    }
}

/// `/` is the page, `/ws?lastMod=...` the WebSocket.
async fn route(upgrader: &Upgrader, watch: &Arc<Watch>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    match request.uri().path() {
        "/" if request.method() == Method::GET => home(watch).await,
        "/" => status(StatusCode::METHOD_NOT_ALLOWED),
        "/ws" => {
            // What the page was rendered with; anything unreadable counts as
            // "never", so the current content is sent at once.
            let last_mod = query_value(request.uri().query().unwrap_or(""), "lastMod")
                .and_then(|hex| i64::from_str_radix(hex, 16).ok())
                .unwrap_or(0);
            match upgrader.upgrade(request) {
                Ok((response, upgrading)) => {
                    let watch = watch.clone();
                    tokio::spawn(async move {
                        match upgrading.await {
                            Ok(conn) => serve_ws(conn, &watch, last_mod).await,
                            Err(e) => eprintln!("upgrade: {e}"),
                        }
                    });
                    response
                }
                Err(refused) => refused.response,
            }
        }
        _ => status(StatusCode::NOT_FOUND),
    }
}

/// The page, with the file's current content and modification time.
async fn home(watch: &Watch) -> Response<Full<Bytes>> {
    let (content, last_mod) = match read_if_modified(&watch.file, 0).await {
        (last_mod, Ok(Some(content))) => (content, last_mod),
        (_, Ok(None)) => (String::new(), 0),
        (_, Err(e)) => (e.to_string(), 0),
    };
    // The time first: the content may hold anything, `{{lastMod}}` included.
    let page = PAGE.replace("{{lastMod}}", &format!("{last_mod:x}")).replace("{{data}}", &escape_html(&content));
    let mut response = Response::new(Full::new(Bytes::from(page)));
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/html; charset=utf-8"));
    response
}

/// Sends the file's content each time it changes, until the page goes.
async fn serve_ws(conn: Conn<UpgradedStream>, watch: &Watch, mut last_mod: i64) {
    let (mut read, mut write) = conn.split();
    // The page sends nothing; reading answers its pings and sees its close.
    let drain = async {
        loop {
            if let Err(e) = read.read_message().await {
                return e;
            }
        }
    };
    let push = async {
        let mut ticker = tokio::time::interval(watch.poll);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_error = String::new();
        loop {
            ticker.tick().await;
            let (modified, read) = read_if_modified(&watch.file, last_mod).await;
            last_mod = modified;
            let message = match read {
                Ok(content) => {
                    last_error.clear();
                    content
                }
                // Each new error once, as gorilla does.
                Err(e) if e.to_string() != last_error => {
                    last_error = e.to_string();
                    Some(last_error.clone())
                }
                Err(_) => None,
            };
            if let Some(message) = message {
                write.set_write_deadline(Some(Instant::now() + WRITE_WAIT));
                if let Err(e) = write.write_text(message).await {
                    return e;
                }
            }
        }
    };
    // Cancel-safe both: whichever ends first ends the other.
    let end = tokio::select! {
        end = drain => end,
        end = push => end,
    };
    if !end.is_close(&[CloseCode::NORMAL, CloseCode::GOING_AWAY, CloseCode::NO_STATUS_RECEIVED]) {
        eprintln!("filewatch: {end}");
    }
    write.handle().close_now().await;
}

/// The file's content when it was modified after `last_mod` (nanoseconds
/// since the Unix epoch), with the modification time to remember. An error
/// reading the file comes with the time of the content that failed, if known.
async fn read_if_modified(file: &Path, last_mod: i64) -> (i64, std::io::Result<Option<String>>) {
    let modified = match tokio::fs::metadata(file).await.and_then(|meta| meta.modified()) {
        Ok(modified) => modified,
        Err(e) => return (last_mod, Err(e)),
    };
    let modified = match modified.duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_nanos()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_nanos()).unwrap_or(i64::MAX),
    };
    if modified <= last_mod {
        return (last_mod, Ok(None));
    }
    match tokio::fs::read(file).await {
        Ok(bytes) => (modified, Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))),
        Err(e) => (modified, Err(e)),
    }
}

/// The value of `key` in a query string (not percent-decoded: `lastMod` is hex).
fn query_value<'q>(query: &'q str, key: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
}

/// Text made safe to put inside an HTML element.
fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&#34;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// The command line: `FILE [ADDR] [--poll MS]`.
fn parse_args() -> Result<(Watch, String), String> {
    let mut file = None;
    let mut addr = None;
    let mut poll = DEFAULT_POLL;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--poll") => {
                let ms = args.next().and_then(|ms| ms.into_string().ok()).ok_or("--poll needs milliseconds")?;
                let ms: u64 = ms.parse().map_err(|e| format!("--poll {ms}: {e}"))?;
                poll = Duration::from_millis(ms.max(1));
            }
            Some(option) if option.starts_with('-') => return Err(format!("unknown option {option}")),
            _ if file.is_none() => file = Some(PathBuf::from(arg)),
            _ if addr.is_none() => addr = Some(arg.into_string().map_err(|a| format!("bad address {a:?}"))?),
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    let file = file.ok_or("no file to watch")?;
    Ok((Watch { file, poll }, addr.unwrap_or_else(|| "127.0.0.1:8080".to_owned())))
}

fn status(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(status.to_string())));
    *response.status_mut() = status;
    response
}

/// gorilla's page; `{{data}}` (escaped) and `{{lastMod}}` (hex digits) are
/// filled in by [`home`].
const PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>silverback filewatch</title>
</head>
<body>
<pre id="fileData">{{data}}</pre>
<script>
(function () {
    const data = document.getElementById("fileData");
    const lastMod = "{{lastMod}}";
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const conn = new WebSocket(scheme + "//" + location.host + "/ws?lastMod=" + lastMod);
    conn.onclose = function () {
        data.textContent = "Connection closed";
    };
    conn.onmessage = function (event) {
        console.log("file updated");
        data.textContent = event.data;
    };
})();
</script>
</body>
</html>
"#;
