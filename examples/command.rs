//! gorilla/websocket's command example: a program per WebSocket, its output
//! sent to the browser line by line, the browser's messages written to its
//! input.
//!
//! ```text
//! cargo run --example command -- cat                          # http://127.0.0.1:8080/
//! cargo run --example command -- --addr 127.0.0.1:0 -- sh -c 'while read l; do echo "$l" | rev; done'
//! ```
//!
//! The command line is `command [--addr ADDR] [--] PROGRAM [ARGS...]`: the
//! options come first, and everything from `PROGRAM` on is the program to run
//! and its arguments. `/` serves a page; each WebSocket to `/ws` starts the
//! program afresh and connects it to the page:
//!
//! - every line the program writes to its standard output or standard error
//!   becomes a text message (two pipes read at once, so lines of the two may
//!   interleave differently than in a terminal);
//! - every message from the page is written to the program's standard input
//!   with a newline appended.
//!
//! What it teaches is the orderly end of both sides, with gorilla's timeouts:
//!
//! - When the program's output ends (it exited), the server sends a close
//!   frame (1000) and waits up to `CLOSE_GRACE_PERIOD` (10 s) for the
//!   page's close frame before it drops the connection.
//! - When the page goes away (its close frame, or a connection that ends or
//!   stops answering pings), the program's standard input is closed, which
//!   ends programs like `cat`; a program still running after the grace period
//!   gets SIGINT, and one still running `INTERRUPT_WAIT` (1 s) after that gets
//!   SIGKILL. (gorilla sends SIGINT at once and kills after one second; here
//!   a program reading its input to the end gets the grace period first.)
//! - Keepalive as gorilla's: a ping every `PING_PERIOD` (54 s), and the
//!   connection ends when no pong comes back before `PONG_WAIT` (60 s)
//!   from the ping's previous pong; each write may take `WRITE_WAIT`
//!   (10 s); messages from the page are limited to `MAX_MESSAGE_SIZE` (8 KiB).
//!
//! The connection is split: the connection's task reads the page's messages
//! into the program, a second task sends the program's output. SIGINT is sent
//! with the `kill` utility, as the standard library has no call for it.

use std::convert::Infallible;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use silverback::{CloseCode, CloseFrame, Conn, ReadHalf, UpgradedStream, Upgrader, WriteHalf};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;

/// How long one write to the page may take.
const WRITE_WAIT: Duration = Duration::from_secs(10);
/// The largest message accepted from the page.
const MAX_MESSAGE_SIZE: u64 = 8192;
/// How long after a pong the next one must arrive.
const PONG_WAIT: Duration = Duration::from_secs(60);
/// How often to ping the page; shorter than [`PONG_WAIT`].
const PING_PERIOD: Duration = Duration::from_secs(54);
/// How long the close handshake and a program's end on its closed input may take.
const CLOSE_GRACE_PERIOD: Duration = Duration::from_secs(10);
/// How long a program may take to end after SIGINT before it is killed.
const INTERRUPT_WAIT: Duration = Duration::from_secs(1);

const USAGE: &str = "usage: command [--addr ADDR] [--] PROGRAM [ARGS...]   (ADDR default 127.0.0.1:8080)";

/// The program to run for each connection.
struct Program {
    path: PathBuf,
    args: Vec<OsString>,
}

#[tokio::main]
async fn main() {
    let (addr, program) = match parse_args() {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let program = Arc::new(program);
    let listener = match TcpListener::bind(&addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!("command: open http://{}/", listener.local_addr().expect("a bound listener has an address"));

    // Keepalive as gorilla's: it pings every `PING_PERIOD` and wants a pong
    // within `PONG_WAIT` of the previous one, so each ping's pong has
    // `PONG_WAIT - PING_PERIOD` to come back.
    let upgrader = Upgrader::new()
        .read_limit(Some(MAX_MESSAGE_SIZE))
        .ping_interval(Some(PING_PERIOD))
        .pong_timeout(PONG_WAIT - PING_PERIOD)
        .close_timeout(CLOSE_GRACE_PERIOD);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        let upgrader = upgrader.clone();
        let program = program.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = route(&upgrader, &program, request);
                async move { Ok::<_, Infallible>(response) }
            });
            let served = http1::Builder::new().serve_connection(TokioIo::new(stream), service).with_upgrades().await;
            if let Err(e) = served {
                eprintln!("{peer}: {e}");
            }
        });
    }
}

