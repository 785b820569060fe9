use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    splitscope::run(splitscope::cli::Cli::parse()).await
}
