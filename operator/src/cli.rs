//! The command line: one binary; its subcommands: controller, agent, trace, crd, rollout (see
//! the README and docs/).
//!
//! Every flag can also be given as `SPLITSCOPE_<FLAG>` in the environment, so the same binary is
//! configured by flags on a laptop and by env vars in a Deployment or DaemonSet.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "splitscope",
    version,
    about = "TrafficSplit operator and eBPF file-open tracing agent"
)]
pub struct Cli {
    /// Log output format.
    #[arg(long, global = true, env = "SPLITSCOPE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Reconcile TrafficSplit resources into Services and routing objects.
    Controller(ControllerArgs),
    /// Trace file opens on this node and export them as Prometheus metrics.
    Agent(AgentArgs),
    /// Show file opens live, like opensnoop.
    Trace(TraceArgs),
    /// Print the TrafficSplit CustomResourceDefinition as YAML.
    Crd,
    /// Show or steer a TrafficSplit's rollout (also `kubectl splitscope rollout …` with the
    /// binary on PATH as `kubectl-splitscope`).
    Rollout(RolloutArgs),
    /// Load the probe, open known files through every open syscall and check the probe reported
    /// each exactly once (used by `cargo xtask vm-test` inside qemu guests).
    #[command(hide = true)]
    SelfTest(SelfTestArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ControllerArgs {
    /// Address of the HTTP server for /metrics, /healthz and /readyz (default: every address,
    /// IPv6 and IPv4; IPv4 alone where the kernel has no IPv6).
    #[arg(long, env = "SPLITSCOPE_METRICS_ADDR", default_value = "[::]:8080")]
    pub metrics_addr: SocketAddr,

    /// Watch TrafficSplits in this namespace only (default: all namespaces).
    #[arg(long, env = "SPLITSCOPE_NAMESPACE")]
    pub namespace: Option<String>,

    /// Reconcile without taking the leader Lease (for local runs with a single replica).
    #[arg(long, env = "SPLITSCOPE_NO_LEADER_ELECT", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::SetTrue)]
    pub no_leader_elect: bool,

    /// Namespace of the leader-election Lease (default: the pod's own namespace, else `default`).
    #[arg(long, env = "SPLITSCOPE_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// Name of the leader-election Lease.
    #[arg(long, env = "SPLITSCOPE_LEASE_NAME", default_value = "splitscope-controller")]
    pub lease_name: String,

    /// Base URL of the Prometheus HTTP API that rollouts measure against, unless a rollout
    /// names its own (`spec.rollout.analysis.prometheus.address`).
    #[arg(long, env = "SPLITSCOPE_PROMETHEUS_URL", value_name = "URL")]
    pub prometheus_url: Option<String>,

    /// A bearer token for --prometheus-url, read from this file at every query (a projected
    /// ServiceAccount token rotates). Sent to that URL only, never to an address a TrafficSplit
    /// names.
    #[arg(long, env = "SPLITSCOPE_PROMETHEUS_TOKEN_FILE", value_name = "PATH")]
    pub prometheus_token_file: Option<std::path::PathBuf>,

    /// PEM certificates trusted for https Prometheus servers, besides the system's roots.
    #[arg(long, env = "SPLITSCOPE_PROMETHEUS_CA_FILE", value_name = "PATH")]
    pub prometheus_ca_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct RolloutArgs {
    #[command(subcommand)]
    pub command: RolloutCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum RolloutCommand {
    /// Phase, step, weights and every metric's last measurement.
    Status(RolloutTarget),
    /// Leave the current step (a `pause: {}` waits for this); `--full` skips every remaining
    /// step.
    Promote(PromoteArgs),
    /// Stop the rollout: the canary gets 0% (from any phase).
    Abort(ActionArgs),
    /// Start a Failed or Aborted rollout again from its first step.
    Retry(ActionArgs),
}

#[derive(Debug, Clone, Args)]
pub struct RolloutTarget {
    /// The TrafficSplit.
    pub name: String,

    /// Its namespace (default: the kubeconfig context's).
    #[arg(short, long)]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ActionArgs {
    #[command(flatten)]
    pub target: RolloutTarget,

    /// Wait up to this many seconds for the controller to handle the request, then show the
    /// status (default: return once it is requested).
    #[arg(long, value_name = "SECONDS")]
    pub wait: Option<u64>,
}

#[derive(Debug, Clone, Args)]
pub struct PromoteArgs {
    #[command(flatten)]
    pub target: RolloutTarget,

    /// Skip every remaining step: the canary gets its final weight at once.
    #[arg(long)]
    pub full: bool,

    /// Wait up to this many seconds for the controller to handle the request.
    #[arg(long, value_name = "SECONDS")]
    pub wait: Option<u64>,
}

/// How the probe hooks the kernel's open path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AttachMode {
    /// fexit on the open path where the kernel allows it, else kprobe/kretprobe, else syscall
    /// tracepoints.
    Auto,
    /// fexit only (a BPF trampoline on do_sys_openat2); fail if the kernel refuses it.
    Fentry,
    /// kprobe/kretprobe only; fail if they are unavailable or never fire.
    Kprobe,
    /// Syscall tracepoints only.
    Tracepoint,
}

/// Whether the agent attributes opens to pods through the Kubernetes API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KubernetesMode {
    /// Use the cluster when one is reachable, else run standalone.
    Auto,
    /// Require a reachable cluster.
    On,
    /// Never contact a cluster: process and cgroup labels only.
    Off,
}

/// Which opens to trace. Applied in the kernel where the probe can.
#[derive(Debug, Clone, Default, Args)]
pub struct FilterArgs {
    /// Only this process (thread group) id.
    #[arg(long, env = "SPLITSCOPE_PID")]
    pub pid: Option<u32>,

    /// Only processes with this command name (at most 15 bytes, as the kernel keeps it).
    #[arg(long, env = "SPLITSCOPE_COMM")]
    pub comm: Option<String>,

    /// Only processes in this cgroup (v2 directory path, e.g. /sys/fs/cgroup/kubepods.slice/...).
    #[arg(long, env = "SPLITSCOPE_CGROUP")]
    pub cgroup: Option<PathBuf>,

    /// Only paths starting with this prefix, as passed to open(2).
    #[arg(long, env = "SPLITSCOPE_PATH_PREFIX")]
    pub path_prefix: Option<String>,

    /// Only failed opens.
    #[arg(long, env = "SPLITSCOPE_FAILED_ONLY", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::SetTrue)]
    pub failed_only: bool,
}

/// Probe options shared by `agent` and `trace`.
#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// Attach mode.
    #[arg(long, env = "SPLITSCOPE_ATTACH", value_enum, default_value_t = AttachMode::Auto)]
    pub attach: AttachMode,

    /// Kernel function for the kprobe pair (default: the one this kernel really runs).
    #[arg(long, env = "SPLITSCOPE_KPROBE_TARGET")]
    pub kprobe_target: Option<String>,

    /// Size of the BPF ring buffer in bytes (a power of two, multiple of the page size).
    #[arg(long, env = "SPLITSCOPE_RING_SIZE", default_value_t = 4 * 1024 * 1024)]
    pub ring_size: u32,

    /// Which syscall tracepoints tracepoint mode may use (benchmarking aid: `raw-first` costs an
    /// open less and every other syscall more).
    #[arg(long, hide = true, env = "SPLITSCOPE_TRACEPOINTS", value_enum, default_value_t = TracepointsMode::PerSyscall)]
    pub tracepoints: TracepointsMode,

    /// How the per-syscall tracepoints read an open's arguments (benchmarking aid).
    #[arg(long, hide = true, env = "SPLITSCOPE_TRACEPOINT_ARGS", value_enum, default_value_t = TracepointArgsMode::Auto)]
    pub tracepoint_args: TracepointArgsMode,

    /// Which records the probe writes (default: compact for `agent` and `self-test`, full for
    /// `trace`). A benchmarking and testing aid: the agent never needs paths.
    #[arg(long, hide = true, env = "SPLITSCOPE_RECORDS", value_enum)]
    pub records: Option<RecordsMode>,

    /// Where the probe's program stops (benchmarking aid: `cargo xtask bench-probe` measures
    /// what each part of an open's cost is worth).
    #[arg(long, hide = true, env = "SPLITSCOPE_COST_VARIANT", value_enum, default_value_t = CostVariantMode::Normal)]
    pub cost_variant: CostVariantMode,

    /// How the probe reads the comm and cgroup of the task that opened (testing and
    /// benchmarking aid: `helpers` is what kernels before 5.11 use).
    #[arg(long, hide = true, env = "SPLITSCOPE_TASK_FIELDS", value_enum, default_value_t = TaskFieldsMode::Auto)]
    pub task_fields: TaskFieldsMode,

    #[command(flatten)]
    pub filters: FilterArgs,
}

#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// Address of the HTTP server for /metrics, /healthz and /readyz (default: every address,
    /// IPv6 and IPv4; IPv4 alone where the kernel has no IPv6).
    #[arg(long, env = "SPLITSCOPE_METRICS_ADDR", default_value = "[::]:9102")]
    pub metrics_addr: SocketAddr,

