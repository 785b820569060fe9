//! What must be in place before the probe can load, each checked with the fix named: privileges
//! (CapEff), kernel BTF, tracefs (mounted here if it can be), the memlock rlimit.

use std::path::{Path, PathBuf};

pub const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";
const TRACEFS_PATHS: &[&str] = &["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "{who} and missing {missing}: loading and attaching the probe needs CAP_BPF and CAP_PERFMON \
         (or CAP_SYS_ADMIN on kernels before 5.8). Run it as root (`sudo splitscope ...`), or grant \
         them, e.g. `setcap cap_bpf,cap_perfmon,cap_dac_read_search+ep $(command -v splitscope)`; \
         in Kubernetes add them to the container's securityContext.capabilities"
    )]
    MissingCapabilities { who: String, missing: String },
    #[error(
        "no kernel BTF at {BTF_PATH}: the probe is CO-RE and relocates against the running kernel's \
         type information; use a kernel built with CONFIG_DEBUG_INFO_BTF=y (most distribution \
         kernels since 5.x are)"
    )]
    NoBtf,
    #[error(
        "tracefs is not mounted at /sys/kernel/tracing and mounting it failed ({reason}): mount it \
         with `mount -t tracefs nodev /sys/kernel/tracing` as root (in a container, mount the host's \
         /sys/kernel/tracing into it)"
    )]
    NoTracefs { reason: String },
}

/// Effective capabilities from /proc/self/status (`CapEff:` hex).
pub fn effective_capabilities() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_cap_eff(&status)
}

pub fn parse_cap_eff(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    u64::from_str_radix(hex, 16).ok()
}

/// When perf_event_open(2) is likely refused here although the capabilities upstream Linux asks
/// for are present: kernel.perf_event_paranoid above 2, which Debian's kernels (and others with
/// its patch; Ubuntu's has one; upstream stops at 2) read as "only with CAP_SYS_ADMIN". A hint for
/// when attaching failed, not a check: upstream kernels accept CAP_PERFMON at any level.
pub fn perf_restriction() -> Option<String> {
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid").ok()?;
    perf_restriction_hint(
        effective_capabilities().unwrap_or(0),
        paranoid.trim().parse().ok()?,
    )
}

fn perf_restriction_hint(cap_eff: u64, paranoid: i32) -> Option<String> {
    (paranoid > 2 && cap_eff & (1u64 << CAP_SYS_ADMIN) == 0).then(|| {
        format!(
            "kernel.perf_event_paranoid is {paranoid} and this process lacks CAP_SYS_ADMIN: Debian's \
             kernels (and others with its patch) then refuse perf_event_open(2), which attaching \
             needs, even with CAP_PERFMON. Grant CAP_SYS_ADMIN (the agent's DaemonSet does), or set \
             `sysctl kernel.perf_event_paranoid=2` on the node"
        )
    })
}

/// The capabilities missing from `cap_eff` for loading tracing programs, by name.
pub fn missing_capabilities(cap_eff: u64) -> Vec<&'static str> {
    let has = |cap: u32| cap_eff & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) {
        return Vec::new();
    }
    let mut missing = Vec::new();
    if !has(CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    missing
}

pub fn check_privileges() -> Result<(), PreflightError> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let cap_eff = effective_capabilities().unwrap_or(0);
    let missing = missing_capabilities(cap_eff);
    if missing.is_empty() {
        return Ok(());
    }
    let who = if euid == 0 {
        format!("running as root but with restricted capabilities (CapEff {cap_eff:#x})")
    } else {
        format!("not root (uid {euid})")
    };
    Err(PreflightError::MissingCapabilities {
        who,
        missing: missing.join(" and "),
    })
}

pub fn check_btf() -> Result<(), PreflightError> {
    if Path::new(BTF_PATH).is_file() {
        Ok(())
    } else {
        Err(PreflightError::NoBtf)
    }
}

fn is_populated(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
}

/// Where tracefs is mounted, mounting it at /sys/kernel/tracing first if it is not (aya and the
/// function list read it; aya caches the answer, so this must run before the first attach).
pub fn ensure_tracefs() -> Result<PathBuf, PreflightError> {
    if let Some(found) = TRACEFS_PATHS.iter().map(Path::new).find(|p| is_populated(p)) {
        return Ok(found.to_path_buf());
    }
    let target = Path::new(TRACEFS_PATHS[0]);
    let reason = if !target.is_dir() {
        format!("{} does not exist", target.display())
    } else {
        // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
        let rc = unsafe {
            libc::mount(
                c"nodev".as_ptr(),
                c"/sys/kernel/tracing".as_ptr(),
                c"tracefs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc == 0 {
            tracing::info!("mounted tracefs at /sys/kernel/tracing");
            return Ok(target.to_path_buf());
        }
        std::io::Error::last_os_error().to_string()
    };
    Err(PreflightError::NoTracefs { reason })
}

/// Lifts RLIMIT_MEMLOCK for kernels that still charge BPF maps to it (< 5.11). Failure is only
/// a warning: newer kernels account BPF memory to the cgroup instead.
pub fn raise_memlock() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit struct is passed by pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "could not lift RLIMIT_MEMLOCK (needs CAP_SYS_RESOURCE); fine on kernels >= 5.11, \
             which charge BPF memory to the cgroup"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cap_eff() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x1fffeffffff));
        assert_eq!(parse_cap_eff("Name: x\n"), None);
    }

    #[test]
    fn names_missing_capabilities() {
        assert_eq!(missing_capabilities(0), vec!["CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(missing_capabilities(1 << CAP_BPF), vec!["CAP_PERFMON"]);
        assert!(missing_capabilities((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_empty());
        assert!(missing_capabilities(1 << CAP_SYS_ADMIN).is_empty());
    }

    #[test]
    fn names_a_perf_event_paranoid_above_2_without_cap_sys_admin() {
        let pod = (1 << CAP_BPF) | (1 << CAP_PERFMON);
        let hint = perf_restriction_hint(pod, 3).unwrap();
        assert!(
            hint.contains("perf_event_paranoid is 3") && hint.contains("CAP_SYS_ADMIN"),
            "{hint}"
        );
        assert_eq!(perf_restriction_hint(pod, 2), None);
        assert_eq!(perf_restriction_hint(pod | (1 << CAP_SYS_ADMIN), 4), None);
    }

    #[test]
    fn error_says_how_to_fix() {
        let err = PreflightError::MissingCapabilities {
            who: "not root (uid 1000)".into(),
            missing: "CAP_BPF and CAP_PERFMON".into(),
        };
        let text = err.to_string();
        assert!(
            text.contains("not root") && text.contains("CAP_BPF") && text.contains("sudo"),
            "{text}"
        );
    }
}
