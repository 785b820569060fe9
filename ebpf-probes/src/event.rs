//! The ring-buffer record, mirrored from `bpf/fileopen.h`, and its decoding.
//!
//! Decoding copies the fixed-size record out of the ring with one unaligned read: every field is
//! an integer or a byte array, so any bit pattern is a valid value, and the length is checked
//! first. A short, long or garbled record is an error value, never a panic.

use std::mem::size_of;

/// `OPEN_EVENT_COMM_LEN`: the kernel keeps 15 bytes of a command name plus its NUL.
pub const COMM_LEN: usize = 16;
/// `OPEN_EVENT_FNAME_LEN`: bytes of each path the probe copies (including the NUL).
pub const FNAME_LEN: usize = 256;

/// `OPEN_EVENT_F_FNAME_FAULT`: the path could not be read from the process's memory.
pub const EFLAG_FNAME_FAULT: u8 = 0x1;
/// `OPEN_EVENT_F_FNAME_TRUNCATED`: the path filled the buffer and may be longer.
pub const EFLAG_FNAME_TRUNCATED: u8 = 0x2;

/// `struct open_event`, byte for byte (a test checks size and offsets against the object's BTF).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawOpenEvent {
    pub ts_ns: u64,
    pub cgroup_id: u64,
    pub ret: i64,
    pub pid: u32,
    pub tgid: u32,
    pub uid: u32,
    pub flags: u32,
    pub mode: u32,
    pub fname_len: u16,
    pub syscall: u8,
    pub eflags: u8,
    pub comm: [u8; COMM_LEN],
    pub fname: [u8; FNAME_LEN],
}

/// Size of one record in the ring.
pub const RECORD_SIZE: usize = size_of::<RawOpenEvent>();

/// The system call an open came through (`enum open_syscall`). Kprobe mode sees the kernel
/// function, not the syscall, and reports `Unknown`.
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
    #[error("ring buffer record of {len} bytes, expected {RECORD_SIZE} (probe and loader out of step?)")]
    WrongSize { len: usize },
}

/// One decoded open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenEvent {
    raw: RawOpenEvent,
}

impl OpenEvent {
    /// Decodes one ring-buffer record.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() != RECORD_SIZE {
            return Err(DecodeError::WrongSize { len: bytes.len() });
        }
        // SAFETY: the length equals size_of::<RawOpenEvent>(), read_unaligned imposes no
        // alignment, and RawOpenEvent is plain integers and byte arrays, valid for any bits.
        let raw = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<RawOpenEvent>()) };
        Ok(Self { raw })
    }

    pub fn from_raw(raw: RawOpenEvent) -> Self {
        Self { raw }
    }

    pub fn raw(&self) -> &RawOpenEvent {
        &self.raw
    }

    /// CLOCK_MONOTONIC nanoseconds when the open returned.
    pub fn ts_ns(&self) -> u64 {
        self.raw.ts_ns
    }
    /// Thread id.
    pub fn tid(&self) -> u32 {
        self.raw.pid
    }
    /// Process (thread group) id: what users call the pid (the kernel's `tgid`).
    #[allow(clippy::misnamed_getters)]
    pub fn pid(&self) -> u32 {
        self.raw.tgid
    }
    pub fn uid(&self) -> u32 {
        self.raw.uid
    }
    /// cgroup v2 id (the inode number of the task's cgroup directory).
    pub fn cgroup_id(&self) -> u64 {
        self.raw.cgroup_id
    }
    /// open(2) flags.
    pub fn flags(&self) -> u32 {
        self.raw.flags
    }
    pub fn mode(&self) -> u32 {
        self.raw.mode
    }
    pub fn ret(&self) -> i64 {
        self.raw.ret
    }
    pub fn result(&self) -> OpenResult {
        OpenResult::from_ret(self.raw.ret)
    }
    pub fn syscall(&self) -> Syscall {
        Syscall::from_raw(self.raw.syscall)
    }
    /// The raw command-name bytes, NUL padding removed; the key the agent counts by.
    pub fn comm_bytes(&self) -> &[u8; COMM_LEN] {
        &self.raw.comm
    }
    /// The command name, up to its NUL.
    pub fn comm(&self) -> &[u8] {
        until_nul(&self.raw.comm)
    }
    /// The path as passed to open(2), up to its NUL (at most 255 bytes).
    pub fn filename(&self) -> &[u8] {
        let len = usize::from(self.raw.fname_len).min(FNAME_LEN - 1);
        until_nul(&self.raw.fname[..len])
    }
    /// The path could not be read (it was not in memory when the probe ran).
    pub fn filename_fault(&self) -> bool {
        self.raw.eflags & EFLAG_FNAME_FAULT != 0
    }
    /// The path filled the probe's buffer and may have been cut.
    pub fn filename_truncated(&self) -> bool {
        self.raw.eflags & EFLAG_FNAME_TRUNCATED != 0
    }
}

/// What the agent's counting needs from a record, whether copied out ([`OpenEvent`]) or read in
/// place in the ring ([`OpenEventRef`]).
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
        self.raw.cgroup_id
    }
    fn comm_bytes(&self) -> &[u8; COMM_LEN] {
        &self.raw.comm
    }
    fn ret(&self) -> i64 {
        self.raw.ret
    }
}

/// A record read in place in the ring buffer, without copying it out. Only the bytes a caller
/// reads are touched: the agent, which never looks at the path, reads the 64-byte header (one
/// cache line the producing CPU just wrote) instead of all 320 bytes, which is what lets one
/// reader keep up with every CPU opening flat out.
#[derive(Clone, Copy, Debug)]
pub struct OpenEventRef<'a> {
    bytes: &'a [u8; RECORD_SIZE],
}

