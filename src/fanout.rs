//! Fan-out: one message to many connections ([`Hub`]).
//!
//! A [`Hub`] holds subscribers, each the write half of a connection served by
//! a writer task of its own over a bounded queue of shared
//! [`PreparedMessage`]s. Publishing makes the message once (its frame payload
//! compressed once per negotiated compression variant, see
//! [`PreparedMessage`]) and hands every subscriber a reference to it: no
//! subscriber gets a copy of the payload of its own, and none waits for
//! another. What happens when a subscriber's queue is full is its
//! [`SlowPolicy`].

use std::collections::HashMap;
use std::fmt;
use std::future::{poll_fn, Future};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

mod queue;
use queue::{Next, Queue, Refused};

use crate::conn::{Stream, WriteHalf};
use crate::message::MessageType;
use crate::prepared::PreparedMessage;
use crate::proto::{CloseCode, CloseFrame};

/// The default number of messages a subscriber's queue holds.
pub const DEFAULT_QUEUE_CAPACITY: usize = 256;

/// The most messages a writer task takes from its queue to write at once
/// (fed back to back, flushed once).
const BATCH: usize = 64;

/// What a [`Hub`] does with a message for a subscriber whose queue is full.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlowPolicy {
    /// The message is dropped for that subscriber only; it keeps the
    /// messages already queued and gets later ones as its queue drains.
    Drop,
    /// The subscriber is removed from the hub and its connection closed with
    /// this code (say [`CloseCode::POLICY_VIOLATION`], 1008): the close frame
    /// follows what was already written, then the close handshake runs with
    /// the connection's close timeout.
    Close(CloseCode),
    /// The publisher waits up to this long for room in that subscriber's
    /// queue (one deadline for all the subscribers it waits for); the
    /// message is dropped for a subscriber still full then.
    Wait(Duration),
}

/// What one publish did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Subscribers whose queue took the message.
    pub queued: usize,
    /// Subscribers that did not get it: their queue was full (policies
    /// [`SlowPolicy::Drop`] and [`SlowPolicy::Wait`]).
    pub dropped: usize,
    /// Subscribers removed and closed because their queue was full
    /// ([`SlowPolicy::Close`]).
    pub closed: usize,
}

/// One subscriber as the hub sees it.
struct Entry {
    queue: Arc<Queue>,
    policy: SlowPolicy,
}

impl Drop for Entry {
    /// A subscriber removed from the hub gets no more messages: its writer
    /// task ends once it has written what is queued.
    fn drop(&mut self) {
        self.queue.close();
    }
}

struct Inner {
    subscribers: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
    capacity: usize,
}

impl Inner {
    fn subscribers(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        // Nothing that can panic runs under this lock; a poisoned map is
        // still a consistent one.
        self.subscribers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn remove(&self, id: u64) {
        let entry = self.subscribers().remove(&id);
        drop(entry);
    }
}

/// Sends each message to many connections, framing it once.
///
/// [`Hub::subscribe`] takes the write half of a connection and starts a
/// writer task for it (on the current tokio runtime) that drains a bounded
/// queue of [`PreparedMessage`]s: when several wait, they are fed back to back
/// and flushed once. [`Hub::publish`] puts the message in every queue and
/// returns without waiting for any socket. A subscriber that falls behind
/// never holds up the others, and its queue never grows beyond the hub's
/// capacity: its [`SlowPolicy`] decides.
///
/// A subscriber leaves when its [`Subscription`] is dropped (or
/// [`Subscription::unsubscribe`]d), when a write to its connection fails, or
/// when it is closed by its policy. Its writer task then sends what is
/// queued and ends, dropping the write half.
///
/// Messages from one publisher reach every subscriber in the order they were
/// published. Concurrent publishers are ordered by the hub's lock: every
/// subscriber with policy [`SlowPolicy::Drop`] or [`SlowPolicy::Close`] sees
/// the same order.
///
/// A `Hub` is a cheap handle: clones share the subscribers.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), silverback::Error> {
/// use silverback::fanout::{Hub, SlowPolicy};
/// use silverback::{CloseCode, Config, Conn, MessageType, Role};
///
/// let hub = Hub::new();
/// let mut clients = Vec::new();
/// let mut subscriptions = Vec::new();
/// for _ in 0..3 {
///     let (server_side, client_side) = tokio::io::duplex(4096);
///     let (_read, write) = Conn::from_raw(server_side, Role::Server, Config::default(), None, Default::default()).split();
///     subscriptions.push(hub.subscribe(write, SlowPolicy::Close(CloseCode::POLICY_VIOLATION)));
///     clients.push(Conn::from_raw(client_side, Role::Client, Config::default(), None, Default::default()));
/// }
/// let delivery = hub.publish(MessageType::Text, "hello, everyone").await;
/// assert_eq!(delivery.queued, 3);
/// for client in &mut clients {
///     assert_eq!(client.read_message().await?.data, "hello, everyone");
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub").field("subscribers", &self.len()).field("capacity", &self.inner.capacity).finish()
    }
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

impl Hub {
    /// A hub whose subscribers' queues hold [`DEFAULT_QUEUE_CAPACITY`]
    /// messages each.
    pub fn new() -> Self {
        Hub::with_capacity(DEFAULT_QUEUE_CAPACITY)
    }

