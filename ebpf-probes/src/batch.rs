//! The probe's batches of compact records (`struct open_batch` in `bpf/fileopen.h`), read two
//! ways: full batches from the ring buffer, and batches that are not full yet where they are, in
//! the probe's mmap-ed `batches` map. A quiet CPU may take minutes to fill a batch; reading it in
//! place is what keeps its opens from waiting that long.
//!
//! A record can so be seen twice, first in place and then in its full batch from the ring. Each
//! CPU numbers its records, and a cursor per CPU remembers up to which number they were handed
//! out: nothing is counted twice. Written by hand because no library reads this layout.

use std::mem::offset_of;
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering, fence};

use aya::maps::MapData;

use crate::event::{BATCH_LEN, BATCH_RECORD_SIZE, COMPACT_RECORD_SIZE, DecodeError, RawOpenBatch};

const LEN: u64 = BATCH_LEN as u64;
const SEQ_AT: usize = offset_of!(RawOpenBatch, seq);
const CPU_AT: usize = offset_of!(RawOpenBatch, cpu);
const REC_AT: usize = offset_of!(RawOpenBatch, rec);
const REC_END: usize = REC_AT + BATCH_LEN * COMPACT_RECORD_SIZE;

/// Which of a CPU's records were dealt with: all numbered below `next` were handed out, or
/// skipped because their batch was lost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Cursor {
    next: u64,
    /// Set when an in-place read found records older than the intact ones not handed out:
    /// their full batch was still on its way into the ring, or it was lost.
    waiting: Option<Waiting>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Waiting {
    /// `next` then.
    at: u64,
    /// The CPU's `seq` then: every batch ending at or below it was full by that read, so a
    /// drain interval later it has come through the ring or was lost. Batches filled since may
    /// still be on their way.
    written: u64,
}

/// One cursor per possible CPU, and the records skipped so far.
#[derive(Clone, Debug)]
pub struct Cursors {
    cpus: Vec<Cursor>,
    /// Shared with the probe, whose drop count includes it.
    skipped: Arc<AtomicU64>,
}

impl Cursors {
    pub fn new(cpus: usize) -> Self {
        Self::starting_at(vec![0; cpus], Arc::default())
    }

    /// Cursors for a stream that starts with each CPU's record numbered `next[cpu]`: what came
    /// before (the loader's self-test read and discarded the ring meanwhile) is neither handed
    /// out nor counted as lost. Skipped records are added to `skipped`.
    pub fn starting_at(next: Vec<u64>, skipped: Arc<AtomicU64>) -> Self {
        Self {
            cpus: next
                .into_iter()
                .map(|next| Cursor { next, waiting: None })
                .collect(),
            skipped,
        }
    }

    /// Records of batches the ring had no room for, found missing and never handed out: the
    /// batched part of the drop count. The kernel cannot count these itself, because records
    /// of a lost batch may have been read in place before it was full.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Whether `cpu` has records numbered `written` and above not handed out yet.
    fn has_new(&self, cpu: usize, written: u64) -> bool {
        self.cpus.get(cpu).is_some_and(|c| written > c.next)
    }

    /// The records not handed out yet of the full batch `cpu` put into the ring, whose last
    /// record is numbered `end - 1`. A batch that starts beyond the cursor follows lost ones:
    /// the cursor skips the gap.
    pub fn take_full(&mut self, cpu: usize, end: u64) -> Option<Range<u64>> {
        let cursor = self.cpus.get_mut(cpu)?;
        let start = cursor.next.max(end.saturating_sub(LEN));
        let skipped = start - cursor.next;
        cursor.next = cursor.next.max(end);
        cursor.waiting = None;
        self.skipped.fetch_add(skipped, Ordering::Relaxed);
        Some(start..end.max(start))
    }

