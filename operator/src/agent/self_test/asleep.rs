//! `self-test --asleep N`: opens that sleep in the kernel, many at once.
//!
//! A kretprobe follows only a fixed number of calls at once (max(10, 2 × CPUs)); an open that
//! starts while that many sleep inside the kernel is not seen at its return. Such opens must
//! still be accounted for: reported, or counted as dropped from the kernel's own count of the
//! kretprobe's misses (Linux >= 6.7). Tracepoints have no such limit and must report them all.
//!
//! N threads open a FIFO each for reading, which sleeps until a writer comes; once all of them
//! sleep, N non-blocking opens for writing wake them. Every open this process made meanwhile
//! (those 2N, and its reads of /proc while it watched the readers fall asleep) must then be
//! reported or counted as dropped: exactly, with tracepoints; with a kretprobe at least (its
//! miss count is kernel-wide, so another process's missed opens add to it).

use std::ffi::CString;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use anyhow::{Context, bail};
use splitscope_probes::{AttachInfo, EventStream, Probe, kretprobe_missed};

/// The readers' thread name, which the kernel keeps as their comm.
const SLEEPER: &str = "ss-asleep";
/// The thread that opens the FIFOs for writing.
const WAKER: &str = "ss-waker";

/// How long the count of reported opens must stay put before it is final.
const SETTLE: Duration = Duration::from_millis(500);

pub async fn check(
    probe: &Probe,
    stream: &mut EventStream,
    info: &AttachInfo,
    dir: &Path,
    n: usize,
) -> anyhow::Result<()> {
    let fifos: Vec<CString> = (0..n)
        .map(|i| {
            let path = dir.join(format!("fifo-{i}"));
            let c = CString::new(path.to_string_lossy().into_owned())?;
            // SAFETY: `c` is a valid NUL-terminated path.
            if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
                return Err(anyhow::Error::from(std::io::Error::last_os_error()))
                    .with_context(|| format!("mkfifo {}", path.display()));
            }
            Ok(c)
        })
        .collect::<anyhow::Result<_>>()?;

    // The threads start and then wait at a barrier: starting a thread may open files of its own
    // (glibc reads /sys/devices/system/cpu/online when it adds a malloc arena), and those opens
    // must be over, and read, before the count starts.
    let go = Arc::new(Barrier::new(n + 2));
    let started = Arc::new(AtomicUsize::new(0));
    let spawn = |name: &str, work: Box<dyn FnOnce() -> Vec<std::io::Error> + Send>| {
        let (go, started) = (go.clone(), started.clone());
        std::thread::Builder::new().name(name.to_owned()).spawn(move || {
            started.fetch_add(1, Ordering::SeqCst);
            go.wait();
            work()
        })
    };
    let mut threads = Vec::new();
    for path in fifos.clone() {
        threads.push(spawn(
            SLEEPER,
            Box::new(move || open_fifo(&path, libc::O_RDONLY).err().into_iter().collect()),
        )?);
    }
    // The writer waits for the readers to fall asleep before it opens, told through `wake`.
    let (wake_tx, wake_rx) = std::sync::mpsc::channel::<()>();
    threads.push(spawn(
        WAKER,
        Box::new(move || {
            if wake_rx.recv().is_err() {
                return Vec::new();
            }
            fifos
                .iter()
                .filter_map(|path| open_fifo(path, libc::O_WRONLY | libc::O_NONBLOCK).err())
                .collect()
        }),
    )?);
    while started.load(Ordering::SeqCst) < n + 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    count_own(stream).await?; // the threads' own start-up opens, not counted
    let dropped_before = probe.dropped()?;
    go.wait();
    let mut proc_opens = 0;
    let asleep = wait_until_asleep(n, &mut proc_opens).await;
    // Woken in every case, so that no reader is left blocked behind an error.
    let _ = wake_tx.send(());
    let mut errors = Vec::new();
    for thread in threads {
        match thread.join() {
            Ok(errs) => errors.extend(errs),
            Err(_) => bail!("self-test --asleep: a FIFO thread panicked"),
        }
    }
    asleep?;
    if let Some(e) = errors.first() {
        bail!("self-test --asleep: a FIFO open failed: {e}");
    }

    let reported = count_own(stream).await?;
    let missed = probe.dropped()?.saturating_sub(dropped_before);
    let opens = 2 * n as u64 + proc_opens;
    println!(
        "asleep: {n} opens asleep at once, {n} to wake them, {proc_opens} reads of /proc meanwhile: \
         {reported} reported, {missed} dropped (mode={} target={})",
        info.mode, info.target
    );
    let instances = kretprobe_missed::instances();
    let kretprobe = info.mode == "kprobe";
    if reported + missed < opens {
        let lost = opens - reported - missed;
        if kretprobe && !info.counts_kretprobe_misses {
            if kretprobe_missed::reported_by_kernel() {
                bail!(
                    "self-test --asleep: {lost} of {opens} opens were lost, and this kernel reports the \
                     kretprobe's misses, but they could not be read (see the warning above)"
                );
            }
            // Known and documented: before Linux 6.7 the kernel keeps the count to itself.
            println!(
                "note: {lost} opens missed by the kretprobe (it follows {instances} calls at once) are \
                 not counted: this kernel does not report the misses (Linux < 6.7)"
            );
            return Ok(());
        }
        bail!("self-test --asleep: {lost} of {opens} opens were neither reported nor counted as dropped");
    }
    if reported > opens || (!kretprobe && reported + missed != opens) {
        bail!("self-test --asleep: {reported} opens reported and {missed} dropped for {opens} made");
    }
    if kretprobe && n > instances && missed == 0 {
        bail!(
            "self-test --asleep: {n} opens slept at once, more than the kretprobe's {instances} instances, \
             yet it missed none: the test did not exercise what it checks"
        );
    }
    println!("asleep: every open reported or counted as dropped");
    Ok(())
}

