//! gorilla/websocket's echo client: sends the time every second, prints what
//! comes back, and closes cleanly on Ctrl-C.
//!
//! ```text
//! cargo run --example echo                               # the server, in one terminal
//! cargo run --example client -- ws://127.0.0.1:8080/echo # then Ctrl-C
//! cargo run --example client -- ws://127.0.0.1:8080/echo --count 3
//! ```
//!
//! It shows a client's two tasks and the close handshake started by the
//! client. The connection is split: a task reads and prints each message
//! (`recv: ...`), while the main task sends on a timer and watches for
//! Ctrl-C. On Ctrl-C (or after `--count N` echoes) it sends a close frame
//! with 1000 through a [`silverback::Handle`] and waits, up to one second as
//! gorilla's client does, for the reader to see the server's close; then it
//! exits with status 0. When the server ends the connection first, the
//! client exits with status 0 after a normal close and 1 otherwise.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use silverback::{CloseCode, CloseFrame, Dialer, Error};
use tokio::sync::mpsc;

/// How long the client waits for the server's close frame after sending its own.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

const USAGE: &str = "usage: client [URL] [--count N]   (URL default ws://127.0.0.1:8080/echo)";

#[tokio::main]
async fn main() -> ExitCode {
    let (url, count) = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // Before anything else, so that a Ctrl-C at any point is seen.
    let mut interrupt = std::pin::pin!(tokio::signal::ctrl_c());

    let dialer = Dialer::new().enable_compression(true).close_timeout(CLOSE_WAIT);
    let conn = match dialer.connect(&url).await {
        Ok((conn, _response)) => conn,
        Err(e) => {
            eprintln!("dial: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("connected to {url}");

    // The read half goes to a task of its own: it must keep reading for the
    // server's pings and close frame to be seen.
    let (mut read, mut write) = conn.split();
    let handle = write.handle();
    let (echoes_tx, mut echoes) = mpsc::unbounded_channel();
    let mut reader = tokio::spawn(async move {
        loop {
            match read.read_message().await {
                Ok(msg) => {
                    println!("recv: {}", String::from_utf8_lossy(&msg.data));
                    let _ = echoes_tx.send(());
                }
                Err(e) => return e,
            }
        }
    });

    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let (mut sent, mut received) = (0u64, 0u64);
    loop {
        tokio::select! {
            end = &mut reader => {
                // The server ended the connection.
                let end = end.expect("the reader task panicked");
                return if end.is_close(&[CloseCode::NORMAL, CloseCode::GOING_AWAY]) {
                    eprintln!("the server closed the connection: {end}");
                    ExitCode::SUCCESS
                } else {
                    eprintln!("read: {end}");
                    ExitCode::FAILURE
                };
            }
            _ = ticker.tick(), if count.map_or(true, |n| sent < n) => {
                if let Err(e) = write.write_text(now()).await {
                    eprintln!("write: {e}");
                    return ExitCode::FAILURE;
                }
                sent += 1;
            }
            Some(()) = echoes.recv() => {
                received += 1;
                if count == Some(received) {
                    break;
                }
            }
            _ = &mut interrupt => {
                eprintln!("interrupt");
                break;
            }
        }
    }

    // The clean close: our close frame, then the server's, then the end of
    // the stream. `Handle::close` waits up to the close timeout for the
    // reader to see the server's close frame.
    if let Err(e) = handle.close(CloseFrame::new(CloseCode::NORMAL, "")).await {
        eprintln!("close: {e}");
    }
    match tokio::time::timeout(CLOSE_WAIT, reader).await {
        Ok(Ok(end)) if end.is_close(&[CloseCode::NORMAL]) => eprintln!("closed: {end}"),
        Ok(Ok(Error::Closed(end))) => eprintln!("the server answered with an unexpected close: {end}"),
        Ok(Ok(end)) => eprintln!("no close frame from the server: {end}"),
        Ok(Err(e)) => eprintln!("the reader task failed: {e}"),
        Err(_) => eprintln!("no close frame from the server within {CLOSE_WAIT:?}"),
    }
    ExitCode::SUCCESS
}

/// The command line: `[URL] [--count N]`.
fn parse_args() -> Result<(String, Option<u64>), String> {
    let mut url = None;
    let mut count = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--count" {
            let n = args.next().ok_or("--count needs a number")?;
            count = Some(n.parse::<u64>().map_err(|e| format!("--count {n}: {e}"))?).filter(|&n| n > 0);
        } else if url.is_none() && !arg.starts_with('-') {
            url = Some(arg);
        } else {
            return Err(format!("unexpected argument {arg:?}"));
        }
    }
    Ok((url.unwrap_or_else(|| "ws://127.0.0.1:8080/echo".to_owned()), count))
}

/// The current time in UTC, e.g. `2024-05-01 12:34:56.789 UTC`.
fn now() -> String {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since_epoch.subsec_millis()
    )
}

/// The date of a day counted from 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}
