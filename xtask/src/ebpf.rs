//! `cargo xtask build-ebpf`: compile the BPF probe exactly as the crate's build script does (the
//! same `compile.rs`), then check the object: its sections, the record layouts in its BTF, and
//! that the kernel's verifier accepts every program (`bpftool prog loadall`), which needs root.

#[path = "../../ebpf-probes/build/compile.rs"]
mod compile;

use std::process::Command;

use anyhow::{Context, bail};

use crate::deps::{self, Set};
use crate::run::root;

/// Every program in fileopen.bpf.c.
const PROGRAMS: &[&str] = &[
    "sys_exit_raw",
    "sys_exit_open_regs",
    "sys_enter_open_args",
    "sys_enter_openat_args",
    "sys_enter_openat2_args",
    "sys_enter_creat_args",
    "sys_exit_open_paired",
    "kprobe_do_sys_open",
    "kprobe_do_sys_openat2",
    "kretprobe_open",
    FEXIT_PROGRAMS[0],
    FEXIT_PROGRAMS[1],
];

/// The fexit programs (the probe for whether the kernel takes them, and the real one): some
/// kernels refuse every fentry/fexit program (this CI machine's does, with EPERM), which would
/// stop `bpftool prog loadall` before it loads the others.
const FEXIT_PROGRAMS: [&str; 2] = ["fexit_can_attach", "fexit_do_sys_openat2"];

/// The record sizes in `ebpf-probes/src/bpf/fileopen.h` (the crate's layout test checks every
/// field against the Rust mirror; this catches a header change before any Rust is built).
const RECORD_STRUCTS: &[(&str, usize)] = &[("open_head", 32), ("open_full", 320), ("open_batch", 1088)];

/// Loading programs into the kernel is the point of the task: without root it cannot be done,
/// and a task that skipped it would report a check it never made.
fn require_root(is_root: bool) -> anyhow::Result<()> {
    if !is_root {
        bail!(
            "build-ebpf loads every BPF program into this kernel's verifier (bpftool prog loadall), \
             which needs root (CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN): run it as root, e.g. \
             `sudo -E cargo xtask build-ebpf`; a plain `cargo build` compiles the probe without it"
        );
    }
    Ok(())
}