    /// The records not handed out yet that an in-place read of `cpu`'s batch can give:
    /// `written` is its `seq` read before the copy, `settled` the same read after it (see
    /// fileopen.h).
    /// Records numbered `settled - BATCH_LEN` and older may have been rewritten during the read;
    /// they are in full batches that come through the ring. When records between the cursor and
    /// the intact ones are still missing at the next read (a drain interval later, with the ring
    /// drained in between), the batches among them that were full at the first read were lost:
    /// the cursor skips them. Those filled since may still come; it waits for them in turn.
    pub fn take_in_place(&mut self, cpu: usize, written: u64, settled: u64) -> Range<u64> {
        let Some(cursor) = self.cpus.get_mut(cpu) else {
            return 0..0;
        };
        let oldest_intact = settled.saturating_sub(LEN - 1);
        if cursor.next < oldest_intact {
            if let Some(waiting) = cursor.waiting.filter(|w| w.at == cursor.next) {
                let lost_up_to = (waiting.written / LEN * LEN).clamp(cursor.next, oldest_intact);
                self.skipped
                    .fetch_add(lost_up_to - cursor.next, Ordering::Relaxed);
                cursor.next = lost_up_to;
            }
            if cursor.next < oldest_intact {
                cursor.waiting = Some(Waiting {
                    at: cursor.next,
                    written,
                });
                return 0..0;
            }
        }
        cursor.waiting = None;
        let start = cursor.next;
        let end = written.max(start);
        cursor.next = end;
        start..end
    }
}

/// Where record `seq` starts in a batch's bytes.
fn record_offset(seq: u64) -> usize {
    REC_AT + (seq % LEN) as usize * COMPACT_RECORD_SIZE
}

/// Record `seq` in a batch's bytes.
fn record_at(batch: &[u8], seq: u64) -> &[u8] {
    let at = record_offset(seq);
    batch.get(at..at + COMPACT_RECORD_SIZE).unwrap_or(&[])
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(src) = bytes.get(at..at + 8) {
        b.copy_from_slice(src);
    }
    u64::from_ne_bytes(b)
}

/// Hands each record of a full batch from the ring that was not handed out yet to `f`; returns
/// how many. `batch` is BATCH_RECORD_SIZE bytes.
pub fn take_full<'a>(
    cursors: &mut Cursors,
    batch: &'a [u8],
    mut f: impl FnMut(Result<&'a [u8], DecodeError>),
) -> usize {
    let end = u64_at(batch, SEQ_AT);
    let cpu = u64_at(batch, CPU_AT) as u32 as usize;
    let Some(range) = cursors.take_full(cpu, end) else {
        f(Err(DecodeError::BatchCpu {
            cpu,
            cpus: cursors.cpus.len(),
        }));
        return 0;
    };
    let n = range.end - range.start;
    for seq in range {
        f(Ok(record_at(batch, seq)));
    }
    n as usize
}

/// The probe's `batches` map, mapped read-only into this process: one `struct open_batch` per
/// possible CPU, read while the CPUs write them.
pub struct BatchMap {
    base: NonNull<u8>,
    len: usize,
    cpus: usize,
    /// Keeps the map's fd open with the mapping (the mapping alone would keep the map alive).
    _map: MapData,
    /// Where an in-place read copies a batch to.
    copy: Box<[u8; BATCH_RECORD_SIZE]>,
}

// SAFETY: the mapping is owned by this value alone and only read through &mut self.
unsafe impl Send for BatchMap {}