    /// A hub whose subscribers' queues hold `capacity` messages each (at
    /// least one).
    pub fn with_capacity(capacity: usize) -> Self {
        Hub {
            inner: Arc::new(Inner {
                subscribers: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(0),
                capacity: capacity.max(1),
            }),
        }
    }

    /// The number of subscribers.
    pub fn len(&self) -> usize {
        self.inner.subscribers().len()
    }

    /// Whether the hub has no subscribers.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds the connection whose write half is `write`, with `policy` for
    /// when it falls behind, and starts its writer task (must be called
    /// within a tokio runtime). The subscriber stays until the returned
    /// [`Subscription`] is dropped, a write fails, or its policy closes it.
    ///
    /// The writer task owns the write half; keep a [`crate::Handle`] (from
    /// [`WriteHalf::handle`]) to send control frames or close it yourself.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as `tokio::spawn` does.
    pub fn subscribe<S: Stream>(&self, write: WriteHalf<S>, policy: SlowPolicy) -> Subscription {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let queue = Queue::new(self.inner.capacity);
        self.inner.subscribers().insert(id, Entry { queue: queue.clone(), policy });
        let hub = Arc::downgrade(&self.inner);
        tokio::spawn(run_writer(write, queue, hub.clone(), id));
        Subscription { id, hub }
    }

    /// Publishes a message of type `kind` to every subscriber; see
    /// [`Hub::publish_prepared`].
    pub async fn publish(&self, kind: MessageType, data: impl Into<Bytes>) -> Delivery {
        self.publish_prepared(Arc::new(PreparedMessage::new(kind, data))).await
    }

    /// Publishes `message` to every subscriber: it goes into each queue with
    /// room at once. For a full queue, the subscriber's [`SlowPolicy`]
    /// decides; only [`SlowPolicy::Wait`] makes this wait, and no longer than
    /// the longest such timeout.
    pub async fn publish_prepared(&self, message: Arc<PreparedMessage>) -> Delivery {
        let mut delivery = Delivery::default();
        let mut waits = Vec::new();
        {
            let mut subscribers = self.inner.subscribers();
            subscribers.retain(|_, entry| match entry.queue.push(&message) {
                Ok(()) => {
                    delivery.queued += 1;
                    true
                }
                Err(Refused::Gone) => false,
                Err(Refused::Full) => match &entry.policy {
                    SlowPolicy::Drop => {
                        delivery.dropped += 1;
                        true
                    }
                    SlowPolicy::Close(code) => {
                        entry.queue.stop(CloseFrame::new(*code, "too slow"));
                        delivery.closed += 1;
                        false
                    }
                    SlowPolicy::Wait(timeout) => {
                        waits.push((entry.queue.clone(), *timeout));
                        true
                    }
                },
            });
        }
        if !waits.is_empty() {
            let start = Instant::now();
            for (queue, timeout) in waits {
                match queue.push_waiting(&message, start + timeout).await {
                    Ok(()) => delivery.queued += 1,
                    Err(Refused::Full) => delivery.dropped += 1,
                    // The subscriber left meanwhile.
                    Err(Refused::Gone) => {}
                }
            }
        }
        delivery
    }
}

/// A subscriber's place in a [`Hub`]: dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    id: u64,
    hub: Weak<Inner>,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

impl Subscription {
    /// The subscriber's number, unique within its hub.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the subscriber is still in the hub (false once it left:
    /// unsubscribed, a write failed, or it was closed by its policy).
    pub fn is_subscribed(&self) -> bool {
        self.hub.upgrade().is_some_and(|hub| hub.subscribers().contains_key(&self.id))
    }

    /// Leaves the hub: no later message is queued for this subscriber; what
    /// was queued is still written, then its writer task ends.
    pub fn unsubscribe(self) {}
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.remove(self.id);
        }
    }
}

/// A subscriber's writer task: writes what its queue gives, several
/// messages at a time, until the queue ends, a write fails, or it is told to
/// close the connection.
async fn run_writer<S: Stream>(mut write: WriteHalf<S>, queue: Arc<Queue>, hub: Weak<Inner>, id: u64) {
    let handle = write.handle();
    let mut batch = Vec::with_capacity(BATCH);
    let mut payloads = Vec::new();
    let stop = loop {
        match poll_fn(|cx| queue.poll_next(cx, &mut batch, BATCH)).await {
            Next::Messages => {}
            Next::Stop(frame) => break Some(frame),
            Next::End => break None,
        }
        let event = {
            let mut step = std::pin::pin!(write.write_prepared_batch(&batch, &mut payloads));
            poll_fn(|cx| {
                if let Poll::Ready(frame) = queue.poll_stop(cx) {
                    return Poll::Ready(Err(frame));
                }
                step.as_mut().poll(cx).map(Ok)
            })
            .await
        };
        batch.clear();
        match event {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break None,
            Err(frame) => break Some(frame),
        }
    };
    queue.close();
    if let Some(hub) = hub.upgrade() {
        hub.remove(id);
    }
    drop(hub);
    if let Some(frame) = stop {
        let _ = handle.close(frame).await;
    }
}
