//! examples/chat driven in headless Chromium: the example runs as its own
//! process (built here with `cargo build --example chat`, in the profile and
//! target directory of this test), and the tests type into its page and read
//! its log as a user would, through the DevTools driver in
//! tests/browser_support.
//!
//! - Two tabs on one process share the room: messages from either tab reach
//!   both logs once each and in order, non-ASCII text included, with
//!   permessage-deflate negotiated, and with `--no-compression` without it.
//!   SIGTERM then closes both tabs' WebSockets with 1001 and the process
//!   exits with status 0.
//! - Two processes on one Redis server share a room: a message crosses
//!   between them exactly once (no echo back from the broker); with Redis
//!   killed, each process's local room keeps working; with Redis restarted
//!   on the same port, the processes reconnect and messages cross again.
//! - A client that stops reading is closed with 1008 once its queue is full,
//!   while another client keeps receiving every message.
//!
//! Needs Chromium (`chromium`, or `$CHROMIUM`) and Redis (`redis-server` on
//! the `PATH`); without them the tests fail.

mod browser_support;
mod examples_support;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use browser_support::{Browser, Page};
use serde_json::json;
use silverback::{CloseCode, Dialer, MessageType};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a message may take to show up, on a loaded machine.
const SHOW: Duration = Duration::from_secs(10);
/// How long reconnecting to a restarted Redis may take.
const RECONNECT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tabs_share_a_room_with_compression() {
    two_tabs(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tabs_share_a_room_without_compression() {
    two_tabs(false).await;
}

async fn two_tabs(compression: bool) {
    let args: &[&str] = if compression { &[] } else { &["--no-compression"] };
    let mut chat = Chat::start(args).await;
    let browser = Browser::launch().await;
    let a = open_chat(&browser, &chat.url).await;
    let b = open_chat(&browser, &chat.url).await;
    for page in [&a, &b] {
        let extensions = page.eval("window.chatSocket.extensions").await;
        let extensions = extensions.as_str().unwrap();
        if compression {
            assert!(extensions.contains("permessage-deflate"), "extensions: {extensions:?}");
        } else {
            assert_eq!(extensions, "", "--no-compression, yet extensions are {extensions:?}");
        }
    }

    // One at a time, from either tab, each seen by both before the next.
    let messages = ["hello from a", "hello from b", "héllo wörld — 你好 🦀"];
    for (i, (page, text)) in [(&a, messages[0]), (&b, messages[1]), (&a, messages[2])].into_iter().enumerate() {
        send(page, text).await;
        for page in [&a, &b] {
            wait_count(page, i + 1).await;
        }
    }
    // Three in a row from one tab: the room keeps their order.
    let burst = ["one", "two", "three"];
    for text in burst {
        send(&b, text).await;
    }
    let expected: Vec<String> = messages.iter().chain(&burst).map(|s| s.to_string()).collect();
    for page in [&a, &b] {
        wait_count(page, expected.len()).await;
        assert_eq!(page.texts("#log .message").await, expected);
    }

    // SIGTERM: both WebSockets are closed with 1001, the process exits 0.
    for page in [&a, &b] {
        page.eval("window.chatSocket.addEventListener('close', e => { window.closeCode = e.code; }); true").await;
    }
    chat.signal("TERM");
    let status = tokio::time::timeout(Duration::from_secs(10), chat.child.wait())
        .await
        .expect("the chat process did not exit within 10 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "the chat process exited with {status}; its stderr:\n{}", chat.log());
    for page in [&a, &b] {
        assert_eq!(page.wait_for("window.closeCode", SHOW).await, json!(1001));
        page.wait_for("document.querySelector('#log .status')?.textContent === 'Connection closed.'", SHOW).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_a_room_through_redis() {
    let mut redis = Redis::start(free_port()).await;
    let redis_url = format!("redis://127.0.0.1:{}/", redis.port);
    let one = Chat::start(&["--redis", &redis_url]).await;
    let two = Chat::start(&["--redis", &redis_url]).await;
    for chat in [&one, &two] {
        chat.wait_log("chat: redis: subscribed", 1, SHOW).await;
    }
    let browser = Browser::launch().await;
    let a = open_chat(&browser, &one.url).await;
    let a2 = open_chat(&browser, &one.url).await;
    let b = open_chat(&browser, &two.url).await;
    let mut everyone: Vec<String> = Vec::new();

    // Across the broker, both ways, once each.
    for (page, text) in [(&a, "from one"), (&b, "from two — ünïcödé"), (&a2, "from one again")] {
        send(page, text).await;
        everyone.push(text.to_owned());
        for page in [&a, &a2, &b] {
            wait_count(page, everyone.len()).await;
        }
    }
    for page in [&a, &a2, &b] {
        assert_eq!(page.texts("#log .message").await, everyone);
    }

    // Redis down: each local room still works, nothing crosses.
    redis.kill().await;
    for chat in [&one, &two] {
        chat.wait_log("chat: redis: connection lost", 1, SHOW).await;
    }
    send(&a, "only on one").await;
    for page in [&a, &a2] {
        wait_count(page, everyone.len() + 1).await;
        assert_eq!(page.texts("#log .message").await.last().unwrap(), "only on one");
    }
    send(&b, "only on two").await;
    wait_count(&b, everyone.len() + 1).await;
    assert_eq!(b.texts("#log .message").await.last().unwrap(), "only on two");
    let mut local_one = everyone.clone();
    local_one.push("only on one".to_owned());
    let mut local_two = everyone.clone();
    local_two.push("only on two".to_owned());

    // Redis back on the same port: both processes subscribe again, and
    // messages cross once each.
    let _restarted = Redis::start(redis.port).await;
    for chat in [&one, &two] {
        chat.wait_log("chat: redis: subscribed", 2, RECONNECT).await;
    }
    for (page, text) in [(&b, "two is back"), (&a, "one is back")] {
        send(page, text).await;
        local_one.push(text.to_owned());
        local_two.push(text.to_owned());
        for (page, count) in [(&a, local_one.len()), (&a2, local_one.len()), (&b, local_two.len())] {
            wait_count(page, count).await;
        }
    }
    // Nothing more arrives late (a duplicate from the broker would).
    tokio::time::sleep(Duration::from_millis(300)).await;
    for page in [&a, &a2] {
        assert_eq!(page.texts("#log .message").await, local_one);
    }
    assert_eq!(b.texts("#log .message").await, local_two);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_with_1008() {
    let chat = Chat::start(&["--no-compression"]).await;
    let addr = chat.url.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let ws_url = format!("ws://{addr}/ws");
    let dialer = Dialer::new();
    // The slow client has a small receive buffer, so that the server's
    // queue for it fills soon.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr.parse().unwrap()).await.unwrap();
    let (mut slow, _) = dialer.connect_on(stream, &ws_url).await.unwrap();
    let (mut reader, _) = dialer.connect(&ws_url).await.unwrap();
    let (mut writer, _) = dialer.connect(&ws_url).await.unwrap();
    let text = "x".repeat(4000);
    let count = 2000;
    let read_all = |conn| async move {
        let conn: &mut silverback::ReadHalf<_> = conn;
        for _ in 0..count {
            let msg = tokio::time::timeout(SHOW, conn.read_message()).await.expect("a message is late")?;
            assert_eq!(msg.data.len(), 4000);
        }
        Ok::<_, silverback::Error>(())
    };
    let (others, written, slow_end) = tokio::join!(
        read_all(reader.reader()),
        // One message at a time: the writer waits for its own copy, so the
        // other fast client, reading alike, is never far behind.
        async {
            for _ in 0..count {
                writer.write_message(MessageType::Text, &text).await?;
                tokio::time::timeout(SHOW, writer.read_message()).await.expect("an echo is late")?;
            }
            Ok::<_, silverback::Error>(())
        },
        // The slow client reads nothing until the server gives up on it,
        // then reads what was sent before, and the close.
        async {
            chat.wait_log("is too slow; closing it", 1, Duration::from_secs(30)).await;
            tokio::time::timeout(SHOW, async {
                loop {
                    if let Err(e) = slow.read_message().await {
                        return e;
                    }
                }
            })
            .await
            .expect("the slow client was never closed")
        }
    );
    written.expect("the writer failed");
    others.expect("another client lost messages");
    assert!(slow_end.is_close(&[CloseCode::POLICY_VIOLATION]), "the slow client's connection ended with {slow_end:?}");
}

/// Sends `text` from the page's form, typing and clicking as a user would.
async fn send(page: &Page, text: &str) {
    page.type_text("#msg", text).await;
    page.click("#form input[type=submit]").await;
}

/// Waits until the page's log holds `count` messages.
async fn wait_count(page: &Page, count: usize) {
    page.wait_for(&format!("document.querySelectorAll('#log .message').length >= {count}"), SHOW).await;
}

/// Opens the chat page and waits for its WebSocket to be open.
async fn open_chat(browser: &Browser, url: &str) -> Page {
    let page = browser.open(url).await;
    page.wait_for("window.chatSocket && window.chatSocket.readyState === WebSocket.OPEN", SHOW).await;
    page
}

/// A free TCP port on the loopback interface.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The example, built once for all the tests of this file.
fn chat_binary() -> PathBuf {
    examples_support::example("chat")
}

/// A running examples/chat process; killed when dropped.
struct Chat {
    child: Child,
    /// The page's URL, as the process printed it.
    url: String,
    /// Its stderr so far.
    log: Arc<Mutex<Vec<String>>>,
}

impl Chat {
    async fn start(args: &[&str]) -> Chat {
        let binary = tokio::task::spawn_blocking(chat_binary).await.unwrap();
        let mut child = Command::new(&binary)
            .arg("127.0.0.1:0")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let keep = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                eprintln!("[chat] {line}");
                keep.lock().unwrap().push(line);
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(SHOW, stdout.next_line())
            .await
            .expect("the chat example printed no URL")
            .unwrap()
            .expect("the chat example exited before printing its URL");
        let url =
            line.strip_prefix("chat: open ").unwrap_or_else(|| panic!("unexpected first line {line:?}")).to_owned();
        // Keeps reading stdout, so that the process never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        Chat { child, url, log }
    }

    /// Waits until `count` lines of stderr contain `text`.
    async fn wait_log(&self, text: &str, count: usize, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.log.lock().unwrap().iter().filter(|line| line.contains(text)).count() >= count {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "the chat process did not log {text:?} {count} time(s) within {timeout:?}; its stderr:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Sends the process a signal (`TERM`, `INT`).
    fn signal(&self, name: &str) {
        let pid = self.child.id().expect("the chat process has exited");
        let status = std::process::Command::new("kill").args([&format!("-{name}"), &pid.to_string()]).status().unwrap();
        assert!(status.success());
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A `redis-server` on a loopback port, without persistence; killed when
/// dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    async fn start(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("this test needs redis-server on the PATH and cannot start it ({e}); install it with `apt-get install redis-server`")
            });
        let deadline = tokio::time::Instant::now() + SHOW;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "redis-server is not listening on port {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Redis { child, port }
    }

    /// Kills the server at once (SIGKILL) and waits for it.
    async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}
