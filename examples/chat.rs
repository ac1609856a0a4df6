//! A chat room in the browser: gorilla/websocket's chat example, in Rust,
//! and a room shared by several processes through Redis.
//!
//! ```text
//! cargo run --release --example chat                        # http://127.0.0.1:8080/
//! cargo run --release --example chat -- 127.0.0.1:8081 --redis redis://127.0.0.1:6379/
//! ```
//!
//! Open the printed URL in a few browser tabs and type: every message goes to
//! everyone in the room. One port serves the page at `/` and the WebSocket at
//! `/ws`, with hyper and [`Upgrader::upgrade`].
//!
//! What it shows:
//!
//! - **A hub** (one task) that owns the set of clients and broadcasts each
//!   message to all of them. A message is a [`PreparedMessage`]: framed, and
//!   compressed when a client negotiated permessage-deflate, once for every
//!   client instead of once per client.
//! - **Two tasks per client** over [`Conn::split`]: a reader that passes
//!   messages to the hub, and a writer that sends the client's queue. The
//!   reader enforces a read limit (`MAX_MESSAGE_SIZE`) and keepalive (a ping
//!   every `PING_PERIOD`; a client whose pong does not come back within
//!   `PONG_WAIT` is dropped); the writer puts a deadline (`WRITE_WAIT`) on
//!   every write.
//! - **A slow-consumer policy**: each client's queue is bounded (`QUEUE`
//!   messages). The hub never waits for a client: one whose queue is full is
//!   dropped from the room and closed with 1008 (policy violation, reason
//!   "too slow"), so a stalled reader costs a bounded amount of memory and
//!   never holds up the others.
//! - **Graceful shutdown** with [`Shutdown`]: every connection registers
//!   with it; on Ctrl-C or SIGTERM the server stops accepting, sends every
//!   client a close frame 1001 (going away), waits up to `SHUTDOWN_WAIT` for
//!   their replies, drops those that did not answer, and exits with status 0.
//! - **Scale-out** (`--redis URL`): processes that share a Redis server share
//!   the room through pub/sub on the channel `silverback-chat`. Each process
//!   broadcasts its own clients' messages locally and publishes them tagged
//!   with a random process id, and drops its own messages when the broker
//!   hands them back. A lost Redis is reported on stderr and reconnected with
//!   backoff; the local room keeps working meanwhile (messages published
//!   while Redis is away are lost, as pub/sub does). The broker sits behind
//!   the small `Broker` trait, of which Redis is one implementation.
//!
//! Options: an address to listen on (default `127.0.0.1:8080`; port 0 picks
//! a free port, and the URL printed at start has the real one),
//! `--no-compression` to turn permessage-deflate off, and `--redis URL`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use silverback::{
    CloseCode, CloseFrame, MessageType, PreparedMessage, ReadHalf, Shutdown, UpgradedStream, Upgrader, WriteHalf,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// The page: a form to send messages and a log of the room.
const HOME: &str = include_str!("chat/home.html");

/// The longest message a client may send, in bytes.
const MAX_MESSAGE_SIZE: u64 = 4096;
/// How often the server pings each client.
const PING_PERIOD: Duration = Duration::from_secs(30);
/// How long a ping waits for its pong before the client is dropped.
const PONG_WAIT: Duration = Duration::from_secs(10);
/// How long one write to a client may take.
const WRITE_WAIT: Duration = Duration::from_secs(10);
/// Messages waiting for one client; a client that falls further behind is
/// closed with 1008.
const QUEUE: usize = 256;
/// How long shutdown waits for the clients' close handshakes.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);
/// The pub/sub channel that the processes of one room share.
const CHANNEL: &str = "silverback-chat";

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut addr = "127.0.0.1:8080".to_owned();
    let mut compression = true;
    let mut redis_url = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--no-compression" => compression = false,
            "--redis" => redis_url = Some(args.next().unwrap_or_else(|| usage("--redis needs a URL"))),
            flag if flag.starts_with('-') => usage(&format!("unknown option {flag}")),
            _ => addr = arg,
        }
    }

    let broker: Option<Arc<dyn Broker>> = match redis_url {
        Some(url) => match RedisBroker::new(&url) {
            Ok(broker) => Some(Arc::new(broker)),
            Err(e) => usage(&format!("bad Redis URL {url}: {e}")),
        },
        None => None,
    };

    let listener = TcpListener::bind(&addr).await?;
    let local = listener.local_addr()?;
    println!("chat: open http://{local}/");

    let upgrader = Upgrader::new()
        .enable_compression(compression)
        .read_limit(Some(MAX_MESSAGE_SIZE))
        .ping_interval(Some(PING_PERIOD))
        .pong_timeout(PONG_WAIT);
    // Bounded too: a client sending faster than the hub broadcasts waits.
    let (hub, commands) = mpsc::channel(1024);
    let hub_task = tokio::spawn(run_hub(commands, broker));
    // Every WebSocket registers here, for the close at shutdown.
    let shutdown = Shutdown::new();
    let server = Server { upgrader, hub, shutdown: shutdown.clone(), next_id: Arc::new(AtomicU64::new(1)) };

    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = &mut signal => break,
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        eprintln!("chat: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let server = server.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(server.route(req)) }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).with_upgrades().await;
                });
            }
        }
    }

    // Stop accepting, say goodbye to everyone, wait a little for the replies.
    drop(listener);
    eprintln!("chat: shutting down");
    let frame = CloseFrame::new(CloseCode::GOING_AWAY, "server shutting down");
    let report = shutdown.shutdown(frame, SHUTDOWN_WAIT).await;
    eprintln!("chat: {} client(s) closed, {} dropped", report.closed, report.dropped);
    hub_task.abort();
    Ok(())
}

