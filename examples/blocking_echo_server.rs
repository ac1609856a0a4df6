//! Echoes every text and binary message back to its sender, with the
//! blocking API: a thread per connection.
//!
//! ```text
//! cargo run --release --features blocking --example blocking_echo_server -- 127.0.0.1:9003
//! ```
//!
//! The Autobahn TestSuite drives this server in CI, as it does `echo_server`.

use std::net::{TcpListener, TcpStream};
use std::thread;

use silverback::blocking::{self, Upgrader};
use silverback::{CloseCode, Error};

fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9003".to_owned());
    let listener = TcpListener::bind(&addr)?;
    println!("blocking_echo_server listening on ws://{}", listener.local_addr()?);
    // Autobahn sends messages of up to 16 MiB; allow well beyond that.
    let upgrader = Upgrader::new().read_limit(Some(64 << 20)).enable_compression(true);
    for stream in listener.incoming() {
        let stream = stream?;
        let _ = stream.set_nodelay(true);
        let upgrader = upgrader.clone();
        thread::spawn(move || {
            let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
            if let Err(e) = echo(&upgrader, stream) {
                if !e.is_close(&[CloseCode::NORMAL, CloseCode::GOING_AWAY, CloseCode::NO_STATUS_RECEIVED]) {
                    eprintln!("{peer}: {e}");
                }
            }
        });
    }
    Ok(())
}

fn echo(upgrader: &Upgrader, stream: TcpStream) -> Result<(), Error> {
    let mut conn = blocking::accept(upgrader, stream)?;
    loop {
        let msg = conn.read_message()?;
        conn.write_message(msg.kind, &msg.data)?;
    }
}