impl BatchMap {
    /// Maps `map`, an mmap-able array of `cpus` batches.
    pub fn new(map: MapData, cpus: usize) -> std::io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let len = (BATCH_RECORD_SIZE * cpus).div_ceil(page) * page;
        // SAFETY: a fresh shared read-only mapping of the map's fd; the kernel checks the fd is
        // an mmap-able map and the length within it. Nothing else aliases it mutably here.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let base =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| std::io::Error::other("mmap returned null"))?;
        Ok(Self {
            base,
            len,
            cpus,
            _map: map,
            copy: Box::new([0; BATCH_RECORD_SIZE]),
        })
    }

    /// Where `cpu`'s batch starts in the mapping (inside it for cpu < self.cpus).
    fn batch(&self, cpu: usize) -> *const u8 {
        self.base.as_ptr().wrapping_add(cpu * BATCH_RECORD_SIZE)
    }

    /// How many records `cpu` has written so far: its batch's `seq`. Acquire keeps the loads
    /// that follow after it.
    fn seq(&self, cpu: usize) -> u64 {
        debug_assert!(cpu < self.cpus);
        // SAFETY: cpu < self.cpus, so seq lies inside the mapping; the mapping is page-aligned
        // and BATCH_RECORD_SIZE a multiple of 8, so it is aligned. Atomic loads of read-only
        // memory are allowed for lock-free sizes.
        unsafe { (*self.batch(cpu).add(SEQ_AT).cast::<AtomicU64>()).load(Ordering::Acquire) }
    }

    /// How many records each CPU has written so far.
    pub fn written(&self) -> Vec<u64> {
        (0..self.cpus).map(|cpu| self.seq(cpu)).collect()
    }

    /// Hands each record written in place and not handed out yet to `f`; returns how many.
    pub fn take_in_place(&mut self, cursors: &mut Cursors, mut f: impl FnMut(&[u8])) -> usize {
        let mut n = 0;
        for cpu in 0..self.cpus {
            let written = self.seq(cpu);
            // A CPU with nothing new since the last read (most of them on a big, quiet node)
            // costs one load, not a copy.
            if !cursors.has_new(cpu, written) {
                continue;
            }
            let batch = self.batch(cpu);
            for at in (REC_AT..REC_END).step_by(8) {
                // SAFETY: inside cpu's batch, aligned as in `seq`.
                let word = unsafe { std::ptr::read_volatile(batch.add(at).cast::<u64>()) };
                self.copy[at..at + 8].copy_from_slice(&word.to_ne_bytes());
            }
            // The copy's loads before seq's second read.
            fence(Ordering::Acquire);
            let settled = self.seq(cpu);
            let range = cursors.take_in_place(cpu, written, settled);
            n += (range.end - range.start) as usize;
            for seq in range {
                f(record_at(&self.copy[..], seq));
            }
        }
        n
    }
}

impl Drop for BatchMap {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{RawOpenHead, encode_compact, sample_head};

    fn batch_bytes(cpu: u32, end: u64) -> Vec<u8> {
        let mut bytes = vec![0u8; BATCH_RECORD_SIZE];
        bytes[SEQ_AT..SEQ_AT + 8].copy_from_slice(&end.to_ne_bytes());
        bytes[CPU_AT..CPU_AT + 4].copy_from_slice(&cpu.to_ne_bytes());
        for seq in end.saturating_sub(LEN)..end {
            let head: RawOpenHead = sample_head(seq as u32, "w", 0);
            let at = record_offset(seq);
            bytes[at..at + COMPACT_RECORD_SIZE].copy_from_slice(&encode_compact(&head));
        }
        bytes
    }

    fn pids(cursors: &mut Cursors, batch: &[u8]) -> Vec<u32> {
        let mut out = Vec::new();
        take_full(cursors, batch, |r| {
            let view = crate::event::OpenEventRef::new(r.unwrap()).unwrap();
            out.push(view.pid());
        });
        out
    }

    #[test]
    fn full_batches_from_the_ring_are_handed_out_whole_and_in_order() {
        let mut c = Cursors::new(2);
        assert_eq!(pids(&mut c, &batch_bytes(1, 32)), (0..32).collect::<Vec<_>>());
        assert_eq!(pids(&mut c, &batch_bytes(1, 64)), (32..64).collect::<Vec<_>>());
        // CPU 0 has its own numbering.
        assert_eq!(pids(&mut c, &batch_bytes(0, 32)).len(), 32);
    }

    #[test]
    fn records_read_in_place_are_not_handed_out_again_from_the_ring() {
        let mut c = Cursors::new(1);
        // 5 records written, nothing in flight: all five now.
        assert_eq!(c.take_in_place(0, 5, 5), 0..5);
        assert_eq!(c.take_in_place(0, 5, 5), 5..5);
        assert_eq!(c.take_in_place(0, 20, 20), 5..20);
        // The batch fills; the ring brings it whole: only the 12 not seen in place.
        assert_eq!(pids(&mut c, &batch_bytes(0, 32)), (20..32).collect::<Vec<_>>());
        assert_eq!(c.take_in_place(0, 33, 33), 32..33);
    }

