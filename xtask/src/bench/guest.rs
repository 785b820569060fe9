//! `cargo xtask bench-vm`: what each of the agent's attach modes adds to an open, counted in
//! instructions, in the Debian kernels `cargo xtask vm-test` boots.
//!
//! This machine's kernel refuses fentry and has no kprobes, so `bench-probe` can time only the
//! tracepoint mode. The qemu guests have both, but they are emulated (TCG), so their clocks say
//! nothing about a real CPU's nanoseconds. Booted with `-icount shift=0` they say something else
//! exactly: the guest's clock advances one nanosecond per instruction it executes, so the
//! opener's timings inside the guest are instruction counts, the same however busy the host is.
//! Instructions are not time (a cache miss costs one instruction here), but they are what the
//! attach points differ in: a syscall tracepoint builds a perf record for its program and sends
//! every syscall of the process through the kernel's slow path; a fexit trampoline calls the
//! program directly from the end of one function. bpftrace `count()` runs in the guest too (the
//! guest mounts this machine's `/`, bpftrace included) beside a per-CPU counter of the agent's own
//! probe under the same tracepoint.
//!
//! The host side boots each kernel with one CPU and runs `xtask bench-vm-guest` inside (this
//! same binary, over 9p), which prints one line per measurement; the host side parses them and
//! writes BENCHMARKS.md.

use std::ffi::CString;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::measure::{self, Spread};
use super::peers::{self, Peer};
use crate::deps::{self, Set};
use crate::run::{cmd, root};
use crate::vm_test::{Guest, KERNELS, Machine};

/// What runs beside the opener in the guest: the agent's tracepoint alone and with a counter,
/// bpftrace's tracepoint alone and with `count()`, then the agent in each mode, `auto` last (it
/// takes fexit in these kernels).
const GUEST_PEERS: [Peer; 8] = [
    Peer::None,
    Peer::TracepointOnly,
    Peer::PerCpuCount,
    Peer::BpftraceEmpty,
    Peer::Bpftrace,
    Peer::AgentTracepoint,
    Peer::AgentKprobe,
    Peer::Agent,
];

/// Open+close per measurement, in 8 blocks, of which the fastest counts (a timer tick's
/// instructions land in every block alike; the agent's reader, on the guest's one CPU, in some).
const OPS: u64 = 40_000;
/// getppid(2) per block (4 blocks, the fastest counts).
const OTHERS: u64 = 20_000;
const DEFAULT_ROUNDS: usize = 3;
/// How much longer than on the host a tracer may take to start in the guest.
const PATIENCE: u32 = 15;
/// A line of the guest's measurements on its console.
const SAMPLE: &str = "=== COUNTED";
/// A tracer the guest could not measure, and why.
const FAILED: &str = "=== NOT COUNTED";
const GUEST_DONE: &str = "=== BENCH DONE";

/// One measurement in the guest: instructions (the guest's ns) per open+close and per getppid.
#[derive(Clone, Debug, PartialEq)]
struct Sample {
    peer: String,
    mode: String,
    open_cpu: f64,
    reader: f64,
    getppid: f64,
}

impl Sample {
    fn line(&self) -> String {
        format!(
            "{SAMPLE} peer={} mode={} open_cpu={:.1} reader={:.1} getppid={:.1}",
            self.peer, self.mode, self.open_cpu, self.reader, self.getppid
        )
    }

    fn parse(line: &str) -> Option<Self> {
        let (_, rest) = line.split_once(SAMPLE)?;
        let field = |name: &str| {
            rest.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        };
        let number = |name: &str| field(name)?.parse::<f64>().ok();
        Some(Self {
            peer: field("peer")?.to_owned(),
            mode: field("mode")?.to_owned(),
            open_cpu: number("open_cpu")?,
            reader: number("reader")?,
            getppid: number("getppid")?,
        })
    }
}

// ---------------------------------------------------------------- host side

