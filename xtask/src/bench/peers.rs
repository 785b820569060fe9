//! The tracers the benchmark's opener runs beside: the agent (and benchmark variants of its
//! probe), bpftrace `count()` and libbpf-tools opensnoop. Each starts on the CPUs it is given and
//! is stopped when dropped, or by the kernel if xtask dies first.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::run::root;

/// The agent's metrics address for this benchmark run: a port the kernel handed out free, so two
/// runs (or anything else on the host) never collide on a fixed one. Only one agent runs at a time.
fn agent_addr() -> &'static str {
    static ADDR: OnceLock<String> = OnceLock::new();
    ADDR.get_or_init(|| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.to_string())
            // No free port at all: let the agent's own bind error say so.
            .unwrap_or_else(|_| "127.0.0.1:0".to_string())
    })
}

/// How many times the usual start-up timeouts a tracer gets: 1 on the host, more in an emulated
/// guest, where the agent's start-up and bpftrace's compile run tens of times slower.
static PATIENCE: AtomicU32 = AtomicU32::new(1);

/// Waits `factor` times as long for every tracer to start from now on.
pub fn be_patient(factor: u32) {
    PATIENCE.store(factor.max(1), Ordering::Relaxed);
}

fn patience(usual: Duration) -> Duration {
    usual * PATIENCE.load(Ordering::Relaxed)
}

/// What runs beside the opener.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Peer {
    None,
    /// The agent as shipped: compact records, batched per CPU.
    Agent,
    Bpftrace,
    /// bpftrace with an empty action where `count()` attaches: its tracepoint alone.
    BpftraceEmpty,
    Opensnoop,
    /// Benchmark variants of the agent's probe (`--cost-variant`, `--records`), each adding one
    /// part of the cost of an open to the one before.
    TracepointOnly,
    PerCpuCount,
    /// The agent's records written into the CPU's batch, the batch never put into the ring.
    BatchUnsent,
    ConstantRecord,
    /// The agent with comm and cgroup read through helpers (what kernels before 5.11 get).
    Helpers,
    /// A compact record of its own per open in the ring, not batched.
    Unbatched,
    FullWithoutPath,
    /// Full records, with the path: what the agent wrote for every open before issue 10.
    Full,
    /// The agent on the raw sys_exit tracepoint, whose program runs at every syscall's exit.
    RawSysExit,
    /// The raw sys_exit tracepoint and a program that only picks out the opens.
    RawSysExitOnly,
    /// The agent made to take the syscall tracepoints, where `auto` would take fexit.
    AgentTracepoint,
    /// The agent made to take the kprobe pair (a lone kretprobe with compact records).
    AgentKprobe,
}

impl Peer {
    pub fn label(self) -> &'static str {
        match self {
            Peer::None => "no probe",
            Peer::Agent => "splitscope agent (compact records batched per CPU; as shipped)",
            Peer::Bpftrace => "bpftrace `count()` on sys_enter_openat",
            Peer::BpftraceEmpty => "bpftrace, an empty action on sys_enter_openat",
            Peer::Opensnoop => "libbpf-tools opensnoop (perf buffer, every open)",
            Peer::TracepointOnly => "the tracepoint and an empty program",
            Peer::PerCpuCount => "a per-CPU counter (what bpftrace `count()` does)",
            Peer::BatchUnsent => "the agent's records into the CPU's batch, the batch never into the ring",
            Peer::ConstantRecord => "reserve + submit a 32-byte record of constants",
            Peer::Helpers => "the agent, comm and cgroup through helpers (kernels before 5.11)",
            Peer::Unbatched => "a 32-byte compact record of its own per open (not batched)",
            Peer::FullWithoutPath => "a full 320-byte record without the path (arguments, time, uid)",
            Peer::Full => "a full record with the path (the agent before)",
            Peer::RawSysExit => {
                "the agent on the raw sys_exit tracepoint (its program at every syscall's exit)"
            }
            Peer::RawSysExitOnly => "the raw sys_exit tracepoint and a program that only picks out the opens",
            Peer::AgentTracepoint => "the agent in tracepoint mode (syscalls:sys_exit_*)",
            Peer::AgentKprobe => "the agent in kprobe mode (a kretprobe on the open path)",
        }
    }

    /// The agent's environment for this peer, or None if the peer is not the agent. The
    /// variants run in tracepoint mode, whose program the cost variants stop early, so that they
    /// are comparable with each other on any kernel; the agent as shipped picks its own mode.
    pub fn agent_env(self) -> Option<&'static [(&'static str, &'static str)]> {
        const TP: (&str, &str) = ("SPLITSCOPE_ATTACH", "tracepoint");
        Some(match self {
            Peer::Agent => &[],
            Peer::TracepointOnly => &[TP, ("SPLITSCOPE_COST_VARIANT", "return")],
            Peer::PerCpuCount => &[TP, ("SPLITSCOPE_COST_VARIANT", "percpu-count")],
            Peer::BatchUnsent => &[TP, ("SPLITSCOPE_COST_VARIANT", "batch-unsent")],
            Peer::ConstantRecord => &[TP, ("SPLITSCOPE_COST_VARIANT", "constant-record")],
            Peer::Helpers => &[TP, ("SPLITSCOPE_TASK_FIELDS", "helpers")],
            Peer::Unbatched => &[TP, ("SPLITSCOPE_COST_VARIANT", "unbatched")],
            Peer::FullWithoutPath => &[
                TP,
                ("SPLITSCOPE_RECORDS", "full"),
                ("SPLITSCOPE_COST_VARIANT", "full-without-path"),
            ],
            Peer::Full => &[TP, ("SPLITSCOPE_RECORDS", "full")],
            Peer::RawSysExit => &[TP, ("SPLITSCOPE_TRACEPOINTS", "raw-first")],
            Peer::RawSysExitOnly => &[
                TP,
                ("SPLITSCOPE_TRACEPOINTS", "raw-first"),
                ("SPLITSCOPE_COST_VARIANT", "return"),
            ],
            Peer::AgentTracepoint => &[TP],
            Peer::AgentKprobe => &[("SPLITSCOPE_ATTACH", "kprobe")],
            Peer::None | Peer::Bpftrace | Peer::BpftraceEmpty | Peer::Opensnoop => return None,
        })
    }
}

