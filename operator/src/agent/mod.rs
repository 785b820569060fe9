//! The node agent.

use crate::cli::AgentArgs;

pub async fn run(_args: AgentArgs) -> anyhow::Result<()> {
    anyhow::bail!("the agent is not implemented yet")
}
