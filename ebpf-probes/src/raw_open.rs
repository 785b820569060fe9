//! One open through a named system call. libc's `open()` is openat(2) on current systems, so
//! proving that the probe sees each of open(2), openat(2), openat2(2) and creat(2) — the start-up
//! self-test, `splitscope self-test`, the real-kernel tests — needs the raw calls.

use std::ffi::CStr;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// `struct open_how` of openat2(2).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Opens `path` through `syscall` (`open`, `openat`, `openat2` or `creat`) with `flags` and
/// `mode` (creat(2) takes only the mode). The descriptor closes when dropped. As open(2) does,
/// the mode is ignored unless the flags create a file: openat2(2) would refuse it (EINVAL).
pub fn open_via(syscall: &str, path: &CStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let creates = flags & (libc::O_CREAT | libc::O_TMPFILE) != 0;
    let how = OpenHow {
        flags: flags as u64,
        mode: if creates { u64::from(mode) } else { 0 },
        resolve: 0,
    };
    // SAFETY: `path` is NUL-terminated and `how` outlives the call; each call is the raw syscall
    // with the arguments the kernel documents for it.
    let ret = unsafe {
        match syscall {
            "open" => libc::syscall(libc::SYS_open, path.as_ptr(), flags, mode),
            "openat" => libc::syscall(libc::SYS_openat, libc::AT_FDCWD, path.as_ptr(), flags, mode),
            "openat2" => libc::syscall(
                libc::SYS_openat2,
                libc::AT_FDCWD,
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            ),
            "creat" => libc::syscall(libc::SYS_creat, path.as_ptr(), mode),
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("no open syscall {other:?}"),
                ));
            }
        }
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_syscall_opens_and_reports_errno() {
        let dir = std::env::temp_dir().join(format!("splitscope-raw-open-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exists = dir.join("exists");
        std::fs::write(&exists, b"x").unwrap();
        let exists = std::ffi::CString::new(exists.to_str().unwrap()).unwrap();
        let missing = std::ffi::CString::new(dir.join("missing").to_str().unwrap()).unwrap();
        for syscall in ["open", "openat", "openat2"] {
            // A mode without O_CREAT is ignored, as open(2) does (openat2 alone would refuse it).
            for mode in [0, 0o600] {
                assert!(
                    open_via(syscall, &exists, libc::O_RDONLY, mode).is_ok(),
                    "{syscall} {mode:o}"
                );
                let err = open_via(syscall, &missing, libc::O_RDONLY, mode).unwrap_err();
                assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{syscall} {mode:o}");
            }
        }
        let made = std::ffi::CString::new(dir.join("made").to_str().unwrap()).unwrap();
        assert!(open_via("openat2", &made, libc::O_CREAT | libc::O_WRONLY, 0o600).is_ok());
        assert!(dir.join("made").exists());
        let created = std::ffi::CString::new(dir.join("created").to_str().unwrap()).unwrap();
        assert!(open_via("creat", &created, 0, 0o600).is_ok());
        assert!(dir.join("created").exists());
        assert_eq!(
            open_via("close", &exists, 0, 0).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
