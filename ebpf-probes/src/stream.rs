//! The decoded event stream: the ring buffer's fd registered with tokio, drained until empty
//! before readiness is cleared (the kernel signals again only after the reader caught up), plus
//! a short timer because the probe wakes the reader only when another eighth of the ring is unread.
//! Compact records come in per-CPU batches (see `batch`): full ones through the ring, the rest
//! read in place at most every half drain interval.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use aya::maps::{MapData, RingBuf};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::{Interval, MissedTickBehavior};

use crate::batch::{self, BatchMap, Cursors};
use crate::event::{BATCH_RECORD_SIZE, DecodeError, OpenEvent, OpenEventRef};

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("waiting on the ring buffer failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The per-CPU batches read in place, and when.
struct InPlace {
    map: BatchMap,
    every: Duration,
    last: Instant,
}

impl InPlace {
    fn due(&mut self) -> bool {
        if self.last.elapsed() < self.every {
            return false;
        }
        self.last = Instant::now();
        true
    }
}

pub struct EventStream {
    ring: AsyncFd<RingBuf<MapData>>,
    tick: Interval,
    cursors: Cursors,
    in_place: InPlace,
    /// Records of a batch not handed out yet by `try_next`.
    pending: VecDeque<Result<OpenEvent, DecodeError>>,
    received: u64,
}

impl EventStream {
    pub(crate) fn new(
        ring: RingBuf<MapData>,
        batches: BatchMap,
        drain_interval: Duration,
        skipped: Arc<AtomicU64>,
    ) -> std::io::Result<Self> {
        let mut tick = tokio::time::interval(drain_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(Self {
            // SAFETY: the RingBuf owns the map fd and keeps it open, unchanged, for as long as
            // the AsyncFd (which owns the RingBuf) exists.
            ring: unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE)? },
            tick,
            cursors: Cursors::starting_at(batches.written(), skipped),
            in_place: InPlace {
                map: batches,
                every: drain_interval / 2,
                last: Instant::now(),
            },
            pending: VecDeque::new(),
            received: 0,
        })
    }

    /// The next record if one is in the ring, or in a batch read in place, now.
    pub fn try_next(&mut self) -> Option<Result<OpenEvent, DecodeError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.received += 1;
                return Some(event);
            }
            let Self {
                ring,
                cursors,
                in_place,
                pending,
                ..
            } = self;
            match ring.get_mut().next() {
                Some(item) if item.len() == BATCH_RECORD_SIZE => {
                    batch::take_full(cursors, &item, |r| {
                        pending.push_back(r.and_then(OpenEvent::decode));
                    });
                }
                Some(item) => {
                    self.received += 1;
                    return Some(OpenEvent::decode(&item));
                }
                None => {
                    if !in_place.due() {
                        return None;
                    }
                    in_place
                        .map
                        .take_in_place(cursors, |r| pending.push_back(OpenEvent::decode(r)));
                    if pending.is_empty() {
                        return None;
                    }
                }
            }
        }
    }

    /// The next record, waiting for a wakeup or the drain timer when there is none.
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

    /// Hands every record in the ring now, and those of batches read in place when that is due,
    /// to `f`, read where they are (no copy out of the ring); returns how many.
    pub fn drain(&mut self, mut f: impl FnMut(Result<OpenEventRef<'_>, DecodeError>)) -> usize {
        let mut n = 0;
        while let Some(item) = self.ring.get_mut().next() {
            if item.len() == BATCH_RECORD_SIZE {
                n += batch::take_full(&mut self.cursors, &item, |r| f(r.and_then(OpenEventRef::new)));
            } else {
                n += 1;
                f(OpenEventRef::new(&item));
            }
        }
        if self.in_place.due() {
            n += self
                .in_place
                .map
                .take_in_place(&mut self.cursors, |r| f(OpenEventRef::new(r)));
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

    /// Records handed out so far.
    pub fn received(&self) -> u64 {
        self.received
    }
}
