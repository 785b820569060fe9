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
];

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
    let pin = format!("/sys/fs/bpf/splitscope-build-check-{}", std::process::id());
    std::fs::create_dir_all(&pin).with_context(|| format!("creating {pin} (is bpffs mounted?)"))?;
    let loaded = Command::new("bpftool")
        .args(["prog", "loadall"])
        .arg(&object)
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
    if !loaded.status.success() {
        bail!(
            "the kernel's verifier rejected the probe:\n{}",
            String::from_utf8_lossy(&loaded.stderr)
        );
    }
    for program in PROGRAMS {
        if !pinned.iter().any(|p| p == program) {
            bail!("program {program} was not loaded (loaded: {pinned:?})");
        }
    }
    eprintln!("xtask: the kernel accepted all {} programs", PROGRAMS.len());
    Ok(())
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
}