fn usage(problem: &str) -> ! {
    eprintln!("chat: {problem}\nusage: chat [ADDRESS] [--no-compression] [--redis redis://HOST:PORT/]");
    std::process::exit(2)
}

/// Resolves on Ctrl-C, or on SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("cannot listen for SIGTERM");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// What the HTTP side needs.
#[derive(Clone)]
struct Server {
    upgrader: Upgrader,
    hub: mpsc::Sender<Command>,
    shutdown: Shutdown,
    next_id: Arc<AtomicU64>,
}

impl Server {
    fn route(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        match req.uri().path() {
            "/" if req.method() == Method::GET => {
                let mut response = Response::new(Full::new(Bytes::from_static(HOME.as_bytes())));
                response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
                response
            }
            "/" => status(StatusCode::METHOD_NOT_ALLOWED),
            "/ws" if self.shutdown.is_started() => status(StatusCode::SERVICE_UNAVAILABLE),
            "/ws" => match self.upgrader.upgrade(req) {
                Ok((response, upgrading)) => {
                    let (hub, shutdown) = (self.hub.clone(), self.shutdown.clone());
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(async move {
                        match upgrading.await {
                            Ok(conn) => {
                                // Registered while the connection lives; one
                                // that arrives during the shutdown is closed
                                // at once.
                                let _guard = shutdown.watch(&conn);
                                serve_client(id, conn.split(), hub).await
                            }
                            Err(e) => eprintln!("chat: upgrade: {e}"),
                        }
                    });
                    response
                }
                Err(refused) => refused.response,
            },
            _ => status(StatusCode::NOT_FOUND),
        }
    }
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(code.canonical_reason().unwrap_or("").to_owned())));
    *response.status_mut() = code;
    response
}

/// What the hub is asked to do.
enum Command {
    /// A client joins: its queue, and how to tell its writer to close.
    Join { id: u64, queue: mpsc::Sender<Arc<PreparedMessage>>, close: oneshot::Sender<CloseFrame> },
    /// A client left (its reader ended).
    Leave { id: u64 },
    /// A client sent a message.
    Message { text: Bytes },
}

/// A client as the hub sees it.
struct Client {
    queue: mpsc::Sender<Arc<PreparedMessage>>,
    close: oneshot::Sender<CloseFrame>,
}

