//! Helpers for running commands with their failure named.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Runs `cmd` in the workspace root, failing with the command line when it fails.
pub fn cmd(program: &str, args: &[&str]) -> anyhow::Result<()> {
    eprintln!("xtask: {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(root())
        .status()
        .with_context(|| format!("cannot run {program}: is it installed?"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// `cargo xtask agent`: build and run the standalone agent.
pub fn agent(extra: &[String]) -> anyhow::Result<()> {
    crate::deps::ensure(crate::deps::Set::Build)?;
    cmd("cargo", &["build", "--release", "-p", "splitscope"])?;
    let bin = root().join("target/release/splitscope");
    let bin = bin.to_str().context("non-UTF-8 workspace path")?;
    // Loading BPF programs needs root (CAP_BPF + CAP_PERFMON); the agent itself names what is
    // missing if even sudo does not grant it.
    let mut args = Vec::new();
    let program = if crate::deps::is_root() {
        bin
    } else {
        args.push(bin);
        "sudo"
    };
    args.push("agent");
    args.extend(extra.iter().map(String::as_str));
    cmd(program, &args)
}
