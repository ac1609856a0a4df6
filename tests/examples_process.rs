//! The gorilla-style examples (`echo`, `client`, `command`, `filewatch`) run
//! as real processes and driven over the network: what a person running them
//! from the README would see, checked without a browser
//! (`tests/browser_examples.rs` drives their pages in Chromium).
//!
//! The examples are built once per run of this file with the same cargo,
//! profile and features (see `tests/examples_support`). Linux only: the
//! command tests look for the example's child processes in /proc.

#![cfg(target_os = "linux")]

mod examples_support;

use std::time::{Duration, Instant};

use examples_support::{children_of, http_get, wait_no_children, Running, TempFile, STEP};
use silverback::{CloseCode, CloseFrame, Dialer, Error, MessageType, Upgrader};

/// Runs `future` for at most [`STEP`].
async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(STEP, future).await.unwrap_or_else(|_| panic!("{what}: nothing within {STEP:?}"))
}

async fn dial(url: &str) -> silverback::Conn<silverback::ClientStream> {
    within("dial", Dialer::new().connect(url)).await.unwrap_or_else(|e| panic!("dial {url}: {e}")).0
}

/// The next text message, or the error that ended the connection.
async fn next_text<S: silverback::Stream>(conn: &mut silverback::Conn<S>) -> Result<String, Error> {
    let msg = within("read", conn.read_message()).await?;
    assert_eq!(msg.kind, MessageType::Text);
    Ok(msg.as_text().expect("valid UTF-8").to_owned())
}

#[tokio::test]
async fn client_prints_count_echoes_from_the_echo_server() {
    let (_server, addr) = Running::server("echo", ["127.0.0.1:0"]).await;

    // The page is there, with gorilla's controls; a plain GET of the
    // WebSocket path is refused.
    let (status, page) = http_get(&addr, "/").await;
    assert_eq!(status, 200);
    for id in ["input", "open", "send", "close", "output"] {
        assert!(page.contains(&format!("id=\"{id}\"")), "the page has no #{id}");
    }
    assert_eq!(http_get(&addr, "/echo").await.0, 400);
    assert_eq!(http_get(&addr, "/nothing").await.0, 404);

    let started = Instant::now();
    let mut client = Running::start("client", [format!("ws://{addr}/echo"), "--count".into(), "3".into()]);
    let mut lines = Vec::new();
    while let Some(line) = client.line().await {
        lines.push(line);
    }
    let status = client.wait().await;
    assert!(status.success(), "client exited with {status}; it printed {lines:?}");
    assert_eq!(lines.len(), 3, "{lines:?}");
    for line in &lines {
        // The echo of the time the client sent, e.g. `recv: 2024-05-01 12:34:56.789 UTC`.
        let time = line.strip_prefix("recv: ").unwrap_or_else(|| panic!("not an echo: {line:?}"));
        assert!(time.ends_with(" UTC") && time.len() == "2024-05-01 12:34:56.789 UTC".len(), "{line:?}");
    }
    assert_ne!(lines[0], lines[2], "the client sends the current time each time");
    // One message a second, the first at once.
    assert!(started.elapsed() >= Duration::from_millis(1900), "3 messages in {:?}", started.elapsed());
}

#[tokio::test]
async fn client_sends_close_1000_on_sigint_and_exits_0() {
    // A silverback echo server that reports how its connection ended.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut conn = Upgrader::new().accept(stream).await.unwrap();
        loop {
            match conn.read_message().await {
                Ok(msg) => conn.write_message(msg.kind, &msg.data).await.unwrap(),
                // The default close handler has answered the close by now.
                Err(end) => return end,
            }
        }
    });

    let mut client = Running::start("client", [format!("ws://{addr}/echo")]);
    let first = client.line().await.expect("the client printed nothing");
    assert!(first.starts_with("recv: "), "{first:?}");
    client.interrupt();
    let status = client.wait().await;
    assert!(status.success(), "client exited with {status} after SIGINT");

    let end = within("the server's end", server).await.unwrap();
    match end {
        Error::Closed(close) => assert_eq!(close.code, CloseCode::NORMAL, "{close:?}"),
        other => panic!("the client did not close with a close frame: {other:?}"),
    }
}

