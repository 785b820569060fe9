//! Loads the probe, attaches the first candidate whose start-up self-test sees opens, and hands
//! out the event stream and counters.

use std::collections::HashSet;
use std::ffi::CString;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aya::maps::{Array, CgroupArray, MapData, PerCpuArray, RingBuf};
use aya::programs::fexit::FExitLinkId;
use aya::programs::kprobe::KProbeLinkId;
use aya::programs::tp_btf::BtfTracePointLinkId;
use aya::programs::trace_point::TracePointLinkId;
use aya::programs::{BtfTracePoint, FExit, KProbe, TracePoint};
use aya::{Btf, Ebpf, EbpfLoader};

use crate::batch::BatchMap;
use crate::event::{OpenEvent, RecordKind};
use crate::facts::SystemFacts;
use crate::filters::{FilterError, Filters};
use crate::kretprobe_missed::{self, MissedCounter};
use crate::plan::{self, AttachMode, Attacher, Attempt, Candidate, PlanError, SelfTest, Tracepoints};
use crate::preflight::{self, PreflightError};
use crate::recursion_missed::RecursionMisses;
use crate::stream::EventStream;

/// The compiled probe (build.rs → OUT_DIR), aligned as the ELF parser needs.
pub static PROBE_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fileopen.bpf.o"));

/// How the per-syscall tracepoints (`syscalls:sys_exit_<name>`) get an open's arguments; the raw
/// `sys_exit` tracepoint is handed the saved registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TracepointArgs {
    /// Saved registers where the kernel has bpf_task_pt_regs (>= 5.15), else enter+exit.
    #[default]
    Auto,
    /// One program on sys_exit_*, arguments from the task's saved user registers.
    SavedRegs,
    /// sys_enter_* keeps the arguments in a hash map, sys_exit_* emits (slower: one map
    /// update, lookup and delete per open).
    EnterExit,
}

/// How the probe reads the comm and cgroup of the task that opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TaskFields {
    /// Straight from the task's BTF where the kernel has bpf_get_current_task_btf (>= 5.11),
    /// else through helpers.
    #[default]
    Auto,
    /// Through the helpers bpf_get_current_comm and bpf_get_current_cgroup_id (any kernel).
    Helpers,
}

impl TaskFields {
    /// Whether the probe reads the task on the running kernel: a mainline kernel of 5.11 or
    /// later always has bpf_get_current_task_btf.
    pub fn reads_task(self) -> bool {
        self == Self::Auto && crate::facts::kernel_version().is_some_and(|v| v >= (5, 11))
    }
}

/// Benchmarks only: where the probe's tracepoint program (saved-register arguments) stops, to
/// measure what each part of an open's cost is worth (`cargo xtask bench-probe`). The start-up
/// self-test's own opens always get normal records, so the probe still proves it sees opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CostVariant {
    /// The real program.
    #[default]
    Normal,
    /// Return at once: the cost of the tracepoint and of running an (almost) empty program.
    ReturnAtOnce,
    /// Bump a per-CPU counter, as bpftrace's `count()` does.
    PerCpuCount,
    /// Reserve and submit a compact record of constants: the ring buffer's own cost.
    ConstantRecord,
    /// Full records without copying the path: the record size and arguments, not the path.
    FullWithoutPath,
    /// A compact record of its own per open in the ring, not batched: what batching saves.
    Unbatched,
    /// Compact records into the CPU's batch as usual, but the full batch never into the ring:
    /// what moving the records to the reader through the ring costs. The reader counts every
    /// such batch as lost.
    BatchUnsent,
}

