//! Per-connection settings.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::pool::BufferPool;
use crate::proto::extensions::DeflateParams;

/// The read limit a connection starts with: 64 MiB per message.
pub const DEFAULT_READ_LIMIT: u64 = 64 << 20;
/// The default read and write buffer size.
pub const DEFAULT_BUFFER_SIZE: usize = 4096;
/// How long a close handshake waits for the peer's close frame by default.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of one connection, set by [`crate::Upgrader`] or given to
/// [`crate::Conn::from_raw`].
#[derive(Clone)]
#[non_exhaustive]
pub struct Config {
    /// Bytes read from the stream per system call, at least. Does not limit
    /// message size. Default 4096.
    pub read_buffer_size: usize,
    /// Size of the write buffer; also the fragment size of
    /// [`crate::MessageWriter`]. Does not limit message size. Default 4096.
    pub write_buffer_size: usize,
    /// Where to take write buffers from; `None` keeps one per connection.
    pub write_buffer_pool: Option<Arc<dyn BufferPool>>,
    /// The largest message accepted, in bytes (`None`: no limit). Default 64 MiB.
    pub read_limit: Option<u64>,
    /// How long [`crate::Conn::close`] waits for the peer's close frame. Default 5 s.
    pub close_timeout: Duration,
    /// The permessage-deflate parameters agreed in the handshake; `None` runs
    /// without compression. Set by the handshake.
    pub deflate: Option<DeflateParams>,
    /// The compression level (default 1: fastest); see [`CompressionLevel`].
    /// An invalid level is taken as the nearest valid one.
    pub compression_level: CompressionLevel,
    /// Data messages shorter than this are sent uncompressed (default 0).
    pub compression_threshold: usize,
    /// How long a connection with permessage-deflate context takeover may
    /// stay idle before its compression states are parked: freed, keeping
    /// only copies of the windows (at most 32 KiB each way), and restored
    /// from them as preset dictionaries by the next message, which the peer
    /// cannot tell. `None` (or zero) never parks. Default
    /// [`DEFAULT_COMPRESSION_PARK_AFTER`] (10 s).
    ///
    /// The async connection parks while its read side waits for the peer:
    /// once this long passes with no message inflated or compressed (checked
    /// once per period, so parking comes after one to two periods of
    /// idleness); a compressor in the middle of a streamed message is left
    /// alone. A busy connection only sees a timer fire once per period. The
    /// sans-IO [`crate::proto::Connection`] has the same clock among its
    /// timers (`poll_timeout` / `handle_timeout`), armed by `next_event`;
    /// the blocking connection, built on it, thus parks while a read waits
    /// for input.
    pub compression_park_after: Option<Duration>,
    /// Send a ping this often and end the connection when no pong answers
    /// within [`Config::pong_timeout`]. Off by default.
    pub ping_interval: Option<Duration>,
    /// How long a keepalive ping may wait for its pong. Default 10 s.
    pub pong_timeout: Duration,
    /// The largest frame payload accepted (`None`: only the read limit). Default none.
    pub max_frame_size: Option<u64>,
    /// The most frames one message may arrive in. Default 100 000.
    pub max_fragments: Option<u32>,
}

/// How many frames a message may arrive in by default: more than any real
/// sender uses (4 MiB in 64-byte fragments is 65 536), few enough to end a
/// flood of empty fragments.
pub const DEFAULT_MAX_FRAGMENTS: u32 = 100_000;

/// How long a keepalive ping waits for its pong by default.
pub const DEFAULT_PONG_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection with context takeover stays idle, by default,
/// before its compression states are parked (see
/// [`Config::compression_park_after`]).
pub const DEFAULT_COMPRESSION_PARK_AFTER: Duration = Duration::from_secs(10);

/// The compression level connections start with.
pub const DEFAULT_COMPRESSION_LEVEL: u32 = 1;

