//! kind cluster tasks: image, kind-up, kind-down, e2e.

pub fn image() -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}

pub fn up() -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}

pub fn down() -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}

pub fn e2e() -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
