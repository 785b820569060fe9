//! A process with a chosen command name that opens files exactly as told, through the raw
//! syscalls (libc's open() is openat(2)), for the real-kernel tests and nothing else.
//!
//! `splitscope-test-opener --comm NAME [--wait-stdin] [--pin] OP...` where OP is
//! KIND:PATH:COUNT, KIND one of open, openat, openat2 or creat, or `ia32-readlink` (a 32-bit
//! syscall whose number is creat's in 64-bit, which no probe may take for an open; exits 4 if
//! the kernel runs no 32-bit syscalls), or `pause` (wait for a byte on stdin). `--pin` keeps the process on the CPU it starts on. Successful opens are closed at
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
        if kind == "ia32-readlink" {
            for _ in 0..*count {
                ia32_readlink(path);
            }
            continue;
        }
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

/// readlink(2) through the 32-bit syscall entry (`int 0x80`): ia32's number 85, which is
/// creat(2)'s on x86-64. Its arguments are 32-bit pointers, so they live in a page mapped below
/// 4 GiB.
#[cfg(target_arch = "x86_64")]
fn ia32_readlink(path: &CString) {
    const IA32_READLINK: u64 = 85;
    const PAGE: usize = 4096;
    let bytes = path.as_bytes_with_nul();
    if bytes.len() > PAGE / 2 {
        eprintln!("ia32-readlink: path too long");
        std::process::exit(2);
    }
    // SAFETY: an anonymous private mapping; the copies stay inside its first half, the link is
    // read into its second half, and the kernel reads and writes nothing else. rbx cannot be an
    // asm operand in Rust, so the path's address is swapped into it around the call; the 32-bit
    // entry clears r8-r11 on the way back.
    unsafe {
        let page = libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
            -1,
            0,
        );
        if page == libc::MAP_FAILED {
            eprintln!("ia32-readlink: mmap below 4 GiB failed");
            std::process::exit(2);
        }
        let page = page.cast::<u8>();
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), page, bytes.len());
        let buf = page.add(PAGE / 2);
        let ret: u64;
        std::arch::asm!(
            "xchg {path}, rbx",
            "int 0x80",
            "xchg {path}, rbx",
            path = inout(reg) page as u64 => _,
            inlateout("rax") IA32_READLINK => ret,
            in("rcx") buf as u64,
            in("rdx") (PAGE / 2) as u64,
            out("r8") _,
            out("r9") _,
            out("r10") _,
            out("r11") _,
        );
        libc::munmap(page.cast(), PAGE);
        // -ENOSYS (as a 32-bit value) when the kernel has no 32-bit syscalls.
        if ret as u32 as i32 == -libc::ENOSYS {
            eprintln!("ia32-readlink: this kernel runs no 32-bit syscalls (IA32_EMULATION)");
            std::process::exit(4);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn ia32_readlink(_path: &CString) {
    eprintln!("ia32-readlink: x86-64 only");
    std::process::exit(4);
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
