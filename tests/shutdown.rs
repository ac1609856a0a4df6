//! Graceful shutdown: `Shutdown` closes hundreds of live connections with
//! the caller's close code, drops those that do not answer at the deadline,
//! and deals with connections that arrive after it started.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use silverback::Conn;
use silverback::{CloseCode, CloseFrame, Error, Shutdown, Upgrader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as TMessage;

/// An echo server whose accept loop stops when the shutdown starts (and
/// drops its listener). Each connection's reader loop sends the error that
/// ended it to the returned channel.
async fn serve(shutdown: Shutdown) -> (SocketAddr, JoinHandle<()>, mpsc::UnboundedReceiver<Error>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let accept_loop = tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => accepted.unwrap().0,
                _ = shutdown.started() => break,
            };
            let (shutdown, tx) = (shutdown.clone(), tx.clone());
            tokio::spawn(async move {
                let Ok(mut conn) = Upgrader::new().accept(stream).await else { return };
                let _guard = shutdown.watch(&conn);
                let end = loop {
                    match conn.read_message().await {
                        Ok(msg) => {
                            if let Err(e) = conn.write_message(msg.kind, &msg.data).await {
                                break e;
                            }
                        }
                        Err(e) => break e,
                    }
                };
                let _ = tx.send(end);
            });
        }
    });
    (addr, accept_loop, rx)
}

/// A tokio-tungstenite client that echoes a greeting, then reads until the
/// server's close (answered by tungstenite) and the end of the stream;
/// returns the close frame's code and reason.
fn responsive_client(addr: SocketAddr, ready: mpsc::UnboundedSender<()>) -> JoinHandle<Option<(u16, String)>> {
    tokio::spawn(async move {
        let mut ws = tungstenite_client(addr).await;
        ws.send(TMessage::text("hello")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), TMessage::text("hello"));
        ready.send(()).unwrap();
        let mut close = None;
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(TMessage::Close(frame)) => close = frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        close
    })
}

