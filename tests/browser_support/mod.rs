//! A small Chrome DevTools Protocol driver for the browser tests: launches
//! headless Chromium, opens tabs, evaluates JavaScript in them and types and
//! clicks as a user would. It speaks to Chromium's DevTools WebSocket with
//! silverback's own client.
//!
//! Chromium must be installed (Debian's `chromium`) or named by `$CHROMIUM`:
//! without it the tests fail with a message saying so.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use serde_json::{json, Value};
use silverback::{ClientStream, Conn, Dialer, MessageType};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Mutex;

/// The bound on one DevTools command, and on starting Chromium.
const STEP: Duration = Duration::from_secs(20);

/// A headless Chromium in a process group of its own, with a profile in a
/// fresh directory; the whole group is killed when dropped.
pub struct Browser {
    child: tokio::process::Child,
    pid: u32,
    dir: PathBuf,
    /// Host and port of the DevTools endpoint.
    devtools: String,
    /// The browser-level DevTools session.
    session: Cdp,
    /// The end of Chromium's stderr, for failure messages.
    log: Arc<StdMutex<Vec<String>>>,
}

impl Browser {
    /// Launches `$CHROMIUM` or `chromium` (or `chromium-browser`) headless
    /// with `--remote-debugging-port=0`, reads the DevTools URL from its
    /// stderr, and connects to it. Panics when Chromium is missing.
    pub async fn launch() -> Browser {
        let chromium = find_chromium();
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "silverback-cdp-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let child = tokio::process::Command::new(&chromium)
            .arg("--headless=new")
            .arg("--no-sandbox")
            .arg("--disable-gpu")
            .arg("--disable-dev-shm-usage")
            .arg("--remote-debugging-port=0")
            .arg("--remote-debugging-address=127.0.0.1")
            .arg(format!("--user-data-dir={}", dir.display()))
            .arg("--no-proxy-server")
            .arg("--disable-background-networking")
            .arg("--disable-component-update")
            .arg("--disable-sync")
            .arg("--disable-default-apps")
            .arg("--disable-extensions")
            .arg("--no-first-run")
            .arg("--no-default-browser-check")
            .arg("--no-pings")
            // Tabs in the background run as if in front.
            .arg("--disable-background-timer-throttling")
            .arg("--disable-backgrounding-occluded-windows")
            .arg("--disable-renderer-backgrounding")
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn();
        let mut child = child.unwrap_or_else(|e| {
            let _ = std::fs::remove_dir_all(&dir);
            panic!("cannot start {}: {e}", chromium.display())
        });
        let pid = child.id().unwrap();

        // Reads stderr to the end (so that Chromium never blocks on it),
        // handing over the DevTools URL when it appears.
        let log = Arc::new(StdMutex::new(Vec::new()));
        let (url_tx, url_rx) = tokio::sync::oneshot::channel();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let keep = log.clone();
        tokio::spawn(async move {
            let mut url_tx = Some(url_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    if let Some(tx) = url_tx.take() {
                        let _ = tx.send(url.trim().to_owned());
                    }
                }
                let mut log = keep.lock().unwrap();
                log.push(line);
                let excess = log.len().saturating_sub(60);
                log.drain(..excess);
            }
        });
        let guard = KillGroup(pid);
        let url = match tokio::time::timeout(STEP, url_rx).await {
            Ok(Ok(url)) => url,
            _ => panic!(
                "Chromium ({}) printed no DevTools URL within {STEP:?}; its stderr:\n{}",
                chromium.display(),
                log.lock().unwrap().join("\n")
            ),
        };
        let devtools = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("unexpected DevTools URL {url}"))
            .to_owned();
        let session = Cdp::connect(&url).await;
        std::mem::forget(guard);
        Browser { child, pid, dir, devtools, session, log }
    }

    /// Opens a new tab on `url`, waits for its load event, and returns it.
    pub async fn open(&self, url: &str) -> Page {
        let target = self.session.call("Target.createTarget", json!({ "url": "about:blank" })).await;
        let target_id = target["targetId"].as_str().expect("Target.createTarget returned no targetId").to_owned();
        let cdp = Cdp::connect(&format!("ws://{}/devtools/page/{target_id}", self.devtools)).await;
        cdp.call("Page.enable", json!({})).await;
        cdp.call("Runtime.enable", json!({})).await;
        let navigated = cdp.call("Page.navigate", json!({ "url": url })).await;
        if let Some(error) = navigated.get("errorText") {
            panic!("cannot open {url}: {error}");
        }
        cdp.wait_event("Page.loadEventFired", STEP).await;
        Page { cdp, target_id }
    }

    /// The end of Chromium's stderr.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        KillGroup(self.pid).kill();
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Kills a process group when dropped (unless forgotten).
struct KillGroup(u32);

impl KillGroup {
    fn kill(&self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0)])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for KillGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One tab, driven through its own DevTools WebSocket.
pub struct Page {
    cdp: Cdp,
    target_id: String,
}

impl Page {
    /// Evaluates `js` (awaiting a promise) and returns its value; panics on
    /// a JavaScript exception.
    pub async fn eval(&self, js: &str) -> Value {
        let reply = self
            .cdp
            .call("Runtime.evaluate", json!({ "expression": js, "returnByValue": true, "awaitPromise": true }))
            .await;
        if let Some(exception) = reply.get("exceptionDetails") {
            let text = exception["exception"]["description"].as_str().or(exception["text"].as_str()).unwrap_or("");
            panic!("JavaScript exception in `{js}`: {text}\n{exception:#}");
        }
        reply["result"].get("value").cloned().unwrap_or(Value::Null)
    }

