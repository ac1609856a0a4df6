//! The load generator's own WebSocket client side: the opening handshake
//! written by hand, frames masked with one fixed key per connection, and
//! permessage-deflate (RFC 7692) with flate2. No WebSocket library is used, so
//! that no server under test is measured against its own code.

use base64::Engine;
use bytes::{Buf, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The bytes a sync flush ends with, removed from and restored to each message.
const DEFLATE_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// The largest message the client accepts (the servers' common limit).
const MAX_MESSAGE: usize = 64 << 20;
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// What the server agreed to for permessage-deflate.
#[derive(Clone, Copy, Debug)]
pub struct DeflateParams {
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
}

/// SplitMix64: a few well-mixed bytes for keys, not for secrecy.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Performs the client side of the opening handshake on `stream`. Bytes read
/// past the response head are left in `buf` (they are WebSocket frames).
pub async fn handshake(
    stream: &mut TcpStream,
    host: &str,
    seed: u64,
    deflate: bool,
    buf: &mut BytesMut,
) -> Result<Option<DeflateParams>, String> {
    let mut state = seed;
    let mut raw_key = [0u8; 16];
    raw_key[..8].copy_from_slice(&splitmix64(&mut state).to_le_bytes());
    raw_key[8..].copy_from_slice(&splitmix64(&mut state).to_le_bytes());
    let key = base64::engine::general_purpose::STANDARD.encode(raw_key);
    let extensions = if deflate { "Sec-WebSocket-Extensions: permessage-deflate\r\n" } else { "" };
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extensions}\r\n"
    );
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("handshake write: {e}"))?;

    let head_len = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_RESPONSE_HEAD {
            return Err("handshake: response head too large".into());
        }
        buf.reserve(4096);
        let n = stream.read_buf(buf).await.map_err(|e| format!("handshake read: {e}"))?;
        if n == 0 {
            return Err("handshake: connection closed before the response".into());
        }
    };
    let head = buf.split_to(head_len);
    let head = std::str::from_utf8(&head).map_err(|_| "handshake: response head is not UTF-8".to_string())?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 101") {
        return Err(format!("handshake: server answered {status:?}"));
    }
    let expected_accept = {
        let mut sha = Sha1::new();
        sha.update(key.as_bytes());
        sha.update(GUID.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(sha.finalize())
    };
    let (mut upgrade, mut connection, mut accept) = (false, false, false);
    let mut agreed: Option<DeflateParams> = None;
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or_else(|| format!("handshake: bad header line {line:?}"))?;
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "upgrade" => upgrade = value.eq_ignore_ascii_case("websocket"),
            "connection" => connection = value.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")),
            "sec-websocket-accept" => accept = value == expected_accept,
            "sec-websocket-extensions" => {
                if !deflate || agreed.is_some() {
                    return Err(format!("handshake: unrequested extension {value:?}"));
                }
                agreed = Some(parse_deflate_response(value)?);
            }
            _ => {}
        }
    }
    if !(upgrade && connection && accept) {
        return Err(format!(
            "handshake: bad 101 response (upgrade ok: {upgrade}, connection ok: {connection}, accept ok: {accept})"
        ));
    }
    if deflate && agreed.is_none() {
        return Err("handshake: server declined permessage-deflate".into());
    }
    Ok(agreed)
}

/// Checks the server's answer to our bare `permessage-deflate` offer.
pub fn parse_deflate_response(value: &str) -> Result<DeflateParams, String> {
    let mut parts = value.split(';').map(str::trim);
    if parts.next() != Some("permessage-deflate") {
        return Err(format!("handshake: unexpected extension {value:?}"));
    }
    let mut params = DeflateParams { server_no_context_takeover: false, client_no_context_takeover: false };
    for part in parts {
        let (name, val) = match part.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (part, None),
        };
        match (name, val) {
            ("server_no_context_takeover", None) => params.server_no_context_takeover = true,
            ("client_no_context_takeover", None) => params.client_no_context_takeover = true,
            // A smaller server window is fine: our inflater has the full 32 KiB.
            ("server_max_window_bits", Some(_)) => {}
            // Not offered, so only the full window is acceptable.
            ("client_max_window_bits", Some("15")) => {}
            _ => return Err(format!("handshake: unacceptable deflate parameter {part:?} in {value:?}")),
        }
    }
    Ok(params)
}

