//! The ring-buffer records, mirrored from `bpf/fileopen.h`, and their decoding.
//!
//! Two kinds, told apart by length: a compact record (the head: whose open it was and what it
//! returned, all that counting reads) and a full record (the head, then time, uid, flags, mode
//! and path). Decoding copies a record out with one unaligned read: every field is an integer or
//! a byte array, so any bit pattern is a valid value, and the length is checked first. A short,
//! long or garbled record is an error value, never a panic.

use std::mem::{offset_of, size_of};

/// `OPEN_EVENT_COMM_LEN`: the kernel keeps 15 bytes of a command name plus its NUL.
pub const COMM_LEN: usize = 16;
/// `OPEN_EVENT_FNAME_LEN`: bytes of each path the probe copies (including the NUL).
pub const FNAME_LEN: usize = 256;

/// `OPEN_EVENT_F_FNAME_FAULT`: the path could not be read from the process's memory.
pub const EFLAG_FNAME_FAULT: u8 = 0x1;
/// `OPEN_EVENT_F_FNAME_TRUNCATED`: the path filled the buffer and may be longer.
pub const EFLAG_FNAME_TRUNCATED: u8 = 0x2;

/// `OPEN_HEAD_TGID_MASK`: the process id's bits of `tgid_syscall`.
pub const HEAD_TGID_MASK: u32 = 0x00ff_ffff;
/// `OPEN_HEAD_SYSCALL_SHIFT`: where `tgid_syscall` keeps the syscall.
pub const HEAD_SYSCALL_SHIFT: u32 = 24;

/// `struct open_head`, byte for byte: the start of every record, and alone the compact record
/// (a test checks size and offsets against the object's BTF).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawOpenHead {
    pub cgroup_id: u64,
    pub ret: i32,
    /// The process id, and the syscall in the high byte (pids stay below 2^22).
    pub tgid_syscall: u32,
    pub comm: [u8; COMM_LEN],
}

impl RawOpenHead {
    pub fn tgid(&self) -> u32 {
        self.tgid_syscall & HEAD_TGID_MASK
    }

    pub fn syscall(&self) -> Syscall {
        Syscall::from_raw((self.tgid_syscall >> HEAD_SYSCALL_SHIFT) as u8)
    }
}

/// `struct open_detail`: what a full record adds to the head.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawOpenDetail {
    pub ts_ns: u64,
    pub tid: u32,
    pub uid: u32,
    pub flags: u32,
    pub mode: u32,
    pub fname_len: u16,
    pub eflags: u8,
    pub pad: [u8; 5],
    pub fname: [u8; FNAME_LEN],
}

/// `struct open_full`: a full record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawOpenFull {
    pub head: RawOpenHead,
    pub detail: RawOpenDetail,
}

/// `OPEN_BATCH_LEN`: compact records per batch.
pub const BATCH_LEN: usize = 32;

/// `struct open_batch`: one CPU's batch of compact records, the value of the probe's per-CPU
/// `batches` map and, once full, a ring-buffer record (see `batch` for how it is read).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawOpenBatch {
    pub seq: u64,
    pub cpu: u32,
    pub pad: u32,
    pub rec: [RawOpenHead; BATCH_LEN],
    pub pad_end: [u64; 6],
}

/// Size of a compact record in the ring.
pub const COMPACT_RECORD_SIZE: usize = size_of::<RawOpenHead>();
/// Size of a full record in the ring.
pub const FULL_RECORD_SIZE: usize = size_of::<RawOpenFull>();
/// Size of a batch of compact records in the ring.
pub const BATCH_RECORD_SIZE: usize = size_of::<RawOpenBatch>();

/// Which records the probe writes (chosen when it is loaded).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RecordKind {
    /// The head only: enough to count opens by process, cgroup and result. The cheapest record
    /// the probe can make (no arguments, no path).
    #[default]
    Compact,
    /// The head plus time, uid, flags, mode and path (`splitscope trace`).
    Full,
}

impl RecordKind {
    /// The kind of a record of `len` bytes.
    pub fn of_len(len: usize) -> Result<Self, DecodeError> {
        match len {
            COMPACT_RECORD_SIZE => Ok(Self::Compact),
            FULL_RECORD_SIZE => Ok(Self::Full),
            _ => Err(DecodeError::WrongSize { len }),
        }
    }
}

/// The system call an open came through (`enum open_syscall`). Fentry and kprobe modes see the
/// kernel function, not the syscall, and report `Unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Syscall {
    Unknown,
    Open,
    Openat,
    Openat2,
    Creat,
}

