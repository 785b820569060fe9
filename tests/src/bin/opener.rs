//! A process with a chosen command name that opens files exactly as told, through the raw
//! syscalls (libc's open() is openat(2)), for the real-kernel tests and nothing else.
//!
//! `splitscope-test-opener --comm NAME [--wait-stdin] KIND:PATH:COUNT...` where KIND is open,
//! openat, openat2 or creat. Successful opens are closed at once. Exits 0 when every open did
//! what the kernel said (it does not judge success or failure: the tests do).

use std::ffi::CString;
use std::io::Read;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut comm = None;
    let mut wait = false;
    let mut ops = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--comm" => comm = it.next().cloned(),
            "--wait-stdin" => wait = true,
            op => {
                let mut parts = op.splitn(3, ':');
                let (Some(kind), Some(path), Some(count)) = (parts.next(), parts.next(), parts.next()) else {
                    eprintln!("bad op {op:?}: want KIND:PATH:COUNT");
                    std::process::exit(2);
                };
                let Ok(count) = count.parse::<u32>() else {
                    eprintln!("bad count in {op:?}");
                    std::process::exit(2);
                };
                let Ok(path) = CString::new(path) else {
                    eprintln!("NUL in {op:?}");
                    std::process::exit(2);
                };
                ops.push((kind.to_owned(), path, count));
            }
        }
    }
    if let Some(name) = comm {
        let Ok(c) = CString::new(name) else {
            std::process::exit(2)
        };
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
        unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr() as libc::c_ulong, 0, 0, 0) };
    }
    if wait {
        let mut byte = [0u8; 1];
        let _ = std::io::stdin().read(&mut byte);
    }
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    for (kind, path, count) in &ops {
        for _ in 0..*count {
            let how = OpenHow {
                flags: (libc::O_RDONLY | libc::O_NOFOLLOW) as u64,
                mode: 0,
                resolve: 0,
            };
            // SAFETY: valid NUL-terminated path and a live open_how.
            let fd = unsafe {
                match kind.as_str() {
                    "open" => libc::syscall(libc::SYS_open, path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC),
                    "openat" => libc::syscall(
                        libc::SYS_openat,
                        libc::AT_FDCWD,
                        path.as_ptr(),
                        libc::O_RDONLY | libc::O_NOCTTY,
                    ),
                    "openat2" => libc::syscall(
                        libc::SYS_openat2,
                        libc::AT_FDCWD,
                        path.as_ptr(),
                        &how as *const OpenHow,
                        std::mem::size_of::<OpenHow>(),
                    ),
                    "creat" => libc::syscall(libc::SYS_creat, path.as_ptr(), 0o640),
                    other => {
                        eprintln!("unknown kind {other}");
                        std::process::exit(2);
                    }
                }
            };
            if fd >= 0 {
                // SAFETY: closing the fd just opened.
                unsafe { libc::close(fd as i32) };
            }
        }
    }
}