    #[test]
    fn a_batch_from_the_ring_after_the_cursor_passed_it_gives_nothing() {
        let mut c = Cursors::new(1);
        assert_eq!(c.take_in_place(0, 31, 31), 0..31);
        // 31..40 are intact in place (the slots of 32..40 held 0..8, already handed out).
        assert_eq!(c.take_in_place(0, 40, 40), 31..40);
        assert!(pids(&mut c, &batch_bytes(0, 32)).is_empty());
        assert_eq!(c.take_in_place(0, 40, 40), 40..40);
    }

    #[test]
    fn records_that_may_be_rewritten_during_the_read_are_left_to_the_ring() {
        let mut c = Cursors::new(1);
        // seq read as 10, but by the end of the copy the CPU had written up to 45: the slots of
        // records 0..=13 may hold 32..=45 by then. Only 14.. are intact, and the cursor is at 0.
        assert_eq!(c.take_in_place(0, 10, 45), 0..0);
        // The full batch 0..32 arrives; then 32..45 in place.
        assert_eq!(pids(&mut c, &batch_bytes(0, 32)).len(), 32);
        assert_eq!(c.take_in_place(0, 45, 45), 32..45);
    }

    #[test]
    fn a_batch_the_ring_lost_is_skipped_at_the_second_read_that_misses_it() {
        let mut c = Cursors::new(1);
        assert_eq!(c.take_in_place(0, 3, 3), 0..3);
        // The batch 0..32 never comes (the ring was full); 40 written by now.
        assert_eq!(c.take_in_place(0, 40, 40), 0..0);
        // A drain interval later it still has not come: 9..40 are intact and handed out, 3..9
        // skipped.
        assert_eq!(c.take_in_place(0, 40, 40), 9..40);
        assert_eq!(c.skipped(), 6);
        // The batch 32..64 is lost too, and 64..96 comes: 40..64 skipped.
        assert_eq!(pids(&mut c, &batch_bytes(0, 96)), (64..96).collect::<Vec<_>>());
        assert_eq!(c.skipped(), 6 + 24);
        // Nothing lost: nothing more skipped.
        assert_eq!(pids(&mut c, &batch_bytes(0, 128)).len(), 32);
        assert_eq!(c.take_in_place(0, 130, 130), 128..130);
        assert_eq!(c.skipped(), 30);
        // A batch arriving after the cursor skipped past it gives nothing and skips nothing.
        assert!(pids(&mut c, &batch_bytes(0, 64)).is_empty());
        assert_eq!(c.skipped(), 30);
    }

    #[test]
    fn a_batch_filled_during_a_slow_in_place_read_is_not_skipped_with_a_lost_one() {
        let mut c = Cursors::new(1);
        for end in [32, 64, 96, 128, 160] {
            assert_eq!(pids(&mut c, &batch_bytes(0, end)).len(), 32);
        }
        // The batch 160..192 is lost. A read finds 161..192 intact but 160 missing: wait.
        assert_eq!(c.take_in_place(0, 192, 192), 0..0);
        // Still missing a drain interval later, while the CPU fills 192..224 during the copy:
        // 160..192 were lost (full by the first read), but record 192 is on its way in the batch
        // 192..224 (its slot is not intact: it waits for that batch).
        assert_eq!(c.take_in_place(0, 192, 224), 0..0);
        assert_eq!(c.skipped(), 32);
        assert_eq!(pids(&mut c, &batch_bytes(0, 224)), (192..224).collect::<Vec<_>>());
        assert_eq!(c.skipped(), 32);
    }

    #[test]
    fn a_stream_starts_with_the_records_written_after_it_was_made() {
        // CPU 0 had written 40 records before: the batch 0..32 still in the ring and 32..40
        // are neither handed out nor counted as lost.
        let mut c = Cursors::starting_at(vec![40, 0], Arc::default());
        assert!(pids(&mut c, &batch_bytes(0, 32)).is_empty());
        assert_eq!(c.take_in_place(0, 45, 45), 40..45);
        assert_eq!(pids(&mut c, &batch_bytes(0, 64)), (45..64).collect::<Vec<_>>());
        assert_eq!(c.skipped(), 0);
    }