    /// Evaluates `js` every 50 ms until its value is truthy, and returns it;
    /// panics after `timeout` with the last value.
    pub async fn wait_for(&self, js: &str, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let value = self.eval(js).await;
            if truthy(&value) {
                return value;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("`{js}` was still not true after {timeout:?}; its last value: {value}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Focuses the element matching `selector`, clears it, and types `text`
    /// into it as a user would (any characters, not only ASCII).
    pub async fn type_text(&self, selector: &str, text: &str) {
        self.cdp.call("Page.bringToFront", json!({})).await;
        let sel = json!(selector);
        self.eval(&format!(
            "(() => {{ const e = document.querySelector({sel}); if (!e) throw new Error('no element ' + {sel}); \
             e.focus(); e.value = ''; return true; }})()"
        ))
        .await;
        self.cdp.call("Input.insertText", json!({ "text": text })).await;
    }

    /// Clicks the center of the element matching `selector` with the mouse.
    pub async fn click(&self, selector: &str) {
        self.cdp.call("Page.bringToFront", json!({})).await;
        let sel = json!(selector);
        let point = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({sel}); if (!e) throw new Error('no element ' + {sel}); \
                 e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); \
                 return [r.left + r.width / 2, r.top + r.height / 2]; }})()"
            ))
            .await;
        let (x, y) = (point[0].as_f64().unwrap(), point[1].as_f64().unwrap());
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.cdp
                .call(
                    "Input.dispatchMouseEvent",
                    json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
                )
                .await;
        }
    }

    /// Presses Enter in the focused element.
    pub async fn press_enter(&self) {
        self.cdp.call("Page.bringToFront", json!({})).await;
        for kind in ["keyDown", "keyUp"] {
            let mut params = json!({ "type": kind, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13 });
            if kind == "keyDown" {
                params["text"] = json!("\r");
            }
            self.cdp.call("Input.dispatchKeyEvent", params).await;
        }
    }

    /// The `textContent` of every element matching `selector`, in document
    /// order.
    pub async fn texts(&self, selector: &str) -> Vec<String> {
        let sel = json!(selector);
        let value = self.eval(&format!("Array.from(document.querySelectorAll({sel}), e => e.textContent)")).await;
        serde_json::from_value(value).unwrap()
    }

    /// The DevTools id of this tab.
    pub fn target_id(&self) -> &str {
        &self.target_id
    }
}

/// JavaScript's truthiness of a value returned by value.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0 && !n.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// One DevTools WebSocket: commands numbered from 1, replies matched by id,
/// events kept until someone waits for them.
struct Cdp {
    conn: Mutex<CdpConn>,
    next_id: AtomicU64,
}

struct CdpConn {
    ws: Conn<ClientStream>,
    /// Events read while waiting for replies.
    events: Vec<Value>,
}

impl Cdp {
    async fn connect(url: &str) -> Cdp {
        let dialer = Dialer::new().handshake_timeout(Some(STEP));
        let (ws, _) = dialer.connect(url).await.unwrap_or_else(|e| panic!("cannot connect to DevTools at {url}: {e}"));
        Cdp { conn: Mutex::new(CdpConn { ws, events: Vec::new() }), next_id: AtomicU64::new(1) }
    }

    /// Sends a command and returns its result; panics on an error reply or
    /// when no reply comes within [`STEP`].
    async fn call(&self, method: &str, params: Value) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request = json!({ "id": id, "method": method, "params": params });
        let mut conn = self.conn.lock().await;
        let exchange = async {
            conn.ws.write_message(MessageType::Text, request.to_string()).await.map_err(|e| e.to_string())?;
            loop {
                let msg = conn.ws.read_message().await.map_err(|e| e.to_string())?;
                let value: Value = serde_json::from_slice(&msg.data).map_err(|e| e.to_string())?;
                if value.get("id").and_then(Value::as_u64) == Some(id) {
                    return Ok::<_, String>(value);
                }
                if value.get("method").is_some() {
                    conn.events.push(value);
                    let excess = conn.events.len().saturating_sub(1000);
                    conn.events.drain(..excess);
                }
            }
        };
        let reply = match tokio::time::timeout(STEP, exchange).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => panic!("DevTools {method}: {e}"),
            Err(_) => panic!("DevTools {method}: no reply within {STEP:?}"),
        };
        if let Some(error) = reply.get("error") {
            panic!("DevTools {method} failed: {error}");
        }
        reply.get("result").cloned().unwrap_or(Value::Null)
    }

    /// Waits for the event `method` (one already seen counts), returning
    /// its parameters.
    async fn wait_event(&self, method: &str, timeout: Duration) -> Value {
        let mut conn = self.conn.lock().await;
        if let Some(i) = conn.events.iter().position(|e| e["method"] == method) {
            return conn.events.remove(i)["params"].take();
        }
        let wait = async {
            loop {
                let msg = conn.ws.read_message().await.map_err(|e| e.to_string())?;
                let value: Value = serde_json::from_slice(&msg.data).map_err(|e| e.to_string())?;
                if value["method"] == method {
                    return Ok::<_, String>(value["params"].clone());
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(params)) => params,
            Ok(Err(e)) => panic!("DevTools, waiting for {method}: {e}"),
            Err(_) => panic!("DevTools: no {method} within {timeout:?}"),
        }
    }
}

/// The Chromium to run: `$CHROMIUM`, or `chromium` / `chromium-browser` on
/// the `PATH`. Missing, the test fails: CI installs it.
pub fn find_chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "this test needs headless Chromium and found none (no $CHROMIUM, no chromium or chromium-browser on the \
         PATH); install it with `apt-get install chromium`"
    );
}
