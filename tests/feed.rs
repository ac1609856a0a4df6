//! Write coalescing: `feed_message` buffers, and the buffer leaves with the
//! next write, a flush, or a read that would wait for input.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use silverback::{MessageType, Upgrader};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message as TMessage;

async fn pair() -> (silverback::Conn<TcpStream>, tokio_tungstenite::WebSocketStream<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        Upgrader::new().accept(stream).await.unwrap()
    });
    let stream = TcpStream::connect(addr).await.unwrap();
    let (client, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), stream).await.unwrap();
    (server.await.unwrap(), client)
}

#[tokio::test]
async fn fed_messages_wait_for_a_flush() {
    let (mut server, mut client) = pair().await;
    server.feed_message(MessageType::Text, "one").await.unwrap();
    server.feed_message(MessageType::Text, "two").await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(150), client.next()).await;
    assert!(early.is_err(), "a fed message left before any flush: {early:?}");
    server.flush().await.unwrap();
    for expected in ["one", "two"] {
        let msg = tokio::time::timeout(Duration::from_secs(2), client.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(msg, TMessage::Text(expected.into()));
    }
}

#[tokio::test]
async fn a_write_sends_fed_messages_first_and_in_order() {
    let (mut server, mut client) = pair().await;
    for i in 0..50 {
        server.feed_message(MessageType::Binary, [i as u8; 10]).await.unwrap();
    }
    server.write_message(MessageType::Text, "last").await.unwrap();
    for i in 0..50 {
        let msg = client.next().await.unwrap().unwrap();
        assert_eq!(msg, TMessage::Binary(vec![i as u8; 10].into()));
    }
    assert_eq!(client.next().await.unwrap().unwrap(), TMessage::Text("last".into()));
}

#[tokio::test]
async fn an_echo_loop_with_feed_never_leaves_a_reply_behind() {
    let (mut server, mut client) = pair().await;
    let echo = tokio::spawn(async move {
        while let Ok(msg) = server.read_message().await {
            if server.feed_message(msg.kind, &msg.data).await.is_err() {
                break;
            }
        }
    });
    // One at a time: each reply must come back although the server only fed it.
    for i in 0..20 {
        client.send(TMessage::Text(format!("ping {i}").into())).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(2), client.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(reply, TMessage::Text(format!("ping {i}").into()));
    }
    // A burst: every reply arrives, in order.
    for i in 0..200 {
        client.feed(TMessage::Binary(vec![(i % 251) as u8; 32].into())).await.unwrap();
    }
    client.flush().await.unwrap();
    for i in 0..200 {
        let reply = tokio::time::timeout(Duration::from_secs(2), client.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(reply, TMessage::Binary(vec![(i % 251) as u8; 32].into()));
    }
    client.close(None).await.unwrap();
    echo.await.unwrap();
}

#[tokio::test]
async fn a_full_buffer_is_sent_without_a_flush() {
    let (mut server, mut client) = pair().await;
    // Far more than the feed limit: most of it must leave on its own.
    for _ in 0..2000 {
        server.feed_message(MessageType::Binary, [7u8; 100]).await.unwrap();
    }
    let first = tokio::time::timeout(Duration::from_secs(2), client.next()).await;
    assert!(matches!(first, Ok(Some(Ok(TMessage::Binary(_))))), "{first:?}");
}
