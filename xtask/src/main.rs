//! `cargo xtask …`: project tasks that need more than cargo (system packages, clang, qemu, kind).

mod bench;
mod ci;
mod crds;
mod deps;
mod ebpf;
mod kind;
mod run;
mod vm_test;

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
    /// Compile the BPF probe (ebpf-probes/src/*.bpf.c) with clang and check the object loads.
    BuildEbpf,
    /// Regenerate crds/ from the Rust types (`--check`: fail if the checked-in YAML differs).
    GenCrds {
        #[arg(long)]
        check: bool,
    },
    /// Build the container image (docker).
    Image,
    /// Create a kind cluster with Splitscope, Gateway API, Prometheus and Grafana.
    KindUp,
    /// Delete the kind cluster.
    KindDown,
    /// Run the end-to-end tests against the current kubectl context.
    E2e,
    /// Boot Debian kernels with kprobes under qemu and run the agent's kprobe self-test in each.
    VmTest,
    /// Run the criterion benchmarks.
    Bench,
    /// Benchmark the probe against no probe and bpftrace, interleaved.
    BenchProbe,
    /// Count the instructions each attach mode adds to an open, in the vm-test kernels under qemu.
    BenchVm,
    /// Inside a bench-vm guest: the measurements themselves.
    #[command(hide = true)]
    BenchVmGuest,
}

fn main() -> anyhow::Result<()> {
    match Xtask::parse().task {
        Task::Deps { set } => deps::ensure(set),
        Task::Agent { args } => run::agent(&args),
        Task::Ci => ci::run(),
        Task::BuildEbpf => ebpf::build(),
        Task::GenCrds { check } => crds::generate(check),
        Task::Image => kind::image(),
        Task::KindUp => kind::up(),
        Task::KindDown => kind::down(),
        Task::E2e => kind::e2e(),
        Task::VmTest => vm_test::run(),
        Task::Bench => bench::criterion(),
        Task::BenchProbe => bench::probe(),
        Task::BenchVm => bench::vm(),
        Task::BenchVmGuest => bench::vm_guest(),
    }
}