/// A running peer. Dropping it sends SIGTERM, waits up to 10 s, then SIGKILLs.
pub struct Running {
    child: Option<Child>,
    drain: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(drain) = self.drain.take() {
            let _ = drain.join();
        }
    }
}

/// `taskset -c CPUS PROGRAM`: taskset execs the program, so the child is the program itself.
/// PR_SET_PDEATHSIG: should xtask die without dropping its `Running`s, the kernel stops them.
fn on_cpus(cpus: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new("taskset");
    command.arg("-c").arg(cpus).arg(program);
    // SAFETY: only prctl(2), which is async-signal-safe, runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

pub fn agent_binary() -> PathBuf {
    root().join("target/release/splitscope")
}

/// Starts the agent on `cpus`; returns it once `/readyz` answers 200 (probe attached, self-test
/// passed), with the time that took.
pub fn start_agent(env: &[(&str, &str)], cpus: &str) -> anyhow::Result<(Running, Duration)> {
    let started = Instant::now();
    let child = on_cpus(cpus, agent_binary())
        .args(["agent", "--metrics-addr", agent_addr(), "--kubernetes", "off"])
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the agent")?;
    let mut running = Running {
        child: Some(child),
        drain: None,
    };
    let wait = patience(Duration::from_secs(20));
    let deadline = Instant::now() + wait;
    loop {
        if http_get("/readyz").is_ok_and(|r| r.starts_with("HTTP/1.1 200")) {
            return Ok((running, started.elapsed()));
        }
        if let Some(status) = running.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            bail!(
                "the agent exited before it was ready ({status}); run `{} agent --metrics-addr {} --kubernetes off` to see why",
                agent_binary().display(),
                agent_addr()
            );
        }
        if Instant::now() > deadline {
            bail!("the agent did not become ready within {wait:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Starts a tool whose stdout announces it is attached with a line containing `ready`.
fn start_tool(program: &str, args: &[&str], ready: &'static str, cpus: &str) -> anyhow::Result<Running> {
    let mut child = on_cpus(cpus, program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let stdout = child.stdout.take().context("tool stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let drain = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line.contains(ready) => {
                    let _ = tx.send(());
                    // Keep reading so the tool never blocks on a full pipe.
                    let mut sink = [0u8; 65536];
                    while reader.read(&mut sink).is_ok_and(|n| n > 0) {}
                    return;
                }
                Ok(_) => {}
            }
        }
    });
    let running = Running {
        child: Some(child),
        drain: Some(drain),
    };
    rx.recv_timeout(patience(Duration::from_secs(30)))
        .with_context(|| format!("{program} never printed {ready:?}"))?;
    Ok(running)
}

/// Starts `peer` on `cpus` (a taskset list) and returns once it is attached.
pub fn start(peer: Peer, cpus: &str) -> anyhow::Result<Running> {
    if let Some(env) = peer.agent_env() {
        let running = start_agent(env, cpus)?.0;
        if matches!(peer, Peer::RawSysExit | Peer::RawSysExitOnly) {
            // A kernel that refuses the raw tracepoint gets the per-syscall ones: a comparison of
            // the two would then compare one with itself.
            let info = agent_attach_info()?;
            if !info.contains("target=\"raw_syscalls:sys_exit\"") {
                bail!(
                    "{peer:?}: the agent did not attach to the raw sys_exit tracepoint (it needs Linux \
                     >= 5.11 with BTF): {info}"
                );
            }
        }
        return Ok(running);
    }
    Ok(match peer {
        Peer::Bpftrace => start_tool(
            "bpftrace",
            &["-e", "tracepoint:syscalls:sys_enter_openat { @c = count(); }"],
            "Attaching",
            cpus,
        )?,
        Peer::BpftraceEmpty => start_tool(
            "bpftrace",
            &["-e", "tracepoint:syscalls:sys_enter_openat { }"],
            "Attaching",
            cpus,
        )?,
        // opensnoop's stdio is block-buffered into a pipe: stdbuf makes its header line arrive.
        Peer::Opensnoop => start_tool("stdbuf", &["-oL", "/usr/sbin/opensnoop"], "PID", cpus)?,
        _ => Running {
            child: None,
            drain: None,
        },
    })
}

fn http_get(path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(agent_addr())?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    stream.read_to_string(&mut out)?;
    Ok(out)
}

/// The agent's `splitscope_probe_attach_info` line: which mode and target it attached.
pub fn agent_attach_info() -> anyhow::Result<String> {
    let body = http_get("/metrics")?;
    body.lines()
        .find(|l| l.starts_with("splitscope_probe_attach_info{"))
        .map(str::to_owned)
        .context("splitscope_probe_attach_info not in the agent's /metrics")
}

/// A counter of the running agent's /metrics.
pub fn agent_metric(name: &str) -> anyhow::Result<u64> {
    let body = http_get("/metrics")?;
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .with_context(|| format!("{name} not in the agent's /metrics"))
}