/// Opens a FIFO through openat(2) (the call `threads_in_openat` looks for) and closes it.
fn open_fifo(path: &CString, flags: i32) -> std::io::Result<()> {
    splitscope_probes::raw_open::open_via("openat", path, flags | libc::O_CLOEXEC, 0).map(drop)
}

/// Waits until `n` of this process's threads named SLEEPER are blocked in openat(2) (a FIFO
/// open waits for its writer), or fails after 10 s.
/// `proc_opens` counts the files it opens to look.
async fn wait_until_asleep(n: usize, proc_opens: &mut u64) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let asleep = threads_in_openat(SLEEPER, proc_opens);
        if asleep >= n {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "self-test --asleep: only {asleep} of {n} FIFO readers fell asleep in openat(2) within 10 s"
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// This process's threads of this name that are inside openat(2) and not running (the first
/// field of /proc/<tid>/syscall is the number of the system call a blocked task is in).
fn threads_in_openat(name: &str, opens: &mut u64) -> usize {
    *opens += 1;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    let openat = libc::SYS_openat.to_string();
    tasks
        .filter_map(Result::ok)
        .filter(|task| {
            let dir = task.path();
            *opens += 2;
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            let syscall = std::fs::read_to_string(dir.join("syscall")).unwrap_or_default();
            comm.trim_end() == name && syscall.split_whitespace().next() == Some(openat.as_str())
        })
        .count()
}

/// This process's opens reported, until none came for SETTLE (at most 10 s).
pub(super) async fn count_own(stream: &mut EventStream) -> anyhow::Result<u64> {
    let pid = std::process::id();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut reported = 0;
    loop {
        let until = (tokio::time::Instant::now() + SETTLE).min(deadline);
        let Ok(event) = tokio::time::timeout_at(until, stream.next()).await else {
            return Ok(reported);
        };
        if event?.pid() == pid {
            reported += 1;
        }
    }
}
