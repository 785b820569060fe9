//! `splitscope trace`: a live, opensnoop-like view of file opens.

use crate::cli::TraceArgs;

pub async fn run(_args: TraceArgs) -> anyhow::Result<()> {
    anyhow::bail!("trace is not implemented yet")
}