#[tokio::test]
async fn command_connects_cat_and_ends_it_with_the_client() {
    let (server, addr) = Running::server("command", ["--addr", "127.0.0.1:0", "cat"]).await;
    let (status, page) = http_get(&addr, "/").await;
    assert_eq!(status, 200);
    for needle in ["id=\"form\"", "id=\"msg\"", "id=\"log\"", "type=\"submit\""] {
        assert!(page.contains(needle), "the page has no {needle}");
    }
    assert!(children_of(server.pid()).is_empty(), "a process runs before any WebSocket");

    let mut conn = dial(&format!("ws://{addr}/ws")).await;
    for line in ["hello", "a second line", "ünïcödé"] {
        within("send", conn.write_text(line)).await.unwrap();
        assert_eq!(next_text(&mut conn).await.unwrap(), line);
    }
    let children = children_of(server.pid());
    assert!(
        children.len() == 1 && children[0].1 == "cat",
        "expected one `cat` under the server while connected, found {children:?}"
    );

    // The client goes: cat's input is closed, it ends and is waited for.
    within("close", conn.close(CloseFrame::new(CloseCode::NORMAL, "bye"))).await.unwrap();
    let left = wait_no_children(server.pid(), Duration::from_secs(5)).await;
    assert!(left.is_empty(), "processes left after the client closed: {left:?}");
}

