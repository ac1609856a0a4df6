//! Keepalive as data: a ping every interval, and the connection ended when
//! a ping's pong does not come back within the pong timeout. The driver
//! asks when to wake ([`Keepalive::poll_timeout`]), says what happened
//! ([`Keepalive::pong_received`]) and does what is due.

use std::time::{Duration, Instant};

/// What is due when a keepalive timer fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Due {
    /// Send a ping with this sequence number as its payload.
    Ping(u64),
    /// A pong is late: the connection is dead.
    Expired,
    /// Nothing yet.
    Nothing,
}

/// One connection's keepalive timers.
#[derive(Debug)]
pub(crate) struct Keepalive {
    interval: Duration,
    timeout: Duration,
    next_ping: Instant,
    /// The pong deadline of the ping under way.
    deadline: Option<Instant>,
    seq: u64,
}

impl Keepalive {
    /// Pings every `interval` from `now` on, each answered within `timeout`.
    pub(crate) fn new(interval: Duration, timeout: Duration, now: Instant) -> Self {
        Keepalive { interval, timeout, next_ping: now + interval, deadline: None, seq: 0 }
    }

    /// When something is next due.
    pub(crate) fn poll_timeout(&self) -> Instant {
        self.deadline.unwrap_or(self.next_ping)
    }

    /// A pong arrived: the ping under way is answered.
    pub(crate) fn pong_received(&mut self) {
        self.deadline = None;
    }

    /// What is due at `now`.
    pub(crate) fn on_timeout(&mut self, now: Instant) -> Due {
        match self.deadline {
            Some(deadline) if now >= deadline => Due::Expired,
            None if now >= self.next_ping => {
                self.seq += 1;
                self.deadline = Some(now + self.timeout);
                self.next_ping = now + self.interval;
                Due::Ping(self.seq)
            }
            _ => Due::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_on_time_and_expires_without_a_pong() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut keepalive = Keepalive::new(10 * s, 2 * s, t0);
        assert_eq!(keepalive.poll_timeout(), t0 + 10 * s);
        assert_eq!(keepalive.on_timeout(t0 + 9 * s), Due::Nothing);
        assert_eq!(keepalive.on_timeout(t0 + 10 * s), Due::Ping(1));
        assert_eq!(keepalive.poll_timeout(), t0 + 12 * s, "the pong deadline");
        keepalive.pong_received();
        assert_eq!(keepalive.poll_timeout(), t0 + 20 * s, "the next ping");
        assert_eq!(keepalive.on_timeout(t0 + 20 * s), Due::Ping(2));
        assert_eq!(keepalive.on_timeout(t0 + 21 * s), Due::Nothing);
        assert_eq!(keepalive.on_timeout(t0 + 22 * s), Due::Expired);
    }
}
