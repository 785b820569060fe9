//! The `splitscope` agent and trace entry points (as operator/src/main.rs dispatches them),
//! built in this package so that the real-kernel tests can start the agent as a real process
//! and stop it with SIGTERM.

use clap::Parser;
use splitscope::cli::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    splitscope::telemetry::init(cli.log_format);
    match cli.command {
        Command::Agent(args) => splitscope::agent::run(args).await,
        Command::Trace(args) => splitscope::trace::run(args).await,
        _ => anyhow::bail!("this test binary runs `agent` and `trace` only"),
    }
}