    #[command(flatten)]
    pub probe: ProbeArgs,

    /// Pod attribution through the Kubernetes API.
    #[arg(long, env = "SPLITSCOPE_KUBERNETES", value_enum, default_value_t = KubernetesMode::Auto)]
    pub kubernetes: KubernetesMode,

    /// Name of this node, to watch only its Pods (set from the downward API in the DaemonSet).
    #[arg(long, env = "SPLITSCOPE_NODE_NAME")]
    pub node_name: Option<String>,

    /// Distinct splitscope_file_opens_total series before new label sets are counted in the
    /// `other` bucket.
    #[arg(long, env = "SPLITSCOPE_MAX_SERIES", default_value_t = 5000)]
    pub max_series: usize,
}

/// Which syscall tracepoints tracepoint mode may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TracepointsMode {
    /// syscalls:sys_exit_<name> only.
    PerSyscall,
    /// The raw sys_exit tracepoint, whose program runs at every syscall's exit (Linux >= 5.11),
    /// else syscalls:sys_exit_<name>.
    RawFirst,
}

/// How the per-syscall tracepoints get an open's arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TracepointArgsMode {
    /// Saved registers where the kernel allows it (>= 5.15), else enter/exit pairing.
    Auto,
    /// sys_exit only, arguments from the task's saved user registers.
    SavedRegs,
    /// sys_enter keeps the arguments in a map, sys_exit emits.
    EnterExit,
}

