//! `cargo xtask vm-test`: the fexit and kprobe paths, in Debian kernels booted under qemu.
//!
//! This machine's kernel has no kprobes and refuses fentry, so the agent's fentry and kprobe
//! modes are proven in guests: the
//! newest Debian 6.1 kernel (bookworm) and 6.12 (bookworm-backports), taken from Debian's
//! packages by pattern (point releases move), unpacked with `dpkg -x` into `target/vm-test/`.
//! A busybox initramfs loads the virtio/9p modules in dependency order (`modinfo -F depends`),
//! mounts this machine's `/` read-only over 9p, chroots into it and runs `splitscope self-test`
//! steps from the workspace's build. Each step's output and exit code come back over the serial
//! console and are checked here. TCG, not KVM (KVM guests hang on these machines).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::deps::{self, Set};
use crate::run::{cmd, root};

/// One Debian kernel to boot.
pub(crate) struct Kernel {
    pub(crate) label: &'static str,
    /// Regex-free package name test (`linux-image-6.1.0-N-amd64`, `linux-image-6.12.N+deb12-amd64`).
    matches: fn(&str) -> bool,
    /// From the bookworm-backports suite (a private apt list under target/), not the system's.
    backports: bool,
    /// What this kernel's steps must show beyond what every kernel's do: (step, text).
    expect: &'static [(&'static str, &'static str)],
    /// Added to the kernel command line.
    pub(crate) cmdline: &'static str,
}

fn is_61(name: &str) -> bool {
    name.strip_prefix("linux-image-6.1.0-")
        .and_then(|r| r.strip_suffix("-amd64"))
        .is_some_and(|abi| !abi.is_empty() && abi.bytes().all(|b| b.is_ascii_digit()))
}

fn is_612(name: &str) -> bool {
    name.strip_prefix("linux-image-6.12.")
        .and_then(|r| r.strip_suffix("-amd64"))
        .and_then(|r| r.split_once('+'))
        .is_some_and(|(patch, flavour)| {
            patch.bytes().all(|b| b.is_ascii_digit()) && !patch.is_empty() && !flavour.contains('-')
        })
}

pub(crate) const KERNELS: &[Kernel] = &[
    Kernel {
        label: "debian-6.1",
        matches: is_61,
        backports: false,
        // Linux < 6.7 does not report a kretprobe's misses: the loss is named, not hidden. Its
        // kernel code is not preempted (Debian's default, voluntary): fexit is never skipped.
        expect: &[
            (
                "kprobe-asleep",
                "this kernel does not report the misses (Linux < 6.7)",
            ),
            ("fentry-contend", " 0 dropped (mode=fentry"),
        ],
        cmdline: "",
    },
    Kernel {
        label: "debian-6.12-backports",
        matches: is_612,
        backports: true,
        // Booted with kernel code preemptible (`preempt=full`): the fexit program is preempted
        // and skipped for the other opener's opens, and those must show as dropped.
        expect: &[
            (
                "kprobe-asleep",
                "asleep: every open reported or counted as dropped",
            ),
            (
                "fentry-contend",
                "contend: opens the kernel ran without the probe were counted as dropped",
            ),
        ],
        cmdline: "preempt=full",
    },
];

/// A guest step: `splitscope self-test <args>`, whether it must succeed, text its output must
/// contain and text it must not.
struct Step {
    name: &'static str,
    /// What runs the binary, if not the guest's root shell itself (e.g. setpriv).
    under: &'static str,
    args: &'static str,
    succeeds: bool,
    expect: &'static [&'static str],
    absent: &'static [&'static str],
}

/// Root with only the capabilities deploy/agent/daemonset.yaml adds, as the agent runs in a pod
/// (a unit test below checks the two lists agree).
const POD_CAPABILITIES: &str = "setpriv --bounding-set=-all,+bpf,+perfmon,+sys_admin --inh-caps=-all";