impl Syscall {
    pub fn from_raw(raw: u8) -> Self {
        match raw {
            1 => Self::Open,
            2 => Self::Openat,
            3 => Self::Openat2,
            4 => Self::Creat,
            _ => Self::Unknown,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Open => "open",
            Self::Openat => "openat",
            Self::Openat2 => "openat2",
            Self::Creat => "creat",
        }
    }
}

/// What an open returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpenResult {
    /// A new file descriptor.
    Fd(i64),
    /// A failure, as a positive errno (2 = ENOENT).
    Errno(i32),
}

impl OpenResult {
    pub fn from_ret(ret: i64) -> Self {
        // Kernel functions return -errno in [-4095, -1] (include/linux/err.h MAX_ERRNO).
        if (-4095..0).contains(&ret) {
            Self::Errno((-ret) as i32)
        } else {
            Self::Fd(ret)
        }
    }

    pub fn is_ok(self) -> bool {
        matches!(self, Self::Fd(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error(
        "ring buffer record of {len} bytes, expected {COMPACT_RECORD_SIZE} (compact), \
         {FULL_RECORD_SIZE} (full) or {BATCH_RECORD_SIZE} (a batch of compact records) (probe \
         and loader out of step?)"
    )]
    WrongSize { len: usize },
    #[error("a batch of compact records from CPU {cpu}, but this machine has {cpus} possible CPUs")]
    BatchCpu { cpu: usize, cpus: usize },
}

/// One decoded open. Compact records have no detail: time, uid, flags, mode and path are `None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenEvent {
    head: RawOpenHead,
    detail: Option<RawOpenDetail>,
}

impl OpenEvent {
    /// Decodes one ring-buffer record of either kind.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(match RecordKind::of_len(bytes.len())? {
            RecordKind::Compact => Self {
                // SAFETY: the length is size_of::<RawOpenHead>(), read_unaligned imposes no
                // alignment, and RawOpenHead is plain integers and byte arrays, valid for any bits.
                head: unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<RawOpenHead>()) },
                detail: None,
            },
            RecordKind::Full => {
                // SAFETY: as above, for RawOpenFull.
                let full = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<RawOpenFull>()) };
                Self::from_full(full)
            }
        })
    }

    pub fn from_full(raw: RawOpenFull) -> Self {
        Self {
            head: raw.head,
            detail: Some(raw.detail),
        }
    }

    pub fn from_head(head: RawOpenHead) -> Self {
        Self { head, detail: None }
    }

    pub fn kind(&self) -> RecordKind {
        match self.detail {
            Some(_) => RecordKind::Full,
            None => RecordKind::Compact,
        }
    }

    pub fn head(&self) -> &RawOpenHead {
        &self.head
    }

    pub fn detail(&self) -> Option<&RawOpenDetail> {
        self.detail.as_ref()
    }

    /// Thread id (full records: counting has no use for it, so compact records leave it out).
    pub fn tid(&self) -> Option<u32> {
        self.detail.map(|d| d.tid)
    }
    /// Process (thread group) id: what users call the pid (the kernel's `tgid`).
    pub fn pid(&self) -> u32 {
        self.head.tgid()
    }
    /// cgroup v2 id (the inode number of the task's cgroup directory).
    pub fn cgroup_id(&self) -> u64 {
        self.head.cgroup_id
    }
    pub fn ret(&self) -> i64 {
        i64::from(self.head.ret)
    }
    pub fn result(&self) -> OpenResult {
        OpenResult::from_ret(self.ret())
    }
    pub fn syscall(&self) -> Syscall {
        self.head.syscall()
    }
    /// The raw command-name bytes, NUL padded; the key the agent counts by.
    pub fn comm_bytes(&self) -> &[u8; COMM_LEN] {
        &self.head.comm
    }
    /// The command name, up to its NUL.
    pub fn comm(&self) -> &[u8] {
        until_nul(&self.head.comm)
    }

    /// CLOCK_MONOTONIC nanoseconds when the open returned (full records).
    pub fn ts_ns(&self) -> Option<u64> {
        self.detail.map(|d| d.ts_ns)
    }
    /// The uid of the task (full records).
    pub fn uid(&self) -> Option<u32> {
        self.detail.map(|d| d.uid)
    }
    /// open(2) flags (full records).
    pub fn flags(&self) -> Option<u32> {
        self.detail.map(|d| d.flags)
    }
    /// open(2) mode (full records).
    pub fn mode(&self) -> Option<u32> {
        self.detail.map(|d| d.mode)
    }
    /// The path as passed to open(2), up to its NUL (at most 255 bytes; full records).
    pub fn filename(&self) -> Option<&[u8]> {
        self.detail.as_ref().map(|d| {
            let len = usize::from(d.fname_len).min(FNAME_LEN - 1);
            until_nul(&d.fname[..len])
        })
    }
    /// The path could not be read (it was not in memory when the probe ran).
    pub fn filename_fault(&self) -> bool {
        self.detail.is_some_and(|d| d.eflags & EFLAG_FNAME_FAULT != 0)
    }
    /// The path filled the probe's buffer and may have been cut.
    pub fn filename_truncated(&self) -> bool {
        self.detail.is_some_and(|d| d.eflags & EFLAG_FNAME_TRUNCATED != 0)
    }
}

