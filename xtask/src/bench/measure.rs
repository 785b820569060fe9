//! What the probe benchmark measures with: the opener loop, CPU placement, statistics over
//! rounds, a process's CPU time and memory, and the kernel's own BPF run-time counters.

use std::ffi::CString;
use std::io::Write as _;
use std::process::Command;
use std::time::Instant;

use anyhow::Context;

/// Where the opener and the tracer run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Placement {
    /// The opener alone on CPU 1, the tracer (all its threads) on CPU 0: the probe's own cost
    /// on the opener's CPU, without the tracer's user space competing for it.
    Pinned,
    /// Both wherever the scheduler puts them, as in production.
    Unpinned,
}

impl Placement {
    pub const ALL: [Placement; 2] = [Placement::Pinned, Placement::Unpinned];

    pub fn name(self) -> &'static str {
        match self {
            Placement::Pinned => "pinned",
            Placement::Unpinned => "unpinned",
        }
    }

    /// The tracer's CPUs, as a taskset list.
    pub fn tracer_cpus(self) -> String {
        match self {
            Placement::Pinned => "0".to_owned(),
            Placement::Unpinned => format!("0-{}", cpu_count() - 1),
        }
    }

    /// Moves the calling thread (the opener) to its CPUs.
    pub fn place_opener(self) {
        match self {
            Placement::Pinned => pin_to(&[1]),
            Placement::Unpinned => pin_to(&(0..cpu_count()).collect::<Vec<_>>()),
        }
    }
}

/// CPUs online. Not `available_parallelism()`: that honours the calling thread's affinity, which
/// the benchmark itself narrows to place the opener.
pub fn cpu_count() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).ok().filter(|n| *n > 0).unwrap_or(1)
}

/// Restricts the calling thread to `cpus`.
pub fn pin_to(cpus: &[usize]) {
    // SAFETY: cpu_set_t is plain data, zeroed then filled through the libc macros.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

pub fn open_close(path: &CString, n: u64) {
    for _ in 0..n {
        // SAFETY: a valid path; the fd is closed at once.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd >= 0 {
                libc::close(fd);
            }
        }
    }
}

/// What one open+close cost, in ns: the opener's wall-clock time; the CPU time of the opener's
/// thread (user + kernel: where the probe's programs run), which other work on a shared machine
/// barely changes, unlike the wall clock; and the CPU time of the tracer's process (its
/// reader), wherever it ran.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cost {
    pub wall: f64,
    pub opener_cpu: f64,
    pub tracer_cpu: f64,
}

