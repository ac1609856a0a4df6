//! Broadcast servers (the `broadcast` scenario, `server <impl> <addr>
//! --broadcast`): every text or binary message received from any client is
//! sent to every connected client, the sender included.
//!
//! Each is written the fastest way its crate offers, on the common ground of
//! the echo servers (one runtime worker, `TCP_NODELAY`, the same accept loop):
//! - `silverback`: `fanout::Hub` (each message framed once, shared, per
//!   subscriber a writer task over a bounded queue that feeds what waits and
//!   flushes once), slow subscribers' messages dropped;
//! - `tokio-tungstenite`: its `examples/server.rs` (a map of peers, each with
//!   an unbounded channel of `Message`s, cloned per peer: `Bytes`, no copy),
//!   each peer's writer feeding what waits into the sink and flushing once,
//!   as the example's `forward` does;
//! - `fastwebsockets`: hyper upgrade as its echo example, the connection
//!   split (`unstable-split`), a map of peers with unbounded channels of
//!   `Bytes`, `write_frame` per message (it has no write buffer to batch in);
//! - `sockudo-ws`: its handshake helpers, `WebSocketStream::split`, and its
//!   own `PubSub` (one topic; unbounded channels of `Message`), `send` per
//!   message.
//!
//! A message received is copied out of the read buffer once (silverback,
//! fastwebsockets) or taken as the library hands it over (tokio-tungstenite,
//! sockudo-ws give an owned `Bytes`); never once per subscriber.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::net::TcpListener;

use super::{accept_loop, report};

/// The implementations with a broadcast server.
pub const IMPLS: &[&str] = &["silverback", "tokio-tungstenite", "fastwebsockets", "sockudo-ws"];

/// silverback's per-subscriber queue (messages).
const QUEUE: usize = 1024;

/// Serves `name`'s broadcast server on `listener` forever.
pub async fn serve(name: String, listener: TcpListener) {
    match name.as_str() {
        "silverback" => silverback(listener).await,
        "tokio-tungstenite" => tungstenite(listener).await,
        "fastwebsockets" => fastwebsockets(listener).await,
        "sockudo-ws" => sockudo(listener).await,
        other => report("broadcast", format!("no broadcast server for {other}")),
    }
}

/// A map of peers to their outgoing channels, as in tokio-tungstenite's
/// `examples/server.rs`.
struct Peers<T> {
    next: AtomicU64,
    map: Mutex<HashMap<u64, tokio::sync::mpsc::UnboundedSender<T>>>,
}

impl<T: Clone> Peers<T> {
    fn new() -> Arc<Self> {
        Arc::new(Peers { next: AtomicU64::new(0), map: Mutex::new(HashMap::new()) })
    }

    fn add(&self, tx: tokio::sync::mpsc::UnboundedSender<T>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.map.lock().unwrap().insert(id, tx);
        id
    }

    fn remove(&self, id: u64) {
        self.map.lock().unwrap().remove(&id);
    }

    fn broadcast(&self, item: T) {
        for tx in self.map.lock().unwrap().values() {
            let _ = tx.send(item.clone());
        }
    }
}

// ---------------------------------------------------------------- silverback

async fn silverback(listener: TcpListener) {
    use silverback::fanout::{Hub, SlowPolicy};
    use silverback::{MessageType, Upgrader};

    let upgrader = Upgrader::new();
    let hub = Hub::with_capacity(QUEUE);
    accept_loop(listener, move |stream| {
        let (upgrader, hub) = (upgrader.clone(), hub.clone());
        async move {
            let conn = upgrader.accept(stream).await.map_err(|e| format!("silverback handshake: {e}"))?;
            let (mut read, write) = conn.split();
            let _subscription = hub.subscribe(write, SlowPolicy::Drop);
            // Until the client goes (a close, a reset: the run's end).
            while let Ok(msg) = read.read_message().await {
                if matches!(msg.kind, MessageType::Text | MessageType::Binary) {
                    hub.publish(msg.kind, Bytes::copy_from_slice(&msg.data)).await;
                }
            }
            Ok(())
        }
    })
    .await
}

// ---------------------------------------------------------- tokio-tungstenite