/// What the agent's counting needs from a record, whether copied out ([`OpenEvent`]) or read in
/// place in the ring ([`OpenEventRef`]): the head, which both record kinds carry.
pub trait OpenRecord {
    fn cgroup_id(&self) -> u64;
    fn comm_bytes(&self) -> &[u8; COMM_LEN];
    fn ret(&self) -> i64;
    fn result(&self) -> OpenResult {
        OpenResult::from_ret(self.ret())
    }
    /// The command name, up to its NUL.
    fn comm(&self) -> &[u8] {
        until_nul(self.comm_bytes())
    }
}

impl OpenRecord for OpenEvent {
    fn cgroup_id(&self) -> u64 {
        self.head.cgroup_id
    }
    fn comm_bytes(&self) -> &[u8; COMM_LEN] {
        &self.head.comm
    }
    fn ret(&self) -> i64 {
        i64::from(self.head.ret)
    }
}

/// A record of either kind read in place in the ring buffer, without copying it out. Only the
/// bytes a caller reads are touched: the agent reads the head (one cache line the producing CPU
/// just wrote), which is what lets one reader keep up with every CPU opening flat out.
#[derive(Clone, Copy, Debug)]
pub struct OpenEventRef<'a> {
    bytes: &'a [u8],
}

impl<'a> OpenEventRef<'a> {
    pub fn new(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        RecordKind::of_len(bytes.len())?;
        Ok(Self { bytes })
    }

    /// The head's bytes: every record is at least that long (checked in `new`).
    fn head_bytes(&self) -> &'a [u8; COMPACT_RECORD_SIZE] {
        self.bytes.first_chunk().unwrap_or(&[0; COMPACT_RECORD_SIZE])
    }

    fn u64_at(&self, offset: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.head_bytes()[offset..offset + 8]);
        u64::from_ne_bytes(b)
    }

    fn u32_at(&self, offset: usize) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.head_bytes()[offset..offset + 4]);
        u32::from_ne_bytes(b)
    }

    pub fn kind(&self) -> RecordKind {
        if self.bytes.len() == FULL_RECORD_SIZE {
            RecordKind::Full
        } else {
            RecordKind::Compact
        }
    }

    /// Process (thread group) id.
    pub fn pid(&self) -> u32 {
        self.u32_at(offset_of!(RawOpenHead, tgid_syscall)) & HEAD_TGID_MASK
    }

    /// The whole record, copied out.
    pub fn to_event(&self) -> OpenEvent {
        // The length was checked in `new`, so decoding cannot fail; the fallback is never used.
        OpenEvent::decode(self.bytes).unwrap_or(OpenEvent {
            head: sample_head(0, "", 0),
            detail: None,
        })
    }
}

impl OpenRecord for OpenEventRef<'_> {
    fn cgroup_id(&self) -> u64 {
        self.u64_at(offset_of!(RawOpenHead, cgroup_id))
    }
    fn comm_bytes(&self) -> &[u8; COMM_LEN] {
        const AT: usize = offset_of!(RawOpenHead, comm);
        self.head_bytes()[AT..AT + COMM_LEN]
            .try_into()
            .unwrap_or(&[0; COMM_LEN])
    }
    fn ret(&self) -> i64 {
        i64::from(self.u32_at(offset_of!(RawOpenHead, ret)) as i32)
    }
}

fn until_nul(bytes: &[u8]) -> &[u8] {
    match bytes.iter().position(|&b| b == 0) {
        Some(end) => &bytes[..end],
        None => bytes,
    }
}

/// Builds a full record as the probe would (tests and benchmarks).
pub fn encode_full(raw: &RawOpenFull) -> [u8; FULL_RECORD_SIZE] {
    // SAFETY: RawOpenFull is repr(C) without implicit padding (checked by the layout test), so
    // all FULL_RECORD_SIZE bytes are initialised.
    unsafe { std::mem::transmute_copy(raw) }
}

