use clap::Parser;

use splitscope::cli::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    splitscope::telemetry::init(cli.log_format);
    match cli.command {
        Command::Controller(args) => splitscope::controller::run(args).await,
        Command::Agent(args) => splitscope::agent::run(args).await,
        Command::Trace(args) => splitscope::trace::run(args).await,
        Command::SelfTest(args) => splitscope::agent::self_test::run(args).await,
        Command::Crd => {
            print!("{}", splitscope::controller::crd_yaml()?);
            Ok(())
        }
    }
}