const STEPS: &[Step] = &[
    // Auto mode takes fexit on do_sys_openat2 (both kernels have BPF trampolines) and counts
    // every open exactly from compact records (the agent's), with the pod's capabilities.
    Step {
        name: "auto",
        under: POD_CAPABILITIES,
        args: "--attach auto --expect-mode fentry --expect-target do_sys_openat2",
        succeeds: true,
        expect: &[
            "attached: mode=fentry target=do_sys_openat2 records=compact",
            "point: fexit:do_sys_openat2",
            "count: open ok = 5 (expected 5)",
            "count: openat2 ok = 5 (expected 5)",
            "count: creat ok = 5 (expected 5)",
            "count: openat ENOENT = 5 (expected 5)",
            "self-test: ok",
        ],
        absent: &["point: kprobe", "point: kretprobe", "tried:"],
    },
    // Full records (`trace`'s) from the same one program: fexit is handed the arguments too.
    Step {
        name: "fentry-full",
        under: "",
        args: "--attach fentry --records full --expect-target do_sys_openat2",
        succeeds: true,
        expect: &[
            "attached: mode=fentry target=do_sys_openat2 records=full",
            "point: fexit:do_sys_openat2",
            "count: openat ok = 5 (expected 5)",
            "count: creat ENOENT = 5 (expected 5)",
            "self-test: ok",
        ],
        absent: &["point: kprobe"],
    },
    // Any number of opens asleep in the kernel at once: a trampoline has no instances to run
    // out of, so every one is reported and none dropped.
    Step {
        name: "fentry-asleep",
        under: POD_CAPABILITIES,
        args: "--attach fentry --asleep 32",
        succeeds: true,
        expect: &[
            "asleep: 32 opens asleep at once, 32 to wake them",
            " 0 dropped (mode=fentry",
            "asleep: every open reported or counted as dropped",
            "self-test: ok",
        ],
        absent: &[],
    },
    // Two threads opening flat out on one CPU: where kernel code is preempted, the kernel skips
    // the fexit program for one while the other is preempted inside it, and counts the skips;
    // every open must be reported or counted as dropped. What each kernel must show is in
    // KERNELS.
    Step {
        name: "fentry-contend",
        under: POD_CAPABILITIES,
        args: "--attach fentry --contend 3",
        succeeds: true,
        expect: &[
            "contend: every open reported or counted as dropped",
            "self-test: ok",
        ],
        absent: &[],
    },
    // Kprobe mode picks the function the kernel really runs, and counts every open exactly from
    // compact records: after the self-test only the kretprobe stays attached.
    Step {
        name: "kprobe",
        under: "",
        args: "--attach kprobe --expect-mode kprobe --expect-target do_sys_openat2",
        succeeds: true,
        expect: &[
            "attached: mode=kprobe target=do_sys_openat2 records=compact",
            "point: kretprobe:do_sys_openat2",
            "count: open ok = 5 (expected 5)",
            "count: openat2 ok = 5 (expected 5)",
            "count: creat ok = 5 (expected 5)",
            "count: openat ENOENT = 5 (expected 5)",
            "self-test: ok",
        ],
        absent: &["point: kprobe:do_sys_openat2"],
    },
    // Full records (`trace`'s) through the kprobe pair: the entry keeps each open's arguments.
    Step {
        name: "kprobe-full",
        under: "",
        args: "--attach kprobe --records full --expect-mode kprobe --expect-target do_sys_openat2",
        succeeds: true,
        expect: &[
            "attached: mode=kprobe target=do_sys_openat2 records=full",
            "point: kprobe:do_sys_openat2",
            "point: kretprobe:do_sys_openat2",
            "count: openat ok = 5 (expected 5)",
            "count: creat ENOENT = 5 (expected 5)",
            "self-test: ok",
        ],
        absent: &[],
    },
    // Forced onto do_sys_open, which Debian's kernels inline into the syscalls: attaches, never
    // fires, and the self-test says so instead of reporting nothing forever.
    Step {
        name: "kprobe-do_sys_open",
        under: "",
        args: "--attach kprobe --kprobe-target do_sys_open",
        succeeds: false,
        expect: &["kprobe do_sys_open: attached but never fired", "inlined"],
        absent: &[],
    },
    // Auto told to start at do_sys_open (a kprobe target, so fexit is left out) detects the
    // silence and moves on to do_sys_openat2.
    Step {
        name: "auto-from-do_sys_open",
        under: "",
        args: "--attach auto --kprobe-target do_sys_open --expect-target do_sys_openat2",
        succeeds: true,
        expect: &[
            "skipped: fexit do_sys_openat2: --kprobe-target asks for kprobes",
            "tried: kprobe do_sys_open: attached but never fired",
            "attached: mode=kprobe target=do_sys_openat2",
            "self-test: ok",
        ],
        absent: &[],
    },
    // More opens asleep in the kernel at once than the kretprobe has instances for (10 in a
    // 2-CPU guest): each is reported or, where the kernel reports the kretprobe's misses
    // (Linux >= 6.7), counted as dropped. What each kernel must show is in KERNELS. Run with
    // only the capabilities the agent's DaemonSet grants, which the misses must be read with.
    Step {
        name: "kprobe-asleep",
        under: POD_CAPABILITIES,
        args: "--attach kprobe --expect-target do_sys_openat2 --asleep 32",
        succeeds: true,
        expect: &[
            "asleep: 32 opens asleep at once, 32 to wake them",
            "self-test: ok",
        ],
        absent: &[],
    },
    // Without CAP_SYS_ADMIN Debian's kernels (kernel.perf_event_paranoid 3, their patch) refuse
    // perf_event_open to CAP_PERFMON alone: no kprobe attaches, and the error names the sysctl.
    Step {
        name: "kprobe-without-cap-sys-admin",
        under: "setpriv --bounding-set=-all,+bpf,+perfmon --inh-caps=-all",
        args: "--attach kprobe",
        succeeds: false,
        expect: &[
            "Permission denied",
            "kernel.perf_event_paranoid is 3 and this process lacks CAP_SYS_ADMIN",
        ],
        absent: &[],
    },
    // Fexit goes through no perf event: CAP_BPF and CAP_PERFMON are all it needs.
    Step {
        name: "fentry-without-cap-sys-admin",
        under: "setpriv --bounding-set=-all,+bpf,+perfmon --inh-caps=-all",
        args: "--attach auto --expect-mode fentry",
        succeeds: true,
        expect: &["attached: mode=fentry", "self-test: ok"],
        absent: &[],
    },
    // The tracepoint fallback on these kernels too (saved-register arguments on 6.1 and 6.12),
    // which follows any number of opens asleep at once.
    Step {
        name: "tracepoint",
        under: "",
        args: "--attach tracepoint --expect-mode tracepoint --asleep 32",
        succeeds: true,
        expect: &[
            "count: open ok = 5 (expected 5)",
            "count: openat2 ENOENT = 5 (expected 5)",
            "asleep: 32 opens asleep at once, 32 to wake them",
            " 0 dropped (mode=tracepoint",
            "asleep: every open reported or counted as dropped",
            "self-test: ok",
        ],
        absent: &[],
    },
];

