//! The one clang invocation that turns `src/bpf/fileopen.bpf.c` into a BPF object. Shared by the
//! crate's build script (so a plain `cargo build` embeds the probe) and `cargo xtask build-ebpf`
//! (which also checks the object), so the two can never compile it differently.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The C sources and headers, relative to the `ebpf-probes` directory.
pub const SOURCES: &[&str] = &[
    "src/bpf/fileopen.bpf.c",
    "src/bpf/fileopen.h",
    "src/bpf/kernel_types.h",
];

/// What was missing or failed, with the fix.
#[derive(Debug)]
pub struct CompileError(pub String);

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `clang` (or `$CLANG`).
pub fn clang() -> String {
    std::env::var("CLANG").unwrap_or_else(|_| "clang".to_owned())
}

/// The directory holding `bpf/bpf_helpers.h` (libbpf-dev), or `$LIBBPF_INCLUDE`.
pub fn libbpf_include() -> Result<PathBuf, CompileError> {
    let candidates: Vec<PathBuf> = match std::env::var_os("LIBBPF_INCLUDE") {
        Some(dir) => vec![PathBuf::from(dir)],
        None => vec![PathBuf::from("/usr/include"), PathBuf::from("/usr/local/include")],
    };
    candidates
        .into_iter()
        .find(|dir| dir.join("bpf/bpf_helpers.h").is_file())
        .ok_or_else(|| {
            CompileError(
                "bpf/bpf_helpers.h not found (in /usr/include, /usr/local/include or $LIBBPF_INCLUDE): \
                 install the `libbpf-dev` package (`cargo xtask deps` does it, or \
                 `apt-get install libbpf-dev`)"
                    .to_owned(),
            )
        })
}

/// Compiles the probe for `target_arch` (Rust's name, e.g. `x86_64`) into `out`.
pub fn compile(probes_dir: &Path, target_arch: &str, out: &Path) -> Result<(), CompileError> {
    compile_with(probes_dir, target_arch, out, &[])
}

/// The same, with preprocessor `defines` (`cargo xtask build-ebpf` leaves the fexit program out
/// of a second object for kernels that refuse it; the crate always embeds the whole probe).
#[allow(dead_code)] // the build script uses `compile` only
pub fn compile_with(
    probes_dir: &Path,
    target_arch: &str,
    out: &Path,
    defines: &[&str],
) -> Result<(), CompileError> {
    let bpf_arch = match target_arch {
        "x86_64" => "x86",
        other => {
            return Err(CompileError(format!(
                "the file-open probe reads x86-64 registers and is built for x86_64 only, not {other}"
            )));
        }
    };
    let include = libbpf_include()?;
    let clang = clang();
    match Command::new(&clang).arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => {
            return Err(CompileError(format!(
                "`{clang}` not found: the BPF probe is C compiled by clang; install the `clang`, \
                 `llvm` and `libbpf-dev` packages (`cargo xtask deps` does it, or `apt-get install \
                 clang llvm libbpf-dev`), or set CLANG to a clang with the BPF target"
            )));
        }
    }
    let src = probes_dir.join("src/bpf");
    let output = Command::new(&clang)
        .args(["-target", "bpf", "-O2", "-g", "-mcpu=v3", "-Wall", "-Werror"])
        .arg(format!("-D__TARGET_ARCH_{bpf_arch}"))
        .args(defines.iter().map(|d| format!("-D{d}")))
        .arg("-I")
        .arg(&src)
        .arg("-I")
        .arg(&include)
        .arg("-c")
        .arg(src.join("fileopen.bpf.c"))
        .arg("-o")
        .arg(out)
        .output()
        .map_err(|e| CompileError(format!("cannot run {clang}: {e}")))?;
    if !output.status.success() {
        return Err(CompileError(format!(
            "{clang} failed to compile the BPF probe:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(())
}