/// `n` getppid(2) calls: a syscall with no work of its own, which no tracer here records (the raw
/// sys_exit programs run at its exit and return).
pub fn other_syscalls(n: u64) {
    for _ in 0..n {
        // SAFETY: getppid takes no arguments and cannot fail. Made through syscall(2), so that no
        // libc cache answers it.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
}

/// What an open+close and a getppid(2) cost right now, in ns: the fastest of 4 short blocks each
/// (about 40 ms in all), for turns that alternate a tracer with none.
pub fn quick_cost(path: &CString) -> (f64, f64) {
    const OPENS: u64 = 5_000;
    const OTHERS: u64 = 20_000;
    open_close(path, OPENS / 10);
    (
        fastest_of_4(OPENS, &|n| open_close(path, n)),
        fastest_of_4(OTHERS, &other_syscalls),
    )
}

/// ns per op of the fastest of 4 blocks of `n` ops of `work`: a preemption or a short slow spell
/// of the machine drops out.
pub fn fastest_of_4(n: u64, work: &dyn Fn(u64)) -> f64 {
    let ns = (0..4)
        .map(|_| {
            let started = Instant::now();
            work(n);
            started.elapsed().as_nanos()
        })
        .min()
        .unwrap_or_default();
    ns as f64 / n as f64
}

/// CPU time of the calling thread.
fn thread_cpu_ns() -> u64 {
    // SAFETY: clock_gettime writes into the zeroed timespec.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// CPU time of every thread of `pid` (schedstat's first field: ns on a CPU), 0 if it is gone.
pub fn process_cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Blocks per measurement: the fastest block stands for the measurement, so that preemptions
/// and short slow spells of a shared machine drop out of it.
const BLOCKS: u64 = 8;

/// The cost of one open+close over `ops` of them (in `BLOCKS` blocks, after a tenth as many to
/// warm up): the opener's wall clock and CPU of its fastest block, and the tracer's CPU over all
/// of them (a reader works in bursts, not per block).
pub fn cost_per_open(path: &CString, ops: u64, tracer: Option<u32>) -> Cost {
    open_close(path, ops / 10);
    let block = (ops / BLOCKS).max(1);
    let tracer_cpu = || tracer.map_or(0, process_cpu_ns);
    let tracer0 = tracer_cpu();
    let mut best: Option<(u128, u64)> = None;
    for _ in 0..BLOCKS {
        let (started, cpu0) = (Instant::now(), thread_cpu_ns());
        open_close(path, block);
        let (wall, cpu) = (started.elapsed().as_nanos(), thread_cpu_ns().saturating_sub(cpu0));
        if best.is_none_or(|(w, _)| wall < w) {
            best = Some((wall, cpu));
        }
    }
    let tracer1 = tracer_cpu();
    let (wall, cpu) = best.unwrap_or_default();
    let per_op = |ns: f64, n: u64| ns / n as f64;
    Cost {
        wall: per_op(wall as f64, block),
        opener_cpu: per_op(cpu as f64, block),
        tracer_cpu: per_op(tracer1.saturating_sub(tracer0) as f64, block * BLOCKS),
    }
}

/// Set to run fewer (or more) rounds than a benchmark's default, e.g. while changing the probe.
pub const ROUNDS_ENV: &str = "SPLITSCOPE_BENCH_ROUNDS";

/// The rounds to run: `ROUNDS_ENV` if set (a positive number), else `default`.
pub fn rounds(default: usize) -> anyhow::Result<usize> {
    match std::env::var(ROUNDS_ENV) {
        Ok(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .with_context(|| format!("{ROUNDS_ENV}={n}: want a positive number")),
        Err(_) => Ok(default),
    }
}

/// The file the opener opens: a run's own (removed when the file handle is dropped, however the
/// run ends), its random suffix of a fixed length so that the path's length, which the
/// full-record variants copy, is the same from run to run.
pub fn file_to_open() -> anyhow::Result<(tempfile::NamedTempFile, CString)> {
    let mut file = tempfile::Builder::new()
        .prefix("splitscope-bench-open.")
        .rand_bytes(6)
        .tempfile()
        .context("creating the file the opener opens")?;
    file.write_all(b"x")?;
    let path = CString::new(file.path().to_string_lossy().as_bytes())?;
    Ok((file, path))
}

/// The median and the range of a set of measurements.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// The first and third quartiles (nearest rank: the smallest value with at least a quarter,
    /// or three quarters, of the values at or below it).
    pub q1: f64,
    pub q3: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Self {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        let rank = |q: usize| {
            (n * q)
                .div_ceil(4)
                .checked_sub(1)
                .and_then(|i| sorted.get(i))
                .copied()
                .unwrap_or(f64::NAN)
        };
        Self {
            median,
            min: sorted.first().copied().unwrap_or(f64::NAN),
            max: sorted.last().copied().unwrap_or(f64::NAN),
            q1: rank(1),
            q3: rank(3),
        }
    }
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised comm: state is field 3; utime 14, stime 15.
    let after = &stat[stat.rfind(')').context("malformed stat")? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

pub fn status_kib(pid: u32, key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{key} in /proc/{pid}/status"))
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// bpf(2) command BPF_ENABLE_STATS and its only statistic, BPF_STATS_RUN_TIME (linux/bpf.h).
const BPF_ENABLE_STATS: libc::c_long = 32;
const BPF_STATS_RUN_TIME: u32 = 0;

/// The kernel's per-program run-time accounting, on while this lives. It holds the descriptor of
/// bpf(BPF_ENABLE_STATS) rather than writing kernel.bpf_stats_enabled: the kernel turns the
/// accounting off when the last such descriptor closes, so a benchmark killed half-way leaves
/// every BPF program on the machine as cheap as it found it, and two benchmarks at once do not
/// restore each other's setting.
pub struct BpfStats {
    _enabled: std::os::fd::OwnedFd,
}

impl BpfStats {
    pub fn enable() -> anyhow::Result<Self> {
        // union bpf_attr's enable_stats member: one u32, the statistic; the rest must be zero.
        let attr: [u32; 2] = [BPF_STATS_RUN_TIME, 0];
        // SAFETY: bpf(2) reads size_of_val(&attr) bytes from a live, initialised buffer.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_ENABLE_STATS,
                attr.as_ptr(),
                std::mem::size_of_val(&attr),
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error())
                .context("bpf(BPF_ENABLE_STATS): the kernel's run-time accounting (Linux >= 5.8, as root)");
        }
        let fd = i32::try_from(fd).context("bpf(BPF_ENABLE_STATS) returned no descriptor")?;
        // SAFETY: the kernel just returned this descriptor, and nothing else owns it.
        Ok(Self {
            _enabled: unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) },
        })
    }

    /// (run time ns, runs) summed over the BPF programs that process `pid` holds, from the
    /// `/proc/PID/fdinfo` of its program descriptors.
    pub fn of_process(&self, pid: u32) -> anyhow::Result<(u64, u64)> {
        let mut total = (0, 0);
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).with_context(|| format!("/proc/{pid}/fd"))?;
        for fd in fds.flatten() {
            let is_program =
                std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == "anon_inode:bpf-prog");
            if !is_program {
                continue;
            }
            let info =
                std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy()))
                    .unwrap_or_default();
            let field = |key: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            total.0 += field("run_time_ns:");
            total.1 += field("run_cnt:");
        }
        Ok(total)
    }
}