pub fn run() -> anyhow::Result<()> {
    deps::ensure(Set::Vm)?;
    cmd("cargo", &["build", "-p", "splitscope"])?;
    let binary = root().join("target/debug/splitscope");
    let cache = root().join("target/vm-test");
    std::fs::create_dir_all(&cache)?;
    let mut failures = Vec::new();
    for kernel in KERNELS {
        let started = Instant::now();
        match boot_and_check(kernel, &cache, &binary) {
            Ok(()) => eprintln!(
                "xtask: vm-test {}: passed in {:.1}s",
                kernel.label,
                started.elapsed().as_secs_f64()
            ),
            Err(err) => {
                eprintln!("xtask: vm-test {}: FAILED: {err:#}", kernel.label);
                failures.push(kernel.label);
            }
        }
    }
    if !failures.is_empty() {
        bail!("vm-test failed for {}", failures.join(", "));
    }
    eprintln!("xtask: vm-test passed ({} kernels)", KERNELS.len());
    Ok(())
}

fn boot_and_check(kernel: &Kernel, cache: &Path, binary: &Path) -> anyhow::Result<()> {
    let guest = Guest::prepare(kernel, "vm-test", cache, &[binary], &self_test_steps(binary)?)?;
    let log = cache.join(format!("{}.console.log", kernel.label));
    let mut attempt = 1;
    loop {
        let (console, qemu_exit) = guest.boot(Machine::TEST, Duration::from_secs(300))?;
        std::fs::write(&log, &console)?;
        let finished = console.contains(GUEST_DONE);
        let checked = check_steps(&console, kernel.expect).with_context(|| {
            format!(
                "guest console in {} (qemu {qemu_exit}); its last {TAIL_LINES} lines:\n{}",
                log.display(),
                tail(&console, TAIL_LINES)
            )
        });
        match checked {
            Err(err) if !finished && attempt < BOOTS => {
                eprintln!(
                    "xtask: vm-test {}: boot {attempt} of {BOOTS} FAILED, booting again: {err:#}",
                    kernel.label
                );
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Boots per kernel. A guest that dies before its last step (qemu killed on a crowded host, a
/// TCG hiccup) is booted once more, its first console printed; a step that ran and gave the wrong
/// answer is never retried, nor is a guest that dies twice.
const BOOTS: u32 = 2;
const GUEST_DONE: &str = "=== GUEST DONE";

/// How much of the guest's console a failure prints: a CI log may be all there is to read.
const TAIL_LINES: usize = 40;

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A Debian kernel ready to boot, with an initramfs that runs `steps` (shell lines) in the
/// host's root, read-only over 9p, and powers off.
pub(crate) struct Guest {
    vmlinuz: PathBuf,
    initramfs: PathBuf,
    cmdline: &'static str,
}

impl Guest {
    /// Fetches the kernel (once; cached under `cache`) and builds the initramfs, named after
    /// `purpose` so that vm-test and bench-vm never boot each other's. `binaries` are the
    /// programs the steps run, which the guest's scratch tmpfs must not hide.
    pub(crate) fn prepare(
        kernel: &Kernel,
        purpose: &str,
        cache: &Path,
        binaries: &[&Path],
        steps: &str,
    ) -> anyhow::Result<Self> {
        let unpacked = fetch_kernel(kernel, cache)?;
        let vmlinuz = first_file(&unpacked.join("boot"), "vmlinuz-")?;
        let modules = only_dir(&unpacked.join("lib/modules"))?;
        let name = format!("{}.{purpose}", kernel.label);
        let initramfs = cache.join(format!("{name}.initramfs.cpio.gz"));
        build_initramfs(
            &modules,
            binaries,
            &initramfs,
            &cache.join(format!("{name}.initramfs")),
            steps,
        )?;
        Ok(Self {
            vmlinuz,
            initramfs,
            cmdline: kernel.cmdline,
        })
    }

    /// Boots it and returns everything it printed on the serial console, and how qemu ended.
    pub(crate) fn boot(
        &self,
        machine: Machine,
        timeout: Duration,
    ) -> anyhow::Result<(String, std::process::ExitStatus)> {
        run_qemu(&self.vmlinuz, &self.initramfs, self.cmdline, machine, timeout)
    }
}

/// The emulated machine.
#[derive(Clone, Copy)]
pub(crate) struct Machine {
    cpus: u32,
    /// `-icount shift=0`: the guest's clocks advance one nanosecond per instruction it executes,
    /// so a time measured inside the guest is a count of instructions, the same however busy
    /// the host is. Single-threaded TCG (qemu requires it), so the guest gets one CPU.
    counted: bool,
}

impl Machine {
    /// The self-test steps: two CPUs, so that two openers can contend and a reader runs beside.
    const TEST: Machine = Machine {
        cpus: 2,
        counted: false,
    };
    /// The guest benchmark: one CPU, time counted in instructions.
    pub(crate) const COUNTED: Machine = Machine {
        cpus: 1,
        counted: true,
    };
}

/// Downloads (apt-get download) and unpacks (dpkg -x) the newest matching kernel package, once.
fn fetch_kernel(kernel: &Kernel, cache: &Path) -> anyhow::Result<PathBuf> {
    let apt_opts = if kernel.backports {
        backports_apt(cache)?
    } else {
        Vec::new()
    };
    let out = Command::new("apt-cache")
        .args(&apt_opts)
        .args(["pkgnames", "linux-image-6."])
        .output()
        .context("running apt-cache")?;
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|n| (kernel.matches)(n))
        .map(str::to_owned)
        .collect();
    names.sort_by_key(|n| version_key(n));
    let Some(package) = names.pop() else {
        bail!(
            "no {} kernel package in apt's lists (run `apt-get update`); looked for {}",
            kernel.label,
            if kernel.backports {
                "linux-image-6.12.N+deb12-amd64 in bookworm-backports"
            } else {
                "linux-image-6.1.0-N-amd64"
            }
        );
    };
    let unpacked = cache.join(&package);
    if unpacked.join("boot").is_dir() {
        return Ok(unpacked);
    }
    eprintln!("xtask: vm-test: fetching {package}");
    let downloads = cache.join("debs");
    std::fs::create_dir_all(&downloads)?;
    let status = Command::new("apt-get")
        .args(&apt_opts)
        .args(["download", "-q", &package])
        .current_dir(&downloads)
        .status()?;
    if !status.success() {
        bail!("apt-get download {package} failed");
    }
    let deb = std::fs::read_dir(&downloads)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
        })
        .with_context(|| format!("the downloaded {package} .deb"))?;
    let partial = cache.join(format!("{package}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    let status = Command::new("dpkg").arg("-x").arg(&deb).arg(&partial).status()?;
    if !status.success() {
        bail!("dpkg -x {} failed", deb.display());
    }
    std::fs::rename(&partial, &unpacked)?;
    let _ = std::fs::remove_file(&deb);
    Ok(unpacked)
}

/// Numeric parts of a package name, for "newest".
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// apt options for a private bookworm-backports list under target/vm-test/apt, using the URI
/// this machine's own Debian sources use (never a host name written into the project).
fn backports_apt(cache: &Path) -> anyhow::Result<Vec<String>> {
    let dir = cache.join("apt");
    let lists = dir.join("lists");
    std::fs::create_dir_all(lists.join("partial"))?;
    let uri = debian_uri()?;
    let sources = dir.join("backports.list");
    std::fs::write(&sources, format!("deb {uri} bookworm-backports main\n"))?;
    let opts = vec![
        format!("-o=Dir::Etc::SourceList={}", sources.display()),
        "-o=Dir::Etc::SourceParts=/nonexistent".to_owned(),
        format!("-o=Dir::State::Lists={}", lists.display()),
    ];
    let fresh = std::fs::metadata(&lists)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < Duration::from_secs(6 * 3600));
    let has_lists = std::fs::read_dir(&lists)?
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with("Packages"));
    if !(fresh && has_lists) {
        let status = Command::new("apt-get")
            .args(&opts)
            .args(["update", "-q"])
            .status()?;
        if !status.success() {
            bail!("apt-get update of bookworm-backports failed");
        }
    }
    Ok(opts)
}

/// The Debian archive URI from /etc/apt/sources.list.d/*.sources (deb822) or *.list / sources.list.
fn debian_uri() -> anyhow::Result<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("/etc/apt/sources.list.d")
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.push(PathBuf::from("/etc/apt/sources.list"));
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let name = file.to_string_lossy();
        if name.ends_with(".sources") {
            for stanza in text.split("\n\n") {
                let field = |key: &str| {
                    stanza
                        .lines()
                        .find_map(|l| l.strip_prefix(key))
                        .map(|v| v.trim().to_owned())
                };
                let suites = field("Suites:").unwrap_or_default();
                if suites.split_whitespace().any(|s| s == "bookworm")
                    && let Some(uris) = field("URIs:")
                    && let Some(uri) = uris.split_whitespace().next()
                {
                    return Ok(uri.to_owned());
                }
            }
        } else if name.ends_with(".list") {
            for line in text.lines() {
                let parts: Vec<&str> = line.split_whitespace().collect();
                if parts.first() == Some(&"deb") {
                    let rest: Vec<&str> = parts[1..]
                        .iter()
                        .copied()
                        .filter(|p| !p.starts_with('['))
                        .collect();
                    if rest.get(1) == Some(&"bookworm") {
                        return Ok(rest[0].to_owned());
                    }
                }
            }
        }
    }
    bail!("no Debian bookworm source in /etc/apt/sources.list(.d): cannot add bookworm-backports")
}

