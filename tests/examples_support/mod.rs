//! Runs the example programs (`examples/chat.rs`, `echo.rs`, `client.rs`,
//! `command.rs`, `filewatch.rs`, `broadcast_server.rs`) as real processes: builds them once per test
//! binary with the same cargo, target directory, profile and features as the
//! tests, starts them, reads the
//! URL they print, and kills them when the test is done with them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// The examples these tests run.
const EXAMPLES: [&str; 6] = ["chat", "echo", "client", "command", "filewatch", "broadcast_server"];

/// The bound on any one step of a test (a line of output, an exit): only
/// reached when something is broken.
pub const STEP: Duration = Duration::from_secs(15);

/// The path of example `name`'s binary, built on first use.
pub fn example(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    assert!(EXAMPLES.contains(&name), "{name} is not among the examples built here");
    DIR.get_or_init(build).join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// `cargo build --example ...` for every example, with the features this
/// test binary was built with, so that the library is not built again.
/// Returns the directory of the example binaries.
fn build() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let features: Vec<&str> = [
        ("tokio", cfg!(feature = "tokio")),
        ("tls", cfg!(feature = "tls")),
        ("rustls", cfg!(feature = "rustls")),
        ("blocking", cfg!(feature = "blocking")),
        ("futures", cfg!(feature = "futures")),
        ("axum", cfg!(feature = "axum")),
        ("json", cfg!(feature = "json")),
        ("hyper", cfg!(feature = "hyper")),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect();
    // This test runs from <target>/<profile>/deps/: the examples go to
    // <target>/<profile>/examples/.
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("<target>/<profile>").to_owned();
    let target_dir = profile_dir.parent().expect("<target>");
    let mut cargo = std::process::Command::new(env!("CARGO"));
    cargo.current_dir(manifest_dir).arg("build").arg("--target-dir").arg(target_dir).args([
        "--no-default-features",
        "--features",
        &features.join(","),
    ]);
    match profile_dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") => {}
        Some("release") => {
            cargo.arg("--release");
        }
        Some(other) => {
            cargo.args(["--profile", other]);
        }
        None => panic!("no profile in {}", profile_dir.display()),
    }
    for name in EXAMPLES {
        cargo.args(["--example", name]);
    }
    // Without the variables cargo sets for a test's run: build scripts that
    // watch them (ring's watches CARGO_MANIFEST_DIR) would run again, and
    // their crates be rebuilt here and once more by the next `cargo test`.
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("CARGO_PKG_")
            || key == "OUT_DIR"
            || matches!(
                key,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
            )
        {
            cargo.env_remove(key);
        }
    }
    let output = cargo.stdin(Stdio::null()).output().expect("cannot run cargo");
    assert!(
        output.status.success(),
        "cargo build of the examples failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    profile_dir.join("examples")
}

/// A running example; killed when dropped.
pub struct Running {
    pub name: &'static str,
    pub child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Running {
    /// Starts example `name` with `args`. Its standard output is read by the
    /// test; its standard error goes to the test's.
    pub fn start<I, A>(name: &'static str, args: I) -> Running
    where
        I: IntoIterator<Item = A>,
        A: AsRef<std::ffi::OsStr>,
    {
        let mut child = Command::new(example(name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start example {name}: {e}"));
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Running { name, child, stdout }
    }

    /// Starts a server example on a free port and returns it with the
    /// address it printed (`host:port`).
    pub async fn server<I, A>(name: &'static str, args: I) -> (Running, String)
    where
        I: IntoIterator<Item = A>,
        A: AsRef<std::ffi::OsStr>,
    {
        let mut running = Running::start(name, args);
        let line = running.line().await.unwrap_or_else(|| panic!("{name} printed nothing"));
        let prefix = format!("{name}: open http://");
        let addr = line
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix('/'))
            .unwrap_or_else(|| panic!("{name} printed {line:?}, not {prefix}HOST:PORT/"));
        assert!(!addr.ends_with(":0"), "{name} printed port 0 instead of the bound port: {line}");
        let addr = addr.to_owned();
        (running, addr)
    }

    /// The next line of standard output; `None` at its end. Panics after [`STEP`].
    pub async fn line(&mut self) -> Option<String> {
        match tokio::time::timeout(STEP, self.stdout.next_line()).await {
            Ok(line) => line.expect("reading the example's output"),
            Err(_) => panic!("{} printed no line within {STEP:?}", self.name),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("the example is still running")
    }

    /// Waits for the process to exit. Panics after [`STEP`].
    pub async fn wait(&mut self) -> std::process::ExitStatus {
        match tokio::time::timeout(STEP, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!("{} did not exit within {STEP:?}", self.name),
        }
    }

    /// Sends SIGINT, as Ctrl-C in a terminal does (with the `kill` utility:
    /// the standard library cannot send it).
    pub fn interrupt(&self) {
        let status = std::process::Command::new("kill")
            .args(["-INT", &self.pid().to_string()])
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill -INT failed: {status}");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The processes whose parent is `pid`, as (pid, command name), from /proc.
pub fn children_of(pid: u32) -> Vec<(u32, String)> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("this test reads /proc").flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let mut fields = stat[close + 1..].split_whitespace();
        let ppid = fields.nth(1).and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            children.push((child, stat[open + 1..close].to_owned()));
        }
    }
    children
}

/// Polls [`children_of`] until `pid` has none; returns those left after `within`.
pub async fn wait_no_children(pid: u32, within: Duration) -> Vec<(u32, String)> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let children = children_of(pid);
        if children.is_empty() || tokio::time::Instant::now() >= deadline {
            return children;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A plain HTTP/1.1 GET: the status and the body.
pub async fn http_get(addr: &str, path: &str) -> (u16, String) {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        String::from_utf8(response).expect("a UTF-8 response")
    };
    let response = tokio::time::timeout(STEP, exchange).await.expect("no HTTP response in time");
    let (head, body) = response.split_once("\r\n\r\n").expect("a whole HTTP response");
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    assert!(!head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "unexpected chunked response: {head}");
    (status, body.to_owned())
}

/// A file in a fresh temporary directory, removed when dropped.
pub struct TempFile {
    dir: PathBuf,
    pub path: PathBuf,
}

impl TempFile {
    pub fn new(name: &str, content: &str) -> TempFile {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("silverback-examples-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        TempFile { dir, path }
    }

    /// Rewrites the file and moves its modification time one second past the
    /// previous one, so that the change shows whatever the file system's
    /// timestamp resolution.
    pub fn rewrite(&self, content: &str) {
        let before = std::fs::metadata(&self.path).unwrap().modified().unwrap();
        std::fs::write(&self.path, content).unwrap();
        let file = std::fs::File::options().write(true).open(&self.path).unwrap();
        file.set_modified(before + Duration::from_secs(1)).unwrap();
    }

    /// The modification time in nanoseconds since the Unix epoch, in hex, as
    /// the filewatch page carries it.
    pub fn last_mod_hex(&self) -> String {
        let modified = std::fs::metadata(&self.path).unwrap().modified().unwrap();
        format!("{:x}", modified.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
