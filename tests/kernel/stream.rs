//! Real opens observed through the ring buffer: exact counts, paths, flags, every syscall, with
//! compact records (the agent's) and full ones (`trace`'s), in each tracepoint mode.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use splitscope_probes::plan::RAW_SYS_EXIT;
use splitscope_probes::{
    AttachMode, EventStream, Filters, OpenResult, Probe, ProbeConfig, RecordKind, Syscall, TaskFields,
    TracepointArgs, Tracepoints,
};

use crate::support::*;

fn tracepoints(args: TracepointArgs, records: RecordKind) -> ProbeConfig {
    ProbeConfig {
        attach: AttachMode::Tracepoint,
        tracepoint_args: args,
        records,
        ..ProbeConfig::default()
    }
}

/// The raw sys_exit tracepoint (a benchmarking aid), whose program runs at every syscall's exit.
fn raw_sys_exit(records: RecordKind) -> ProbeConfig {
    ProbeConfig {
        tracepoints: Tracepoints::RawFirst,
        ..tracepoints(TracepointArgs::Auto, records)
    }
}

/// Loads `config`, which got the raw sys_exit tracepoint exactly when it asked for it: this
/// kernel (6.18) loads the raw program, so asking for it must not end on the fallback.
fn load_as_asked(config: ProbeConfig) -> (Probe, EventStream) {
    let raw = config.tracepoints == Tracepoints::RawFirst;
    let (probe, stream) = load(config);
    let target = &probe.attach_info().target;
    assert_eq!(target == RAW_SYS_EXIT, raw, "{:?}", probe.attach_info());
    (probe, stream)
}

async fn exact_ok_and_enoent(config: ProbeConfig) {
    const N: usize = 7;
    const M: usize = 5;
    let files = Files::new("ex");
    let comm = unique("ssx");
    let records = config.records;
    let task_fields = config.task_fields.reads_task();
    let (probe, mut stream) = load_as_asked(config);
    let info = probe.attach_info().clone();
    assert_eq!(info.mode, "tracepoint");
    assert_eq!(info.records, records);
    assert_eq!(info.task_fields, task_fields);

    run_opener(
        &comm,
        &[
            op("openat", &files.exists, N as u32),
            op("openat", &files.missing, M as u32),
        ],
    )
    .await;
    let events = collect(&mut stream, N + M, Duration::from_secs(5), comm_is(&comm)).await;

    let ok: Vec<_> = events.iter().filter(|e| e.result().is_ok()).collect();
    let enoent: Vec<_> = events
        .iter()
        .filter(|e| e.result() == OpenResult::Errno(libc::ENOENT))
        .collect();
    assert_eq!(ok.len(), N, "ok opens for {comm}: {events:#?}");
    assert_eq!(enoent.len(), M, "ENOENT opens for {comm}");
    assert_eq!(events.len(), N + M, "nothing else from {comm}");
    assert!(events.iter().all(|e| e.kind() == records), "{events:#?}");
    assert!(events.iter().all(|e| e.syscall() == Syscall::Openat));
    for e in &ok {
        assert!(e.ret() >= 3, "an fd: {}", e.ret());
    }
    for e in &enoent {
        assert_eq!(e.ret(), -i64::from(libc::ENOENT));
    }
    match records {
        RecordKind::Full => {
            for e in &ok {
                assert_eq!(e.filename(), Some(files.exists.as_bytes()));
                assert_eq!(e.flags(), Some((libc::O_RDONLY | libc::O_NOCTTY) as u32));
            }
            for e in &enoent {
                assert_eq!(e.filename(), Some(files.missing.as_bytes()));
            }
            assert!(events.iter().all(|e| e.uid() == Some(0) && e.ts_ns().is_some()));
        }
        RecordKind::Compact => {
            assert!(
                events
                    .iter()
                    .all(|e| e.filename().is_none() && e.flags().is_none() && e.uid().is_none())
            );
            // Compact records are made at the exit alone: no entry point stays attached.
            assert!(
                info.points.iter().all(|p| p.contains(":sys_exit")),
                "{:?}",
                info.points
            );
        }
    }
    let child = events[0].pid();
    assert!(events.iter().all(|e| e.pid() == child));
    // The opener is single-threaded: its thread id is its pid. Compact records leave it out.
    let tid = match records {
        RecordKind::Full => Some(child),
        RecordKind::Compact => None,
    };
    assert!(events.iter().all(|e| e.tid() == tid), "{events:#?}");
    assert!(events.iter().all(|e| e.cgroup_id() != 0));
    assert_eq!(probe.dropped().unwrap(), 0);
}

#[tokio::test]
async fn exact_counts_in_compact_records_from_the_exit_alone() {
    exact_ok_and_enoent(tracepoints(TracepointArgs::SavedRegs, RecordKind::Compact)).await;
}