fn first_file(dir: &Path, prefix: &str) -> anyhow::Result<PathBuf> {
    std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .with_context(|| format!("no {prefix}* in {}", dir.display()))
}

fn only_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .with_context(|| format!("no kernel version directory in {}", dir.display()))
}

/// Every module file under `modules`, by normalised name (`-` → `_`).
fn module_files(modules: &Path) -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    let mut stack = vec![modules.join("kernel")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(name) = path.file_name().and_then(|n| n.to_str())
                && let Some(stem) = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
            {
                found.push((stem.replace('-', "_"), path));
            }
        }
    }
    found
}

/// The modules needed to mount 9p over virtio-pci, dependencies first. Modules without a file
/// are built into the kernel.
fn module_load_order(modules: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let files = module_files(modules);
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    fn visit(
        name: &str,
        files: &[(String, PathBuf)],
        seen: &mut HashSet<String>,
        order: &mut Vec<PathBuf>,
    ) -> anyhow::Result<()> {
        let name = name.replace('-', "_");
        if !seen.insert(name.clone()) {
            return Ok(());
        }
        let Some((_, path)) = files.iter().find(|(n, _)| *n == name) else {
            return Ok(()); // built in
        };
        let out = Command::new("modinfo")
            .args(["-F", "depends"])
            .arg(path)
            .output()
            .context("running modinfo")?;
        if !out.status.success() {
            bail!("modinfo -F depends {} failed", path.display());
        }
        for dep in String::from_utf8_lossy(&out.stdout)
            .trim()
            .split(',')
            .filter(|d| !d.is_empty())
        {
            visit(dep, files, seen, order)?;
        }
        order.push(path.clone());
        Ok(())
    }
    for root_module in ["virtio_pci", "9pnet_virtio", "9p"] {
        visit(root_module, &files, &mut seen, &mut order)?;
    }
    Ok(order)
}