/// ns per run between two `BpfStats::of_process` readings; `None` if nothing ran.
pub fn ns_per_run(before: (u64, u64), after: (u64, u64)) -> Option<f64> {
    let runs = after.1.saturating_sub(before.1);
    (runs > 0).then(|| after.0.saturating_sub(before.0) as f64 / runs as f64)
}

/// The tracing BPF programs loaded on this machine now (id, type, name): at the start of the
/// benchmark, anything but ours is another tool whose cost every open pays, baseline included.
pub fn tracing_programs() -> Vec<String> {
    let Ok(out) = Command::new("bpftool").args(["-j", "prog", "show"]).output() else {
        return Vec::new();
    };
    let programs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    programs
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            matches!(
                p["type"].as_str(),
                Some("tracepoint" | "kprobe" | "raw_tracepoint" | "tracing" | "perf_event")
            )
        })
        .map(|p| {
            format!(
                "{} ({} {})",
                p["id"],
                p["type"].as_str().unwrap_or("?"),
                p["name"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_median_and_range() {
        assert_eq!(
            Spread::of(&[5.0, 1.0, 3.0]),
            Spread {
                median: 3.0,
                min: 1.0,
                max: 5.0,
                q1: 1.0,
                q3: 5.0,
            }
        );
        assert_eq!(Spread::of(&[4.0, 1.0, 3.0, 2.0]).median, 2.5);
        let eight = Spread::of(&[8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]);
        assert_eq!((eight.q1, eight.q3), (2.0, 6.0));
        let forty: Vec<f64> = (1..=40).map(f64::from).collect();
        let s = Spread::of(&forty);
        assert_eq!((s.q1, s.q3), (10.0, 30.0));
        assert!(Spread::of(&[]).q1.is_nan());
        assert!(Spread::of(&[]).median.is_nan());
    }

    #[test]
    fn ns_per_run_is_the_time_over_the_runs_between_two_readings() {
        assert_eq!(ns_per_run((1_000, 10), (6_000, 110)), Some(50.0));
        assert_eq!(ns_per_run((1_000, 10), (1_000, 10)), None);
    }
}
