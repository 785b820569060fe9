//! The opens a kretprobe missed, as the kernel counts them.
//!
//! A kretprobe attached through the perf kprobe PMU (as aya attaches it) holds one of
//! max(10, 2 × possible CPUs) instances for each call in progress. A call that starts while all
//! of them are taken (opens asleep in the kernel: FIFOs, slow network filesystems) is never seen
//! at its return, so the probe cannot count it; only the kernel does. Linux 6.7 and later report
//! that count in the perf link's info (`bpf_link_info.perf_event.kprobe.missed`), which is how
//! these opens reach the agent's drop counter instead of vanishing.
//!
//! aya 0.14 reads a link's info but keeps the perf-event part private, so the two bpf(2)
//! commands are made here: BPF_LINK_GET_FD_BY_ID for a descriptor of the link, and
//! BPF_OBJ_GET_INFO_BY_FD for its info.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
const BPF_LINK_TYPE_PERF_EVENT: u32 = 7;
const BPF_PERF_EVENT_KRETPROBE: u32 = 4;

/// The kernel first reports the count in Linux 6.7; before, the field stays zero.
pub const MIN_KERNEL: (u32, u32) = (6, 7);

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
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// `union bpf_attr` for BPF_LINK_GET_FD_BY_ID (`link_id`, `next_id`, `open_flags`).
#[repr(C)]
struct GetFdAttr {
    link_id: u32,
    next_id: u32,
    open_flags: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
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

/// A descriptor of one kretprobe's perf link, to read its miss count from. It holds the link:
/// drop it with the link's other owner, or the kretprobe stays attached.
#[derive(Debug)]
pub struct MissedCounter {
    link: OwnedFd,
}

impl MissedCounter {
    /// Opens the link with this id (CAP_SYS_ADMIN) and checks that it is a kretprobe's.
    pub fn open(link_id: u32) -> io::Result<Self> {
        let mut attr = GetFdAttr {
            link_id,
            next_id: 0,
            open_flags: 0,
        };
        let fd = bpf(BPF_LINK_GET_FD_BY_ID, &mut attr)?;
        let fd =
            i32::try_from(fd).map_err(|_| io::Error::other("bpf(2) returned an impossible descriptor"))?;
        // SAFETY: the kernel just returned this descriptor, and nothing else owns it.
        let counter = Self {
            link: unsafe { OwnedFd::from_raw_fd(fd) },
        };
        let info = counter.info()?;
        if info.link_type != BPF_LINK_TYPE_PERF_EVENT || info.perf_event_type != BPF_PERF_EVENT_KRETPROBE {
            return Err(io::Error::other(format!(
                "link {link_id} is not a kretprobe's perf link (link type {}, perf event type {})",
                info.link_type, info.perf_event_type
            )));
        }
        Ok(counter)
    }

    fn info(&self) -> io::Result<PerfKprobeLinkInfo> {
        let mut info = PerfKprobeLinkInfo::default();
        let mut attr = InfoAttr {
            bpf_fd: u32::try_from(self.link.as_raw_fd())
                .map_err(|_| io::Error::other("negative descriptor"))?,
            info_len: std::mem::size_of::<PerfKprobeLinkInfo>() as u32,
            info: std::ptr::from_mut(&mut info) as u64,
        };
        bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
        Ok(info)
    }

    /// Calls the kretprobe missed since it was attached.
    pub fn missed(&self) -> io::Result<u64> {
        Ok(self.info()?.missed)
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
            offset_of!(GetFdAttr, next_id),
            offset_of!(bpf_attr, __bindgen_anon_6.next_id)
        );
        assert_eq!(
            offset_of!(GetFdAttr, open_flags),
            offset_of!(bpf_attr, __bindgen_anon_6.open_flags)
        );
        assert_eq!(
            BPF_PERF_EVENT_KRETPROBE,
            aya_obj::generated::bpf_perf_event_type::BPF_PERF_EVENT_KRETPROBE as u32
        );
        assert_eq!(
            BPF_LINK_TYPE_PERF_EVENT,
            aya_obj::generated::bpf_link_type::BPF_LINK_TYPE_PERF_EVENT as u32
        );
        assert_eq!(
            BPF_LINK_GET_FD_BY_ID,
            aya_obj::generated::bpf_cmd::BPF_LINK_GET_FD_BY_ID as libc::c_long
        );
        assert_eq!(
            BPF_OBJ_GET_INFO_BY_FD,
            aya_obj::generated::bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_long
        );
    }
}
