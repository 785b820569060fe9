//! Benchmarks: criterion suites and the probe overhead harness.

pub fn criterion() -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}

pub fn probe() -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
