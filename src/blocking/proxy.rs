//! Opening a proxy tunnel over a blocking stream: moves the bytes of the
//! exchanges the dialer's proxy rules decide (HTTP `CONNECT`, SOCKS5), as
//! the async tunnel does.

use std::io::{Read, Write};

use super::head_io::read_head;
use crate::dial::{
    connect_reply, connect_reply_reader, connect_request, socks5_io_failure, ProxyKind, ProxyServer, Socks5, Target,
};
use crate::error::Result;

/// Opens a tunnel to `target` through an already connected proxy stream.
pub(crate) fn tunnel<S: Read + Write>(stream: &mut S, proxy: &ProxyServer, target: &Target) -> Result<()> {
    match proxy.kind {
        ProxyKind::HttpConnect | ProxyKind::HttpsConnect => {
            let request = connect_request(proxy, target)?;
            stream.write_all(request.as_bytes())?;
            stream.flush()?;
            let reply = read_head(stream, &mut connect_reply_reader(), 1)?;
            connect_reply(target, reply)
        }
        ProxyKind::Socks5 => {
            let mut socks = Socks5::new(proxy, target);
            let mut reply = Vec::new();
            while let Some(exchange) = socks.next(&reply)? {
                if !exchange.send.is_empty() {
                    stream.write_all(&exchange.send).map_err(socks5_io_failure)?;
                    stream.flush().map_err(socks5_io_failure)?;
                }
                reply.resize(exchange.read, 0);
                stream.read_exact(&mut reply).map_err(socks5_io_failure)?;
            }
            Ok(())
        }
    }
}
