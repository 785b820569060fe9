//! What the running kernel offers for tracing opens, read from /sys, tracefs and /proc. The
//! attach plan is a pure function of these facts (see `plan`), so it is tested with fakes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Whether a kernel function can carry a kprobe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FunctionFact {
    /// Listed in tracefs `available_filter_functions`: a real, probe-able function.
    Traceable,
    /// Only in /proc/kallsyms (tracefs unreadable, or the function is not ftrace-able): a
    /// kprobe may still attach.
    InKallsyms,
    /// Not in this kernel (never built, renamed, or inlined everywhere).
    Absent,
}

pub trait KernelFacts {
    /// The kprobe PMU exists (/sys/bus/event_source/devices/kprobe): CONFIG_KPROBES is set.
    fn has_kprobe_pmu(&self) -> bool;
    /// Whether `name` is a kernel function a kprobe can attach to.
    fn function(&self, name: &str) -> FunctionFact;
    /// Whether the tracepoint `category:name` exists (tracefs events/<category>/<name>).
    fn has_tracepoint(&self, category: &str, name: &str) -> bool;
    /// Whether the kernel has the function the fexit program is built for
    /// (`plan::FEXIT_TARGET`). Loading the program tells for sure; this only spares kernels
    /// that cannot have it the attempt.
    fn has_fexit_target(&self) -> bool;
}

/// The facts of the running kernel.
pub struct SystemFacts {
    tracefs: Option<PathBuf>,
    filter_functions: OnceLock<Option<HashSet<String>>>,
    kallsyms: OnceLock<Option<HashSet<String>>>,
}

pub const KPROBE_PMU_TYPE: &str = "/sys/bus/event_source/devices/kprobe/type";

impl SystemFacts {
    /// `tracefs`: where tracefs is mounted, if it is.
    pub fn new(tracefs: Option<PathBuf>) -> Self {
        Self {
            tracefs,
            filter_functions: OnceLock::new(),
            kallsyms: OnceLock::new(),
        }
    }

    fn filter_functions(&self) -> Option<&HashSet<String>> {
        self.filter_functions
            .get_or_init(|| {
                let path = self.tracefs.as_ref()?.join("available_filter_functions");
                let text = std::fs::read_to_string(path).ok()?;
                // Lines are `name` or `name [module]`.
                Some(
                    text.lines()
                        .filter_map(|l| l.split_whitespace().next())
                        .map(str::to_owned)
                        .collect(),
                )
            })
            .as_ref()
    }

    fn kallsyms(&self) -> Option<&HashSet<String>> {
        self.kallsyms
            .get_or_init(|| {
                let text = std::fs::read_to_string("/proc/kallsyms").ok()?;
                // `address type name [module]`; functions are type t/T.
                Some(
                    text.lines()
                        .filter_map(|l| {
                            let mut it = l.split_whitespace();
                            let (_, ty, name) = (it.next()?, it.next()?, it.next()?);
                            matches!(ty, "t" | "T").then(|| name.to_owned())
                        })
                        .collect(),
                )
            })
            .as_ref()
    }
}

impl KernelFacts for SystemFacts {
    fn has_kprobe_pmu(&self) -> bool {
        Path::new(KPROBE_PMU_TYPE).exists()
    }

    fn function(&self, name: &str) -> FunctionFact {
        if self.filter_functions().is_some_and(|f| f.contains(name)) {
            FunctionFact::Traceable
        } else if self.kallsyms().is_some_and(|k| k.contains(name)) {
            FunctionFact::InKallsyms
        } else {
            FunctionFact::Absent
        }
    }

    fn has_tracepoint(&self, category: &str, name: &str) -> bool {
        self.tracefs
            .as_ref()
            .is_some_and(|t| t.join("events").join(category).join(name).join("id").is_file())
    }

    /// do_sys_openat2 came with Linux 5.6. Told by the version, not by a function list:
    /// reading /proc/kallsyms costs about 100 ms, more than the attempt it could spare.
    fn has_fexit_target(&self) -> bool {
        kernel_version().is_none_or(|v| v >= (5, 6))
    }
}

/// The running kernel's (major, minor) version, from uname(2); `None` if it does not parse.
pub fn kernel_version() -> Option<(u32, u32)> {
    // SAFETY: uname fills the zeroed struct it is given; release is NUL-terminated.
    let release = unsafe {
        let mut name: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut name) != 0 {
            return None;
        }
        std::ffi::CStr::from_ptr(name.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    };
    parse_version(&release)
}

/// `6.18.44-fc-v973` → (6, 18).
fn parse_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn kernel_releases_parse_to_major_and_minor() {
        assert_eq!(parse_version("6.18.44-fc-v973"), Some((6, 18)));
        assert_eq!(parse_version("5.10.0-30-amd64"), Some((5, 10)));
        assert_eq!(parse_version("4.18.0-553.el8_10.x86_64"), Some((4, 18)));
        assert_eq!(parse_version("6.1"), Some((6, 1)));
        assert_eq!(parse_version("linux"), None);
        assert_eq!(parse_version("6"), None);
    }
}
