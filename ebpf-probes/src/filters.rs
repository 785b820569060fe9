//! The in-kernel filters, validated and turned into the probe's load-time constants.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::event::{COMM_LEN, FNAME_LEN};

/// `statfs.f_type` of cgroup v2 (include/uapi/linux/magic.h CGROUP2_SUPER_MAGIC).
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// The id (inode) of the kernel's root cgroup v2, which holds every task. The root a cgroup
/// namespace shows (a kind node, a container) is some other cgroup, with its own inode.
pub const ROOT_CGROUP_ID: u64 = 1;

/// A cgroup v2 directory: where it is (the loader opens it and hands the probe that descriptor)
/// and its id (inode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupTarget {
    pub path: PathBuf,
    pub id: u64,
}

impl CgroupTarget {
    /// Whether opens must be checked against it: every task is under the kernel's root.
    pub fn filters(&self) -> bool {
        self.id != ROOT_CGROUP_ID
    }
}

/// Which opens the probe reports. Empty = all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filters {
    /// Process (thread group) id.
    pub pid: Option<u32>,
    /// Command name, at most 15 bytes.
    pub comm: Option<String>,
    /// Opens by tasks in this cgroup or below it.
    pub cgroup: Option<CgroupTarget>,
    /// Paths (as passed to open) starting with this.
    pub path_prefix: Option<String>,
    /// Only opens that failed.
    pub failed_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("--comm must not be empty or contain NUL bytes")]
    BadComm,
    #[error("--path-prefix is {len} bytes; the probe reads at most {} bytes of a path", FNAME_LEN - 1)]
    PrefixTooLong { len: usize },
    #[error("--cgroup {path}: {reason}")]
    BadCgroup { path: PathBuf, reason: String },
}

/// The probe's `const volatile` globals for a set of filters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterGlobals {
    pub targ_tgid: u32,
    /// 1: only tasks under the cgroup the loader puts into the probe's `targ_cgroup` map.
    pub targ_cgroup_set: u32,
    pub targ_comm_set: u32,
    pub targ_comm: [u64; 2],
    pub targ_prefix_len: u32,
    pub targ_prefix: [u8; FNAME_LEN],
    pub targ_failed_only: u32,
}

impl Filters {
    /// The kernel keeps 15 bytes of a command name; a longer --comm is compared by those.
    pub fn kernel_comm(comm: &str) -> Result<[u8; COMM_LEN], FilterError> {
        let bytes = comm.as_bytes();
        if bytes.is_empty() || bytes.contains(&0) {
            return Err(FilterError::BadComm);
        }
        let mut out = [0u8; COMM_LEN];
        let n = bytes.len().min(COMM_LEN - 1);
        out[..n].copy_from_slice(&bytes[..n]);
        Ok(out)
    }

    pub fn globals(&self) -> Result<FilterGlobals, FilterError> {
        let mut g = FilterGlobals {
            targ_tgid: self.pid.unwrap_or(0),
            targ_cgroup_set: 0,
            targ_comm_set: 0,
            targ_comm: [0; 2],
            targ_prefix_len: 0,
            targ_prefix: [0; FNAME_LEN],
            targ_failed_only: u32::from(self.failed_only),
        };
        if let Some(comm) = &self.comm {
            let bytes = Self::kernel_comm(comm)?;
            g.targ_comm_set = 1;
            g.targ_comm = [
                u64::from_ne_bytes(bytes[..8].try_into().unwrap_or_default()),
                u64::from_ne_bytes(bytes[8..].try_into().unwrap_or_default()),
            ];
        }
        g.targ_cgroup_set = u32::from(self.cgroup.as_ref().is_some_and(CgroupTarget::filters));
        if let Some(prefix) = self.path_prefix.as_deref().filter(|p| !p.is_empty()) {
            let bytes = prefix.as_bytes();
            if bytes.len() >= FNAME_LEN {
                return Err(FilterError::PrefixTooLong { len: bytes.len() });
            }
            g.targ_prefix[..bytes.len()].copy_from_slice(bytes);
            g.targ_prefix_len = bytes.len() as u32;
        }
        Ok(g)
    }
}

/// Checks that `path` is a cgroup v2 directory and takes its id (the directory's inode, which is
/// what bpf_get_current_cgroup_id() returns).
pub fn resolve_cgroup(path: &Path) -> Result<CgroupTarget, FilterError> {
    let bad = |reason: String| FilterError::BadCgroup {
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if !meta.is_dir() {
        return Err(bad("not a directory".into()));
    }
    if !is_cgroup2(path) {
        return Err(bad(
            "not on a cgroup v2 filesystem (the probe matches cgroup v2 ids; on a hybrid host use \
             the path under the cgroup2 mount, e.g. /sys/fs/cgroup/unified/...)"
                .into(),
        ));
    }
    Ok(CgroupTarget {
        path: std::fs::canonicalize(path).map_err(|e| bad(e.to_string()))?,
        id: meta.ino(),
    })
}

fn is_cgroup2(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct; the path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0) && st.f_type as i64 == CGROUP2_SUPER_MAGIC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_filters_are_all_zero() {
        let g = Filters::default().globals().unwrap();
        assert_eq!(g.targ_tgid, 0);
        assert_eq!(g.targ_comm_set, 0);
        assert_eq!(g.targ_prefix_len, 0);
        assert_eq!(g.targ_cgroup_set, 0);
        assert_eq!(g.targ_failed_only, 0);
    }

    #[test]
    fn comm_is_cut_to_what_the_kernel_keeps() {
        let c = Filters::kernel_comm("a-very-long-command-name").unwrap();
        assert_eq!(&c[..15], b"a-very-long-com");
        assert_eq!(c[15], 0);
        assert_eq!(Filters::kernel_comm(""), Err(FilterError::BadComm));
        let g = Filters {
            comm: Some("cat".into()),
            ..Filters::default()
        }
        .globals()
        .unwrap();
        assert_eq!(g.targ_comm_set, 1);
        assert_eq!(g.targ_comm[0].to_ne_bytes()[..4], *b"cat\0");
    }

    #[test]
    fn prefix_is_bounded() {
        let g = Filters {
            path_prefix: Some("/etc/".into()),
            ..Filters::default()
        }
        .globals()
        .unwrap();
        assert_eq!(g.targ_prefix_len, 5);
        assert_eq!(&g.targ_prefix[..6], b"/etc/\0");
        let long = "x".repeat(300);
        assert_eq!(
            Filters {
                path_prefix: Some(long),
                ..Filters::default()
            }
            .globals(),
            Err(FilterError::PrefixTooLong { len: 300 })
        );
    }

    #[test]
    fn only_the_kernels_root_cgroup_means_no_filter() {
        let with = |id| {
            Filters {
                cgroup: Some(CgroupTarget {
                    path: "/sys/fs/cgroup".into(),
                    id,
                }),
                ..Filters::default()
            }
            .globals()
            .unwrap()
            .targ_cgroup_set
        };
        assert_eq!(with(ROOT_CGROUP_ID), 0);
        // The root of a cgroup namespace's view is mounted at the same place but is a subtree.
        assert_eq!(with(4242), 1);
    }

    #[test]
    fn non_cgroup_paths_are_rejected_by_name() {
        let err = resolve_cgroup(Path::new("/tmp")).unwrap_err();
        assert!(err.to_string().contains("cgroup v2"), "{err}");
        let err = resolve_cgroup(Path::new("/nonexistent/cg")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/cg"), "{err}");
    }
}