async fn tungstenite(listener: TcpListener) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let peers = Peers::<Message>::new();
    accept_loop(listener, move |stream| {
        let peers = peers.clone();
        async move {
            let ws =
                tokio_tungstenite::accept_async(stream).await.map_err(|e| format!("tungstenite handshake: {e}"))?;
            let (mut write, mut read) = ws.split();
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let id = peers.add(tx);
            let writer = tokio::spawn(async move {
                while let Some(msg) = rx.recv().await {
                    if write.feed(msg).await.is_err() {
                        return;
                    }
                    while let Ok(msg) = rx.try_recv() {
                        if write.feed(msg).await.is_err() {
                            return;
                        }
                    }
                    if write.flush().await.is_err() {
                        return;
                    }
                }
            });
            while let Some(Ok(msg)) = read.next().await {
                match msg {
                    Message::Text(_) | Message::Binary(_) => peers.broadcast(msg),
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            peers.remove(id);
            writer.abort();
            Ok(())
        }
    })
    .await
}

// ------------------------------------------------------------- fastwebsockets

async fn fastwebsockets(listener: TcpListener) {
    use fastwebsockets::{upgrade, Frame, OpCode, Payload, WebSocketError};
    use http_body_util::Empty;
    use hyper::body::Incoming;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Request, Response};

    type Item = (OpCode, Bytes);

    async fn handle_client(fut: upgrade::UpgradeFut, peers: Arc<Peers<Item>>) -> Result<(), WebSocketError> {
        let ws = fut.await?;
        let (mut read, mut write) = ws.split(tokio::io::split);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Item>();
        let id = peers.add(tx);
        let writer = tokio::spawn(async move {
            while let Some((opcode, data)) = rx.recv().await {
                let frame = Frame::new(true, opcode, None, Payload::Borrowed(&data));
                if write.write_frame(frame).await.is_err() {
                    return;
                }
            }
        });
        // Obligated replies (pongs, the close echo) are not sent by this
        // half; the scenario's clients send neither pings nor closes.
        let mut ignore = |_: Frame<'_>| async { Ok::<(), WebSocketError>(()) };
        loop {
            let frame = match read.read_frame(&mut ignore).await {
                Ok(frame) => frame,
                Err(_) => break,
            };
            match frame.opcode {
                OpCode::Close => break,
                OpCode::Text | OpCode::Binary if frame.fin => {
                    peers.broadcast((frame.opcode, Bytes::copy_from_slice(&frame.payload)))
                }
                _ => {}
            }
        }
        peers.remove(id);
        writer.abort();
        Ok(())
    }

    let peers = Peers::<Item>::new();
    accept_loop(listener, move |stream| {
        let peers = peers.clone();
        async move {
            let service = service_fn(move |mut req: Request<Incoming>| {
                let peers = peers.clone();
                async move {
                    let (response, fut) = upgrade::upgrade(&mut req)?;
                    tokio::spawn(async move {
                        if let Err(e) = handle_client(fut, peers).await {
                            report("fastwebsockets", e);
                        }
                    });
                    Ok::<Response<Empty<hyper::body::Bytes>>, WebSocketError>(response)
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            http1::Builder::new()
                .serve_connection(io, service)
                .with_upgrades()
                .await
                .map_err(|e| format!("fastwebsockets (hyper): {e}"))
        }
    })
    .await
}

// ----------------------------------------------------------------- sockudo-ws

async fn sockudo(listener: TcpListener) {
    use bytes::BytesMut;
    use sockudo_ws::handshake::{build_response, generate_accept_key, parse_request};
    use sockudo_ws::{Config, Message, PubSub, Role, WebSocketStream};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const TOPIC: &str = "all";
    let pubsub = Arc::new(PubSub::new());
    accept_loop(listener, move |mut stream| {
        let pubsub = pubsub.clone();
        async move {
            // The handshake as in the echo server (examples/simple_echo.rs).
            let mut buf = BytesMut::with_capacity(4096);
            let leftover = loop {
                let n = stream.read_buf(&mut buf).await.map_err(|e| format!("sockudo-ws handshake: {e}"))?;
                if n == 0 || buf.len() > 16 * 1024 {
                    return Err("sockudo-ws handshake: no request".into());
                }
                if let Some((req, consumed)) = parse_request(&buf).map_err(|e| format!("sockudo-ws: {e}"))? {
                    let response = build_response(&generate_accept_key(req.key), None, None);
                    stream.write_all(&response).await.map_err(|e| format!("sockudo-ws handshake: {e}"))?;
                    break buf.split_off(consumed);
                }
            };
            let leftover = (!leftover.is_empty()).then(|| leftover.freeze());
            let ws = WebSocketStream::from_raw_with_leftover(stream, Role::Server, Config::default(), leftover);
            let (mut read, mut write) = ws.split();
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let id = pubsub.create_subscriber(tx);
            pubsub.subscribe(id, TOPIC);
            let writer = tokio::spawn(async move {
                while let Some(msg) = rx.recv().await {
                    if write.send(msg).await.is_err() {
                        return;
                    }
                }
            });
            while let Some(Ok(msg)) = read.next().await {
                match msg {
                    Message::Text(_) | Message::Binary(_) => {
                        pubsub.publish(TOPIC, msg);
                    }
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            pubsub.remove_subscriber(id);
            writer.abort();
            Ok(())
        }
    })
    .await
}