#[tokio::test]
async fn exact_counts_in_full_records_with_arguments_from_saved_registers() {
    exact_ok_and_enoent(tracepoints(TracepointArgs::SavedRegs, RecordKind::Full)).await;
}

#[tokio::test]
async fn exact_counts_in_compact_records_with_enter_exit_pairing() {
    exact_ok_and_enoent(tracepoints(TracepointArgs::EnterExit, RecordKind::Compact)).await;
}

#[tokio::test]
async fn exact_counts_in_full_records_with_enter_exit_pairing() {
    let config = tracepoints(TracepointArgs::EnterExit, RecordKind::Full);
    exact_ok_and_enoent(config).await;
}

#[tokio::test]
async fn exact_counts_in_compact_records_whose_comm_and_cgroup_come_from_helpers() {
    // What kernels before 5.11 get (no bpf_get_current_task_btf); this one reads the task.
    exact_ok_and_enoent(ProbeConfig {
        task_fields: TaskFields::Helpers,
        ..tracepoints(TracepointArgs::SavedRegs, RecordKind::Compact)
    })
    .await;
}

#[tokio::test]
async fn exact_counts_in_compact_records_on_the_raw_sys_exit_tracepoint() {
    exact_ok_and_enoent(raw_sys_exit(RecordKind::Compact)).await;
}

#[tokio::test]
async fn exact_counts_in_full_records_on_the_raw_sys_exit_tracepoint() {
    exact_ok_and_enoent(raw_sys_exit(RecordKind::Full)).await;
}

/// ia32's readlink(2) has creat(2)'s x86-64 number (85). The raw tracepoint tells opens by
/// number, so it must leave 32-bit syscalls out, as the per-syscall tracepoints do; the opener
/// exits 4, failing this test, on a kernel that runs no 32-bit syscalls.
#[tokio::test]
async fn a_32_bit_syscall_numbered_like_creat_is_no_open() {
    for config in [
        raw_sys_exit(RecordKind::Compact),
        tracepoints(TracepointArgs::Auto, RecordKind::Compact),
    ] {
        let files = Files::new("ia32");
        let comm = unique("ss32");
        let (probe, mut stream) = load_as_asked(config);
        let target = probe.attach_info().target.clone();
        run_opener(
            &comm,
            &[
                op("ia32-readlink", &files.exists, 5),
                op("openat", &files.exists, 2),
            ],
        )
        .await;
        let events = collect(&mut stream, 2, Duration::from_secs(5), comm_is(&comm)).await;
        assert_eq!(events.len(), 2, "{target}: {events:#?}");
        assert!(
            events.iter().all(|e| e.syscall() == Syscall::Openat),
            "{target}: {events:#?}"
        );
    }
}

/// A probe that batches only `comm`'s compact records: no other process fills its batches.
fn only(comm: &str) -> ProbeConfig {
    ProbeConfig {
        filters: Filters {
            comm: Some(comm.to_owned()),
            ..Filters::default()
        },
        ..tracepoints(TracepointArgs::SavedRegs, RecordKind::Compact)
    }
}

/// Compact records travel in per-CPU batches of 32, and a batch that never fills is read where
/// it is: a few opens arrive without waiting for more.
#[tokio::test]
async fn a_batch_that_never_fills_is_read_in_place() {
    let files = Files::new("bq");
    let comm = unique("ssq");
    let (probe, mut stream) = load(only(&comm));
    run_opener(&comm, &[op("openat", &files.exists, 5)]).await;
    let events = collect(&mut stream, 5, Duration::from_secs(5), comm_is(&comm)).await;
    assert_eq!(events.len(), 5, "{events:#?}");
    assert_eq!(probe.dropped().unwrap(), 0);
}

/// Records read in place are not handed out again when their batch fills and comes through
/// the ring: one CPU's opens, read while its batch is partly full, then more that fill it.
#[tokio::test]
async fn records_read_in_place_are_not_handed_out_again_from_the_ring() {
    let files = Files::new("bd");
    let comm = unique("ssr");
    let (probe, mut stream) = load(only(&comm));
    let mut opener = spawn_pinned_opener(
        &comm,
        &[
            op("openat", &files.exists, 10),
            "pause".to_owned(),
            op("openat", &files.missing, 30),
        ],
    );
    let first = collect(&mut stream, 10, Duration::from_secs(5), comm_is(&comm)).await;
    assert_eq!(first.len(), 10, "the first 10, read in place: {first:#?}");
    let mut stdin = opener.stdin.take().unwrap();
    stdin.write_all(b"g").await.unwrap();
    drop(stdin);
    let status = opener.wait().await.unwrap();
    assert!(status.success(), "opener failed: {status}");
    // 32 of the 40 came as a full batch (10 of them handed out already), 8 are read in place.
    let rest = collect(&mut stream, 30, Duration::from_secs(5), comm_is(&comm)).await;
    assert_eq!(rest.len(), 30, "{rest:#?}");
    assert!(rest.iter().all(|e| e.result() == OpenResult::Errno(libc::ENOENT)));
    assert_eq!(probe.dropped().unwrap(), 0);
}