/// A permessage-deflate compression level, in the range of gorilla's
/// `SetCompressionLevel` (Go's `compress/flate` levels): −2 (Huffman only),
/// −1 (the default, 6), 0 (no compression: stored blocks) and 1 (fastest)
/// to 9 (best). Made from an `i32` or a `u32`; the methods that take one
/// refuse a level outside −2..=9.
///
/// Huffman only ([`CompressionLevel::HUFFMAN_ONLY`]) codes every byte as a
/// literal with a Huffman code made for each block, as zlib's
/// `Z_HUFFMAN_ONLY` strategy does: no search for repeated strings, so it is
/// fast and needs no window of history, and it shrinks text by its byte
/// frequencies only (typically to 55–70 %). Data that does not shrink goes
/// out in stored blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CompressionLevel(i32);

impl CompressionLevel {
    /// −2: Huffman coding only, no string matching (see above).
    pub const HUFFMAN_ONLY: CompressionLevel = CompressionLevel(-2);
    /// −1: the default compression, level 6.
    pub const DEFAULT: CompressionLevel = CompressionLevel(-1);
    /// 0: no compression (the payload in stored blocks).
    pub const NONE: CompressionLevel = CompressionLevel(0);
    /// 1: the fastest compression.
    pub const FASTEST: CompressionLevel = CompressionLevel(1);
    /// 9: the best compression.
    pub const BEST: CompressionLevel = CompressionLevel(9);

    /// The level `level`, valid or not (see [`CompressionLevel::is_valid`]).
    pub const fn new(level: i32) -> Self {
        CompressionLevel(level)
    }

    /// The level as gorilla numbers it.
    pub const fn get(self) -> i32 {
        self.0
    }

    /// Whether the level is in −2..=9.
    pub const fn is_valid(self) -> bool {
        self.0 >= -2 && self.0 <= 9
    }

    /// The level, or an error naming the valid range.
    pub fn check(self) -> crate::Result<Self> {
        if self.is_valid() {
            Ok(self)
        } else {
            Err(crate::Error::InvalidRequest(format!("compression level {} is not in -2..=9", self.0)))
        }
    }

    /// The nearest valid level.
    pub const fn clamped(self) -> Self {
        CompressionLevel(if self.0 < -2 {
            -2
        } else if self.0 > 9 {
            9
        } else {
            self.0
        })
    }

    /// The zlib level (0–9) that compresses at this level (Huffman only is
    /// not done by zlib: see `proto::huffman`).
    pub(crate) fn zlib_level(self) -> u32 {
        match self.clamped().0 {
            -2 => 1,
            -1 => 6,
            level => level as u32,
        }
    }
}

impl Default for CompressionLevel {
    fn default() -> Self {
        CompressionLevel::new(DEFAULT_COMPRESSION_LEVEL as i32)
    }
}

impl From<i32> for CompressionLevel {
    fn from(level: i32) -> Self {
        CompressionLevel(level)
    }
}

impl From<u32> for CompressionLevel {
    fn from(level: u32) -> Self {
        CompressionLevel(i32::try_from(level).unwrap_or(i32::MAX))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            read_buffer_size: DEFAULT_BUFFER_SIZE,
            write_buffer_size: DEFAULT_BUFFER_SIZE,
            write_buffer_pool: None,
            read_limit: Some(DEFAULT_READ_LIMIT),
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            deflate: None,
            compression_level: CompressionLevel::new(DEFAULT_COMPRESSION_LEVEL as i32),
            compression_threshold: 0,
            compression_park_after: Some(DEFAULT_COMPRESSION_PARK_AFTER),
            ping_interval: None,
            pong_timeout: DEFAULT_PONG_TIMEOUT,
            max_frame_size: None,
            max_fragments: Some(DEFAULT_MAX_FRAGMENTS),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("read_buffer_size", &self.read_buffer_size)
            .field("write_buffer_size", &self.write_buffer_size)
            .field("write_buffer_pool", &self.write_buffer_pool.is_some())
            .field("read_limit", &self.read_limit)
            .field("close_timeout", &self.close_timeout)
            .field("deflate", &self.deflate)
            .field("compression_level", &self.compression_level)
            .field("compression_threshold", &self.compression_threshold)
            .field("compression_park_after", &self.compression_park_after)
            .field("ping_interval", &self.ping_interval)
            .field("pong_timeout", &self.pong_timeout)
            .field("max_frame_size", &self.max_frame_size)
            .field("max_fragments", &self.max_fragments)
            .finish()
    }
}