/// `/` is the page, `/ws` the WebSocket.
fn route(upgrader: &Upgrader, program: &Arc<Program>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    match request.uri().path() {
        "/" if request.method() == Method::GET => html(PAGE),
        "/" => status(StatusCode::METHOD_NOT_ALLOWED),
        "/ws" => match upgrader.upgrade(request) {
            Ok((response, upgrading)) => {
                let program = program.clone();
                tokio::spawn(async move {
                    match upgrading.await {
                        Ok(conn) => serve_ws(conn, &program).await,
                        Err(e) => eprintln!("upgrade: {e}"),
                    }
                });
                response
            }
            Err(refused) => refused.response,
        },
        _ => status(StatusCode::NOT_FOUND),
    }
}

/// Runs the program for one connection until both have ended.
async fn serve_ws(mut conn: Conn<UpgradedStream>, program: &Program) {
    let spawned = tokio::process::Command::new(&program.path)
        .args(&program.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Should this task be dropped, the program does not outlive it.
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            eprintln!("start {}: {e}", program.path.display());
            let _ = conn.write_text("Internal server error.").await;
            let _ = conn.close(CloseFrame::new(CloseCode::INTERNAL_SERVER_ERROR, "")).await;
            return;
        }
    };
    let stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");

    let (mut read, write) = conn.split();
    let mut output = tokio::spawn(pump_output(write, stdout, stderr));
    // Until the page is gone, or has answered the close frame sent when the
    // program's output ended.
    pump_input(&mut read, stdin).await;
    stop(&mut child).await;
    // The program is gone, so its output ends (unless it left a process
    // behind that holds the pipes open).
    if tokio::time::timeout(CLOSE_GRACE_PERIOD, &mut output).await.is_err() {
        eprintln!("the output of {} is still open; giving up on it", program.path.display());
        output.abort();
    }
    read.handle().close_now().await;
}

/// Writes each message from the page to the program's input, with a newline.
/// Returns when the connection has ended.
async fn pump_input(read: &mut ReadHalf<UpgradedStream>, stdin: ChildStdin) {
    let mut stdin = Some(stdin);
    let end = loop {
        let msg = match read.read_message().await {
            Ok(msg) => msg,
            Err(e) => break e,
        };
        let Some(input) = &mut stdin else {
            // The program no longer reads; keep reading for the close frame.
            continue;
        };
        let mut line = Vec::with_capacity(msg.data.len() + 1);
        line.extend_from_slice(&msg.data);
        line.push(b'\n');
        if let Err(e) = input.write_all(&line).await {
            eprintln!("stdin: {e}");
            stdin = None;
        }
    };
    if !end.is_close(&[CloseCode::NORMAL, CloseCode::GOING_AWAY, CloseCode::NO_STATUS_RECEIVED]) {
        eprintln!("read: {end}");
    }
    // `stdin` is dropped here: the program sees the end of its input.
}

/// Ends the program: it has the grace period to finish on the end of its
/// input, then SIGINT, then SIGKILL.
async fn stop(child: &mut Child) {
    let status = match tokio::time::timeout(CLOSE_GRACE_PERIOD, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            if let Some(pid) = child.id() {
                interrupt(pid).await;
            }
            match tokio::time::timeout(INTERRUPT_WAIT, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    eprintln!("the program ignored SIGINT; killing it");
                    // SIGKILL, and waits for the end.
                    let _ = child.kill().await;
                    child.wait().await
                }
            }
        }
    };
    match status {
        Ok(status) if !status.success() => eprintln!("the program ended: {status}"),
        Ok(_) => {}
        Err(e) => eprintln!("wait: {e}"),
    }
}

/// Sends SIGINT to `pid` with the `kill` utility.
async fn interrupt(pid: u32) {
    let sent = tokio::process::Command::new("kill").arg("-INT").arg(pid.to_string()).status().await;
    match sent {
        Ok(status) if status.success() => {}
        Ok(status) => eprintln!("kill -INT {pid}: {status}"),
        Err(e) => eprintln!("kill -INT {pid}: {e}"),
    }
}

