//! `cargo xtask vm-test`: the kprobe path in Debian kernels under qemu.

pub fn run() -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