pub fn run() -> anyhow::Result<()> {
    deps::ensure(Set::Vm)?;
    deps::ensure(Set::Bench)?;
    let rounds = measure::rounds(DEFAULT_ROUNDS)?;
    cmd("cargo", &["build", "--release", "-p", "splitscope"])?;
    let xtask = std::env::current_exe().context("finding xtask's own binary")?;
    let xtask = xtask.to_str().context("non-UTF-8 path of xtask's binary")?;
    let cache = root().join("target/vm-test");
    std::fs::create_dir_all(&cache)?;
    let steps = format!(
        "{}={rounds} '{xtask}' bench-vm-guest 2>&1\necho \"{GUEST_DONE} rc=$?\"\n",
        measure::ROUNDS_ENV
    );
    let started = Instant::now();
    let mut sections = String::new();
    for kernel in KERNELS {
        let agent = peers::agent_binary();
        let guest = Guest::prepare(
            kernel,
            "bench-vm",
            &cache,
            &[agent.as_path(), Path::new(xtask)],
            &steps,
        )?;
        eprintln!(
            "xtask: bench-vm {}: booting (one CPU, clocks counting instructions)",
            kernel.label
        );
        let (console, qemu_exit) = guest.boot(Machine::COUNTED, Duration::from_secs(3600))?;
        let log = cache.join(format!("{}.bench.console.log", kernel.label));
        std::fs::write(&log, &console)?;
        if !console.contains(&format!("{GUEST_DONE} rc=0")) {
            bail!(
                "the {} guest's benchmark did not end well (qemu {qemu_exit}); console in {}",
                kernel.label,
                log.display()
            );
        }
        // The firmware's escape codes may share the line the guest's first words land on.
        let release = console
            .lines()
            .find_map(|l| l.split_once("=== KERNEL ").map(|(_, release)| release.trim()))
            .unwrap_or(kernel.label);
        let failed: Vec<&str> = console
            .lines()
            .filter_map(|l| l.split_once(FAILED).map(|(_, why)| why.trim()))
            .collect();
        let samples: Vec<Sample> = console.lines().filter_map(Sample::parse).collect();
        let table = report(release, &samples, &failed)?;
        eprintln!("{table}");
        sections.push_str(&table);
    }
    let text = format!(
        "Command: `cargo xtask bench-vm` (as root; {:.0} min). Each kernel of `cargo xtask vm-test` \
         booted under qemu (TCG) with one CPU and `-icount shift=0`: the guest's clock advances one \
         nanosecond per instruction, so every figure below is a count of instructions, not a time. \
         {rounds} rounds; in each, every tracer beside an opener doing {OPS} open+close of a file \
         on tmpfs in 8 blocks and 4 blocks of {OTHERS} getppid(2), the fastest block counting; \
         medians over the rounds. \"In the opener\" is what the opener's thread executed more \
         (the attach point, the program, the syscall's slower path); \"the tracer's process\" \
         what the tracer's own process executed per open meanwhile (the agent's reader; \
         bpftrace's waits); \"all\" both.\n\n{sections}",
        started.elapsed().as_secs_f64() / 60.0
    );
    super::write_section("bench-vm", &text)?;
    Ok(())
}

/// Medians over the rounds of what a tracer added, in instructions.
struct Added {
    mode: String,
    /// To the opener's thread: the program, the attach point, the syscall's slow path.
    opener: f64,
    /// The tracer's own process per open (the agent's reader), on the guest's one CPU.
    reader: f64,
    getppid: f64,
}

impl Added {
    /// Everything an open cost the CPU more.
    fn total(&self) -> f64 {
        self.opener + self.reader
    }
}

fn added(samples: &[Sample], peer: Peer, baseline: &Added) -> Option<Added> {
    let name = format!("{peer:?}");
    let of = |f: fn(&Sample) -> f64| {
        let values: Vec<f64> = samples.iter().filter(|s| s.peer == name).map(f).collect();
        (!values.is_empty()).then(|| Spread::of(&values).median)
    };
    let mode = samples.iter().find(|s| s.peer == name)?.mode.clone();
    Some(Added {
        mode,
        opener: of(|s| s.open_cpu)? - baseline.opener,
        reader: of(|s| s.reader)? - baseline.reader,
        getppid: of(|s| s.getppid)? - baseline.getppid,
    })
}