/// Where the guest writes (`TMPDIR`, the steps script), and which of the host's `/tmp` and `/run`
/// get a tmpfs over them in the guest (the host's `/` is mounted read-only). A tmpfs must not
/// hide the binary under test: a checkout under /tmp (as a CI clone may be) keeps the host's
/// /tmp visible and writes go to /run instead.
fn guest_scratch(binaries: &[&Path]) -> (Vec<&'static str>, &'static str) {
    let hides_binary = |dir: &str| binaries.iter().any(|b| b.starts_with(dir));
    let mounts: Vec<&'static str> = ["/tmp", "/run"]
        .into_iter()
        .filter(|d| !hides_binary(d))
        .collect();
    let scratch = mounts.first().copied().unwrap_or("/dev/shm");
    (mounts, scratch)
}

/// `splitscope self-test` per step, its output between markers that `check_steps` reads.
fn self_test_steps(binary: &Path) -> anyhow::Result<String> {
    let binary = binary.to_str().context("non-UTF-8 binary path")?;
    let mut steps = String::new();
    for step in STEPS {
        writeln!(
            steps,
            "echo '=== BEGIN {name}'; {under} {binary} self-test {args} 2>&1; echo \"=== END {name} rc=$?\"",
            name = step.name,
            under = step.under,
            args = step.args
        )?;
    }
    Ok(steps)
}

