//! System packages, declared once. `.ci/run`, `cargo xtask ci` and the build tasks all install
//! from here, so a fresh Debian/Ubuntu machine gets exactly what the project needs.

use std::process::Command;

use anyhow::{Context, bail};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Set {
    /// Compile the BPF probe: clang (BPF target), llvm, libbpf headers. The Dockerfile's builder
    /// installs exactly these (a test checks).
    Build,
    /// `cargo xtask build-ebpf`: Build plus bpftool, to inspect the object's BTF and have the
    /// kernel's verifier load every program.
    Ebpf,
    /// The qemu test bed of `cargo xtask vm-test`.
    Vm,
    /// `cargo xtask bench-probe`: the peers the probe is compared with.
    Bench,
    /// Everything `cargo xtask ci` runs: Ebpf plus Prometheus and the qemu test bed.
    Test,
}

const BUILD: &[&str] = &["clang", "llvm", "libbpf-dev"];
const EBPF_EXTRA: &[&str] = &["bpftool"];
/// qemu, an initramfs (busybox, cpio, gzip), module dependencies (kmod) and unpacking Debian's
/// .ko.xz modules (xz-utils).
const VM: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "kmod",
    "xz-utils",
    "gzip",
];
const BENCH: &[&str] = &["bpftrace", "libbpf-tools"];
const TEST_EXTRA: &[&str] = &["prometheus"];

pub fn packages(set: Set) -> Vec<&'static str> {
    match set {
        Set::Build => BUILD.to_vec(),
        Set::Ebpf => BUILD.iter().chain(EBPF_EXTRA).copied().collect(),
        Set::Vm => VM.to_vec(),
        Set::Bench => BUILD.iter().chain(BENCH).copied().collect(),
        Set::Test => BUILD
            .iter()
            .chain(EBPF_EXTRA)
            .chain(TEST_EXTRA)
            .chain(VM)
            .copied()
            .collect(),
    }
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Installs whatever of `set` is missing. Without root it uses sudo when present and otherwise
/// says exactly which command to run.
pub fn ensure(set: Set) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages(set).into_iter().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if Command::new("apt-get").arg("--version").output().is_err() {
        bail!(
            "missing system packages {missing:?} and no apt-get on this machine: install their \
             equivalents with your package manager"
        );
    }
    let sudo: &[&str] = if is_root() {
        &[]
    } else if Command::new("sudo")
        .arg("-n")
        .arg("true")
        .status()
        .is_ok_and(|s| s.success())
    {
        &["sudo"]
    } else {
        bail!(
            "missing system packages {missing:?}; install them as root:\n  sudo apt-get update && \
             sudo apt-get install -y --no-install-recommends {}",
            missing.join(" ")
        );
    };
    eprintln!("xtask: installing {}", missing.join(" "));
    run_apt(sudo, &["update", "-q"])?;
    let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
    install.extend(&missing);
    run_apt(sudo, &install)
}

fn run_apt(sudo: &[&str], args: &[&str]) -> anyhow::Result<()> {
    let (prog, rest) = match sudo {
        [] => ("apt-get", Vec::new()),
        [s, ..] => (*s, vec!["apt-get"]),
    };
    let status = Command::new(prog)
        .args(rest)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .with_context(|| format!("running apt-get {}", args.join(" ")))?;
    if !status.success() {
        bail!("apt-get {} failed with {status}", args.join(" "));
    }
    Ok(())
}
