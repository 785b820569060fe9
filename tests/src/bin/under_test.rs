//! The `splitscope` binary's entry point, built in this package so that the real-kernel tests
//! can start the agent as a real process (cargo only exposes CARGO_BIN_EXE_* of the package's own
//! binaries) and stop it with SIGTERM.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    splitscope::run(splitscope::cli::Cli::parse()).await
}
