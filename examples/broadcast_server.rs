//! Sends every text and binary message received from any client to every
//! connected client, the sender included.
//!
//! ```text
//! cargo run --release --example broadcast_server -- 127.0.0.1:9005
//! ```
//!
//! Built on [`silverback::fanout::Hub`]: each message is framed (and, per
//! negotiated compression variant, compressed) once, and every client's
//! writer task sends the same shared bytes. A client that falls more than the
//! hub's queue behind is closed with 1008 (policy violation) instead of
//! holding up the others or making the server hold more and more for it.

use bytes::Bytes;
use silverback::fanout::{Hub, SlowPolicy};
use silverback::{CloseCode, Error, MessageType, Upgrader};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9005".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    println!("broadcast_server listening on ws://{}", listener.local_addr()?);
    let upgrader = Upgrader::new().enable_compression(true);
    let hub = Hub::new();
    loop {
        let (stream, peer) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (upgrader, hub) = (upgrader.clone(), hub.clone());
        tokio::spawn(async move {
            if let Err(e) = serve(&upgrader, &hub, stream).await {
                if !e.is_close(&[CloseCode::NORMAL, CloseCode::GOING_AWAY, CloseCode::NO_STATUS_RECEIVED]) {
                    eprintln!("{peer}: {e}");
                }
            }
        });
    }
}

/// One client: its write half joins the hub; its read half publishes what
/// the client sends, until the connection ends (which unsubscribes it).
async fn serve(upgrader: &Upgrader, hub: &Hub, stream: TcpStream) -> Result<(), Error> {
    let conn = upgrader.accept(stream).await?;
    let (mut read, write) = conn.split();
    let _subscription = hub.subscribe(write, SlowPolicy::Close(CloseCode::POLICY_VIOLATION));
    loop {
        let msg = read.read_message().await?;
        if matches!(msg.kind, MessageType::Text | MessageType::Binary) {
            // One copy per message, not per client: the received message
            // shares the connection's read buffer, which queued copies would
            // otherwise keep allocated.
            hub.publish(msg.kind, Bytes::copy_from_slice(&msg.data)).await;
        }
    }
}
