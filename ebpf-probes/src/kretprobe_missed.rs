//! The opens a kretprobe missed, as the kernel counts them.
//!
//! A kretprobe attached through the perf kprobe PMU (as aya attaches it) holds one of
//! max(10, 2 × possible CPUs) instances for each call in progress. A call that starts while all
//! of them are taken (opens asleep in the kernel: FIFOs, slow network filesystems) is never seen
//! at its return, so the probe cannot count it; only the kernel does. Linux 6.7 and later report
//! that count in the perf link's info (`bpf_link_info.perf_event.kprobe.missed`), which is how
//! these opens reach the agent's drop counter instead of vanishing.
//!
//! aya 0.14 reads a link's info but keeps the perf-event part and the link's descriptor private,
//! so both are found here. The descriptor is aya's own, among this process's open files
//! (`anon_inode:bpf_link`): asking the kernel for a link by id (BPF_LINK_GET_FD_BY_ID) needs
//! CAP_SYS_ADMIN, which the agent's DaemonSet does not grant. The info comes from
//! BPF_OBJ_GET_INFO_BY_FD, which needs only the descriptor.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

pub(crate) const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_TYPE_PERF_EVENT: u32 = 7;
const BPF_PERF_EVENT_KRETPROBE: u32 = 4;

/// The kernel first reports the count in Linux 6.7; before, the field stays zero.
const MIN_KERNEL: (u32, u32) = (6, 7);

/// Whether the running kernel reports a kretprobe's misses (Linux >= 6.7).
pub fn reported_by_kernel() -> bool {
    crate::facts::kernel_version().is_some_and(|v| v >= MIN_KERNEL)
}

/// How many calls of its function a kretprobe attached through the perf PMU follows at once:
/// the kernel's default of max(10, 2 × possible CPUs), which the PMU gives no way to raise.
pub fn instances() -> usize {
    aya::util::nr_cpus().map_or(10, |cpus| (2 * cpus).max(10))
}

/// The head of `struct bpf_link_info` up to the perf-event kprobe part (include/uapi/linux/bpf.h).
/// The kernel copies back no more than the length it is given.
#[repr(C)]
#[derive(Default)]
struct PerfKprobeLinkInfo {
    link_type: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    perf_event_type: u32,
    _pad2: u32,
    func_name: u64,
    name_len: u32,
    offset: u32,
    addr: u64,
    missed: u64,
    cookie: u64,
}

/// `union bpf_attr` for BPF_OBJ_GET_INFO_BY_FD (`info`).
#[repr(C)]
pub(crate) struct InfoAttr {
    pub(crate) bpf_fd: u32,
    pub(crate) info_len: u32,
    pub(crate) info: u64,
}

pub(crate) fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised repr(C) bpf_attr variant of the size passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            std::mem::size_of::<T>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret)
}

fn info(fd: BorrowedFd<'_>) -> io::Result<PerfKprobeLinkInfo> {
    let mut info = PerfKprobeLinkInfo::default();
    let mut attr = InfoAttr {
        bpf_fd: u32::try_from(fd.as_raw_fd()).map_err(|_| io::Error::other("negative descriptor"))?,
        info_len: std::mem::size_of::<PerfKprobeLinkInfo>() as u32,
        info: std::ptr::from_mut(&mut info) as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(info)
}

/// A descriptor of one kretprobe's perf link, to read its miss count from. It holds the link:
/// drop it with the link's other owner, or the kretprobe stays attached.
#[derive(Debug)]
pub struct MissedCounter {
    link: OwnedFd,
}

impl MissedCounter {
    /// The perf link of the kretprobe program `prog_id`, among this process's descriptors (a
    /// copy of it: the caller's link keeps its own).
    pub fn find(prog_id: u32) -> io::Result<Self> {
        for entry in std::fs::read_dir("/proc/self/fd")? {
            let entry = entry?;
            let is_link = std::fs::read_link(entry.path())
                .is_ok_and(|target| target.as_os_str() == "anon_inode:bpf_link");
            let fd = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok());
            let (true, Some(fd)) = (is_link, fd) else {
                continue;
            };
            // SAFETY: `fd` is open in this process (listed just now) and only borrowed for the
            // two calls below; the copy kept is owned.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            let Ok(found) = info(borrowed) else {
                continue; // closed meanwhile
            };
            if found.prog_id == prog_id
                && found.link_type == BPF_LINK_TYPE_PERF_EVENT
                && found.perf_event_type == BPF_PERF_EVENT_KRETPROBE
            {
                return Ok(Self {
                    link: borrowed.try_clone_to_owned()?,
                });
            }
        }
        Err(io::Error::other(format!(
            "no kretprobe perf link of program {prog_id} among this process's descriptors"
        )))
    }

    /// Calls the kretprobe missed since it was attached.
    pub fn missed(&self) -> io::Result<u64> {
        Ok(info(self.link.as_fd())?.missed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mirror against aya's bindings of include/uapi/linux/bpf.h.
    #[test]
    fn the_mirror_has_the_kernels_offsets() {
        use aya_obj::generated::{bpf_attr, bpf_link_info};
        use std::mem::offset_of;
        assert_eq!(
            offset_of!(PerfKprobeLinkInfo, prog_id),
            offset_of!(bpf_link_info, prog_id)
        );
        assert_eq!(
            offset_of!(PerfKprobeLinkInfo, perf_event_type),
            offset_of!(bpf_link_info, __bindgen_anon_1.perf_event.type_)
        );
        assert_eq!(
            offset_of!(PerfKprobeLinkInfo, func_name),
            offset_of!(
                bpf_link_info,
                __bindgen_anon_1.perf_event.__bindgen_anon_1.kprobe.func_name
            )
        );
        assert_eq!(
            offset_of!(PerfKprobeLinkInfo, missed),
            offset_of!(
                bpf_link_info,
                __bindgen_anon_1.perf_event.__bindgen_anon_1.kprobe.missed
            )
        );
        assert_eq!(
            std::mem::size_of::<PerfKprobeLinkInfo>(),
            offset_of!(
                bpf_link_info,
                __bindgen_anon_1.perf_event.__bindgen_anon_1.kprobe.cookie
            ) + 8
        );
        assert_eq!(offset_of!(InfoAttr, info), offset_of!(bpf_attr, info.info));
        assert_eq!(
            BPF_PERF_EVENT_KRETPROBE,
            aya_obj::generated::bpf_perf_event_type::BPF_PERF_EVENT_KRETPROBE as u32
        );
        assert_eq!(
            BPF_LINK_TYPE_PERF_EVENT,
            aya_obj::generated::bpf_link_type::BPF_LINK_TYPE_PERF_EVENT as u32
        );
        assert_eq!(
            BPF_OBJ_GET_INFO_BY_FD,
            aya_obj::generated::bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_long
        );
    }
}
