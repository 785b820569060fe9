//! The decoded event stream: the ring buffer's fd registered with tokio, drained until empty
//! before readiness is cleared (the kernel signals again only after the reader caught up), plus
//! a short timer because the probe wakes the reader only when another eighth of the ring is unread.

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::{Interval, MissedTickBehavior};

use crate::event::{DecodeError, OpenEvent, OpenEventRef};

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("waiting on the ring buffer failed: {0}")]
    Io(#[from] std::io::Error),
}

pub struct EventStream {
    ring: AsyncFd<RingBuf<MapData>>,
    tick: Interval,
    received: u64,
}

impl EventStream {
    pub(crate) fn new(ring: RingBuf<MapData>, drain_interval: Duration) -> std::io::Result<Self> {
        let mut tick = tokio::time::interval(drain_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(Self {
            // SAFETY: the RingBuf owns the map fd and keeps it open, unchanged, for as long as
            // the AsyncFd (which owns the RingBuf) exists.
            ring: unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE)? },
            tick,
            received: 0,
        })
    }

    /// The next record if one is in the ring now.
    pub fn try_next(&mut self) -> Option<Result<OpenEvent, DecodeError>> {
        let item = self.ring.get_mut().next()?;
        self.received += 1;
        Some(OpenEvent::decode(&item))
    }

    /// The next record, waiting for a wakeup or the drain timer when the ring is empty.
    pub async fn next(&mut self) -> Result<OpenEvent, StreamError> {
        loop {
            if let Some(event) = self.try_next() {
                return Ok(event?);
            }
            tokio::select! {
                guard = self.ring.readable_mut() => {
                    // The ring was seen empty above, so clearing cannot lose a wakeup: the loop
                    // looks at the ring again before waiting.
                    guard?.clear_ready();
                }
                _ = self.tick.tick() => {}
            }
        }
    }

    /// Hands every record in the ring now to `f`, read in place (no copy); returns how many.
    pub fn drain(&mut self, mut f: impl FnMut(Result<OpenEventRef<'_>, DecodeError>)) -> usize {
        let mut n = 0;
        while let Some(item) = self.ring.get_mut().next() {
            n += 1;
            f(OpenEventRef::new(&item));
        }
        self.received += n as u64;
        n
    }

    /// Waits until the ring may hold records again: a wakeup from the probe or the drain timer.
    /// Call it after [`Self::drain`] found the ring empty.
    pub async fn wait(&mut self) -> std::io::Result<()> {
        tokio::select! {
            guard = self.ring.readable_mut() => guard?.clear_ready(),
            _ = self.tick.tick() => {}
        }
        Ok(())
    }

    /// Records taken from the ring so far.
    pub fn received(&self) -> u64 {
        self.received
    }
}
