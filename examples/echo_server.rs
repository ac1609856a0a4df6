//! Echoes every text and binary message back to its sender.
//!
//! ```text
//! cargo run --release --example echo_server -- 127.0.0.1:9001
//! ```
//!
//! This is the server the Autobahn TestSuite drives in CI.

use silverback::{CloseCode, Error, Upgrader};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9001".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    println!("echo_server listening on ws://{}", listener.local_addr()?);
    // Autobahn sends messages of up to 16 MiB; allow well beyond that.
    let upgrader = Upgrader::new().read_limit(Some(64 << 20)).enable_compression(true);
    loop {
        let (stream, peer) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let upgrader = upgrader.clone();
        tokio::spawn(async move {
            if let Err(e) = echo(&upgrader, stream).await {
                if !e.is_close(&[CloseCode::NORMAL, CloseCode::GOING_AWAY, CloseCode::NO_STATUS_RECEIVED]) {
                    eprintln!("{peer}: {e}");
                }
            }
        });
    }
}

async fn echo(upgrader: &Upgrader, stream: tokio::net::TcpStream) -> Result<(), Error> {
    let mut conn = upgrader.accept(stream).await?;
    loop {
        let msg = conn.read_message().await?;
        // Fed replies leave together when the next read would wait.
        conn.feed_message(msg.kind, &msg.data).await?;
    }
}
