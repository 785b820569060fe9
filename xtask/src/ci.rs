//! `cargo xtask ci`: the one test command (README "Testing"), run by `.ci/run`.

use crate::deps::{self, Set};
use crate::run::cmd;

pub fn run() -> anyhow::Result<()> {
    deps::ensure(Set::Test)?;
    cmd("cargo", &["fmt", "--all", "--", "--check"])?;
    cmd(
        "cargo",
        &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"],
    )?;
    cmd("cargo", &["test", "--workspace", "--all-targets"])?;
    // Every program of the object through this kernel's verifier, kprobe ones included.
    crate::ebpf::build()?;
    // The kprobe path in Debian kernels under qemu (this machine's kernel has no kprobes).
    crate::vm_test::run()?;
    eprintln!("xtask: ci passed");
    Ok(())
}