/// The section of one kernel. `failed` are the guest's lines for tracers it could not measure,
/// each starting with the tracer's name.
fn report(release: &str, samples: &[Sample], failed: &[&str]) -> anyhow::Result<String> {
    // A tracer that failed in any round is left out whole: its other rounds alone would stand
    // for all of them.
    let samples: Vec<Sample> = samples
        .iter()
        .filter(|s| !failed.iter().any(|f| f.starts_with(&format!("{} ", s.peer))))
        .cloned()
        .collect();
    let samples = samples.as_slice();
    let zero = Added {
        mode: String::new(),
        opener: 0.0,
        reader: 0.0,
        getppid: 0.0,
    };
    let Some(none) = added(samples, Peer::None, &zero) else {
        bail!("{release}: no measurement without a tracer; the guest printed: {failed:?}");
    };
    let mut out = String::new();
    writeln!(
        out,
        "**Linux {release}**: without a tracer an open+close takes {:.0} instructions, a getppid {:.0}.\n",
        none.opener, none.getppid
    )?;
    let reference = added(samples, Peer::Bpftrace, &none);
    writeln!(
        out,
        "| beside the opener | mode | added to an open+close in the opener | the tracer's process per open | all | ÷ bpftrace `count()`'s | added to a getppid |\n|---|---|---|---|---|---|---|"
    )?;
    for peer in GUEST_PEERS.iter().copied().filter(|p| *p != Peer::None) {
        let Some(a) = added(samples, peer, &none) else {
            writeln!(out, "| {} | not measured | | | | | |", peer.label())?;
            continue;
        };
        let ratio = reference
            .as_ref()
            .filter(|r| r.total() > 0.0)
            .map_or("—".to_owned(), |r| format!("{:.2}×", a.total() / r.total()));
        writeln!(
            out,
            "| {} | {} | {:+.0} | {:.0} | {:+.0} | {ratio} | {:+.1} |",
            peer.label(),
            a.mode,
            a.opener,
            a.reader,
            a.total(),
            a.getppid
        )?;
    }
    out.push('\n');
    match (
        added(samples, Peer::Agent, &none),
        reference.filter(|r| r.total() > 0.0),
    ) {
        (Some(agent), Some(count)) => writeln!(
            out,
            "The agent as shipped ({} mode) adds {:.0} instructions to an open+close, its reader \
             included, and {:+.1} to every other syscall; bpftrace `count()` adds {:.0} and {:+.1}: \
             **{:.2}× on an open, in instructions**.\n",
            agent.mode,
            agent.total(),
            agent.getppid,
            count.total(),
            count.getppid,
            agent.total() / count.total()
        )?,
        _ => writeln!(
            out,
            "The agent as shipped or bpftrace `count()` was not measured in this guest (or `count()` \
             added nothing), so no ratio.\n"
        )?,
    }
    for why in failed {
        writeln!(out, "Not measured: {why}\n")?;
    }
    Ok(out)
}

// ---------------------------------------------------------------- guest side

