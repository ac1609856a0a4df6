//! Reading an HTTP head off a blocking stream into a sans-IO reader: the one
//! blocking loop under the dial, the proxy tunnel and the server's accept
//! (the async one is `crate::handshake_io::read_head`).

use std::io::{self, Read};

use crate::handshake_io::ReceiveHead;

/// Reads from `stream` into `reader` until it answers, at most `chunk` bytes
/// at a time and never more than its room. `Ok(None)` when the stream ends
/// first. A read timeout set on the stream ends the loop with its error.
pub(crate) fn read_head<S, R>(stream: &mut S, reader: &mut R, chunk: usize) -> io::Result<Option<R::Output>>
where
    S: Read + ?Sized,
    R: ReceiveHead,
{
    let mut buf = [0u8; 1024];
    loop {
        // A reader with no room left has answered already; one byte makes it
        // say so.
        let want = reader.room().clamp(1, chunk.clamp(1, buf.len()));
        let n = match stream.read(&mut buf[..want]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(None);
        }
        if let Some(output) = reader.receive(&buf[..n]) {
            return Ok(Some(output));
        }
    }
}