/// Opens filling many batches on every CPU, the last of each partly, read while they are made:
/// each arrives exactly once (from the ring or read in place, never both), with no drop.
#[tokio::test]
async fn exact_counts_across_many_batches_on_every_cpu() {
    const OK: usize = 1000;
    const MISSING: usize = 77;
    let files = Files::new("bt");
    let comm = unique("ssb");
    let (probe, mut stream) = load(only(&comm));
    let cpus = std::thread::available_parallelism().map_or(2, usize::from).max(2);
    let ops = [
        op("openat", &files.exists, OK as u32),
        op("openat", &files.missing, MISSING as u32),
    ];
    // Read while they open: batches are read in place while they fill, then come whole.
    let openers: Vec<_> = (0..cpus).map(|_| spawn_opener(&comm, &ops, false)).collect();
    let want = cpus * (OK + MISSING);
    let events = collect(&mut stream, want, Duration::from_secs(20), comm_is(&comm)).await;
    for mut opener in openers {
        let status = opener.wait().await.unwrap();
        assert!(status.success(), "opener failed: {status}");
    }
    let ok = events.iter().filter(|e| e.result().is_ok()).count();
    let missing = events
        .iter()
        .filter(|e| e.result() == OpenResult::Errno(libc::ENOENT))
        .count();
    assert_eq!((ok, missing, events.len()), (cpus * OK, cpus * MISSING, want));
    let mut per_process = std::collections::HashMap::<u32, usize>::new();
    for e in &events {
        *per_process.entry(e.pid()).or_default() += 1;
    }
    assert_eq!(per_process.len(), cpus, "one pid per opener");
    assert!(
        per_process.values().all(|&n| n == OK + MISSING),
        "{per_process:?}"
    );
    assert_eq!(probe.dropped().unwrap(), 0);
}

#[tokio::test]
async fn auto_mode_on_this_kernel_reports_its_choice_and_counts_exactly() {
    let (probe, mut stream) = load(ProbeConfig::default());
    let info = probe.attach_info().clone();
    // Fexit goes first. This machine's kernel refuses it, and has no kprobes: auto must have
    // said both and used the tracepoints.
    if info.mode != "fentry" {
        let fexit = "fexit do_sys_openat2: ";
        assert!(
            info.attempts.iter().any(|a| a.to_string().starts_with(fexit))
                || info.skipped.iter().any(|s| s.starts_with(fexit)),
            "{info:?}"
        );
        if !std::path::Path::new(splitscope_probes::facts::KPROBE_PMU_TYPE).exists() {
            assert_eq!(info.mode, "tracepoint");
            assert!(info.skipped.iter().any(|s| s.contains("kprobe")), "{info:?}");
        }
    }
    assert!(!info.points.is_empty());
    assert_eq!(info.records, RecordKind::Compact, "the default");
    let files = Files::new("au");
    let comm = unique("ssa");
    run_opener(&comm, &[op("openat", &files.exists, 3)]).await;
    let events = collect(&mut stream, 3, Duration::from_secs(5), comm_is(&comm)).await;
    assert_eq!(events.len(), 3);
}

async fn each_syscall_is_one_event(config: ProbeConfig) {
    let records = config.records;
    let files = Files::new("all");
    let created = files.dir.join("created").to_str().unwrap().to_owned();
    let comm = unique("ss4");
    let (_probe, mut stream) = load_as_asked(config);
    run_opener(
        &comm,
        &[
            op("open", &files.exists, 2),
            op("openat", &files.exists, 3),
            op("openat2", &files.exists, 4),
            op("creat", &created, 5),
        ],
    )
    .await;
    let events = collect(&mut stream, 14, Duration::from_secs(5), comm_is(&comm)).await;
    let count = |s: Syscall| events.iter().filter(|e| e.syscall() == s).count();
    assert_eq!(
        (
            count(Syscall::Open),
            count(Syscall::Openat),
            count(Syscall::Openat2),
            count(Syscall::Creat)
        ),
        (2, 3, 4, 5),
        "{events:#?}"
    );
    assert!(events.iter().all(|e| e.result().is_ok()));
    assert!(events.iter().all(|e| e.kind() == records));
    if records == RecordKind::Compact {
        return;
    }
    for e in &events {
        let want = match e.syscall() {
            Syscall::Open => (libc::O_RDONLY | libc::O_CLOEXEC) as u32,
            Syscall::Openat => (libc::O_RDONLY | libc::O_NOCTTY) as u32,
            Syscall::Openat2 => (libc::O_RDONLY | libc::O_NOFOLLOW) as u32,
            Syscall::Creat => (libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC) as u32,
            Syscall::Unknown => panic!("tracepoint mode knows the syscall"),
        };
        assert_eq!(e.flags(), Some(want), "{:?}", e.syscall());
        if e.syscall() == Syscall::Creat {
            assert_eq!(e.mode(), Some(0o640));
            assert_eq!(e.filename(), Some(created.as_bytes()));
        }
    }
}

