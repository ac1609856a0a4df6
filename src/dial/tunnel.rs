//! Opening a proxy tunnel over an async stream: moves the bytes of the
//! exchanges `proxy.rs` and `socks5.rs` decide.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::proxy::{connect_reply, connect_reply_reader, connect_request, ProxyKind, ProxyServer};
use super::socks5::{io_failure, Socks5};
use super::target::Target;
use crate::conn::Stream;
use crate::error::Result;
use crate::handshake_io::read_head;

/// Opens a tunnel to `target` through an already connected proxy stream.
pub(crate) async fn tunnel<S: Stream>(stream: &mut S, proxy: &ProxyServer, target: &Target) -> Result<()> {
    match proxy.kind {
        ProxyKind::HttpConnect | ProxyKind::HttpsConnect => {
            let request = connect_request(proxy, target)?;
            stream.write_all(request.as_bytes()).await?;
            stream.flush().await?;
            let reply = read_head(stream, &mut connect_reply_reader(), 1).await?;
            connect_reply(target, reply)
        }
        ProxyKind::Socks5 => {
            let mut socks = Socks5::new(proxy, target);
            let mut reply = Vec::new();
            while let Some(exchange) = socks.next(&reply)? {
                if !exchange.send.is_empty() {
                    stream.write_all(&exchange.send).await.map_err(io_failure)?;
                    stream.flush().await.map_err(io_failure)?;
                }
                reply.resize(exchange.read, 0);
                stream.read_exact(&mut reply).await.map_err(io_failure)?;
            }
            Ok(())
        }
    }
}