    #[test]
    fn a_batch_naming_a_cpu_that_does_not_exist_is_an_error() {
        let mut c = Cursors::new(2);
        let mut errors = Vec::new();
        assert_eq!(
            take_full(&mut c, &batch_bytes(7, 32), |r| errors.push(r.err())),
            0
        );
        assert_eq!(errors, vec![Some(DecodeError::BatchCpu { cpu: 7, cpus: 2 })]);
    }
}

#[cfg(test)]
mod any_interleaving {
    //! One CPU writing records and putting full batches into the ring (some lost: the ring was
    //! full), and a reader draining the ring then reading in place while the CPU goes on
    //! writing, interleaved at random: every record is handed out once or counted as skipped,
    //! never both, never twice, and only the records of lost batches are skipped.

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Step {
        /// The CPU writes this many records; a full batch goes into the ring unless `lost`.
        Write { records: u64, lost: bool },
        /// The reader drains the ring, then reads in place while the CPU writes `during`
        /// more records (if an in-place read is due).
        Read { in_place: bool, during: u64 },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (1u64..80, prop::bool::weighted(0.2)).prop_map(|(records, lost)| Step::Write { records, lost }),
            (any::<bool>(), prop_oneof![3 => Just(0u64), 1 => 1u64..80])
                .prop_map(|(in_place, during)| Step::Read { in_place, during }),
        ]
    }

    /// The CPU: records written, full batches in the ring (their end), lost batches.
    #[derive(Default)]
    struct Writer {
        written: u64,
        ring: std::collections::VecDeque<u64>,
        lost: std::collections::BTreeSet<u64>,
    }

    impl Writer {
        fn write(&mut self, records: u64, lost: bool) {
            for _ in 0..records {
                self.written += 1;
                if self.written.is_multiple_of(LEN) {
                    if lost {
                        self.lost.insert(self.written / LEN - 1);
                    } else {
                        self.ring.push_back(self.written);
                    }
                }
            }
        }
    }

    struct Reader {
        cursors: Cursors,
        handed: Vec<u64>,
    }

    impl Reader {
        fn hand(&mut self, range: Range<u64>) {
            self.handed.extend(range);
        }

        fn drain(&mut self, w: &mut Writer) {
            while let Some(end) = w.ring.pop_front() {
                let range = self.cursors.take_full(0, end).unwrap_or(0..0);
                self.hand(range);
            }
        }

        /// An in-place read; returns the records written when it began.
        fn in_place(&mut self, w: &mut Writer, during: u64) -> u64 {
            let written = w.written;
            w.write(during, false);
            let range = self.cursors.take_in_place(0, written, w.written);
            self.hand(range);
            written
        }
    }

    proptest! {
        #[test]
        fn every_record_is_handed_out_once_or_skipped_with_its_lost_batch(
            steps in prop::collection::vec(step(), 1..80),
        ) {
            let mut w = Writer::default();
            let mut r = Reader { cursors: Cursors::new(1), handed: Vec::new() };
            for s in &steps {
                match *s {
                    Step::Write { records, lost } => w.write(records, lost),
                    Step::Read { in_place, during } => {
                        r.drain(&mut w);
                        if in_place {
                            let before = r.handed.len();
                            let written = r.in_place(&mut w, during);
                            // Only records complete before the read began.
                            prop_assert!(r.handed[before..].iter().all(|&seq| seq < written));
                        } else {
                            w.write(during, false);
                        }
                    }
                }
            }
            // Quiet at the end: the ring drained, and two in-place reads a drain interval apart.
            for _ in 0..2 {
                r.drain(&mut w);
                r.in_place(&mut w, 0);
            }

            let mut seen = std::collections::BTreeSet::new();
            for &seq in &r.handed {
                prop_assert!(seen.insert(seq), "record {} handed out twice", seq);
                prop_assert!(seq < w.written);
            }
            let skipped: Vec<u64> = (0..w.written).filter(|seq| !seen.contains(seq)).collect();
            prop_assert_eq!(skipped.len() as u64, r.cursors.skipped(), "skipped: {:?}", skipped);
            for seq in &skipped {
                prop_assert!(w.lost.contains(&(seq / LEN)), "record {} skipped, its batch was not lost", seq);
            }
        }
    }
}