fn build_initramfs(
    modules: &Path,
    binaries: &[&Path],
    out: &Path,
    staging: &Path,
    steps: &str,
) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(staging);
    for dir in ["bin", "dev", "proc", "sys", "host", "mods"] {
        std::fs::create_dir_all(staging.join(dir))?;
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .context("busybox not found (package busybox-static)")?;
    std::fs::copy(busybox, staging.join("bin/busybox"))?;

    let mut insmods = String::new();
    for (i, module) in module_load_order(modules)?.iter().enumerate() {
        let target = staging.join(format!("mods/{i:02}.ko"));
        let name = module.to_string_lossy();
        let decompress = if name.ends_with(".xz") {
            Some("xz")
        } else if name.ends_with(".zst") {
            Some("zstd")
        } else if name.ends_with(".gz") {
            Some("gzip")
        } else {
            None
        };
        match decompress {
            None => {
                std::fs::copy(module, &target)?;
            }
            Some(tool) => {
                let out = Command::new(tool)
                    .args(["-d", "-c"])
                    .arg(module)
                    .output()
                    .with_context(|| format!("running {tool} (to unpack {name})"))?;
                if !out.status.success() {
                    bail!("{tool} -d {name} failed");
                }
                std::fs::write(&target, out.stdout)?;
            }
        }
        writeln!(insmods, "insmod /mods/{i:02}.ko || echo \"insmod {name} failed\"")?;
    }

    let (tmpfs_mounts, scratch) = guest_scratch(binaries);
    let tmpfs_mounts: String = tmpfs_mounts
        .iter()
        .map(|dir| format!("mount -t tmpfs tmpfs /host{dir}\n"))
        .collect();
    let init = format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
{insmods}
mount -t 9p -o trans=virtio,version=9p2000.L,ro hostroot /host || echo "mounting the host's / over 9p failed"
mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t devtmpfs dev /host/dev
{tmpfs_mounts}mount -t tracefs nodev /host/sys/kernel/tracing
mount -t debugfs nodev /host/sys/kernel/debug
mount -t bpf bpf /host/sys/fs/bpf
mount -t cgroup2 cgroup2 /host/sys/fs/cgroup
ip link set lo up
cat > /host{scratch}/steps.sh <<'STEPS'
export RUST_LOG=warn NO_COLOR=1 TMPDIR={scratch}
echo "=== KERNEL $(uname -r)"
{steps}STEPS
chroot /host /bin/sh {scratch}/steps.sh
echo "{GUEST_DONE}"
poweroff -f
"#
    );
    let init_path = staging.join("init");
    std::fs::write(&init_path, init)?;
    std::fs::set_permissions(&init_path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;

    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{}' && find . | cpio -o -H newc --quiet | gzip -1 > '{}'",
            staging.display(),
            out.display()
        ))
        .status()?;
    if !status.success() {
        bail!("building the initramfs with cpio failed");
    }
    Ok(())
}

