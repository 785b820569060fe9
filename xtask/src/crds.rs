//! `cargo xtask gen-crds`: regenerate crds/ from the Rust types.
//!
//! The YAML comes from the binary's own `splitscope crd` subcommand, so xtask does not depend on
//! the operator crate (and its kube/aya build) and there is exactly one renderer.

use std::process::Command;

use anyhow::{Context, bail};

use crate::run::root;

/// The checked-in CRD (the same path the operator's CRD drift test reads).
const CRD_PATH: &str = "crds/trafficsplits.splitscope.dev.yaml";

pub fn generate(check: bool) -> anyhow::Result<()> {
    eprintln!("xtask: cargo run -q -p splitscope -- crd");
    let out = Command::new("cargo")
        .args(["run", "-q", "-p", "splitscope", "--", "crd"])
        .current_dir(root())
        .output()
        .context("cannot run cargo")?;
    if !out.status.success() {
        bail!(
            "`splitscope crd` failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let fresh = String::from_utf8(out.stdout).context("`splitscope crd` printed non-UTF-8")?;
    let path = root().join(CRD_PATH);
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if check {
        if current != fresh {
            bail!("{CRD_PATH} is stale: run `cargo xtask gen-crds` and commit the result");
        }
        eprintln!("xtask: {CRD_PATH} is up to date");
        return Ok(());
    }
    if current == fresh {
        eprintln!("xtask: {CRD_PATH} unchanged");
    } else {
        std::fs::create_dir_all(path.parent().context("CRD path has no parent")?)?;
        std::fs::write(&path, fresh).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("xtask: wrote {CRD_PATH}");
    }
    Ok(())
}
