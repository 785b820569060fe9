//! `cargo xtask build-ebpf`: compile the BPF probe.

pub fn build() -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