/// The qemu process: killed (and reaped) when this is dropped, on every way out of `run_qemu`;
/// and by the kernel if xtask itself dies first (PR_SET_PDEATHSIG).
struct Qemu(std::process::Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn run_qemu(
    vmlinuz: &Path,
    initramfs: &Path,
    cmdline: &str,
    machine: Machine,
    timeout: Duration,
) -> anyhow::Result<(String, std::process::ExitStatus)> {
    let mut command = Command::new("qemu-system-x86_64");
    if machine.counted {
        command.args(["-icount", "shift=0,sleep=off,align=off"]);
    }
    // SAFETY: only prctl(2), which is async-signal-safe, runs between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .args([
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-smp",
            &machine.cpus.to_string(),
            "-m",
            "2G",
            "-nographic",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .arg("-append")
        .arg(format!("console=ttyS0 panic=-1 quiet loglevel=3 {cmdline}"))
        .args([
            "-fsdev",
            "local,id=root,path=/,security_model=none,readonly=on,multidevs=remap",
            "-device",
            "virtio-9p-pci,fsdev=root,mount_tag=hostroot",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting qemu-system-x86_64 (package qemu-system-x86)")?;
    let mut qemu = Qemu(child);
    let mut stdout = qemu.0.stdout.take().context("qemu stdout")?;
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = qemu.0.try_wait()? {
            break status;
        }
        if started.elapsed() > timeout {
            drop(qemu);
            let out = reader.join().unwrap_or_default();
            bail!("the guest did not power off within {timeout:?}; console:\n{out}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Ok((reader.join().unwrap_or_default(), status))
}

fn check_steps(console: &str, kernel_expect: &[(&str, &str)]) -> anyhow::Result<()> {
    if !console.contains(GUEST_DONE) {
        let begun: Vec<&str> = STEPS
            .iter()
            .filter(|step| {
                let begin = format!("=== BEGIN {}", step.name);
                console.lines().any(|line| line.trim_end() == begin)
            })
            .map(|step| step.name)
            .collect();
        bail!(
            "the guest stopped before it finished its steps (steps begun: {})",
            if begun.is_empty() {
                "none".to_owned()
            } else {
                begun.join(", ")
            }
        );
    }
    if let Some(kernel) = console
        .lines()
        .find_map(|l| l.split_once("=== KERNEL ").map(|(_, k)| k.trim()))
    {
        eprintln!("xtask: vm-test: guest kernel {kernel}");
    }
    let mut problems = Vec::new();
    for step in STEPS {
        let before = problems.len();
        let begin = format!("=== BEGIN {}", step.name);
        let Some(start) = console.find(&begin) else {
            problems.push(format!("{}: never ran", step.name));
            continue;
        };
        let rest = &console[start + begin.len()..];
        let end_marker = format!("=== END {} rc=", step.name);
        let Some(end) = rest.find(&end_marker) else {
            problems.push(format!("{}: did not finish", step.name));
            continue;
        };
        let output = &rest[..end];
        let rc: i32 = rest[end + end_marker.len()..]
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(-1);
        if (rc == 0) != step.succeeds {
            problems.push(format!(
                "{}: exit code {rc}, expected {}\n{output}",
                step.name,
                if step.succeeds { "success" } else { "failure" }
            ));
        }
        let for_kernel = kernel_expect
            .iter()
            .filter(|(name, _)| *name == step.name)
            .map(|(_, want)| want);
        for want in step.expect.iter().chain(for_kernel) {
            if !output.contains(want) {
                problems.push(format!("{}: output lacks {want:?}\n{output}", step.name));
            }
        }
        for unwanted in step.absent {
            if output.contains(unwanted) {
                problems.push(format!("{}: output has {unwanted:?}\n{output}", step.name));
            }
        }
        let verdict = if problems.len() == before {
            "as expected"
        } else {
            "WRONG"
        };
        eprintln!("xtask: vm-test:   {}: exit {rc}, {verdict}", step.name);
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_scratch_never_hides_the_binary() {
        let (mounts, scratch) = guest_scratch(&[Path::new("/work/main/target/debug/splitscope")]);
        assert_eq!((mounts, scratch), (vec!["/tmp", "/run"], "/tmp"));
        let (mounts, scratch) = guest_scratch(&[Path::new("/tmp/ci-clone/target/debug/splitscope")]);
        assert_eq!((mounts, scratch), (vec!["/run"], "/run"));
        let (mounts, scratch) = guest_scratch(&[Path::new("/run/user/0/src/target/debug/splitscope")]);
        assert_eq!((mounts, scratch), (vec!["/tmp"], "/tmp"));
        // "/tmpfoo" is not under /tmp.
        assert_eq!(
            guest_scratch(&[Path::new("/tmpfoo/splitscope")]).0,
            vec!["/tmp", "/run"]
        );
        // Every binary the steps run counts: the agent under the workspace, xtask under /tmp.
        let (mounts, scratch) = guest_scratch(&[
            Path::new("/work/main/target/release/splitscope"),
            Path::new("/tmp/target/debug/xtask"),
        ]);
        assert_eq!((mounts, scratch), (vec!["/run"], "/run"));
    }

    /// A console as the Debian 6.1 guest prints it when every step does what it should.
    fn console(extra_in_auto: &str) -> String {
        let mut out = String::from("=== KERNEL 6.1.0-57-amd64\n");
        for step in STEPS {
            out.push_str(&format!("=== BEGIN {}\n", step.name));
            let for_kernel = KERNELS[0].expect.iter().filter(|(name, _)| *name == step.name);
            for line in step.expect.iter().chain(for_kernel.map(|(_, want)| want)) {
                out.push_str(&format!("{line}\n"));
            }
            if step.name == "auto" {
                out.push_str(extra_in_auto);
            }
            let rc = if step.succeeds { 0 } else { 1 };
            out.push_str(&format!("=== END {} rc={rc}\n", step.name));
        }
        out.push_str("=== GUEST DONE\n");
        out
    }

    #[test]
    fn steps_pass_only_with_what_they_expect_and_without_what_they_must_not_show() {
        let kernel = KERNELS[0].expect;
        check_steps(&console(""), kernel).unwrap();
        // What one kernel must show is asked of that kernel only.
        let err = check_steps(&console(""), KERNELS[1].expect).unwrap_err();
        assert!(err.to_string().contains("kprobe-asleep: output lacks"), "{err}");
        // Auto on these kernels is fexit alone: a kprobe beside it, or fexit tried and left, fails.
        let err = check_steps(&console("point: kprobe:do_sys_openat2\n"), kernel).unwrap_err();
        assert!(err.to_string().contains("auto: output has"), "{err}");
        let err = check_steps(
            &console("tried: fexit do_sys_openat2: could not attach\n"),
            kernel,
        )
        .unwrap_err();
        assert!(err.to_string().contains("auto: output has"), "{err}");
        let err = check_steps(&console("").replace("self-test: ok", "self-test: no"), kernel).unwrap_err();
        assert!(err.to_string().contains("lacks"), "{err}");
    }

    #[test]
    fn a_guest_that_stops_early_says_how_far_it_got() {
        let full = console("");
        let cut = &full[..full.find("=== BEGIN kprobe-do_sys_open").unwrap_or(full.len())];
        let err =
            check_steps(&format!("{cut}=== BEGIN kprobe-do_sys_open\n"), KERNELS[0].expect).unwrap_err();
        assert!(
            err.to_string().contains(
                "steps begun: auto, fentry-full, fentry-asleep, fentry-contend, kprobe, kprobe-full, \
                 kprobe-do_sys_open"
            ),
            "{err}"
        );
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }

    #[test]
    fn the_pod_capabilities_are_the_daemonsets() {
        let manifest = std::fs::read_to_string(root().join("deploy/agent/daemonset.yaml")).unwrap();
        let added = manifest
            .lines()
            .find_map(|l| l.trim().strip_prefix("add: ["))
            .and_then(|l| l.strip_suffix(']'))
            .expect("the agent's capabilities.add");
        let mut from_manifest: Vec<String> = added
            .split(',')
            .map(|c| c.trim().trim_matches('"').to_lowercase())
            .collect();
        let bounding = POD_CAPABILITIES
            .split_whitespace()
            .find_map(|w| w.strip_prefix("--bounding-set=-all,"))
            .unwrap();
        let mut from_step: Vec<String> = bounding
            .split(',')
            .map(|c| c.trim_start_matches('+').to_string())
            .collect();
        from_manifest.sort();
        from_step.sort();
        assert_eq!(from_step, from_manifest);
    }

    #[test]
    fn kernel_package_patterns() {
        assert!(is_61("linux-image-6.1.0-56-amd64"));
        assert!(!is_61("linux-image-6.1.0-56-cloud-amd64"));
        assert!(!is_61("linux-image-6.1.0-56-amd64-unsigned"));
        assert!(is_612("linux-image-6.12.95+deb12-amd64"));
        assert!(!is_612("linux-image-6.12.95+deb12-rt-amd64"));
        assert!(!is_612("linux-image-6.12.95+deb12-cloud-amd64"));
        let mut names = [
            "linux-image-6.1.0-9-amd64",
            "linux-image-6.1.0-56-amd64",
            "linux-image-6.1.0-10-amd64",
        ];
        names.sort_by_key(|n| version_key(n));
        assert_eq!(names.last(), Some(&"linux-image-6.1.0-56-amd64"));
    }
}
