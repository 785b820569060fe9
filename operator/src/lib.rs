//! Splitscope: a TrafficSplit operator (`controller`) and an eBPF file-open tracing agent
//! (`agent`, `trace`), shipped as one binary.

pub mod agent;
pub mod cli;
pub mod controller;
pub mod metrics_server;
pub mod rbac;
pub mod rollout_command;
pub mod shutdown;
pub mod telemetry;
pub mod trace;

use cli::{Cli, Command};

/// Runs one parsed command line: the whole `splitscope` binary. Kept in the library so that the
/// test package can build the same entry point as a real process (tests/src/bin/under_test.rs).
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    telemetry::init(cli.log_format);
    match cli.command {
        Command::Controller(args) => controller::run(args).await,
        Command::Agent(args) => agent::run(args).await,
        Command::Trace(args) => trace::run(args).await,
        Command::SelfTest(args) => agent::self_test::run(args).await,
        Command::Rollout(args) => rollout_command::run(args).await,
        Command::Crd => {
            print!("{}", controller::crd_yaml()?);
            Ok(())
        }
    }
}