impl<'a> OpenEventRef<'a> {
    pub fn new(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let bytes = bytes
            .try_into()
            .map_err(|_| DecodeError::WrongSize { len: bytes.len() })?;
        Ok(Self { bytes })
    }

    fn u64_at(&self, offset: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.bytes[offset..offset + 8]);
        u64::from_ne_bytes(b)
    }

    fn u32_at(&self, offset: usize) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.bytes[offset..offset + 4]);
        u32::from_ne_bytes(b)
    }

    /// Process (thread group) id.
    pub fn pid(&self) -> u32 {
        self.u32_at(std::mem::offset_of!(RawOpenEvent, tgid))
    }

    /// The whole record, copied out.
    pub fn to_event(&self) -> OpenEvent {
        // The length is RECORD_SIZE by construction, so this cannot fail.
        OpenEvent::decode(self.bytes).unwrap_or(OpenEvent {
            raw: sample(0, "", "", 0),
        })
    }
}

impl OpenRecord for OpenEventRef<'_> {
    fn cgroup_id(&self) -> u64 {
        self.u64_at(std::mem::offset_of!(RawOpenEvent, cgroup_id))
    }
    fn comm_bytes(&self) -> &[u8; COMM_LEN] {
        const AT: usize = std::mem::offset_of!(RawOpenEvent, comm);
        self.bytes[AT..AT + COMM_LEN].try_into().unwrap_or(&[0; COMM_LEN])
    }
    fn ret(&self) -> i64 {
        self.u64_at(std::mem::offset_of!(RawOpenEvent, ret)) as i64
    }
}

fn until_nul(bytes: &[u8]) -> &[u8] {
    match bytes.iter().position(|&b| b == 0) {
        Some(end) => &bytes[..end],
        None => bytes,
    }
}

/// Builds a record as the probe would (tests and benchmarks).
pub fn encode(raw: &RawOpenEvent) -> [u8; RECORD_SIZE] {
    // SAFETY: RawOpenEvent is repr(C) without padding (checked by the layout test), so all
    // RECORD_SIZE bytes are initialised.
    unsafe { std::mem::transmute_copy(raw) }
}

/// A record with the given fields and zeroes elsewhere (tests and benchmarks).
pub fn sample(tgid: u32, comm: &str, filename: &str, ret: i64) -> RawOpenEvent {
    let mut raw = RawOpenEvent {
        ts_ns: 1,
        cgroup_id: 1,
        ret,
        pid: tgid,
        tgid,
        uid: 0,
        flags: 0,
        mode: 0,
        fname_len: 0,
        syscall: 2,
        eflags: 0,
        comm: [0; COMM_LEN],
        fname: [0; FNAME_LEN],
    };
    let c = comm.as_bytes();
    let n = c.len().min(COMM_LEN - 1);
    raw.comm[..n].copy_from_slice(&c[..n]);
    let f = filename.as_bytes();
    let n = f.len().min(FNAME_LEN - 1);
    raw.fname[..n].copy_from_slice(&f[..n]);
    raw.fname_len = n as u16;
    raw
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_what_was_encoded() {
        let raw = sample(42, "cat", "/etc/hostname", 3);
        let ev = OpenEvent::decode(&encode(&raw)).unwrap();
        assert_eq!(ev.pid(), 42);
        assert_eq!(ev.comm(), b"cat");
        assert_eq!(ev.filename(), b"/etc/hostname");
        assert_eq!(ev.result(), OpenResult::Fd(3));
        assert_eq!(ev.syscall(), Syscall::Openat);
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
    fn short_and_long_records_are_errors() {
        let bytes = encode(&sample(1, "a", "b", 0));
        assert_eq!(
            OpenEvent::decode(&bytes[..RECORD_SIZE - 1]),
            Err(DecodeError::WrongSize { len: RECORD_SIZE - 1 })
        );
        let mut long = bytes.to_vec();
        long.push(0);
        assert!(OpenEvent::decode(&long).is_err());
        assert!(OpenEvent::decode(&[]).is_err());
    }

    #[test]
    fn fname_len_beyond_the_buffer_is_clamped() {
        let mut raw = sample(1, "x", "/tmp/a", 0);
        raw.fname_len = u16::MAX;
        let ev = OpenEvent::from_raw(raw);
        assert_eq!(ev.filename(), b"/tmp/a");
        raw.fname = [b'a'; FNAME_LEN];
        let ev = OpenEvent::from_raw(raw);
        assert_eq!(ev.filename().len(), FNAME_LEN - 1);
    }

    proptest! {
        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            if let Ok(ev) = OpenEvent::decode(&bytes) {
                prop_assert_eq!(bytes.len(), RECORD_SIZE);
                prop_assert!(ev.filename().len() < FNAME_LEN);
                prop_assert!(ev.comm().len() <= COMM_LEN);
                let _ = (ev.result(), ev.syscall(), ev.filename_fault(), ev.filename_truncated());
            }
        }

        #[test]
        fn in_place_view_agrees_with_the_copy(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            match (OpenEventRef::new(&bytes), OpenEvent::decode(&bytes)) {
                (Ok(view), Ok(event)) => {
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
        fn any_full_record_decodes(bytes in proptest::collection::vec(any::<u8>(), RECORD_SIZE)) {
            let ev = OpenEvent::decode(&bytes).unwrap();
            prop_assert!(ev.filename().len() < FNAME_LEN);
            prop_assert!(!ev.filename().contains(&0));
            prop_assert!(!ev.comm().contains(&0));
        }
    }
}
