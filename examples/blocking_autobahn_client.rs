//! The blocking client against an Autobahn fuzzing server (kosoku in
//! fuzzingserver mode): runs every case in turn on this thread, echoing each
//! message back, then asks the server to write its reports. The same
//! settings as `autobahn_client`, on `silverback::blocking`.
//!
//! ```text
//! cargo run --release --example blocking_autobahn_client --features blocking -- ws://127.0.0.1:9001
//! ```

use silverback::blocking::connect;
use silverback::{CloseCode, CloseFrame, Dialer, Error, Proxy};

const AGENT: &str = "silverback-blocking";

fn main() -> Result<(), Error> {
    let base = std::env::args().nth(1).unwrap_or_else(|| "ws://127.0.0.1:9001".to_owned());
    let dialer = Dialer::new().proxy(Proxy::None).read_limit(Some(64 << 20)).enable_compression(true);

    let (mut conn, _) = connect(&dialer, &format!("{base}/getCaseCount"))?;
    let count: u32 = match conn.read_message()?.as_text().map(str::trim).map(str::parse) {
        Some(Ok(count)) => count,
        _ => return Err(Error::InvalidResponse("getCaseCount did not answer a number".into())),
    };
    let _ = conn.close(CloseFrame::new(CloseCode::NORMAL, ""));
    println!("running {count} cases");

    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={AGENT}");
        match connect(&dialer, &url) {
            Ok((mut conn, _)) => {
                while let Ok(msg) = conn.read_message() {
                    if conn.write_message(msg.kind, &msg.data).is_err() {
                        break;
                    }
                }
            }
            Err(e) => eprintln!("case {case}: {e}"),
        }
    }

    let (mut conn, _) = connect(&dialer, &format!("{base}/updateReports?agent={AGENT}"))?;
    let _ = conn.close(CloseFrame::new(CloseCode::NORMAL, ""));
    println!("reports updated");
    Ok(())
}