/// Builds a compact record as the probe would (tests and benchmarks).
pub fn encode_compact(head: &RawOpenHead) -> [u8; COMPACT_RECORD_SIZE] {
    // SAFETY: as for encode_full, for RawOpenHead.
    unsafe { std::mem::transmute_copy(head) }
}

/// Builds a batch of compact records as the probe puts it into the ring (tests and benchmarks).
pub fn encode_batch(batch: &RawOpenBatch) -> [u8; BATCH_RECORD_SIZE] {
    // SAFETY: as for encode_full, for RawOpenBatch (its layout test checks there is no padding).
    unsafe { std::mem::transmute_copy(batch) }
}

/// A head with the given fields and zeroes elsewhere (tests and benchmarks).
/// (`tgid` beyond the head's 24 bits and `ret` beyond an i32 are cut, as the probe would.)
pub fn sample_head(tgid: u32, comm: &str, ret: i64) -> RawOpenHead {
    let mut head = RawOpenHead {
        cgroup_id: 1,
        ret: ret as i32,
        tgid_syscall: (tgid & HEAD_TGID_MASK) | 2 << HEAD_SYSCALL_SHIFT,
        comm: [0; COMM_LEN],
    };
    let c = comm.as_bytes();
    let n = c.len().min(COMM_LEN - 1);
    head.comm[..n].copy_from_slice(&c[..n]);
    head
}