/// XORs `buf` with `key`, starting at key offset 0.
pub fn mask(buf: &mut [u8], key: [u8; 4]) {
    let k32 = u32::from_ne_bytes(key) as u64;
    let k64 = k32 | (k32 << 32);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes(chunk.try_into().unwrap()) ^ k64;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so at key offset 0.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

/// The length of the header (with mask key) of a client frame of `len` bytes.
pub fn client_header_len(len: usize) -> usize {
    match len {
        0..=125 => 6,
        126..=65535 => 8,
        _ => 14,
    }
}

/// Builds masked client frames, compressing data messages when agreed.
pub struct Encoder {
    pub key: [u8; 4],
    deflater: Option<(Compress, bool)>,
    scratch: Vec<u8>,
}

impl Encoder {
    pub fn new(key: [u8; 4], deflate: Option<DeflateParams>) -> Self {
        let deflater = deflate.map(|p| (Compress::new(Compression::fast(), false), p.client_no_context_takeover));
        Encoder { key, deflater, scratch: Vec::new() }
    }

    pub fn compressing(&self) -> bool {
        self.deflater.is_some()
    }

    /// Appends one whole-message frame to `out`.
    pub fn encode(&mut self, opcode: u8, payload: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        let is_data = opcode == OP_TEXT || opcode == OP_BINARY;
        match &mut self.deflater {
            Some((compress, reset)) if is_data => {
                let mut scratch = std::mem::take(&mut self.scratch);
                deflate_message(compress, payload, &mut scratch)?;
                if *reset {
                    compress.reset();
                }
                frame_into(out, opcode, true, &scratch, self.key);
                self.scratch = scratch;
            }
            _ => frame_into(out, opcode, false, payload, self.key),
        }
        Ok(())
    }
}

fn frame_into(out: &mut Vec<u8>, opcode: u8, rsv1: bool, payload: &[u8], key: [u8; 4]) {
    let len = payload.len();
    out.reserve(client_header_len(len) + len);
    out.push(0x80 | if rsv1 { 0x40 } else { 0 } | opcode);
    match len {
        0..=125 => out.push(0x80 | len as u8),
        126..=65535 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
    let start = out.len();
    out.extend_from_slice(payload);
    mask(&mut out[start..], key);
}

/// Compresses one message with a sync flush and removes the flush's tail.
fn deflate_message(compress: &mut Compress, input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    out.clear();
    let mut consumed = 0usize;
    // Each round either consumes input or fills the output; bounded anyway.
    for _ in 0..100_000 {
        out.reserve(input.len() - consumed + 64);
        let before = compress.total_in();
        compress.compress_vec(&input[consumed..], out, FlushCompress::Sync).map_err(|e| format!("deflate: {e}"))?;
        consumed += (compress.total_in() - before) as usize;
        if consumed == input.len() && out.len() < out.capacity() {
            if !out.ends_with(&DEFLATE_TAIL) {
                return Err("deflate: sync flush did not end with 00 00 ff ff".into());
            }
            out.truncate(out.len() - 4);
            return Ok(());
        }
    }
    Err("deflate: no progress".into())
}

/// Parses server frames out of a buffer, answers pings, reassembles fragments
/// and inflates compressed messages.
pub struct Reader {
    pub buf: BytesMut,
    key: [u8; 4],
    /// Bytes of `buf` taken by the message last returned, dropped on the next call.
    pending: usize,
    fragments: Vec<u8>,
    fragmented: Option<(u8, bool)>,
    inflater: Option<(Decompress, bool)>,
    message: Vec<u8>,
    scratch: Vec<u8>,
    /// Pong frames owed to the server, to be written with the next write.
    pub control_out: Vec<u8>,
}

/// One message from the server.
pub struct Message<'a> {
    pub opcode: u8,
    pub data: &'a [u8],
}

impl Reader {
    pub fn new(buf: BytesMut, key: [u8; 4], deflate: Option<DeflateParams>) -> Self {
        Reader {
            buf,
            key,
            pending: 0,
            fragments: Vec::new(),
            fragmented: None,
            inflater: deflate.map(|p| (Decompress::new(false), p.server_no_context_takeover)),
            message: Vec::new(),
            scratch: Vec::new(),
            control_out: Vec::new(),
        }
    }

    /// Reads more bytes from `r` into the buffer; an end of stream is an error.
    pub async fn fill<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> Result<(), String> {
        if self.pending > 0 {
            self.buf.advance(self.pending);
            self.pending = 0;
        }
        if self.buf.capacity() - self.buf.len() < 8192 {
            self.buf.reserve(64 * 1024);
        }
        match r.read_buf(&mut self.buf).await {
            Ok(0) => Err("connection closed by the server".into()),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("read: {e}")),
        }
    }

    /// Appends bytes received some other way (an HTTP/2 stream's DATA).
    pub fn push(&mut self, data: &[u8]) {
        if self.pending > 0 {
            self.buf.advance(self.pending);
            self.pending = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next whole data or close message in the buffer, if there is one.
    /// Pings are answered (into `control_out`), pongs dropped.
    pub fn next(&mut self) -> Result<Option<Message<'_>>, String> {
        if self.pending > 0 {
            self.buf.advance(self.pending);
            self.pending = 0;
        }
        loop {
            let b = &self.buf[..];
            if b.len() < 2 {
                return Ok(None);
            }
            let (b0, b1) = (b[0], b[1]);
            let fin = b0 & 0x80 != 0;
            let rsv1 = b0 & 0x40 != 0;
            let opcode = b0 & 0x0f;
            if b0 & 0x30 != 0 {
                return Err(format!("protocol: RSV2/RSV3 set (first byte {b0:#04x})"));
            }
            if b1 & 0x80 != 0 {
                return Err("protocol: the server masked a frame".into());
            }
            let (len, header) = match b1 & 0x7f {
                126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as u64, 4),
                127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().unwrap()), 10),
                126 | 127 => return Ok(None),
                n => (n as u64, 2),
            };
            if len > MAX_MESSAGE as u64 {
                return Err(format!("protocol: frame of {len} bytes"));
            }
            let len = len as usize;
            let total = header + len;
            if b.len() < total {
                self.buf.reserve(total - b.len());
                return Ok(None);
            }
            let control = opcode & 0x8 != 0;
            if control && (!fin || len > 125 || rsv1) {
                return Err(format!("protocol: bad control frame (opcode {opcode})"));
            }
            if rsv1 && (self.inflater.is_none() || opcode == OP_CONTINUATION) {
                return Err(format!("protocol: RSV1 set on opcode {opcode} without agreed compression"));
            }
            match opcode {
                OP_PING => {
                    frame_into(&mut self.control_out, OP_PONG, false, &self.buf[header..total], self.key);
                    self.buf.advance(total);
                }
                OP_PONG => self.buf.advance(total),
                OP_CLOSE => {
                    self.pending = total;
                    return Ok(Some(Message { opcode, data: &self.buf[header..total] }));
                }
                OP_TEXT | OP_BINARY => {
                    if self.fragmented.is_some() {
                        return Err("protocol: new data frame inside a fragmented message".into());
                    }
                    if fin && !rsv1 {
                        self.pending = total;
                        return Ok(Some(Message { opcode, data: &self.buf[header..total] }));
                    }
                    if fin {
                        let (inflate, reset) = self.inflater.as_mut().unwrap();
                        inflate_message(inflate, &self.buf[header..total], &mut self.scratch, &mut self.message)?;
                        if *reset {
                            inflate.reset(false);
                        }
                        self.buf.advance(total);
                        return Ok(Some(Message { opcode, data: &self.message }));
                    }
                    self.fragmented = Some((opcode, rsv1));
                    self.fragments.clear();
                    self.fragments.extend_from_slice(&self.buf[header..total]);
                    self.buf.advance(total);
                }
                OP_CONTINUATION => {
                    let Some((first, compressed)) = self.fragmented else {
                        return Err("protocol: continuation frame without a message".into());
                    };
                    if self.fragments.len() + len > MAX_MESSAGE {
                        return Err("protocol: message too large".into());
                    }
                    self.fragments.extend_from_slice(&self.buf[header..total]);
                    self.buf.advance(total);
                    if fin {
                        self.fragmented = None;
                        if compressed {
                            let (inflate, reset) = self.inflater.as_mut().unwrap();
                            inflate_message(inflate, &self.fragments, &mut self.scratch, &mut self.message)?;
                            if *reset {
                                inflate.reset(false);
                            }
                        } else {
                            std::mem::swap(&mut self.message, &mut self.fragments);
                        }
                        return Ok(Some(Message { opcode: first, data: &self.message }));
                    }
                }
                _ => return Err(format!("protocol: unknown opcode {opcode}")),
            }
        }
    }
}

/// Inflates one message (the flush tail is restored first).
fn inflate_message(
    inflate: &mut Decompress,
    data: &[u8],
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    scratch.clear();
    scratch.extend_from_slice(data);
    scratch.extend_from_slice(&DEFLATE_TAIL);
    out.clear();
    let mut consumed = 0usize;
    for _ in 0..100_000 {
        if out.len() > MAX_MESSAGE {
            return Err("inflate: message too large".into());
        }
        out.reserve((scratch.len() * 4).max(4096));
        let before = inflate.total_in();
        inflate
            .decompress_vec(&scratch[consumed..], out, FlushDecompress::Sync)
            .map_err(|e| format!("inflate: {e}"))?;
        consumed += (inflate.total_in() - before) as usize;
        if consumed == scratch.len() && out.len() < out.capacity() {
            return Ok(());
        }
    }
    Err("inflate: no progress".into())
}
