//! Runs every case of an Autobahn fuzzing server (kosoku in fuzzingserver
//! mode), echoing each message back, then asks it to write its reports.
//!
//! ```text
//! cargo run --release --example autobahn_client -- ws://127.0.0.1:9001
//! ```

use silverback::{Dialer, Error, Proxy};

const AGENT: &str = "silverback";

#[tokio::main]
async fn main() -> Result<(), Error> {
    let base = std::env::args().nth(1).unwrap_or_else(|| "ws://127.0.0.1:9001".to_owned());
    let dialer = Dialer::new().proxy(Proxy::None).read_limit(Some(64 << 20)).enable_compression(true);

    let (mut conn, _) = dialer.connect(&format!("{base}/getCaseCount")).await?;
    let count: u32 = match conn.read_message().await?.as_text().map(str::trim).map(str::parse) {
        Some(Ok(count)) => count,
        _ => return Err(Error::InvalidResponse("getCaseCount did not answer a number".into())),
    };
    let _ = conn.close(silverback::CloseFrame::new(silverback::CloseCode::NORMAL, "")).await;
    println!("running {count} cases");

    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={AGENT}");
        match dialer.connect(&url).await {
            Ok((mut conn, _)) => {
                while let Ok(msg) = conn.read_message().await {
                    if conn.write_message(msg.kind, &msg.data).await.is_err() {
                        break;
                    }
                }
            }
            Err(e) => eprintln!("case {case}: {e}"),
        }
    }

    let (mut conn, _) = dialer.connect(&format!("{base}/updateReports?agent={AGENT}")).await?;
    let _ = conn.close(silverback::CloseFrame::new(silverback::CloseCode::NORMAL, "")).await;
    println!("reports updated");
    Ok(())
}