impl CostVariant {
    /// The probe's `cost_variant` value (COST_* in fileopen.bpf.c).
    fn raw(self) -> u32 {
        match self {
            Self::Normal => 0,
            Self::ReturnAtOnce => 1,
            Self::PerCpuCount => 2,
            Self::ConstantRecord => 3,
            Self::FullWithoutPath => 4,
            Self::Unbatched => 5,
            Self::BatchUnsent => 6,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ProbeConfig {
    pub attach: AttachMode,
    /// Overrides the kprobe target choice.
    pub kprobe_target: Option<String>,
    /// Ring buffer bytes: a power of two and a multiple of the page size.
    pub ring_size: u32,
    pub filters: Filters,
    /// How long the start-up self-test waits for its own opens per candidate.
    pub self_test_timeout: Duration,
    /// Which syscall tracepoints tracepoint mode may use.
    pub tracepoints: Tracepoints,
    pub tracepoint_args: TracepointArgs,
    /// Which records the probe writes. A path-prefix filter reads every path, so it makes them
    /// full whatever this says.
    pub records: RecordKind,
    pub task_fields: TaskFields,
    /// Benchmarks only; `Normal` otherwise.
    pub cost_variant: CostVariant,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            attach: AttachMode::Auto,
            kprobe_target: None,
            ring_size: 4 * 1024 * 1024,
            filters: Filters::default(),
            self_test_timeout: Duration::from_secs(1),
            tracepoints: Tracepoints::PerSyscall,
            tracepoint_args: TracepointArgs::Auto,
            records: RecordKind::Compact,
            task_fields: TaskFields::Auto,
            cost_variant: CostVariant::Normal,
        }
    }
}

/// Which attach points are active, and how the choice was made.
#[derive(Clone, Debug)]
pub struct AttachInfo {
    /// `fentry`, `kprobe` or `tracepoint`.
    pub mode: &'static str,
    /// The traced function, or the tracepoints.
    pub target: String,
    /// Every attached point, e.g. `kprobe:do_sys_openat2`, `kretprobe:do_sys_openat2`. With
    /// compact records the entry points, which only carry arguments for full records, are
    /// detached once the self-test passed.
    pub points: Vec<String>,
    /// Which records the probe writes.
    pub records: RecordKind,
    /// Whether comm and cgroup are read straight from the task (else through helpers).
    pub task_fields: bool,
    /// Whether opens the kretprobe missed are read from the kernel and counted as dropped
    /// (kprobe mode on Linux >= 6.7). Tracepoints miss none.
    pub counts_kretprobe_misses: bool,
    /// Candidates tried before this one, and why they were left.
    pub attempts: Vec<Attempt>,
    /// Candidates not tried at all, and why.
    pub skipped: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("--ring-size {size}: must be a power of two and a multiple of the page size ({page} bytes)")]
    RingSize { size: u32, page: u64 },
    #[error("loading the BPF object failed (kernel >= 5.8 with BTF needed)")]
    Load(#[source] aya::EbpfError),
    #[error("the BPF object has no {0}")]
    Missing(&'static str),
    #[error("BPF map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error(
        "no attach point passed the start-up self-test (the probe must see its own test opens):\n  {}{}",
        .attempts.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "),
        .hint.as_deref().map(|h| format!("\n{h}")).unwrap_or_default()
    )]
    SelfTest {
        attempts: Vec<Attempt>,
        /// What on this machine likely refused them.
        hint: Option<String>,
    },
    #[error("--cgroup {path}: cannot open it for the probe: {source}")]
    CgroupOpen {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the event stream was already taken")]
    StreamTaken,
    #[error("cannot read {what}: {source}")]
    ReadFile {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot watch the ring buffer: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot count the possible CPUs ({what}): {source}")]
    Cpus {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot map the probe's batches of compact records (mmap of an mmap-able array, Linux >= 5.5): {0}"
    )]
    MapBatches(#[source] std::io::Error),
}

enum LinkId {
    Fexit(FExitLinkId),
    Kprobe(KProbeLinkId),
    Tracepoint(TracePointLinkId),
    BtfTracepoint(BtfTracePointLinkId),
}

struct Link {
    program: &'static str,
    id: LinkId,
    /// e.g. `kretprobe:do_sys_openat2`.
    point: String,
    /// An entry point that only keeps arguments for the exit's full records.
    args_only: bool,
    /// Where the kernel counts the opens this point missed.
    missed: Option<Missed>,
}

/// The kernel's count of opens an attached point missed.
enum Missed {
    /// A kretprobe's, beyond its instances (Linux >= 6.7). It holds the link too, so it goes
    /// with it.
    Kretprobe(MissedCounter),
    /// A fexit program's, skipped while it was preempted on the same CPU (Linux >= 5.12).
    Recursion(RecursionMisses),
}

impl Missed {
    fn missed(&self) -> Result<u64, ProbeError> {
        match self {
            Self::Kretprobe(counter) => counter.missed().map_err(|source| ProbeError::ReadFile {
                what: "the kretprobe's count of missed calls (bpf link info)",
                source,
            }),
            Self::Recursion(counter) => counter.missed().map_err(|source| ProbeError::ReadFile {
                what: "the fexit program's count of missed runs (bpf program info)",
                source,
            }),
        }
    }
}

/// A loaded, attached probe. Dropping it detaches every point and unloads the programs.
pub struct Probe {
    ebpf: Ebpf,
    ring: Option<RingBuf<MapData>>,
    batches: Option<MapData>,
    cpus: usize,
    /// Records of batches the ring had no room for, as the stream found them missing.
    skipped: Arc<AtomicU64>,
    drops: PerCpuArray<MapData, u64>,
    links: Vec<Link>,
    info: AttachInfo,
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

fn check_ring_size(size: u32) -> Result<(), ProbeError> {
    let page = page_size();
    if size == 0 || !size.is_power_of_two() || u64::from(size) % page != 0 {
        return Err(ProbeError::RingSize { size, page });
    }
    Ok(())
}

impl Probe {
    /// Checks privileges, BTF and tracefs, loads the probe with the filters as load-time
    /// constants, and attaches the first candidate of the attach plan whose self-test sees opens.
    /// Blocks for up to `self_test_timeout` per candidate that stays silent.
    pub fn load(config: ProbeConfig) -> Result<Self, ProbeError> {
        check_ring_size(config.ring_size)?;
        let globals = config.filters.globals()?;
        preflight::check_privileges()?;
        preflight::check_btf()?;
        let tracefs = match preflight::ensure_tracefs() {
            Ok(path) => Some(path),
            // Fexit needs no tracefs, and kprobes attach through the PMU without it: go on where
            // either is an option.
            Err(err)
                if config.attach == AttachMode::Fentry
                    || (config.attach != AttachMode::Tracepoint
                        && std::path::Path::new(crate::facts::KPROBE_PMU_TYPE).exists()) =>
            {
                tracing::warn!("{err}");
                None
            }
            Err(err) => return Err(err.into()),
        };
        preflight::raise_memlock();

        let facts = SystemFacts::new(tracefs);
        // Pairing sys_enter with sys_exit is a way of the per-syscall tracepoints only.
        let tracepoints = match config.tracepoint_args {
            TracepointArgs::EnterExit => Tracepoints::PerSyscall,
            _ => config.tracepoints,
        };
        let plan = plan::plan(
            config.attach,
            config.kprobe_target.as_deref(),
            tracepoints,
            &facts,
        )?;
        for why in &plan.skipped {
            tracing::info!("not trying {why}");
        }

        // Force a wakeup at every eighth of the ring that fills up unread (a power of two, as the
        // probe's mask needs, and more than a record); the reader's timer drains the rest.
        let wakeup_bytes: u64 = (u64::from(config.ring_size) / 8).max(512);
        let records = if globals.targ_prefix_len > 0 {
            RecordKind::Full // the path filter reads every path anyway
        } else {
            config.records
        };
        let record_paths = u32::from(records == RecordKind::Full);
        let cost_variant = config.cost_variant.raw();
        let task_fields = config.task_fields.reads_task();
        let task_fields_raw = u32::from(task_fields);
        let cpus = aya::util::nr_cpus().map_err(|(what, source)| ProbeError::Cpus {
            what: what.to_owned(),
            source,
        })?;
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("events", config.ring_size)
            .map_max_entries("batches", u32::try_from(cpus).unwrap_or(u32::MAX))
            .override_global("targ_tgid", &globals.targ_tgid, true)
            .override_global("targ_cgroup_set", &globals.targ_cgroup_set, true)
            .override_global("targ_comm_set", &globals.targ_comm_set, true)
            .override_global("targ_comm", &globals.targ_comm, true)
            .override_global("targ_prefix_len", &globals.targ_prefix_len, true)
            .override_global("targ_prefix", &globals.targ_prefix, true)
            .override_global("targ_failed_only", &globals.targ_failed_only, true)
            .override_global("wakeup_bytes", &wakeup_bytes, true)
            .override_global("record_paths", &record_paths, true)
            .override_global("task_fields", &task_fields_raw, true)
            .override_global("cost_variant", &cost_variant, true)
            .load(PROBE_OBJECT)
            .map_err(ProbeError::Load)?;

        let ring_map = ebpf.take_map("events").ok_or(ProbeError::Missing("events map"))?;
        let mut ring = RingBuf::try_from(ring_map).map_err(|source| ProbeError::Map {
            name: "events",
            source,
        })?;
        let batches = match ebpf.take_map("batches") {
            Some(aya::maps::Map::Array(data)) => data,
            _ => return Err(ProbeError::Missing("batches map (an array)")),
        };
        let drops_map = ebpf.take_map("drops").ok_or(ProbeError::Missing("drops map"))?;
        let drops = PerCpuArray::try_from(drops_map).map_err(|source| ProbeError::Map {
            name: "drops",
            source,
        })?;

        if globals.targ_cgroup_set != 0
            && let Some(cgroup) = &config.filters.cgroup
        {
            set_cgroup_filter(&mut ebpf, &cgroup.path)?;
        }
        set_selftest(&mut ebpf, Some(SelftestTask::current()?))?;
        let mut attacher = KernelAttacher {
            ebpf: &mut ebpf,
            ring: &mut ring,
            links: Vec::new(),
            tracepoint_args: config.tracepoint_args,
            timeout: config.self_test_timeout,
        };
        let chosen = plan::choose(&plan, &mut attacher);
        let mut links = std::mem::take(&mut attacher.links);
        set_selftest(&mut ebpf, None)?;
        let (candidate, attempts) = chosen.map_err(|attempts| ProbeError::SelfTest {
            // Kprobes and tracepoints attach through perf events; fexit does not.
            hint: attempts
                .iter()
                .any(|a| !matches!(a.candidate, Candidate::Fexit { .. }))
                .then(preflight::perf_restriction)
                .flatten(),
            attempts,
        })?;
        if records == RecordKind::Compact {
            // Compact records are made at the exit alone; the entry points only served the
            // self-test's full records.
            let (mut entries, kept): (Vec<Link>, Vec<Link>) = links.into_iter().partition(|l| l.args_only);
            detach_links(&mut ebpf, &mut entries);
            links = kept;
        }
        let points = links.iter().map(|l| l.point.clone()).collect();
        let counts_kretprobe_misses = links
            .iter()
            .any(|l| matches!(l.missed, Some(Missed::Kretprobe(_))));
        for attempt in &attempts {
            tracing::warn!("left {attempt}");
        }
        let info = AttachInfo {
            mode: candidate.mode(),
            target: candidate.target(),
            points,
            records,
            task_fields,
            counts_kretprobe_misses,
            attempts,
            skipped: plan.skipped,
        };
        Ok(Self {
            ebpf,
            ring: Some(ring),
            batches: Some(batches),
            cpus,
            skipped: Arc::default(),
            drops,
            links,
            info,
        })
    }

    pub fn attach_info(&self) -> &AttachInfo {
        &self.info
    }

    /// The decoded event stream (once). Needs a tokio runtime. `drain_interval`: how often the
    /// reader looks at the ring without a wakeup (wakeups are batched).
    pub fn events(&mut self, drain_interval: Duration) -> Result<EventStream, ProbeError> {
        let (Some(ring), Some(batches)) = (self.ring.take(), self.batches.take()) else {
            return Err(ProbeError::StreamTaken);
        };
        let batches = BatchMap::new(batches, self.cpus).map_err(ProbeError::MapBatches)?;
        Ok(EventStream::new(
            ring,
            batches,
            drain_interval,
            self.skipped.clone(),
        )?)
    }

    /// Records the kernel could not deliver (ring buffer full, or no room to keep an open's
    /// arguments between entry and exit), summed over CPUs, and the opens the kretprobe missed
    /// where the kernel reports them (`AttachInfo::counts_kretprobe_misses`). Compact records
    /// lost with their batch are counted by the event stream as it finds them missing: when a
    /// later batch of the same CPU arrives, or a drain interval after it first missed them.
    pub fn dropped(&self) -> Result<u64, ProbeError> {
        let mut total = 0u64;
        for slot in 0..2u32 {
            let per_cpu = self.drops.get(&slot, 0).map_err(|source| ProbeError::Map {
                name: "drops",
                source,
            })?;
            total = per_cpu.iter().fold(total, |acc, v| acc.wrapping_add(*v));
        }
        for counter in self.links.iter().filter_map(|l| l.missed.as_ref()) {
            total = total.wrapping_add(counter.missed()?);
        }
        Ok(total.wrapping_add(self.skipped.load(Ordering::Relaxed)))
    }

    /// Detaches every point now (dropping the probe does the same).
    pub fn detach(mut self) {
        detach_links(&mut self.ebpf, &mut self.links);
        tracing::info!("probe detached");
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        detach_links(&mut self.ebpf, &mut self.links);
    }
}

/// The loader as the probe's `selftest` map names it (struct selftest_task in fileopen.bpf.c): its
/// tgid inside its own pid namespace and that namespace's identity. In a pod without hostPID the
/// kernel-wide tgid differs from `std::process::id()`, so a plain tgid would never match.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct SelftestTask {
    tgid: u32,
    pad: u32,
    pidns_dev: u64,
    pidns_ino: u64,
}

// SAFETY: plain old data, repr(C), no padding left implicit (pad is explicit), every bit
// pattern valid.
unsafe impl aya::Pod for SelftestTask {}

impl SelftestTask {
    fn current() -> Result<Self, ProbeError> {
        use std::os::unix::fs::MetadataExt;
        let ns = std::fs::metadata("/proc/self/ns/pid").map_err(|source| ProbeError::ReadFile {
            what: "/proc/self/ns/pid (the pid namespace the self-test identifies itself by)",
            source,
        })?;
        Ok(Self {
            tgid: std::process::id(),
            pad: 0,
            pidns_dev: ns.dev(),
            pidns_ino: ns.ino(),
        })
    }
}

/// Hands the probe the --cgroup filter's directory. The map keeps the cgroup itself, so the
/// descriptor is closed again at once.
fn set_cgroup_filter(ebpf: &mut Ebpf, path: &std::path::Path) -> Result<(), ProbeError> {
    let dir = std::fs::File::open(path).map_err(|source| ProbeError::CgroupOpen {
        path: path.to_path_buf(),
        source,
    })?;
    let map = ebpf
        .map_mut("targ_cgroup")
        .ok_or(ProbeError::Missing("targ_cgroup map"))?;
    let mut array = CgroupArray::try_from(map).map_err(|source| ProbeError::Map {
        name: "targ_cgroup",
        source,
    })?;
    array.set(0, dir, 0).map_err(|source| ProbeError::Map {
        name: "targ_cgroup",
        source,
    })
}

/// Marks the self-test as running (`Some`) or over (`None`).
fn set_selftest(ebpf: &mut Ebpf, task: Option<SelftestTask>) -> Result<(), ProbeError> {
    let map = ebpf
        .map_mut("selftest")
        .ok_or(ProbeError::Missing("selftest map"))?;
    let mut array: Array<&mut MapData, SelftestTask> =
        Array::try_from(map).map_err(|source| ProbeError::Map {
            name: "selftest",
            source,
        })?;
    array
        .set(0, task.unwrap_or_default(), 0)
        .map_err(|source| ProbeError::Map {
            name: "selftest",
            source,
        })
}

fn detach_links(ebpf: &mut Ebpf, links: &mut Vec<Link>) {
    for link in links.drain(..) {
        let name = link.program;
        let result = match link.id {
            LinkId::Fexit(id) => match ebpf.program_mut(name).map(<&mut FExit>::try_from) {
                Some(Ok(p)) => p.detach(id),
                _ => continue,
            },
            LinkId::Kprobe(id) => match ebpf.program_mut(name).map(<&mut KProbe>::try_from) {
                Some(Ok(p)) => p.detach(id),
                _ => continue,
            },
            LinkId::Tracepoint(id) => match ebpf.program_mut(name).map(<&mut TracePoint>::try_from) {
                Some(Ok(p)) => p.detach(id),
                _ => continue,
            },
            LinkId::BtfTracepoint(id) => match ebpf.program_mut(name).map(<&mut BtfTracePoint>::try_from) {
                Some(Ok(p)) => p.detach(id),
                _ => continue,
            },
        };
        if let Err(err) = result {
            tracing::warn!(program = name, error = %err, "detach failed");
        }
    }
}

/// Where the kernel reports them (Linux >= 6.7), a reader of the opens the attached kretprobe
/// misses, from its link (found by the program's id among this process's descriptors).
fn missed_counter(kretprobe: &KProbe) -> Option<MissedCounter> {
    if !kretprobe_missed::reported_by_kernel() {
        return None;
    }
    let found = kretprobe
        .info()
        .map_err(|e| e.to_string())
        .and_then(|program| MissedCounter::find(program.id()).map_err(|e| e.to_string()));
    match found {
        Ok(counter) => Some(counter),
        Err(err) => {
            tracing::warn!(
                "cannot read the kretprobe's count of missed opens, so they are not counted as dropped: {err}"
            );
            None
        }
    }
}

/// Attaches to the running kernel and runs the self-test against the real ring buffer.
struct KernelAttacher<'a> {
    ebpf: &'a mut Ebpf,
    ring: &'a mut RingBuf<MapData>,
    links: Vec<Link>,
    tracepoint_args: TracepointArgs,
    timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
enum AttachError {
    #[error("no program {0} in the object")]
    NoProgram(&'static str),
    /// With the causes (aya's own message for a failed system call leaves out its errno).
    #[error("{what}: {}", error_chain(source))]
    Program {
        what: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("reading the kernel's BTF (/sys/kernel/btf/vmlinux) for {what}: {}", error_chain(.source))]
    Btf {
        what: &'static str,
        #[source]
        source: aya::BtfError,
    },
    /// The kernel refused the fexit program itself, not something in it.
    #[error(
        "this kernel refuses fentry/fexit programs (EPERM loading {0}: it has no BPF trampolines, \
         e.g. CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS unset, or a lockdown or security policy \
         refuses tracing programs)"
    )]
    FentryRefused(&'static str),
}

/// An error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A fexit program the kernel did not load: refused as such (EPERM), or anything else.
fn fexit_load_error(program: &'static str) -> impl FnOnce(aya::programs::ProgramError) -> AttachError {
    move |err| match &err {
        aya::programs::ProgramError::LoadError { io_error, .. }
            if io_error.raw_os_error() == Some(libc::EPERM) =>
        {
            AttachError::FentryRefused(program)
        }
        _ => program_error(format!("loading {program}"))(err),
    }
}

fn program_error(what: impl Into<String>) -> impl FnOnce(aya::programs::ProgramError) -> AttachError {
    let what = what.into();
    move |source| AttachError::Program { what, source }
}

impl KernelAttacher<'_> {
    /// The object's program `name`, as the program type `T` it must be.
    fn program<T>(&mut self, name: &'static str) -> Result<&mut T, AttachError>
    where
        for<'p> &'p mut T: TryFrom<&'p mut aya::programs::Program, Error = aya::programs::ProgramError>,
    {
        self.ebpf
            .program_mut(name)
            .ok_or(AttachError::NoProgram(name))?
            .try_into()
            .map_err(program_error(name))
    }

    fn kprobe(&mut self, program: &'static str) -> Result<&mut KProbe, AttachError> {
        let p: &mut KProbe = self.program(program)?;
        if p.fd().is_err() {
            p.load().map_err(program_error(format!("loading {program}")))?;
        }
        Ok(p)
    }

    fn tracepoint(&mut self, program: &'static str) -> Result<&mut TracePoint, AttachError> {
        let p: &mut TracePoint = self.program(program)?;
        if p.fd().is_err() {
            p.load().map_err(program_error(format!("loading {program}")))?;
        }
        Ok(p)
    }

    fn attach_kprobes(&mut self, function: &str) -> Result<(), AttachError> {
        let entry = match function {
            "do_sys_open" => "kprobe_do_sys_open",
            _ => "kprobe_do_sys_openat2",
        };
        let id = self
            .kprobe(entry)?
            .attach(function, 0)
            .map_err(program_error(format!("kprobe on {function}")))?;
        self.links.push(Link {
            program: entry,
            id: LinkId::Kprobe(id),
            point: format!("kprobe:{function}"),
            args_only: true,
            missed: None,
        });
        let exit = self.kprobe("kretprobe_open")?;
        let id = exit
            .attach(function, 0)
            .map_err(program_error(format!("kretprobe on {function}")))?;
        let missed = missed_counter(exit).map(Missed::Kretprobe);
        self.links.push(Link {
            program: "kretprobe_open",
            id: LinkId::Kprobe(id),
            point: format!("kretprobe:{function}"),
            args_only: false,
            missed,
        });
        Ok(())
    }

    fn attach_tracepoint(
        &mut self,
        program: &'static str,
        name: String,
        args_only: bool,
    ) -> Result<(), AttachError> {
        let id = self
            .tracepoint(program)?
            .attach("syscalls", &name)
            .map_err(program_error(format!("tracepoint syscalls:{name}")))?;
        self.links.push(Link {
            program,
            id: LinkId::Tracepoint(id),
            point: format!("tracepoint:syscalls:{name}"),
            args_only,
            missed: None,
        });
        Ok(())
    }

    /// The raw sys_exit tracepoint: one program, typed by the kernel's BTF. It needs
    /// bpf_get_current_task_btf (Linux >= 5.11) whatever TaskFields says, so an older kernel
    /// refuses to load it and the per-syscall tracepoints are tried next.
    fn attach_raw_sys_exit(&mut self) -> Result<(), AttachError> {
        const PROGRAM: &str = "sys_exit_raw";
        let p: &mut BtfTracePoint = self.program(PROGRAM)?;
        if p.fd().is_err() {
            let btf = Btf::from_sys_fs().map_err(|source| AttachError::Btf {
                what: "the raw tracepoint",
                source,
            })?;
            p.load("sys_exit", &btf)
                .map_err(program_error(format!("loading {PROGRAM}")))?;
        }
        let id = p
            .attach()
            .map_err(program_error(format!("raw tracepoint {}", plan::RAW_SYS_EXIT)))?;
        self.links.push(Link {
            program: PROGRAM,
            id: LinkId::BtfTracepoint(id),
            point: format!("raw_tracepoint:{}", plan::RAW_SYS_EXIT),
            args_only: false,
            missed: None,
        });
        Ok(())
    }

    /// Fexit on `function`, typed by the kernel's BTF. A kernel without BPF trampolines refuses
    /// the program when it is loaded, with EPERM: that is named, and the walk goes on.
    fn attach_fexit(&mut self, function: &'static str) -> Result<(), AttachError> {
        const PROGRAM: &str = "fexit_do_sys_openat2";
        const CAN_ATTACH: &str = "fexit_can_attach";
        if self.program::<FExit>(PROGRAM)?.fd().is_err() {
            let btf = Btf::from_sys_fs().map_err(|source| AttachError::Btf {
                what: "fexit",
                source,
            })?;
            let probe = self.program::<FExit>(CAN_ATTACH)?;
            probe.load(function, &btf).map_err(fexit_load_error(CAN_ATTACH))?;
            probe
                .unload()
                .map_err(program_error(format!("unloading {CAN_ATTACH}")))?;
            self.program::<FExit>(PROGRAM)?
                .load(function, &btf)
                .map_err(fexit_load_error(PROGRAM))?;
        }
        let p = self.program::<FExit>(PROGRAM)?;
        let id = match p.attach() {
            Ok(id) => id,
            Err(err) => {
                // Loaded for nothing: not kept for the life of the probe.
                let _ = p.unload();
                return Err(program_error(format!("fexit on {function}"))(err));
            }
        };
        let counter = p
            .fd()
            .map_err(|e| e.to_string())
            .and_then(|fd| RecursionMisses::of(std::os::fd::AsFd::as_fd(fd)).map_err(|e| e.to_string()));
        let missed = match counter {
            Ok(counter) => Some(Missed::Recursion(counter)),
            Err(err) => {
                tracing::warn!(
                    "cannot read the fexit program's count of missed opens, so they are not counted as \
                     dropped: {err}"
                );
                None
            }
        };
        self.links.push(Link {
            program: PROGRAM,
            id: LinkId::Fexit(id),
            point: format!("fexit:{function}"),
            args_only: false,
            missed,
        });
        Ok(())
    }

    fn attach_tracepoints(&mut self, syscalls: &[&'static str]) -> Result<(), AttachError> {
        let saved_regs = match self.tracepoint_args {
            TracepointArgs::EnterExit => false,
            TracepointArgs::SavedRegs => {
                self.tracepoint("sys_exit_open_regs")?;
                true
            }
            TracepointArgs::Auto => match self.tracepoint("sys_exit_open_regs") {
                Ok(_) => true,
                Err(err) => {
                    tracing::info!(
                        "reading arguments from saved registers is not possible here ({err}); pairing \
                         sys_enter/sys_exit instead"
                    );
                    false
                }
            },
        };
        for syscall in syscalls {
            if saved_regs {
                self.attach_tracepoint("sys_exit_open_regs", format!("sys_exit_{syscall}"), false)?;
            } else {
                let enter: &'static str = match *syscall {
                    "open" => "sys_enter_open_args",
                    "openat" => "sys_enter_openat_args",
                    "openat2" => "sys_enter_openat2_args",
                    _ => "sys_enter_creat_args",
                };
                self.attach_tracepoint(enter, format!("sys_enter_{syscall}"), true)?;
                self.attach_tracepoint("sys_exit_open_paired", format!("sys_exit_{syscall}"), false)?;
            }
        }
        Ok(())
    }
}

impl Attacher for KernelAttacher<'_> {
    type Error = AttachError;

    fn attach(&mut self, candidate: &Candidate) -> Result<(), AttachError> {
        let result = match candidate {
            Candidate::Fexit { function } => self.attach_fexit(function),
            Candidate::Kprobe { function } => self.attach_kprobes(function),
            Candidate::RawSysExit { .. } => self.attach_raw_sys_exit(),
            Candidate::Tracepoints { syscalls } => self.attach_tracepoints(syscalls),
        };
        if result.is_err() {
            self.detach(candidate);
        }
        result
    }

    fn self_test(&mut self, candidate: &Candidate) -> Result<SelfTest, AttachError> {
        let syscalls: Vec<&'static str> = match candidate {
            Candidate::Fexit { .. } | Candidate::Kprobe { .. } => plan::OPEN_SYSCALLS.to_vec(),
            Candidate::RawSysExit { syscalls } | Candidate::Tracepoints { syscalls } => syscalls.clone(),
        };
        Ok(run_self_test(self.ring, &syscalls, self.timeout))
    }