/// The builder methods for per-connection settings, shared by
/// [`crate::Upgrader`] and [`crate::Dialer`] (each keeps a `config: Config`).
macro_rules! connection_options {
    () => {
        /// Bytes read per system call, at least (0 restores the default
        /// 4096). Buffer sizes do not limit message size.
        pub fn read_buffer_size(mut self, size: usize) -> Self {
            self.config_mut().read_buffer_size = if size == 0 { $crate::DEFAULT_BUFFER_SIZE } else { size };
            self
        }

        /// Write buffer size, and fragment size of streamed messages (0
        /// restores the default 4096).
        pub fn write_buffer_size(mut self, size: usize) -> Self {
            self.config_mut().write_buffer_size = if size == 0 { $crate::DEFAULT_BUFFER_SIZE } else { size };
            self
        }

        /// Take write buffers from `pool` while writing instead of keeping one
        /// per connection.
        pub fn write_buffer_pool(mut self, pool: std::sync::Arc<dyn $crate::BufferPool>) -> Self {
            self.config_mut().write_buffer_pool = Some(pool);
            self
        }

        /// The largest message accepted, in bytes, counted after inflation
        /// (`None`: no limit; default 64 MiB). A larger message fails the
        /// connection with 1009.
        pub fn read_limit(mut self, limit: Option<u64>) -> Self {
            self.config_mut().read_limit = limit;
            self
        }

        /// The largest frame payload accepted (`None`, the default: only the
        /// read limit applies); a larger frame fails the connection with 1009.
        pub fn max_frame_size(mut self, limit: Option<u64>) -> Self {
            self.config_mut().max_frame_size = limit;
            self
        }

        /// The most frames one message may arrive in (default 100 000); more
        /// fail the connection with 1008.
        pub fn max_fragments(mut self, limit: Option<u32>) -> Self {
            self.config_mut().max_fragments = limit;
            self
        }

        /// How long a close handshake waits for the peer's close frame
        /// (default 5 s).
        pub fn close_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.config_mut().close_timeout = timeout;
            self
        }

        /// Sends a ping every `interval` on each connection and ends a
        /// connection whose pong does not come back within the pong timeout:
        /// its reads then fail with [`Error::KeepaliveTimeout`]. `None` (the
        /// default) turns it off. The application must keep reading for pongs
        /// to be seen.
        pub fn ping_interval(mut self, interval: Option<std::time::Duration>) -> Self {
            self.config_mut().ping_interval = interval;
            self
        }

        /// How long a keepalive ping waits for its pong (default 10 s).
        pub fn pong_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.config_mut().pong_timeout = timeout;
            self
        }

        /// The compression level, −2 (Huffman only), −1 (default) or 0–9
        /// (default 1); see [`crate::CompressionLevel`]. A level outside
        /// −2..=9 is taken as the nearest valid one.
        pub fn compression_level(mut self, level: impl Into<$crate::CompressionLevel>) -> Self {
            self.config_mut().compression_level = level.into().clamped();
            self
        }

        /// Data messages shorter than `bytes` are sent uncompressed.
        pub fn compression_threshold(mut self, bytes: usize) -> Self {
            self.config_mut().compression_threshold = bytes;
            self
        }

        /// How long a connection with compression context takeover stays
        /// idle before its compression states are freed, keeping only their
        /// windows (default 10 s; `None` or zero: never); see
        /// [`crate::Config::compression_park_after`].
        pub fn compression_park_after(mut self, idle: Option<std::time::Duration>) -> Self {
            self.config_mut().compression_park_after = idle;
            self
        }
    };
}

pub(crate) use connection_options;
