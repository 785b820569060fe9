//! `cargo xtask gen-crds`: regenerate crds/ from the Rust types.

pub fn generate(_check: bool) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