/// Runs inside the guest: every tracer beside the opener, each round in a rotated order, one
/// line per measurement on stdout (the guest's console).
pub fn inside() -> anyhow::Result<()> {
    let rounds = measure::rounds(DEFAULT_ROUNDS)?;
    peers::be_patient(PATIENCE);
    let (_file, path) = measure::file_to_open()?;
    let bpftrace = std::process::Command::new("bpftrace")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !bpftrace {
        println!("{FAILED} bpftrace is not installed (cargo xtask deps bench)");
    }
    let tracers: Vec<Peer> = GUEST_PEERS
        .iter()
        .copied()
        .filter(|p| !matches!(p, Peer::Bpftrace | Peer::BpftraceEmpty) || bpftrace)
        .collect();
    let mut failed = std::collections::HashSet::new();
    for round in 0..rounds {
        for k in 0..tracers.len() {
            let peer = tracers[(k + round) % tracers.len()];
            if failed.contains(&peer) {
                continue;
            }
            let started = Instant::now();
            match measure_beside(peer, &path) {
                Ok(sample) => println!("{}", sample.line()),
                Err(err) => {
                    // One reason per tracer is enough: the next rounds would fail alike.
                    failed.insert(peer);
                    println!("{FAILED} {peer:?} ({}): {err:#}", peer.label());
                }
            }
            eprintln!(
                "bench-vm-guest: round {}/{rounds} {peer:?} in {:.0} s",
                round + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

fn measure_beside(peer: Peer, path: &CString) -> anyhow::Result<Sample> {
    let running = peers::start(peer, "0")?;
    if let Some(pid) = running.pid() {
        wait_until_quiet(pid)?;
    }
    let mode = match peer.agent_env() {
        // One word on the console line, whatever the agent reported.
        Some(_) => super::probe::attach_mode(&peers::agent_attach_info()?)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join("_"),
        None => "—".to_owned(),
    };
    let cost = measure::cost_per_open(path, OPS, running.pid());
    let getppid = measure::fastest_of_4(OTHERS, &measure::other_syscalls);
    drop(running);
    Ok(Sample {
        peer: format!("{peer:?}"),
        mode,
        open_cpu: cost.opener_cpu,
        reader: cost.tracer_cpu,
        getppid,
    })
}

/// Waits until the tracer's process has stopped working, i.e. has attached: bpftrace announces
/// that it is attaching before it loads and attaches its program, which under emulation takes
/// seconds, and the agent is ready a little before its start-up work has died down.
fn wait_until_quiet(pid: u32) -> anyhow::Result<()> {
    const INTERVAL: Duration = Duration::from_millis(200);
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut before = measure::process_cpu_ns(pid);
    loop {
        std::thread::sleep(INTERVAL);
        let now = measure::process_cpu_ns(pid);
        // Under 1 % of the interval on a CPU: waiting for events, not starting up.
        if now.saturating_sub(before) < INTERVAL.as_nanos() as u64 / 100 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the tracer (pid {pid}) was still busy after 10 minutes");
        }
        before = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(peer: Peer, mode: &str, open: f64, getppid: f64) -> Sample {
        Sample {
            peer: format!("{peer:?}"),
            mode: mode.to_owned(),
            open_cpu: open - 10.0,
            reader: if peer == Peer::Agent { 30.0 } else { 0.0 },
            getppid,
        }
    }

    #[test]
    fn a_sample_line_reads_back_as_written() {
        let s = sample(Peer::AgentKprobe, "kprobe", 5123.4, 301.5);
        assert_eq!(Sample::parse(&format!("\x1b[2J{}\r", s.line())), Some(s));
        assert_eq!(
            Sample::parse("=== COUNTED peer=Agent mode=fentry open_cpu=1"),
            None
        );
        assert_eq!(Sample::parse("something else"), None);
    }

    #[test]
    fn the_report_gives_what_each_tracer_adds_over_none_and_the_ratio_to_count() {
        let samples = vec![
            sample(Peer::None, "—", 5000.0, 300.0),
            sample(Peer::None, "—", 5004.0, 300.0),
            sample(Peer::None, "—", 4990.0, 300.0),
            sample(Peer::Bpftrace, "—", 5400.0, 340.0),
            sample(Peer::Agent, "fentry", 5200.0, 300.0),
            // Measured in one round, failed in another: left out whole.
            sample(Peer::AgentKprobe, "kprobe", 5300.0, 300.0),
        ];
        let text = report("6.1.0-57-amd64", &samples, &["AgentKprobe (kprobe): refused"]).expect("report");
        assert!(text.contains("an open+close takes 4990 instructions"), "{text}");
        assert!(
            text.contains("| fentry | +200 | 30 | +230 | 0.57× | +0.0 |"),
            "{text}"
        );
        assert!(text.contains("| — | +400 | 0 | +400 | 1.00× | +40.0 |"), "{text}");
        assert!(text.contains("**0.57× on an open, in instructions**"), "{text}");
        assert!(
            text.contains(&format!("| {} | not measured |", Peer::AgentKprobe.label())),
            "{text}"
        );
        assert!(
            text.contains("Not measured: AgentKprobe (kprobe): refused"),
            "{text}"
        );
    }

    #[test]
    fn no_ratio_without_bpftrace_and_no_report_without_a_baseline() {
        let samples = vec![
            sample(Peer::None, "—", 5000.0, 300.0),
            sample(Peer::Agent, "fentry", 5200.0, 300.0),
        ];
        let text = report("6.12", &samples, &[]).expect("report");
        assert!(text.contains("| fentry | +200 | 30 | +230 | — |"), "{text}");
        assert!(text.contains("was not measured in this guest"), "{text}");
        assert!(!text.contains("× on an open"), "{text}");
        assert!(report("6.12", &samples[1..], &[]).is_err());
    }
}