/// The hub: owns the clients, broadcasts local messages (and publishes them
/// to the broker) and the broker's messages from other processes.
async fn run_hub(mut commands: mpsc::Receiver<Command>, broker: Option<Arc<dyn Broker>>) {
    let origin = process_id();
    let mut remote = match &broker {
        Some(broker) => broker.subscribe(),
        // No broker: a channel that never yields.
        None => mpsc::channel(1).1,
    };
    let mut remote_open = broker.is_some();
    let mut clients: HashMap<u64, Client> = HashMap::new();
    loop {
        let text = tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Join { id, queue, close }) => {
                    clients.insert(id, Client { queue, close });
                    continue;
                }
                Some(Command::Leave { id }) => {
                    clients.remove(&id);
                    continue;
                }
                Some(Command::Message { text }) => {
                    if let Some(broker) = &broker {
                        broker.publish(Envelope::encode(origin, &text));
                    }
                    text
                }
                None => return,
            },
            payload = remote.recv(), if remote_open => match payload {
                Some(payload) => match Envelope::decode(&payload) {
                    // Our own message, back from the broker: already sent.
                    Some((from, _)) if from == origin => continue,
                    Some((_, text)) => text,
                    None => {
                        eprintln!("chat: dropping a malformed message from the broker");
                        continue;
                    }
                },
                None => {
                    remote_open = false;
                    continue;
                }
            },
        };
        // Framed (and compressed) once, for every client.
        let message = Arc::new(PreparedMessage::new(MessageType::Text, text));
        clients.retain(|id, client| match client.queue.try_send(message.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                eprintln!("chat: client {id} is too slow; closing it");
                let close = std::mem::replace(&mut client.close, oneshot::channel().0);
                let _ = close.send(CloseFrame::new(CloseCode::POLICY_VIOLATION, "too slow"));
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }
}

/// Runs one client: joins the hub, starts the writer, reads until the
/// connection ends, leaves.
async fn serve_client(
    id: u64,
    (read, write): (ReadHalf<UpgradedStream>, WriteHalf<UpgradedStream>),
    hub: mpsc::Sender<Command>,
) {
    let (queue, outgoing) = mpsc::channel(QUEUE);
    let (close, closing) = oneshot::channel();
    if hub.send(Command::Join { id, queue, close }).await.is_err() {
        return; // shutting down
    }
    let writer = tokio::spawn(write_pump(write, outgoing, closing));
    read_pump(read, &hub).await;
    let _ = hub.send(Command::Leave { id }).await;
    // The hub drops the client's queue, which ends the writer (unless it is
    // closing the connection, which the close handshake bounds).
    let _ = writer.await;
}

/// Passes the client's messages to the hub until the connection ends.
async fn read_pump(mut read: ReadHalf<UpgradedStream>, hub: &mpsc::Sender<Command>) {
    loop {
        match read.read_message().await {
            Ok(msg) if msg.kind == MessageType::Text => {
                if hub.send(Command::Message { text: msg.data }).await.is_err() {
                    return;
                }
            }
            Ok(_) => {} // binary messages are not part of this chat
            Err(e) => {
                // Closes from either side are routine (1008: this server
                // closed a slow client, and said so already).
                let routine = [
                    CloseCode::NORMAL,
                    CloseCode::GOING_AWAY,
                    CloseCode::NO_STATUS_RECEIVED,
                    CloseCode::POLICY_VIOLATION,
                ];
                if !e.is_close(&routine) {
                    eprintln!("chat: client: {e}");
                }
                return;
            }
        }
    }
}

/// Sends the client's queue, each write bounded by `WRITE_WAIT`, until the
/// hub lets the client go or asks for a close.
async fn write_pump(
    mut write: WriteHalf<UpgradedStream>,
    mut outgoing: mpsc::Receiver<Arc<PreparedMessage>>,
    mut closing: oneshot::Receiver<CloseFrame>,
) {
    let close = loop {
        let message = tokio::select! {
            biased;
            frame = &mut closing => break frame.ok(),
            message = outgoing.recv() => match message {
                Some(message) => message,
                None => break None,
            },
        };
        write.set_write_deadline(Some(Instant::now() + WRITE_WAIT));
        tokio::select! {
            biased;
            // A write stalled on a slow client gives way to the close.
            frame = &mut closing => break frame.ok(),
            written = write.write_prepared(&message) => {
                if written.is_err() {
                    return;
                }
            }
        }
    };
    if let Some(frame) = close {
        write.set_write_deadline(Some(Instant::now() + WRITE_WAIT));
        let _ = write.close(frame).await;
    }
}

/// A message between processes: the sending process's id (16 hex digits), a
/// space, the text.
struct Envelope;

impl Envelope {
    fn encode(origin: u64, text: &[u8]) -> Bytes {
        let mut payload = format!("{origin:016x} ").into_bytes();
        payload.extend_from_slice(text);
        payload.into()
    }

    fn decode(payload: &Bytes) -> Option<(u64, Bytes)> {
        let id = std::str::from_utf8(payload.get(..16)?).ok()?;
        let id = u64::from_str_radix(id, 16).ok()?;
        if payload.get(16) != Some(&b' ') || std::str::from_utf8(&payload[17..]).is_err() {
            return None;
        }
        Some((id, payload.slice(17..)))
    }
}