pub fn build() -> anyhow::Result<()> {
    require_root(deps::is_root())?;
    deps::ensure(Set::Ebpf)?;
    let out_dir = root().join("target/bpf");
    std::fs::create_dir_all(&out_dir)?;
    let object = out_dir.join("fileopen.bpf.o");
    eprintln!("xtask: compiling {}", compile::SOURCES[0]);
    compile::compile(&root().join("ebpf-probes"), std::env::consts::ARCH, &object)
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    let headers = output("llvm-objdump", &["-h", object.to_str().context("path")?])?;
    for section in [
        "tp_btf/sys_exit",
        "fexit/do_sys_openat2",
        "tracepoint",
        "kprobe",
        "kretprobe",
        ".maps",
        ".rodata",
        ".BTF",
        ".BTF.ext",
        "license",
    ] {
        if !headers.split_whitespace().any(|w| w == section) {
            bail!("{} has no {section} section:\n{headers}", object.display());
        }
    }
    let btf = output(
        "bpftool",
        &["btf", "dump", "file", object.to_str().context("path")?],
    )?;
    for (name, size) in RECORD_STRUCTS {
        if !btf.contains(&format!("STRUCT '{name}' size={size} ")) {
            bail!(
                "struct {name} is not {size} bytes in the object's BTF (see ebpf-probes/src/bpf/fileopen.h)"
            );
        }
    }
    eprintln!(
        "xtask: {} compiled ({} bytes), sections and BTF ok",
        object.display(),
        std::fs::metadata(&object)?.len()
    );

    if !std::path::Path::new("/sys/fs/bpf").join(".").exists() || !is_bpffs() {
        let _ = Command::new("mount")
            .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
            .status();
    }
    let (pinned, expected): (Vec<String>, Vec<&str>) = match load_all(&object)? {
        Ok(pinned) => (pinned, PROGRAMS.to_vec()),
        Err(log) if refuses_fexit(&log) => {
            // Check every other program in an object compiled without the fexit one; the guests
            // of `cargo xtask vm-test` load and run the fexit program.
            let without = out_dir.join("fileopen-without-fexit.bpf.o");
            compile::compile_with(
                &root().join("ebpf-probes"),
                std::env::consts::ARCH,
                &without,
                &["SPLITSCOPE_WITHOUT_FEXIT"],
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            let pinned = load_all(&without)?
                .map_err(|log| anyhow::anyhow!("the kernel's verifier rejected the probe:\n{log}"))?;
            eprintln!(
                "xtask: this kernel refuses fentry/fexit programs (EPERM), so {} are not checked \
                 here; `cargo xtask vm-test` loads and runs them in Debian's 6.1 and 6.12 kernels",
                FEXIT_PROGRAMS.join(" and ")
            );
            let others = PROGRAMS
                .iter()
                .copied()
                .filter(|p| !FEXIT_PROGRAMS.contains(p))
                .collect();
            (pinned, others)
        }
        Err(log) => bail!("the kernel's verifier rejected the probe:\n{log}"),
    };
    for program in &expected {
        if !pinned.iter().any(|p| p == program) {
            bail!("program {program} was not loaded (loaded: {pinned:?})");
        }
    }
    eprintln!(
        "xtask: the kernel accepted {} of the {} programs",
        expected.len(),
        PROGRAMS.len()
    );
    Ok(())
}

/// `bpftool prog loadall`: the names of the programs loaded, or bpftool's log when the kernel
/// refused one (then none stays loaded).
fn load_all(object: &std::path::Path) -> anyhow::Result<Result<Vec<String>, String>> {
    let pin = format!("/sys/fs/bpf/splitscope-build-check-{}", std::process::id());
    std::fs::create_dir_all(&pin).with_context(|| format!("creating {pin} (is bpffs mounted?)"))?;
    let loaded = Command::new("bpftool")
        .args(["prog", "loadall"])
        .arg(object)
        .arg(&pin)
        .output()
        .context("running bpftool")?;
    let pinned: Vec<String> = std::fs::read_dir(&pin)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let _ = std::fs::remove_dir_all(&pin);
    if loaded.status.success() {
        Ok(Ok(pinned))
    } else {
        Ok(Err(String::from_utf8_lossy(&loaded.stderr).into_owned()))
    }
}

/// Whether bpftool's log says the kernel refused a fexit program as such (EPERM at load, as
/// libbpf words it: strerror before libbpf 1.6, the errno's name since), not that the verifier
/// found something wrong in it.
fn refuses_fexit(log: &str) -> bool {
    FEXIT_PROGRAMS.iter().any(|p| {
        let failed = format!("prog '{p}': BPF program load failed: ");
        log.lines().any(|line| {
            line.split_once(&failed).is_some_and(|(_, why)| {
                why.starts_with("Operation not permitted") || why.starts_with("-EPERM")
            })
        })
    })
}

fn is_bpffs() -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .is_ok_and(|m| m.lines().any(|l| l.contains(" /sys/fs/bpf bpf ")))
}

fn output(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} (install it with `cargo xtask deps`)"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_root_the_task_fails_and_says_why() {
        let err = require_root(false).unwrap_err().to_string();
        assert!(err.contains("needs root") && err.contains("sudo"), "{err}");
        assert!(require_root(true).is_ok());
    }

    #[test]
    fn only_a_refused_fexit_program_lets_the_others_be_checked_without_it() {
        // As bpftool 7.1 (libbpf 1.1) prints it on this CI machine's kernel.
        let refused = "libbpf: prog 'fexit_do_sys_openat2': BPF program load failed: Operation not permitted\n\
                       libbpf: prog 'fexit_do_sys_openat2': failed to load: -1\n";
        assert!(refuses_fexit(refused));
        // libbpf >= 1.6 names the errno.
        assert!(refuses_fexit(
            "libbpf: prog 'fexit_can_attach': BPF program load failed: -EPERM\n"
        ));
        // A verifier rejection (EACCES), or another program refused, is a failure.
        assert!(!refuses_fexit(
            "libbpf: prog 'fexit_do_sys_openat2': BPF program load failed: Permission denied\n"
        ));
        assert!(!refuses_fexit(
            "libbpf: prog 'kretprobe_open': BPF program load failed: Operation not permitted\n"
        ));
    }
}
