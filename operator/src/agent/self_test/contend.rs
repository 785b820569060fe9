//! `self-test --contend SECONDS`: two threads opening flat out on one CPU.
//!
//! A fexit program runs with preemption enabled on kernels that preempt kernel code
//! (`preempt=full`, PREEMPT_LAZY, PREEMPT_RT). When the task inside it is preempted by the other
//! opener on the same CPU, the kernel skips the program for the other's opens and counts the
//! skips (the program's `recursion_misses`), which the agent adds to its drops. Two threads
//! pinned to one CPU make that happen many times a second there. Every open they made must then
//! be reported or counted as dropped. The count is the program's, kernel-wide, so another
//! process's skipped opens may add to it: at least, not exactly.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use anyhow::bail;
use splitscope_probes::{AttachInfo, EventStream, Probe};

use super::asleep::count_own;

/// The openers' thread name.
const OPENER: &str = "ss-contend";

pub async fn check(
    probe: &Probe,
    stream: &mut EventStream,
    info: &AttachInfo,
    secs: u64,
) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicU64::new(0));
    // The threads wait at a barrier: starting a thread may open files of its own, and those
    // opens must be read before the count starts.
    let go = Arc::new(Barrier::new(3));
    let mut threads = Vec::new();
    for _ in 0..2 {
        let (stop, made, go) = (stop.clone(), made.clone(), go.clone());
        threads.push(
            std::thread::Builder::new()
                .name(OPENER.to_owned())
                .spawn(move || {
                    pin_to_cpu0()?;
                    go.wait();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        // SAFETY: a constant NUL-terminated path; the descriptor is closed at once.
                        let fd =
                            unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
                        if fd < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        // SAFETY: `fd` was just opened by this thread.
                        unsafe { libc::close(fd) };
                        n += 1;
                    }
                    made.fetch_add(n, Ordering::SeqCst);
                    Ok(())
                })?,
        );
    }
    count_own(stream).await?; // the threads' own start-up opens, not counted
    let dropped_before = probe.dropped()?;
    go.wait();
    // Read while they open, as the agent does: a ring left unread would fill within a second.
    let pid = std::process::id();
    let mut reported = 0u64;
    let until = tokio::time::Instant::now() + Duration::from_secs(secs);
    while let Ok(event) = tokio::time::timeout_at(until, stream.next()).await {
        if event?.pid() == pid {
            reported += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!("self-test --contend: an opener failed: {e}"),
            Err(_) => bail!("self-test --contend: an opener panicked"),
        }
    }
    let made = made.load(Ordering::SeqCst);
    let reported = reported + count_own(stream).await?;
    let missed = probe.dropped()?.saturating_sub(dropped_before);
    println!(
        "contend: {made} opens from two threads on CPU 0 in {secs} s: {reported} reported, {missed} \
         dropped (mode={} target={})",
        info.mode, info.target
    );
    if reported > made || reported + missed < made {
        bail!(
            "self-test --contend: {made} opens made, {reported} reported and {missed} dropped: {} \
             neither",
            made.saturating_sub(reported + missed)
        );
    }
    if missed > 0 {
        println!("contend: opens the kernel ran without the probe were counted as dropped");
    }
    println!("contend: every open reported or counted as dropped");
    Ok(())
}

fn pin_to_cpu0() -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes within it; sched_setaffinity(0) acts
    // on the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
