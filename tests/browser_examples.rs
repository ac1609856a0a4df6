//! The pages of the `echo`, `command` and `filewatch` examples in headless
//! Chromium, used as a person would: buttons clicked, text typed, the page
//! read back. The examples run as processes (`tests/examples_support`); the
//! browser is driven over the DevTools protocol (`tests/browser_support`).
//!
//! Chromium must be installed (Debian's `chromium`) or named by `$CHROMIUM`:
//! without it these tests fail.

#![cfg(target_os = "linux")]

mod browser_support;
mod examples_support;

use std::time::Duration;

use browser_support::{Browser, Page};
use examples_support::{children_of, wait_no_children, Running, TempFile};
use serde_json::json;

/// The bound on each wait for the page: only reached when something is broken.
const WAIT: Duration = Duration::from_secs(15);

/// Waits until some element matching `selector` has exactly `text` as its text.
async fn wait_for_line(page: &Page, selector: &str, text: &str) {
    let (selector, text) = (json!(selector), json!(text));
    page.wait_for(
        &format!("Array.from(document.querySelectorAll({selector})).some(e => e.textContent === {text})"),
        WAIT,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_page_round_trip() {
    let (_server, addr) = Running::server("echo", ["127.0.0.1:0"]).await;
    let browser = Browser::launch().await;
    let page = browser.open(&format!("http://{addr}/")).await;

    page.click("#open").await;
    wait_for_line(&page, "#output div", "OPEN").await;
    for text in ["Hello from Chromium", "ünïcödé ✓ <b>not bold</b>"] {
        page.type_text("#input", text).await;
        page.click("#send").await;
        wait_for_line(&page, "#output div", &format!("RESPONSE: {text}")).await;
    }
    page.click("#close").await;
    wait_for_line(&page, "#output div", "CLOSE").await;

    assert_eq!(
        page.texts("#output div").await,
        [
            "OPEN",
            "SEND: Hello from Chromium",
            "RESPONSE: Hello from Chromium",
            "SEND: ünïcödé ✓ <b>not bold</b>",
            "RESPONSE: ünïcödé ✓ <b>not bold</b>",
            "CLOSE",
        ]
    );
    // The output shows text, never markup.
    assert_eq!(page.eval("document.querySelectorAll('#output b').length").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_page_with_cat() {
    let (server, addr) = Running::server("command", ["--addr", "127.0.0.1:0", "cat"]).await;
    let browser = Browser::launch().await;
    let page = browser.open(&format!("http://{addr}/")).await;

    // The page's WebSocket has reached the server once `cat` runs for it.
    let deadline = tokio::time::Instant::now() + WAIT;
    while children_of(server.pid()).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no process started for the page's WebSocket");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Sent with the button...
    page.type_text("#msg", "hello, cat").await;
    send_form(&page, || page.click("#form input[type=submit]")).await;
    wait_for_line(&page, "#log div", "hello, cat").await;
    // ...and with Enter in the text box.
    page.type_text("#msg", "a second line").await;
    send_form(&page, || page.press_enter()).await;
    wait_for_line(&page, "#log div", "a second line").await;
    assert_eq!(page.texts("#log div").await, ["hello, cat", "a second line"]);

    // The person closes the browser: the server ends `cat`.
    drop(page);
    drop(browser);
    let left = wait_no_children(server.pid(), WAIT).await;
    assert!(left.is_empty(), "processes left after the browser went: {left:?}");
}

/// Submits the command page's form with `submit` until the page takes the
/// message (it clears the box once sent; before its WebSocket is open it
/// keeps it, and a person would press again).
async fn send_form<F, Fut>(page: &Page, submit: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        submit().await;
        if page.eval("document.getElementById('msg').value === ''").await == json!(true) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the page never sent the message");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filewatch_page_follows_the_file() {
    let file = TempFile::new("page.txt", "first version\n<i>not italic</i> & co");
    let path = file.path.to_str().unwrap();
    let (_server, addr) = Running::server("filewatch", [path, "127.0.0.1:0", "--poll", "50"]).await;
    let browser = Browser::launch().await;
    let page = browser.open(&format!("http://{addr}/")).await;

    // Rendered by the server, escaped: the text is the file's, with no markup.
    assert_eq!(page.texts("pre#fileData").await, ["first version\n<i>not italic</i> & co"]);
    assert_eq!(page.eval("document.querySelectorAll('#fileData i').length").await, 0);

    file.rewrite("second version\n");
    page.wait_for("document.getElementById('fileData').textContent === 'second version\\n'", WAIT).await;
    file.rewrite("third version");
    page.wait_for("document.getElementById('fileData').textContent === 'third version'", WAIT).await;
}