/// Waits until `n` connections are registered.
async fn until_tracked(shutdown: &Shutdown, n: usize) {
    within(async {
        while shutdown.len() < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_connections_close_with_going_away() {
    const N: usize = 300;
    let shutdown = Shutdown::new();
    let (addr, accept_loop, mut ends) = serve(shutdown.clone()).await;
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    let clients: Vec<_> = (0..N).map(|_| responsive_client(addr, ready_tx.clone())).collect();
    for _ in 0..N {
        within(ready.recv()).await.unwrap();
    }
    until_tracked(&shutdown, N).await;
    assert!(!shutdown.is_started());

    let timeout = Duration::from_secs(5);
    let start = Instant::now();
    let report = shutdown.shutdown(CloseFrame::new(CloseCode::GOING_AWAY, "bye"), timeout).await;
    assert!(start.elapsed() < timeout, "took {:?}", start.elapsed());
    assert_eq!((report.closed, report.dropped, report.failed), (N, 0, 0), "{report:?}");
    assert!(shutdown.is_started());
    within(accept_loop).await.unwrap();

    for client in clients {
        assert_eq!(within(client).await.unwrap(), Some((1001, "bye".to_string())));
    }
    // Every server reader loop saw the close handshake as a normal close.
    for _ in 0..N {
        let end = within(ends.recv()).await.unwrap();
        assert!(end.is_close(&[CloseCode::GOING_AWAY]), "{end:?}");
    }
    // Every guard is gone with its connection: nothing is left registered.
    assert!(shutdown.is_empty(), "{} left", shutdown.len());
    // The listener is gone: new connections are refused.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_do_not_answer_are_dropped_at_the_deadline() {
    const GOOD: usize = 40;
    const MUTE: usize = 10;
    let shutdown = Shutdown::new();
    let (addr, _accept_loop, mut ends) = serve(shutdown.clone()).await;
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    let clients: Vec<_> = (0..GOOD).map(|_| responsive_client(addr, ready_tx.clone())).collect();
    for _ in 0..GOOD {
        within(ready.recv()).await.unwrap();
    }
    // Clients that finish the handshake and then never read again.
    let mut mute = Vec::new();
    for _ in 0..MUTE {
        mute.push(RawClient::connect(addr).await);
    }
    until_tracked(&shutdown, GOOD + MUTE).await;

    let timeout = Duration::from_millis(600);
    let start = Instant::now();
    let report = shutdown.shutdown(CloseFrame::new(CloseCode::GOING_AWAY, ""), timeout).await;
    let took = start.elapsed();
    assert_eq!((report.closed, report.dropped, report.failed), (GOOD, MUTE, 0), "{report:?}");
    assert_eq!(report.total(), GOOD + MUTE);
    assert!(took >= timeout, "returned before the deadline: {took:?}");
    assert!(took < timeout + Duration::from_secs(1), "took {took:?}");

    for client in clients {
        assert_eq!(within(client).await.unwrap(), Some((1001, String::new())));
    }
    // The mute clients were sent the close, then the connection ended.
    for mut raw in mute {
        assert_eq!(raw.read_close().await, Some((1001, String::new())));
        raw.expect_eof().await;
    }
    let mut closed = 0;
    for _ in 0..GOOD + MUTE {
        let end = within(ends.recv()).await.unwrap();
        if end.is_close(&[CloseCode::GOING_AWAY]) {
            closed += 1;
        } else {
            // Dropped at the deadline: the reader's read failed.
            assert!(matches!(&end, Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionAborted), "{end:?}");
        }
    }
    assert_eq!(closed, GOOD);
    within(async {
        while !shutdown.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn service_restart_reaches_silverback_clients() {
    const N: usize = 20;
    let shutdown = Shutdown::new();
    let (addr, _accept_loop, _ends) = serve(shutdown.clone()).await;
    let mut clients = Vec::new();
    for _ in 0..N {
        let mut conn = silverback_client(addr).await;
        clients.push(tokio::spawn(async move {
            loop {
                if let Err(e) = conn.read_message().await {
                    return (e, conn.close_error().cloned());
                }
            }
        }));
    }
    until_tracked(&shutdown, N).await;
    let frame = CloseFrame::new(CloseCode::SERVICE_RESTART, "restarting");
    let report = shutdown.shutdown(frame, Duration::from_secs(5)).await;
    assert_eq!((report.closed, report.dropped), (N, 0));
    for client in clients {
        let (end, close) = within(client).await.unwrap();
        assert!(end.is_close(&[CloseCode::SERVICE_RESTART]), "{end:?}");
        let close = close.unwrap();
        assert_eq!((close.code, close.reason.as_str()), (CloseCode::SERVICE_RESTART, "restarting"));
    }
    // A second call starts nothing new and reports the same.
    let again = shutdown.shutdown(CloseFrame::new(CloseCode::GOING_AWAY, ""), Duration::from_secs(1)).await;
    assert_eq!(again, report);
}

/// A raw client and the server's end of its connection.
async fn pair(listener: &TcpListener, upgrader: &Upgrader, addr: SocketAddr) -> (RawClient, Conn<TcpStream>) {
    let server = async { upgrader.accept(listener.accept().await.unwrap().0).await.unwrap() };
    within(async { tokio::join!(RawClient::connect(addr), server) }).await
}

#[tokio::test]
async fn connections_tracked_after_the_start_are_closed_at_once() {
    let shutdown = Shutdown::new();
    let (listener, addr) = listen().await;
    let upgrader = Upgrader::new();
    // One mute connection keeps the shutdown waiting until its deadline.
    let (mut mute, conn) = pair(&listener, &upgrader, addr).await;
    let _mute_guard = shutdown.watch(&conn);

    let running = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown.shutdown(CloseFrame::new(CloseCode::GOING_AWAY, "late"), Duration::from_millis(500)).await
        })
    };
    within(shutdown.started()).await;

    // A connection that finished its handshake while the shutdown runs is
    // sent the close frame at once, and counted.
    let (mut late, mut late_conn) = pair(&listener, &upgrader, addr).await;
    let late_guard = shutdown.watch(&late_conn);
    assert_eq!(late.read_close().await, Some((1001, "late".to_string())));
    late.send_close(1001, "").await;
    let end = within(late_conn.read_message()).await.unwrap_err();
    assert!(end.is_close(&[CloseCode::GOING_AWAY]), "{end:?}");
    late.expect_eof().await;
    drop(late_guard);

    let report = within(running).await.unwrap();
    assert_eq!((report.closed, report.dropped, report.failed), (1, 1, 0), "{report:?}");
    assert_eq!(mute.read_close().await, Some((1001, "late".to_string())));

    // After the shutdown is over, a new connection is shut down at once,
    // without a close frame.
    let (mut after, mut after_conn) = pair(&listener, &upgrader, addr).await;
    let _after_guard = shutdown.watch(&after_conn);
    after.expect_eof().await;
    assert!(within(after_conn.read_message()).await.is_err());
    drop(conn);
}

#[tokio::test]
async fn guards_deregister_their_connections() {
    let shutdown = Shutdown::new();
    let (addr, _accept_loop, _ends) = serve(shutdown.clone()).await;
    for round in 0..3 {
        let mut clients = Vec::new();
        for _ in 0..20 {
            clients.push(silverback_client(addr).await);
        }
        until_tracked(&shutdown, 20).await;
        for mut client in clients {
            client.close(CloseFrame::new(CloseCode::NORMAL, "")).await.unwrap();
        }
        within(async {
            while !shutdown.is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert_eq!(shutdown.len(), 0, "round {round}");
    }
    // Nothing to close: the shutdown returns at once.
    let start = Instant::now();
    let report = shutdown.shutdown(CloseFrame::new(CloseCode::GOING_AWAY, ""), Duration::from_secs(5)).await;
    assert_eq!(report.total(), 0);
    assert!(start.elapsed() < Duration::from_secs(1));
}