/// Which records the probe writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RecordsMode {
    /// Whose open it was and its result: what counting needs.
    Compact,
    /// Also time, uid, flags, mode and path.
    Full,
}

/// Benchmark variants of the probe's program (see `splitscope_probes::CostVariant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CostVariantMode {
    /// The real program.
    Normal,
    /// Return at once.
    Return,
    /// Bump a per-CPU counter, as bpftrace's count() does.
    PercpuCount,
    /// Reserve and submit a compact record of constants.
    ConstantRecord,
    /// Full records without copying the path.
    FullWithoutPath,
    /// A compact record per open in the ring, not batched per CPU.
    Unbatched,
    /// Records batched per CPU as usual, the batches never put into the ring.
    BatchUnsent,
}

/// How the probe reads the comm and cgroup of the task that opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TaskFieldsMode {
    /// Straight from the task where the kernel allows it (>= 5.11), else through helpers.
    Auto,
    /// Through the helpers bpf_get_current_comm and bpf_get_current_cgroup_id.
    Helpers,
}

#[derive(Debug, Clone, Args)]
pub struct SelfTestArgs {
    #[command(flatten)]
    pub probe: ProbeArgs,

    /// Opens of each kind (ok and missing) through each syscall.
    #[arg(long, default_value_t = 5)]
    pub opens: u32,

    /// Fail unless the probe attached in this mode (fentry, kprobe or tracepoint).
    #[arg(long)]
    pub expect_mode: Option<String>,

