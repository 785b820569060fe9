//! `splitscope self-test` (hidden): proves on the running kernel that the chosen attach points
//! report every open exactly once, with compact records (the agent's) or full ones (`--records
//! full`, as `trace` uses). `cargo xtask vm-test` runs it inside qemu guests booted with Debian
//! kernels, where kprobes and BPF trampolines exist, to exercise the fentry and kprobe paths this
//! CI machine lacks.
//!
//! Compact records carry no path, and in fentry and kprobe modes no syscall either, so the syscalls are
//! tested one after the other: each batch's opens are counted before the next batch starts.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::time::Duration;

use anyhow::{Context, bail};
use splitscope_probes::{EventStream, RecordKind, Syscall};

use crate::cli::SelfTestArgs;

mod asleep;
mod contend;

const KINDS: [&str; 4] = ["open", "openat", "openat2", "creat"];

/// How long a batch's count must stay put after reaching the expected number, so that an
/// extra (duplicate) event would still be seen.
const SETTLE: Duration = Duration::from_millis(300);

pub async fn run(args: SelfTestArgs) -> anyhow::Result<()> {
    // The files exist before the probe attaches, so creating them is not counted.
    let dir = std::env::temp_dir().join(format!("splitscope-self-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir_s = dir.to_string_lossy().into_owned();
    for kind in KINDS {
        std::fs::write(format!("{dir_s}/{kind}"), b"x")?;
    }
    let mut config = super::probe_config(&args.probe, RecordKind::Compact)?;
    config.self_test_timeout = Duration::from_millis(args.self_test_ms);
    let mut probe = super::load_probe(config)
        .await
        .context("self-test: attaching the probe")?;
    let info = probe.attach_info().clone();
    println!(
        "attached: mode={} target={} records={}",
        info.mode,
        info.target,
        records_name(info.records)
    );
    for point in &info.points {
        println!("point: {point}");
    }
    for attempt in &info.attempts {
        println!("tried: {attempt}");
    }
    for skipped in &info.skipped {
        println!("skipped: {skipped}");
    }
    if let Some(mode) = &args.expect_mode
        && mode != info.mode
    {
        bail!("self-test: expected mode {mode}, attached {}", info.mode);
    }
    if let Some(target) = &args.expect_target
        && *target != info.target
    {
        bail!("self-test: expected target {target}, attached {}", info.target);
    }

    let mut stream = probe.events(Duration::from_millis(20))?;
    let batch = Batch {
        pid: std::process::id(),
        dir: format!("{dir_s}/"),
    };
    let mut expected: BTreeMap<String, u32> = BTreeMap::new();
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for kind in KINDS {
        let exists = format!("{dir_s}/{kind}");
        let missing = format!("{dir_s}/missing-{kind}");
        let mut supported = true;
        for _ in 0..args.opens {
            for (path, want_ok) in [(&exists, true), (&missing, false)] {
                match open_with(kind, path)? {
                    Err(libc::ENOSYS) => supported = false,
                    Ok(()) if want_ok => {}
                    Err(libc::ENOENT) if !want_ok => {}
                    other => bail!("self-test: {kind}({path}) gave {other:?}"),
                }
            }
        }
        if supported {
            expected.insert(format!("{kind} ok"), args.opens);
            expected.insert(format!("{kind} ENOENT"), args.opens);
        } else {
            println!("note: {kind}(2) is not in this kernel (ENOSYS)");
        }
        // Counted even when unsupported: an ENOSYS open must not be reported as an open.
        batch
            .count(
                &mut stream,
                kind,
                2 * args.opens * u32::from(supported),
                &mut seen,
            )
            .await?;
    }
    for (key, n) in &expected {
        println!(
            "count: {key} = {} (expected {n})",
            seen.get(key).copied().unwrap_or(0)
        );
    }
    let dropped = probe.dropped()?;
    let want: u32 = expected.values().sum();
    if seen != expected || dropped != 0 {
        let _ = std::fs::remove_dir_all(&dir);
        bail!("self-test: counts differ from the opens made (seen {seen:?}, dropped {dropped})");
    }
    if args.asleep > 0 {
        let result = asleep::check(&probe, &mut stream, &info, &dir, args.asleep).await;
        let _ = std::fs::remove_dir_all(&dir);
        result?;
    }
    if args.contend > 0 {
        contend::check(&probe, &mut stream, &info, args.contend).await?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    probe.detach();
    println!(
        "self-test: ok ({want} opens, each reported once, mode={} target={} records={})",
        info.mode,
        info.target,
        records_name(info.records)
    );
    Ok(())
}

fn records_name(records: RecordKind) -> &'static str {
    match records {
        RecordKind::Compact => "compact",
        RecordKind::Full => "full",
    }
}

/// This process's opens in one batch of one syscall kind.
struct Batch {
    pid: u32,
    /// The test directory, with a trailing slash.
    dir: String,
}

impl Batch {
    /// Counts this process's events of the batch of `kind` into `seen` ("kind result"): until
    /// `want` arrived and then `SETTLE` passed without more, or 10 s.
    async fn count(
        &self,
        stream: &mut EventStream,
        kind: &str,
        want: u32,
        seen: &mut BTreeMap<String, u32>,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut settle = (want == 0).then(|| tokio::time::Instant::now() + SETTLE);
        let mut got = 0;
        loop {
            let until = settle.unwrap_or(deadline).min(deadline);
            let Ok(event) = tokio::time::timeout_at(until, stream.next()).await else {
                return Ok(());
            };
            let event = event?;
            if event.pid() != self.pid {
                continue;
            }
            // A full record names its kind by its path; a compact one is this batch's.
            let from = match event.filename() {
                Some(name) => {
                    let name = String::from_utf8_lossy(name);
                    let Some(file) = name.strip_prefix(&self.dir) else {
                        continue; // e.g. the start-up self-test's own opens
                    };
                    let file = file.strip_prefix("missing-").unwrap_or(file);
                    file.split('/').next().unwrap_or(file).to_owned() // creat's missing path is <kind>/x
                }
                None => kind.to_owned(),
            };
            if from != kind {
                bail!("self-test: a {from}(2) open was reported while {kind}(2) was tested");
            }
            if event.syscall() != Syscall::Unknown && event.syscall().name() != kind {
                bail!(
                    "self-test: a {kind}(2) open was reported as {}(2)",
                    event.syscall().name()
                );
            }
            let result = super::count::result_label(event.result());
            *seen.entry(format!("{kind} {result}")).or_default() += 1;
            got += 1;
            if got >= want && settle.is_none() {
                settle = Some(tokio::time::Instant::now() + SETTLE);
            }
        }
    }
}

/// One open through the named syscall; Ok(()) on success (the fd is closed), Err(errno) else.
fn open_with(kind: &str, path: &str) -> anyhow::Result<Result<(), i32>> {
    // creat(2) of a missing file would create it: aim it at a missing directory instead.
    let path = if kind == "creat" && path.contains("/missing-") {
        format!("{path}/x")
    } else {
        path.to_owned()
    };
    let c = CString::new(path)?;
    match splitscope_probes::raw_open::open_via(kind, &c, libc::O_RDONLY, 0o600) {
        Ok(_fd) => Ok(Ok(())),
        Err(e) => Ok(Err(e.raw_os_error().unwrap_or(0))),
    }
}