/// A full record with the given fields and zeroes elsewhere (tests and benchmarks).
pub fn sample(tgid: u32, comm: &str, filename: &str, ret: i64) -> RawOpenFull {
    let mut detail = RawOpenDetail {
        ts_ns: 1,
        tid: tgid,
        uid: 0,
        flags: 0,
        mode: 0,
        fname_len: 0,
        eflags: 0,
        pad: [0; 5],
        fname: [0; FNAME_LEN],
    };
    let f = filename.as_bytes();
    let n = f.len().min(FNAME_LEN - 1);
    detail.fname[..n].copy_from_slice(&f[..n]);
    detail.fname_len = n as u16;
    RawOpenFull {
        head: sample_head(tgid, comm, ret),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_what_was_encoded() {
        let raw = sample(42, "cat", "/etc/hostname", 3);
        let ev = OpenEvent::decode(&encode_full(&raw)).unwrap();
        assert_eq!(ev.kind(), RecordKind::Full);
        assert_eq!(ev.pid(), 42);
        assert_eq!(ev.comm(), b"cat");
        assert_eq!(ev.filename(), Some(&b"/etc/hostname"[..]));
        assert_eq!(ev.result(), OpenResult::Fd(3));
        assert_eq!(ev.syscall(), Syscall::Openat);
        assert_eq!(ev.ts_ns(), Some(1));
        assert_eq!(ev.tid(), Some(42));
    }

    #[test]
    fn the_head_packs_the_syscall_above_the_pid() {
        // The largest pid a 64-bit kernel hands out (PID_MAX_LIMIT - 1), through creat(2).
        let mut head = sample_head(0, "sh", -13);
        head.tgid_syscall = ((1 << 22) - 1) | 4 << HEAD_SYSCALL_SHIFT;
        let bytes = encode_compact(&head);
        let ev = OpenEvent::decode(&bytes).unwrap();
        assert_eq!((ev.pid(), ev.syscall()), ((1 << 22) - 1, Syscall::Creat));
        assert_eq!(ev.result(), OpenResult::Errno(13));
        let view = OpenEventRef::new(&bytes).unwrap();
        assert_eq!((view.pid(), view.ret()), ((1 << 22) - 1, -13));
    }

    #[test]
    fn compact_records_have_the_head_and_no_detail() {
        let ev = OpenEvent::decode(&encode_compact(&sample_head(7, "ls", -2))).unwrap();
        assert_eq!(ev.kind(), RecordKind::Compact);
        assert_eq!(
            (ev.pid(), ev.comm(), ev.result()),
            (7, &b"ls"[..], OpenResult::Errno(2))
        );
        assert_eq!(ev.syscall(), Syscall::Openat);
        assert_eq!(
            (ev.filename(), ev.flags(), ev.mode(), ev.uid(), ev.ts_ns()),
            (None, None, None, None, None)
        );
        assert_eq!(ev.tid(), None);
        assert!(!ev.filename_fault() && !ev.filename_truncated());
    }

    #[test]
    fn a_full_record_starts_with_its_head() {
        let raw = sample(9, "vim", "/tmp/x", -13);
        let bytes = encode_full(&raw);
        assert_eq!(bytes[..COMPACT_RECORD_SIZE], encode_compact(&raw.head));
        let view = OpenEventRef::new(&bytes).unwrap();
        assert_eq!(view.kind(), RecordKind::Full);
        assert_eq!((view.pid(), view.comm()), (9, &b"vim"[..]));
    }

    #[test]
    fn negative_returns_are_errnos() {
        assert_eq!(OpenResult::from_ret(-2), OpenResult::Errno(2));
        assert_eq!(OpenResult::from_ret(-4095), OpenResult::Errno(4095));
        assert_eq!(OpenResult::from_ret(0), OpenResult::Fd(0));
        // Not an errno: a garbled value stays visible as what it was.
        assert_eq!(OpenResult::from_ret(-4096), OpenResult::Fd(-4096));
    }

    #[test]
    fn records_of_other_lengths_are_errors() {
        let bytes = encode_full(&sample(1, "a", "b", 0));
        for len in [
            0,
            1,
            COMPACT_RECORD_SIZE - 1,
            COMPACT_RECORD_SIZE + 1,
            FULL_RECORD_SIZE - 1,
        ] {
            assert_eq!(
                OpenEvent::decode(&bytes[..len]),
                Err(DecodeError::WrongSize { len }),
                "{len}"
            );
        }
        let mut long = bytes.to_vec();
        long.push(0);
        assert!(OpenEvent::decode(&long).is_err());
        assert!(OpenEventRef::new(&long).is_err());
        let err = OpenEvent::decode(&[]).unwrap_err().to_string();
        assert!(err.contains("32") && err.contains("320"), "{err}");
    }

    #[test]
    fn fname_len_beyond_the_buffer_is_clamped() {
        let mut raw = sample(1, "x", "/tmp/a", 0);
        raw.detail.fname_len = u16::MAX;
        let ev = OpenEvent::from_full(raw);
        assert_eq!(ev.filename(), Some(&b"/tmp/a"[..]));
        raw.detail.fname = [b'a'; FNAME_LEN];
        let ev = OpenEvent::from_full(raw);
        assert_eq!(ev.filename().map(<[u8]>::len), Some(FNAME_LEN - 1));
    }

    proptest! {
        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            if let Ok(ev) = OpenEvent::decode(&bytes) {
                prop_assert!(bytes.len() == COMPACT_RECORD_SIZE || bytes.len() == FULL_RECORD_SIZE);
                prop_assert!(ev.filename().is_none_or(|f| f.len() < FNAME_LEN));
                prop_assert!(ev.comm().len() <= COMM_LEN);
                let _ = (ev.result(), ev.syscall(), ev.filename_fault(), ev.filename_truncated());
            }
        }

        #[test]
        fn in_place_view_agrees_with_the_copy(
            len in prop_oneof![Just(COMPACT_RECORD_SIZE), Just(FULL_RECORD_SIZE), 0usize..700],
            seed in proptest::collection::vec(any::<u8>(), 700),
        ) {
            let bytes = &seed[..len];
            match (OpenEventRef::new(bytes), OpenEvent::decode(bytes)) {
                (Ok(view), Ok(event)) => {
                    prop_assert_eq!(view.kind(), event.kind());
                    prop_assert_eq!(view.cgroup_id(), OpenRecord::cgroup_id(&event));
                    prop_assert_eq!(view.comm(), OpenRecord::comm(&event));
                    prop_assert_eq!(view.result(), OpenRecord::result(&event));
                    prop_assert_eq!(view.pid(), event.pid());
                    prop_assert_eq!(view.to_event(), event);
                }
                (Err(a), Err(b)) => prop_assert_eq!(a, b),
                _ => prop_assert!(false, "view and copy disagree on validity"),
            }
        }

        #[test]
        fn any_record_of_either_size_decodes(
            full in any::<bool>(),
            seed in proptest::collection::vec(any::<u8>(), FULL_RECORD_SIZE),
        ) {
            let bytes = if full { &seed[..] } else { &seed[..COMPACT_RECORD_SIZE] };
            let ev = OpenEvent::decode(bytes).unwrap();
            prop_assert_eq!(ev.filename().is_some(), full);
            prop_assert!(ev.filename().is_none_or(|f| f.len() < FNAME_LEN && !f.contains(&0)));
            prop_assert!(!ev.comm().contains(&0));
        }
    }
}