/// Sends each line of the program's output as a text message; when the
/// output has ended, closes the connection with 1000 and waits for the
/// page's close frame (up to the close timeout, [`CLOSE_GRACE_PERIOD`]).
async fn pump_output(
    mut write: WriteHalf<UpgradedStream>,
    stdout: impl AsyncRead + Unpin,
    stderr: impl AsyncRead + Unpin,
) {
    let (lines_tx, mut lines) = mpsc::channel::<Vec<u8>>(16);
    let read_both = async {
        tokio::join!(read_lines(stdout, lines_tx.clone()), read_lines(stderr, lines_tx));
    };
    let send = async {
        let mut open = true;
        while let Some(line) = lines.recv().await {
            // After a failed write, the output is still read (and dropped), so
            // that the program never blocks on a full pipe.
            if open {
                write.set_write_deadline(Some(Instant::now() + WRITE_WAIT));
                if let Err(e) = write.write_text(String::from_utf8_lossy(&line)).await {
                    if !matches!(e, silverback::Error::CloseSent) {
                        eprintln!("write: {e}");
                    }
                    open = false;
                }
            }
        }
        if open {
            write.set_write_deadline(None);
            if let Err(e) = write.close(CloseFrame::new(CloseCode::NORMAL, "")).await {
                if !matches!(e, silverback::Error::CloseSent) {
                    eprintln!("close: {e}");
                }
            }
        }
    };
    tokio::join!(read_both, send);
}

/// Sends each line of `pipe`, without its line ending, until its end.
async fn read_lines(pipe: impl AsyncRead + Unpin, lines: mpsc::Sender<Vec<u8>>) {
    let mut pipe = BufReader::new(pipe);
    loop {
        let mut line = Vec::new();
        match pipe.read_until(b'\n', &mut line).await {
            Ok(0) => return,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                }
                if lines.send(line).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                eprintln!("output: {e}");
                return;
            }
        }
    }
}

/// The command line: `[--addr ADDR] [--] PROGRAM [ARGS...]`.
fn parse_args() -> Result<(String, Program), String> {
    let mut addr = "127.0.0.1:8080".to_owned();
    let mut args = std::env::args_os().skip(1);
    let program = loop {
        let Some(arg) = args.next() else {
            return Err("no program to run".to_owned());
        };
        match arg.to_str() {
            Some("--addr") => {
                addr = args
                    .next()
                    .and_then(|a| a.into_string().ok())
                    .ok_or("--addr needs an address such as 127.0.0.1:8080")?;
            }
            Some("--") => break args.next().ok_or("no program to run")?,
            Some(option) if option.starts_with('-') => return Err(format!("unknown option {option}")),
            _ => break arg,
        }
    };
    let path =
        find_program(Path::new(&program)).ok_or_else(|| format!("{}: program not found", program.to_string_lossy()))?;
    Ok((addr, Program { path, args: args.collect() }))
}

/// The program's path: as given when it names a directory, else looked up in
/// `$PATH`, so that a misspelt name is reported at start rather than per
/// connection.
fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_owned());
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(program)).find(|path| path.is_file())
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

/// gorilla's page: a form to send a line, and a log with one element per line
/// received. Everything shown goes through `textContent`.
const PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>silverback command</title>
<script>
window.onload = function () {
    const msg = document.getElementById("msg");
    const log = document.getElementById("log");

    function appendLog(item) {
        const doScroll = log.scrollTop > log.scrollHeight - log.clientHeight - 1;
        log.appendChild(item);
        if (doScroll) {
            log.scrollTop = log.scrollHeight - log.clientHeight;
        }
    }

    function appendLine(text, bold) {
        const item = document.createElement("div");
        if (bold) {
            const b = document.createElement("b");
            b.textContent = text;
            item.appendChild(b);
        } else {
            item.textContent = text;
        }
        appendLog(item);
    }

    const conn = new WebSocket((location.protocol === "https:" ? "wss:" : "ws:") + "//" + location.host + "/ws");
    conn.onclose = function () { appendLine("Connection closed.", true); };
    conn.onmessage = function (event) {
        for (const line of event.data.split("\n")) {
            appendLine(line, false);
        }
    };

    document.getElementById("form").onsubmit = function () {
        if (conn.readyState === WebSocket.OPEN && msg.value) {
            conn.send(msg.value);
            msg.value = "";
        }
        return false;
    };
};
</script>
<style>
html { overflow: hidden; }
body { overflow: hidden; padding: 0; margin: 0; width: 100%; height: 100%; background: gray; }
#log { background: white; margin: 0; padding: 0.5em; position: absolute; top: 0.5em; left: 0.5em;
       right: 0.5em; bottom: 3em; overflow: auto; font-family: monospace; white-space: pre; }
#form { padding: 0 0.5em; margin: 0; position: absolute; bottom: 1em; left: 0; width: 100%; overflow: hidden; }
</style>
</head>
<body>
<div id="log"></div>
<form id="form">
    <input type="submit" value="Send">
    <input type="text" id="msg" size="64" autocomplete="off" autofocus>
</form>
</body>
</html>
"#;