#[tokio::test]
async fn open_openat_openat2_and_creat_are_each_one_compact_record() {
    each_syscall_is_one_event(tracepoints(TracepointArgs::Auto, RecordKind::Compact)).await;
}

#[tokio::test]
async fn open_openat_openat2_and_creat_are_each_one_full_record() {
    each_syscall_is_one_event(tracepoints(TracepointArgs::Auto, RecordKind::Full)).await;
}

#[tokio::test]
async fn the_raw_sys_exit_tracepoint_tells_the_four_syscalls_and_their_arguments_apart() {
    each_syscall_is_one_event(raw_sys_exit(RecordKind::Compact)).await;
    each_syscall_is_one_event(raw_sys_exit(RecordKind::Full)).await;
}

#[tokio::test]
async fn filenames_longer_than_the_buffer_are_cut_and_flagged() {
    let files = Files::new("long");
    let long = format!("{}/{}", files.dir.display(), "n".repeat(300));
    let comm = unique("ssl");
    let (_probe, mut stream) = load(tracepoints(TracepointArgs::Auto, RecordKind::Full));
    run_opener(&comm, &[op("openat", &long, 1)]).await;
    let events = collect(&mut stream, 1, Duration::from_secs(5), comm_is(&comm)).await;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    let name = e.filename().unwrap();
    assert_eq!(name.len(), 255);
    assert!(long.as_bytes().starts_with(name));
    assert!(e.filename_truncated());
    assert_eq!(e.result(), OpenResult::Errno(libc::ENAMETOOLONG));
}

/// Opens asleep in the kernel, many at once (FIFO readers waiting for their writers), are each
/// one event: a tracepoint, unlike a kretprobe (whose limit `cargo xtask vm-test` checks in
/// kprobe mode), follows any number of them. Run as `splitscope self-test --asleep`, which
/// holds 64 opens asleep together, wakes them with 64 more, and fails unless its events are
/// exactly its opens (those, and its reads of /proc while it waited).
#[tokio::test]
async fn opens_asleep_in_the_kernel_together_are_each_one_event() {
    let (mut child, logs) = spawn(&["self-test", "--attach", "tracepoint", "--asleep", "64"]);
    let mut stdout = child.stdout.take().unwrap();
    let mut out = String::new();
    tokio::time::timeout(
        Duration::from_secs(60),
        tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut out),
    )
    .await
    .expect("self-test --asleep did not finish within 60 s")
    .unwrap();
    exits_cleanly(&mut child, Duration::from_secs(10)).await;
    logs.close().await;
    assert!(
        out.contains("asleep: 64 opens asleep at once, 64 to wake them"),
        "{out}"
    );
    assert!(out.contains(" 0 dropped (mode=tracepoint"), "{out}");
    assert!(
        out.contains("asleep: every open reported or counted as dropped"),
        "{out}"
    );
}

/// Fentry mode counts exactly where the kernel allows BPF trampolines (vm-test proves that in
/// Debian's kernels); where it refuses them, as this machine's does, the error names that.
#[tokio::test]
async fn fentry_mode_counts_exactly_or_names_the_kernel_refusing_it() {
    require_bpf();
    let config = ProbeConfig {
        attach: AttachMode::Fentry,
        ..ProbeConfig::default()
    };
    let mut probe = match Probe::load(config) {
        Ok(probe) => probe,
        Err(err) => {
            let text = err.to_string();
            assert!(
                text.contains(
                    "fexit do_sys_openat2: could not attach: this kernel refuses fentry/fexit programs (EPERM"
                ),
                "{text}"
            );
            println!("this kernel refuses fentry programs, as named: {text}");
            return;
        }
    };
    let info = probe.attach_info().clone();
    assert_eq!((info.mode, info.target.as_str()), ("fentry", "do_sys_openat2"));
    let mut stream = probe.events(Duration::from_millis(20)).unwrap();
    let files = Files::new("fx");
    let comm = unique("ssf");
    run_opener(
        &comm,
        &[op("openat", &files.exists, 4), op("openat", &files.missing, 3)],
    )
    .await;
    let events = collect(&mut stream, 7, Duration::from_secs(5), comm_is(&comm)).await;
    let ok = events.iter().filter(|e| e.ret() >= 0).count();
    assert_eq!((ok, events.len()), (4, 7));
}