/// Runs `program` for one WebSocket, closes the WebSocket, and returns how
/// long the program outlived the close.
async fn program_lifetime_after_close(program: &[&str]) -> Duration {
    let mut args = vec!["--addr", "127.0.0.1:0", "--"];
    args.extend(program);
    let (server, addr) = Running::server("command", args).await;
    let mut conn = dial(&format!("ws://{addr}/ws")).await;
    let deadline = Instant::now() + STEP;
    while children_of(server.pid()).is_empty() {
        assert!(Instant::now() < deadline, "{program:?} was not started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    within("close", conn.close(CloseFrame::new(CloseCode::NORMAL, ""))).await.unwrap();
    let closed = Instant::now();
    let left = wait_no_children(server.pid(), Duration::from_secs(20)).await;
    assert!(left.is_empty(), "{program:?} still runs 20 s after the client closed: {left:?}");
    closed.elapsed()
}

#[tokio::test]
async fn command_interrupts_a_program_that_ignores_its_input_after_the_grace_period() {
    // `sleep` does not read its input: the end of it does not stop it, the
    // SIGINT after the 10 s grace period does (SIGKILL would come at 11 s).
    let lifetime = program_lifetime_after_close(&["sleep", "60"]).await;
    assert!(
        lifetime >= Duration::from_millis(9_500) && lifetime < Duration::from_millis(10_900),
        "sleep ended {lifetime:?} after the close, not at the 10 s grace period"
    );
}

#[tokio::test]
async fn command_kills_a_program_that_ignores_sigint() {
    // SIGINT ignored (the disposition survives `exec`): SIGKILL one second later.
    let lifetime = program_lifetime_after_close(&["sh", "-c", "trap '' INT; exec sleep 60"]).await;
    assert!(
        lifetime >= Duration::from_millis(10_500) && lifetime < Duration::from_secs(14),
        "the program ended {lifetime:?} after the close, not 1 s after the grace period"
    );
}

#[tokio::test]
async fn command_ends_the_connection_when_the_program_exits() {
    let (server, addr) = Running::server("command", ["--addr", "127.0.0.1:0", "--", "echo", "hi"]).await;
    let mut conn = dial(&format!("ws://{addr}/ws")).await;
    assert_eq!(next_text(&mut conn).await.unwrap(), "hi");
    // Then the server's close frame, 1000, which the client answers.
    match next_text(&mut conn).await {
        Err(Error::Closed(close)) => assert_eq!(close.code, CloseCode::NORMAL, "{close:?}"),
        other => panic!("expected the server's close frame, got {other:?}"),
    }
    let left = wait_no_children(server.pid(), Duration::from_secs(5)).await;
    assert!(left.is_empty(), "processes left after the program exited: {left:?}");
}

#[tokio::test]
async fn command_sends_standard_output_and_error() {
    let (_server, addr) =
        Running::server("command", ["--addr", "127.0.0.1:0", "sh", "-c", "echo out; echo err >&2"]).await;
    let mut conn = dial(&format!("ws://{addr}/ws")).await;
    let mut lines = vec![next_text(&mut conn).await.unwrap(), next_text(&mut conn).await.unwrap()];
    lines.sort();
    assert_eq!(lines, ["err", "out"]);
    assert!(matches!(next_text(&mut conn).await, Err(Error::Closed(_))));
}

#[tokio::test]
async fn filewatch_pushes_the_file_when_it_changes() {
    let file = TempFile::new("watched.txt", "first <b>version</b> & more");
    let path = file.path.to_str().unwrap();
    let (_server, addr) = Running::server("filewatch", [path, "127.0.0.1:0", "--poll", "50"]).await;

    // The page holds the content, escaped, and the file's time in hex.
    let (status, page) = http_get(&addr, "/").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("<pre id=\"fileData\">first &lt;b&gt;version&lt;/b&gt; &amp; more</pre>"),
        "the page does not show the escaped content:\n{page}"
    );
    let last_mod = file.last_mod_hex();
    assert!(page.contains(&format!("const lastMod = \"{last_mod}\";")), "the page lacks lastMod {last_mod}:\n{page}");

    // A client that has seen nothing gets the content at once; one that has
    // seen the page's version gets nothing until the file changes.
    let mut fresh = dial(&format!("ws://{addr}/ws?lastMod=0")).await;
    assert_eq!(next_text(&mut fresh).await.unwrap(), "first <b>version</b> & more");
    let mut current = dial(&format!("ws://{addr}/ws?lastMod={last_mod}")).await;
    let early = tokio::time::timeout(Duration::from_millis(300), current.read_message()).await;
    assert!(early.is_err(), "a client up to date got {early:?}");

    file.rewrite("second version");
    assert_eq!(next_text(&mut fresh).await.unwrap(), "second version");
    assert_eq!(next_text(&mut current).await.unwrap(), "second version");

    // A file that disappears is reported once, as text.
    std::fs::remove_file(&file.path).unwrap();
    let error = next_text(&mut fresh).await.unwrap();
    assert!(error.contains("No such file"), "{error:?}");
    let nothing_more = tokio::time::timeout(Duration::from_millis(300), fresh.read_message()).await;
    assert!(nothing_more.is_err(), "the error came again: {nothing_more:?}");

    within("close", fresh.close(CloseFrame::new(CloseCode::NORMAL, ""))).await.unwrap();
}

#[tokio::test]
async fn broadcast_server_sends_every_message_to_every_client_sender_included() {
    let mut server = Running::start("broadcast_server", ["127.0.0.1:0"]);
    let line = server.line().await.expect("broadcast_server printed nothing");
    let addr = line
        .strip_prefix("broadcast_server listening on ws://")
        .unwrap_or_else(|| panic!("broadcast_server printed {line:?}"))
        .to_owned();
    let url = format!("ws://{addr}/");
    // One client with compression, two without. Each announces itself and
    // waits for its own announcement: then it is surely subscribed.
    let mut clients = Vec::new();
    for i in 0..3 {
        let dialer = Dialer::new().enable_compression(i == 0);
        let mut conn = within("dial", dialer.connect(&url)).await.unwrap().0;
        assert_eq!(conn.compression_negotiated(), i == 0);
        conn.write_message(MessageType::Text, format!("joined {i}")).await.unwrap();
        assert_eq!(next_text(&mut conn).await.unwrap(), format!("joined {i}"));
        clients.push(conn);
    }
    for (i, client) in clients.iter_mut().enumerate() {
        conn_send(client, i).await;
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let mut got = Vec::new();
        // The announcements of those after it, then the three messages.
        while got.len() < (2 - i) + 3 {
            got.push(next_text(client).await.unwrap());
        }
        let mut expected: Vec<String> = (i + 1..3).map(|j| format!("joined {j}")).collect();
        expected.extend((0..3).map(|j| format!("message from {j}")));
        let (mut joins, mut messages): (Vec<String>, Vec<String>) =
            got.into_iter().partition(|m| m.starts_with("joined"));
        joins.sort();
        messages.sort();
        joins.extend(messages);
        assert_eq!(joins, expected, "client {i}");
    }
}

/// Sends client `i`'s message.
async fn conn_send<S: silverback::Stream>(conn: &mut silverback::Conn<S>, i: usize) {
    conn.write_message(MessageType::Text, format!("message from {i}")).await.unwrap();
}
