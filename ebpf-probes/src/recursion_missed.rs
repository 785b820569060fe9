//! The opens the fexit program missed, as the kernel counts them.
//!
//! The kernel runs a fexit program with migration disabled, but on a kernel that preempts kernel
//! code (`preempt=full`, PREEMPT_LAZY, PREEMPT_RT) not with preemption disabled. A task preempted
//! inside the program leaves it marked as running on that CPU, and the kernel skips the program
//! for every other open on that CPU meanwhile (its per-CPU recursion guard, which also keeps the
//! CPU's batch to one writer). It counts each skip in the program's `recursion_misses` (Linux >=
//! 5.12), which is how those opens reach the agent's drop counter instead of vanishing.
//!
//! aya 0.14's program info does not expose that field, so it is read here with
//! BPF_OBJ_GET_INFO_BY_FD on the program's own descriptor, which needs no capability.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use crate::kretprobe_missed::{BPF_OBJ_GET_INFO_BY_FD, InfoAttr, bpf};

/// Where `recursion_misses` lies in `struct bpf_prog_info` (include/uapi/linux/bpf.h; a test
/// checks it against aya's bindings). The kernel copies back no more than the length it is given,
/// and leaves what it does not know (before 5.12) zero.
const RECURSION_MISSES_AT: usize = 208;
const INFO_WORDS: usize = RECURSION_MISSES_AT / 8 + 1;

/// A descriptor of one loaded program, to read its recursion misses from.
#[derive(Debug)]
pub struct RecursionMisses {
    prog: OwnedFd,
}

impl RecursionMisses {
    /// For the program `prog` (a copy of its descriptor is kept).
    pub fn of(prog: BorrowedFd<'_>) -> io::Result<Self> {
        Ok(Self {
            prog: prog.try_clone_to_owned()?,
        })
    }

    /// Runs of the program the kernel skipped since it was loaded.
    pub fn missed(&self) -> io::Result<u64> {
        let mut info = [0u64; INFO_WORDS];
        let fd = self.prog.as_fd().as_raw_fd();
        let mut attr = InfoAttr {
            bpf_fd: u32::try_from(fd).map_err(|_| io::Error::other("negative descriptor"))?,
            info_len: std::mem::size_of_val(&info) as u32,
            info: info.as_mut_ptr() as u64,
        };
        bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
        Ok(info[RECURSION_MISSES_AT / 8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_is_the_kernels() {
        use aya_obj::generated::bpf_prog_info;
        assert_eq!(
            RECURSION_MISSES_AT,
            std::mem::offset_of!(bpf_prog_info, recursion_misses)
        );
        assert_eq!(RECURSION_MISSES_AT % 8, 0);
    }
}
