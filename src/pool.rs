//! Write buffer pools.

use std::sync::Mutex;

use bytes::BytesMut;

/// A pool of write buffers shared by many connections.
///
/// Without a pool a connection keeps its write buffer for its whole life. With
/// one, it takes a buffer only while it is writing a frame and puts it back
/// right after, so a server with many mostly idle connections needs only as
/// many buffers as there are concurrent writes.
pub trait BufferPool: Send + Sync + 'static {
    /// Takes a buffer, or `None` to let the connection allocate one.
    fn get(&self) -> Option<BytesMut>;
    /// Returns a buffer (cleared by the caller) for reuse.
    fn put(&self, buf: BytesMut);
}

/// A simple [`BufferPool`]: a bounded free list behind a mutex.
#[derive(Debug)]
pub struct SimpleBufferPool {
    free: Mutex<Vec<BytesMut>>,
    max_buffers: usize,
}

impl SimpleBufferPool {
    /// A pool that keeps at most `max_buffers` idle buffers; more are dropped.
    pub fn new(max_buffers: usize) -> Self {
        SimpleBufferPool { free: Mutex::new(Vec::new()), max_buffers }
    }

    /// The number of idle buffers held now.
    pub fn idle(&self) -> usize {
        self.free.lock().map(|free| free.len()).unwrap_or(0)
    }
}

impl BufferPool for SimpleBufferPool {
    fn get(&self) -> Option<BytesMut> {
        self.free.lock().ok()?.pop()
    }

    fn put(&self, buf: BytesMut) {
        if let Ok(mut free) = self.free.lock() {
            if free.len() < self.max_buffers {
                free.push(buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_max_buffers() {
        let pool = SimpleBufferPool::new(2);
        assert!(pool.get().is_none());
        for _ in 0..3 {
            pool.put(BytesMut::with_capacity(16));
        }
        assert_eq!(pool.idle(), 2);
        assert!(pool.get().is_some());
        assert_eq!(pool.idle(), 1);
    }
}
