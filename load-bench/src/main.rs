//! Load comparison of silverback against other Rust WebSocket servers.
//!
//! ```text
//! load-bench server <impl> <addr> [--deflate] [--workers N]
//! load-bench client <scenario> <addr> [options]      (see client::USAGE)
//! ```
//!
//! Everything talks to 127.0.0.1 only; `run.sh` drives both sides.

mod client;
mod servers;

use std::process::ExitCode;

const USAGE: &str = "usage:
  load-bench server <impl> <addr> [--deflate | --broadcast] [--workers N]
      impl: silverback | tokio-tungstenite | fastwebsockets | yawc | tokio-websockets | sockudo-ws | raw-tcp
            | silverback-hyper | yawc-hyper | axum   (HTTP/1.1 and HTTP/2 with extended CONNECT, on hyper)
  load-bench client <scenario> <addr> [options]
      scenario: small | large | latency | idle | handshakes | http2 | broadcast
              | client (the small load, driven by the WebSocket client library --lib)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("server") => servers::main(&args[1..]),
        Some("client") => client::main(&args[1..]),
        _ => Err(format!("{USAGE}\n{}", client::USAGE)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The value after a `--flag`, parsed.
pub(crate) fn flag_value<T: std::str::FromStr>(args: &[String], flag: &str) -> Result<Option<T>, String> {
    match args.iter().position(|a| a == flag) {
        None => Ok(None),
        Some(i) => {
            let raw = args.get(i + 1).ok_or_else(|| format!("{flag} needs a value"))?;
            raw.parse().map(Some).map_err(|_| format!("{flag}: cannot parse {raw:?}"))
        }
    }
}

/// Whether a bare `--flag` is present.
pub(crate) fn has_flag(args: &[String], flag: &str) -> bool {
    args.iter().any(|a| a == flag)
}