    fn detach(&mut self, _candidate: &Candidate) {
        detach_links(self.ebpf, &mut self.links);
    }
}

/// Opens a path that cannot exist through each syscall, repeating every 200 ms, until the ring
/// shows every one of them or `timeout` passes. Other records in the ring predate the probe's
/// start and are discarded.
fn run_self_test(ring: &mut RingBuf<MapData>, syscalls: &[&'static str], timeout: Duration) -> SelfTest {
    let pid = std::process::id();
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir = format!("/.splitscope-selftest-{pid}-{nonce}");
    let mut expected: HashSet<&'static str> = syscalls.iter().copied().collect();
    let mut seen: HashSet<&'static str> = HashSet::new();
    let start = Instant::now();
    let mut next_round = start;
    let mut round = 0u32;
    loop {
        if Instant::now() >= next_round {
            for syscall in expected.clone() {
                let path = format!("{dir}-{round}/{syscall}");
                if open_missing(syscall, &path) == Some(libc::ENOSYS) {
                    expected.remove(syscall); // the kernel has no such syscall (openat2 < 5.6)
                }
            }
            round += 1;
            next_round += Duration::from_millis(200);
        }
        while let Some(item) = ring.next() {
            let Ok(event) = OpenEvent::decode(&item) else {
                continue;
            };
            // Matched by the unique path alone: the event's tgid is the kernel-wide one, which in
            // a pod without hostPID is not `std::process::id()`. The self-test's own opens get
            // full records whatever kind the probe makes for others.
            let Some(name) = event.filename() else {
                continue;
            };
            if !name.starts_with(dir.as_bytes()) {
                continue;
            }
            if let Some(s) = syscalls
                .iter()
                .find(|s| name.ends_with(format!("/{s}").as_bytes()))
            {
                seen.insert(s);
            }
        }
        if expected.iter().all(|s| seen.contains(s)) {
            return SelfTest::Passed;
        }
        if start.elapsed() >= timeout {
            let mut missed: Vec<&'static str> = syscalls
                .iter()
                .copied()
                .filter(|s| expected.contains(s) && !seen.contains(s))
                .collect();
            missed.sort_unstable();
            return SelfTest::Missed(missed);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Opens `path` (which must not exist) through `syscall`; returns the errno.
fn open_missing(syscall: &str, path: &str) -> Option<i32> {
    let c = CString::new(path).ok()?;
    match crate::raw_open::open_via(syscall, &c, libc::O_RDONLY, 0o600) {
        Ok(_fd) => None, // closed on drop; the path was meant not to exist
        Err(e) => e.raw_os_error(),
    }
}