    /// Fail unless the probe attached to this target (e.g. do_sys_openat2).
    #[arg(long)]
    pub expect_target: Option<String>,

    /// How long the start-up self-test waits per candidate, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub self_test_ms: u64,

    /// Then hold this many opens asleep in the kernel at once (readers of FIFOs), wake them,
    /// and check that every open is reported or counted as dropped (0: skip).
    #[arg(long, default_value_t = 0)]
    pub asleep: usize,

    /// Then have two threads open flat out on CPU 0 for this many seconds, and check that every
    /// open is reported or counted as dropped (0: skip).
    #[arg(long, default_value_t = 0)]
    pub contend: u64,
}

/// Output format of `splitscope trace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TraceOutput {
    Table,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct TraceArgs {
    #[command(flatten)]
    pub probe: ProbeArgs,

    /// Output format.
    #[arg(long, env = "SPLITSCOPE_OUTPUT", value_enum, default_value_t = TraceOutput::Table)]
    pub output: TraceOutput,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn controller_defaults_match_the_design() {
        let cli = Cli::try_parse_from(["splitscope", "controller"]).unwrap();
        let Command::Controller(args) = cli.command else {
            panic!("not the controller")
        };
        assert_eq!(args.metrics_addr.to_string(), "[::]:8080");
        assert!(!args.no_leader_elect);
        assert_eq!(args.namespace, None);
    }

    #[test]
    fn agent_parses_filters_and_modes() {
        let cli = Cli::try_parse_from([
            "splitscope",
            "agent",
            "--attach",
            "tracepoint",
            "--ring-size",
            "65536",
            "--comm",
            "cat",
            "--pid",
            "42",
            "--failed-only",
            "--kubernetes",
            "off",
        ])
        .unwrap();
        let Command::Agent(args) = cli.command else {
            panic!("not the agent")
        };
        assert_eq!(args.metrics_addr.to_string(), "[::]:9102");
        assert_eq!(args.probe.attach, AttachMode::Tracepoint);
        assert_eq!(args.probe.ring_size, 65536);
        assert_eq!(args.probe.filters.comm.as_deref(), Some("cat"));
        assert_eq!(args.probe.filters.pid, Some(42));
        assert!(args.probe.filters.failed_only);
        assert_eq!(args.kubernetes, KubernetesMode::Off);
    }

    #[test]
    fn rollout_commands_parse_as_kubectl_users_type_them() {
        let cli = Cli::try_parse_from([
            "splitscope",
            "rollout",
            "promote",
            "checkout",
            "-n",
            "shop",
            "--full",
        ])
        .unwrap();
        let Command::Rollout(RolloutArgs {
            command: RolloutCommand::Promote(p),
        }) = cli.command
        else {
            panic!("not promote")
        };
        assert_eq!(
            (p.target.name.as_str(), p.target.namespace.as_deref()),
            ("checkout", Some("shop"))
        );
        assert!(p.full);
        let cli = Cli::try_parse_from([
            "kubectl-splitscope",
            "rollout",
            "abort",
            "checkout",
            "--wait",
            "30",
        ])
        .unwrap();
        let Command::Rollout(RolloutArgs {
            command: RolloutCommand::Abort(a),
        }) = cli.command
        else {
            panic!("not abort")
        };
        assert_eq!((a.target.namespace, a.wait), (None, Some(30)));
        assert!(Cli::try_parse_from(["splitscope", "rollout", "rollback", "checkout"]).is_err());
    }

    #[test]
    fn rejects_unknown_attach_mode_by_name() {
        let err = Cli::try_parse_from(["splitscope", "agent", "--attach", "uprobe"]).unwrap_err();
        assert!(err.to_string().contains("uprobe"), "{err}");
        let cli = Cli::try_parse_from(["splitscope", "agent", "--attach", "fentry"]).unwrap();
        let Command::Agent(args) = cli.command else {
            panic!("not the agent")
        };
        assert_eq!(args.probe.attach, AttachMode::Fentry);
    }
}
