//! `cargo xtask …`: project tasks that need more than cargo (system packages, clang, qemu, kind).

mod ci;
mod deps;
mod run;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Splitscope project tasks")]
struct Xtask {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the system packages a task needs (apt-get; root or sudo).
    Deps {
        /// Which package set.
        #[arg(value_enum, default_value_t = deps::Set::Build)]
        set: deps::Set,
    },
    /// Build the workspace and run the agent standalone on this host (as root), on :9102.
    Agent {
        /// Extra arguments for `splitscope agent`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The test command: installs what the tests need, then fmt, clippy, every test tier that
    /// this machine can run.
    Ci,
}

fn main() -> anyhow::Result<()> {
    match Xtask::parse().task {
        Task::Deps { set } => deps::ensure(set),
        Task::Agent { args } => run::agent(&args),
        Task::Ci => ci::run(),
    }
}
