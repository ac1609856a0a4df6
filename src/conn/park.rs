//! Parking the compression states of an idle connection with context
//! takeover: while the read side waits for the peer, a timer checks once per
//! period whether the inflater and the compressor were used; those that were
//! not are freed down to their windows (see [`crate::proto::deflate`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, TryLockError};
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::proto::deflate::Deflater;
use crate::proto::Decoder;

/// The idle timer of one connection with context takeover (held only by
/// such connections).
pub(crate) struct Park {
    after: Duration,
    /// Armed while a state is held; dropped once everything is parked.
    timer: Option<Pin<Box<Sleep>>>,
    /// The write side's compressor, when it keeps its context.
    deflater: Option<Arc<Mutex<Deflater>>>,
}

impl Park {
    /// A parker for a connection idle for `after` (`None` or zero: never),
    /// when one of its sides keeps a compression context.
    pub(crate) fn new(
        after: Option<Duration>,
        decoder_takes_over: bool,
        deflater: Option<Arc<Mutex<Deflater>>>,
    ) -> Option<Box<Self>> {
        let after = after.filter(|after| !after.is_zero())?;
        (decoder_takes_over || deflater.is_some()).then(|| Box::new(Park { after, timer: None, deflater }))
    }

    /// Called while the read side waits for input: arms the timer when a
    /// state is held, and parks what went unused for a whole period when it
    /// fires (re-arming while anything is still held).
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>, decoder: &mut Decoder) {
        loop {
            let timer = match &mut self.timer {
                Some(timer) => timer,
                None => {
                    if !decoder.inflater_holds_state() && !self.with_deflater(|d| d.holds_state()).unwrap_or(true) {
                        return;
                    }
                    decoder.start_idle();
                    self.with_deflater(Deflater::start_idle);
                    self.timer.insert(Box::pin(tokio::time::sleep(self.after)))
                }
            };
            if timer.as_mut().poll(cx).is_pending() {
                return;
            }
            let inflater_held = decoder.park_if_idle();
            // A compressor busy on the write side is left for the next period.
            let deflater_held = self
                .with_deflater(|d| {
                    d.park_if_idle();
                    d.holds_state()
                })
                .unwrap_or(true);
            if inflater_held || deflater_held {
                let at = Instant::now() + self.after;
                if let Some(timer) = &mut self.timer {
                    timer.as_mut().reset(at);
                }
            } else {
                self.timer = None;
                return;
            }
        }
    }

    /// Whether the compressor holds its state (true while the write side
    /// is using it).
    pub(crate) fn deflater_holds_state(&self) -> bool {
        self.with_deflater(|d| d.holds_state()).unwrap_or(true)
    }

    /// Runs `f` on the compressor if there is one and its lock is free:
    /// `Some(result)`, or `None` while the write side holds it. Without a
    /// compressor to park, `f` sees a parked one (`Some(false)` for
    /// `holds_state`).
    fn with_deflater<R: Default>(&self, f: impl FnOnce(&mut Deflater) -> R) -> Option<R> {
        let Some(deflater) = &self.deflater else { return Some(R::default()) };
        match deflater.try_lock() {
            Ok(mut guard) => Some(f(&mut guard)),
            Err(TryLockError::Poisoned(poisoned)) => Some(f(&mut poisoned.into_inner())),
            Err(TryLockError::WouldBlock) => None,
        }
    }
}
