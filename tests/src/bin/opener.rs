//! A process with a chosen command name that opens files exactly as told, through the raw
//! syscalls (libc's open() is openat(2)), for the real-kernel tests and nothing else.
//!
//! `splitscope-test-opener --comm NAME [--wait-stdin] [--pin] OP...` where OP is
//! KIND:PATH:COUNT, KIND one of open, openat, openat2 or creat, or `pause` (wait for a byte on
//! stdin). `--pin` keeps the process on the CPU it starts on. Successful opens are closed at
//! once. Exits 0 when every open did what the kernel said (it does not judge success or
//! failure: the tests do).

use std::ffi::CString;
use std::io::Read;

/// One step of what the opener was told to do.
enum Op {
    /// `count` opens of `path` through the syscall `kind`.
    Open { kind: String, path: CString, count: u32 },
    /// Wait for a byte on stdin.
    Pause,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut comm = None;
    let mut wait = false;
    let mut pin = false;
    let mut ops = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--comm" => comm = it.next().cloned(),
            "--wait-stdin" => wait = true,
            "--pin" => pin = true,
            "pause" => ops.push(Op::Pause),
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
                ops.push(Op::Open {
                    kind: kind.to_owned(),
                    path,
                    count,
                });
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
    if pin {
        pin_to_this_cpu();
    }
    if wait {
        wait_for_a_byte();
    }
    for op in &ops {
        let Op::Open { kind, path, count } = op else {
            wait_for_a_byte();
            continue;
        };
        // Distinct flags per syscall, so the tests can tell which path the flags came through.
        let (flags, mode) = match kind.as_str() {
            "open" => (libc::O_RDONLY | libc::O_CLOEXEC, 0),
            "openat" => (libc::O_RDONLY | libc::O_NOCTTY, 0),
            "openat2" => (libc::O_RDONLY | libc::O_NOFOLLOW, 0),
            "creat" => (0, 0o640),
            other => {
                eprintln!("unknown kind {other}");
                std::process::exit(2);
            }
        };
        for _ in 0..*count {
            // Success or failure is the tests' to judge; a descriptor closes at once.
            let _ = splitscope_probes::raw_open::open_via(kind, path, flags, mode);
        }
    }
}

fn wait_for_a_byte() {
    let mut byte = [0u8; 1];
    let _ = std::io::stdin().read(&mut byte);
}

fn pin_to_this_cpu() {
    // SAFETY: sched_getcpu has no preconditions; the set is zeroed before use and passed with
    // its size.
    unsafe {
        let cpu = libc::sched_getcpu();
        if cpu < 0 {
            std::process::exit(3);
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            std::process::exit(3);
        }
    }
}