/// A random id for this process.
fn process_id() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher
        .write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    hasher.finish()
}

/// Carries the room's messages between processes.
trait Broker: Send + Sync {
    /// Sends `payload` to every subscribed process, this one included; best
    /// effort: while the broker is unreachable, messages are dropped.
    fn publish(&self, payload: Bytes);
    /// The messages published by every process, from now on, reconnecting
    /// as needed.
    fn subscribe(&self) -> mpsc::Receiver<Bytes>;
}

/// Redis pub/sub: publishes on a multiplexed connection, receives on a
/// dedicated one.
struct RedisBroker {
    client: redis::Client,
    publish: mpsc::Sender<Bytes>,
}

impl RedisBroker {
    fn new(url: &str) -> redis::RedisResult<RedisBroker> {
        let client = redis::Client::open(url)?;
        let (publish, pending) = mpsc::channel(1024);
        tokio::spawn(Self::publisher(client.clone(), pending));
        Ok(RedisBroker { client, publish })
    }

    /// Publishes what is queued; after an error, reconnects once at once and
    /// retries, and otherwise drops the message.
    async fn publisher(client: redis::Client, mut pending: mpsc::Receiver<Bytes>) {
        let mut conn: Option<redis::aio::MultiplexedConnection> = None;
        let mut reported = false;
        while let Some(payload) = pending.recv().await {
            for attempt in 0..2 {
                if conn.is_none() {
                    match tokio::time::timeout(Duration::from_secs(2), client.get_multiplexed_async_connection()).await
                    {
                        Ok(Ok(c)) => conn = Some(c),
                        Ok(Err(e)) if !reported => eprintln!("chat: redis: cannot connect to publish: {e}"),
                        Err(_) if !reported => eprintln!("chat: redis: cannot connect to publish: timed out"),
                        _ => {}
                    }
                    reported = conn.is_none();
                }
                let Some(c) = conn.as_mut() else { break };
                let mut command = redis::cmd("PUBLISH");
                command.arg(CHANNEL).arg(payload.as_ref());
                let published = command.query_async::<i64>(c);
                match tokio::time::timeout(Duration::from_secs(2), published).await {
                    Ok(Ok(_)) => break,
                    Ok(Err(e)) if attempt > 0 => eprintln!("chat: redis: publish: {e}"),
                    Err(_) if attempt > 0 => eprintln!("chat: redis: publish: timed out"),
                    _ => {}
                }
                conn = None;
            }
        }
    }

    /// Forwards the channel's messages to `tx`, reconnecting with backoff,
    /// until `tx` is closed.
    async fn subscriber(client: redis::Client, tx: mpsc::Sender<Bytes>) {
        use futures_util::StreamExt;
        const MIN_BACKOFF: Duration = Duration::from_millis(250);
        const MAX_BACKOFF: Duration = Duration::from_secs(5);
        let mut backoff = MIN_BACKOFF;
        // Failures are reported once per outage.
        let mut reported = false;
        loop {
            let subscribed = async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(CHANNEL).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            match tokio::time::timeout(Duration::from_secs(5), subscribed).await {
                Ok(Ok(pubsub)) => {
                    eprintln!("chat: redis: subscribed to {CHANNEL}");
                    backoff = MIN_BACKOFF;
                    reported = false;
                    let mut messages = pubsub.into_on_message();
                    while let Some(msg) = messages.next().await {
                        let payload: Vec<u8> = match msg.get_payload() {
                            Ok(payload) => payload,
                            Err(_) => continue,
                        };
                        if tx.send(payload.into()).await.is_err() {
                            return;
                        }
                    }
                    eprintln!("chat: redis: connection lost; reconnecting");
                }
                Ok(Err(e)) if !reported => {
                    eprintln!("chat: redis: cannot subscribe: {e}; retrying");
                    reported = true;
                }
                Err(_) if !reported => {
                    eprintln!("chat: redis: cannot subscribe: timed out; retrying");
                    reported = true;
                }
                _ => {}
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

impl Broker for RedisBroker {
    fn publish(&self, payload: Bytes) {
        if self.publish.try_send(payload).is_err() {
            eprintln!("chat: redis: publishing falls behind; dropping a message");
        }
    }

    fn subscribe(&self) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(Self::subscriber(self.client.clone(), tx));
        rx
    }
}
