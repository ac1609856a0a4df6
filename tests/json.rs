//! JSON messages (feature `json`).
#![cfg(feature = "json")]

use serde::{Deserialize, Serialize};
use silverback::{Error, MessageType, Upgrader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Tick {
    symbol: String,
    price: f64,
}

#[tokio::test]
async fn json_round_trip_and_a_bad_message() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut conn = Upgrader::new().accept(stream).await.unwrap();
        let tick: Tick = conn.read_json().await.unwrap();
        conn.write_json(&tick).await.unwrap();
        let bad = conn.read_json::<Tick>().await;
        assert!(matches!(bad, Err(Error::Json(_))), "{bad:?}");
    });
    let stream = TcpStream::connect(addr).await.unwrap();
    let dialer = silverback::Dialer::new().proxy(silverback::Proxy::None);
    let (mut client, _) = dialer.connect_on(stream, &format!("ws://{addr}/")).await.unwrap();
    let sent = Tick { symbol: "ABC".into(), price: 101.25 };
    client.write_json(&sent).await.unwrap();
    let echoed = client.read_message().await.unwrap();
    assert!(echoed.is_text());
    assert_eq!(serde_json::from_slice::<Tick>(&echoed.data).unwrap(), sent);
    client.write_message(MessageType::Text, "{not json").await.unwrap();
    server.await.unwrap();
}
