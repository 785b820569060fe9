//! The node agent: kernel → ring buffer → decode → attribute → count → scrape.
//!
//! `run` loads the probe (splitscope-probes), connects to Kubernetes when there is a cluster
//! (pods.rs), and feeds every decoded open through `count::OpenCounter` into the metrics that
//! `metrics_server` serves. SIGTERM/SIGINT detach the probe before exit.

pub mod attribution;
pub mod cgroups;
pub mod containers;
pub mod count;
pub mod metrics;
pub mod pods;
pub mod self_test;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use splitscope_probes::filters::resolve_cgroup;
use splitscope_probes::{
    AttachMode as ProbeAttach, CostVariant, Filters, Probe, ProbeConfig, RecordKind, TaskFields,
    TracepointArgs, Tracepoints,
};

use crate::cli::{
    AgentArgs, AttachMode, CostVariantMode, ProbeArgs, RecordsMode, TaskFieldsMode, TracepointArgsMode,
    TracepointsMode,
};
use crate::metrics_server::{MetricsServer, Readiness};
use attribution::Attributor;
use cgroups::CgroupPaths;
use count::OpenCounter;
use metrics::AgentMetrics;
use pods::PodDirectory;

/// How often the reader drains the ring without a wakeup (the probe wakes it each time another
/// eighth of the ring fills unread). Bounds how stale the metrics can be.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(50);

/// The probe configuration for the `agent`/`trace`/`self-test` flags; `records` unless the
/// (hidden) `--records` flag says otherwise.
pub fn probe_config(args: &ProbeArgs, records: RecordKind) -> anyhow::Result<ProbeConfig> {
    let f = &args.filters;
    let cgroup = f.cgroup.as_deref().map(resolve_cgroup).transpose()?;
    if let Some(comm) = &f.comm
        && comm.len() > 15
    {
        tracing::warn!(
            "--comm {comm:?} is longer than the 15 bytes the kernel keeps; matching {:?}",
            &comm[..15]
        );
    }
    Ok(ProbeConfig {
        attach: match args.attach {
            AttachMode::Auto => ProbeAttach::Auto,
            AttachMode::Fentry => ProbeAttach::Fentry,
            AttachMode::Kprobe => ProbeAttach::Kprobe,
            AttachMode::Tracepoint => ProbeAttach::Tracepoint,
        },
        kprobe_target: args.kprobe_target.clone(),
        ring_size: args.ring_size,
        filters: Filters {
            pid: f.pid,
            comm: f.comm.clone(),
            cgroup,
            path_prefix: f.path_prefix.clone(),
            failed_only: f.failed_only,
        },
        tracepoints: match args.tracepoints {
            TracepointsMode::RawFirst => Tracepoints::RawFirst,
            TracepointsMode::PerSyscall => Tracepoints::PerSyscall,
        },
        tracepoint_args: match args.tracepoint_args {
            TracepointArgsMode::Auto => TracepointArgs::Auto,
            TracepointArgsMode::SavedRegs => TracepointArgs::SavedRegs,
            TracepointArgsMode::EnterExit => TracepointArgs::EnterExit,
        },
        records: match args.records {
            None => records,
            Some(RecordsMode::Compact) => RecordKind::Compact,
            Some(RecordsMode::Full) => RecordKind::Full,
        },
        cost_variant: match args.cost_variant {
            CostVariantMode::Normal => CostVariant::Normal,
            CostVariantMode::Return => CostVariant::ReturnAtOnce,
            CostVariantMode::PercpuCount => CostVariant::PerCpuCount,
            CostVariantMode::ConstantRecord => CostVariant::ConstantRecord,
            CostVariantMode::FullWithoutPath => CostVariant::FullWithoutPath,
            CostVariantMode::Unbatched => CostVariant::Unbatched,
            CostVariantMode::BatchUnsent => CostVariant::BatchUnsent,
        },
        task_fields: match args.task_fields {
            TaskFieldsMode::Auto => TaskFields::Auto,
            TaskFieldsMode::Helpers => TaskFields::Helpers,
        },
        ..ProbeConfig::default()
    })
}

/// Loads the probe off the async threads (the self-test waits for its own opens).
pub async fn load_probe(config: ProbeConfig) -> anyhow::Result<Probe> {
    let started = Instant::now();
    let probe = tokio::task::spawn_blocking(move || Probe::load(config))
        .await
        .context("the probe loader panicked")??;
    let info = probe.attach_info();
    tracing::info!(
        mode = info.mode,
        target = %info.target,
        records = ?info.records,
        task_fields = info.task_fields,
        points = %info.points.join(" "),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "probe attached"
    );
    if info.mode == "kprobe" {
        let instances = splitscope_probes::kretprobe_missed::instances();
        if info.counts_kretprobe_misses {
            tracing::info!(
                "the kretprobe follows {instances} opens at once; opens beyond that, asleep in the kernel \
                 together, are counted in splitscope_probe_events_dropped_total"
            );
        } else {
            // On >= 6.7 the loader has already warned why reading the count failed.
            let why = if splitscope_probes::kretprobe_missed::reported_by_kernel() {
                "the kernel's count of the ones it misses beyond that could not be read"
            } else {
                "this kernel (< 6.7) does not report the ones it misses beyond that"
            };
            tracing::warn!(
                "the kretprobe follows {instances} opens at once, and {why}: they are neither counted nor \
                 dropped; --attach tracepoint has no such limit"
            );
        }
    } else if info.mode == "fentry" {
        tracing::info!(
            "fexit follows any number of opens at once; on a kernel that preempts kernel code, opens \
             the kernel runs without it while it is preempted on their CPU are counted in \
             splitscope_probe_events_dropped_total (--attach tracepoint skips none)"
        );
    }
    Ok(probe)
}

/// On a node, the cgroup v2 subtree that is this node when the tree the agent sees is not the
/// kernel's whole tree: the root of a cgroup namespace, as on a kind node (a container sharing
/// the host's kernel with the other nodes), whose hostPath-mounted /sys/fs/cgroup is the node
/// container's view. The probe sees every open on the kernel; without this each of a kind
/// cluster's agents would count every node's opens (and the host's) as opens outside any pod.
/// `None` on an ordinary node, whose tree starts at the kernel's root cgroup.
fn node_subtree(cgroup_root: Option<&std::path::Path>) -> Option<splitscope_probes::filters::CgroupTarget> {
    resolve_cgroup(cgroup_root?).ok().filter(|root| root.filters())
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let shutdown = crate::shutdown::on_signal()?;
    // Counting never reads a path: compact records, unless a --path-prefix filter needs paths.
    let mut config = probe_config(&args.probe, RecordKind::Compact)?;
    let server = MetricsServer::bind(args.metrics_addr).await?;
    let addr = server.local_addr()?;
    let metrics = AgentMetrics::new(args.max_series)?;
    let readiness = Arc::new(Readiness::default());
    let server_task = tokio::spawn(server.serve(metrics.registry(), readiness.clone(), shutdown.clone()));
    tracing::info!("serving metrics on http://{addr}/metrics");

    let client = pods::connect(args.kubernetes).await?;
    let cgroup_root = cgroups::cgroup2_mount();
    if client.is_some()
        && config.filters.cgroup.is_none()
        && let Some(node) = node_subtree(cgroup_root.as_deref())
    {
        tracing::info!(
            cgroup = %node.path.display(),
            id = node.id,
            "the cgroup v2 tree here is a cgroup namespace's view (a kind node, or a node inside a \
             container): counting the opens of the tasks in it only, not those of the other nodes \
             or the host that share this kernel"
        );
        config.filters.cgroup = Some(node);
    }
    let mut probe = load_probe(config).await?;
    let info = probe.attach_info();
    metrics.set_attach_info(info.mode, &info.target);

    let directory = match client {
        Some(client) => {
            let node = pods::node_name(args.node_name.as_deref());
            tracing::info!(node = %node, "attributing opens to this node's Pods");
            let directory = Arc::new(PodDirectory::default());
            tokio::spawn(pods::reflect(client, node, directory.clone(), shutdown.clone()));
            Some(directory)
        }
        None => None,
    };
    if directory.is_some() && cgroup_root.is_none() {
        tracing::warn!("no cgroup v2 mount in /proc/self/mountinfo: opens cannot be attributed to pods");
    }
    let mut counter = OpenCounter::new(metrics, Attributor::new(CgroupPaths::new(cgroup_root), directory));
    let mut stream = probe.events(DRAIN_INTERVAL)?;
    readiness.set_ready(true);
    tracing::info!("agent ready");

    let mut counters_tick = tokio::time::interval(Duration::from_millis(500));
    let mut forget_tick = tokio::time::interval(Duration::from_secs(30));
    let mut decode_errors = 0u64;
    loop {
        // Everything in the ring, read in place; then wait for a wakeup or the drain timer.
        stream.drain(|event| match event {
            Ok(event) => counter.count(&event),
            Err(err) => note_decode_error(&mut decode_errors, &err),
        });
        counter.flush();
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = counters_tick.tick() => match probe.dropped() {
                Ok(total) => counter.metrics().set_dropped(total),
                Err(err) => tracing::warn!(error = %err, "reading the drop counter"),
            },
            _ = forget_tick.tick() => {
                let removed = counter.forget_gone_pods(Instant::now());
                if removed > 0 {
                    tracing::info!(series = removed, "removed the series of pods gone from this node");
                }
            }
            ready = stream.wait() => ready.context("waiting on the probe's ring buffer")?,
        }
    }
    probe.detach();
    server_task.await.context("metrics server task")??;
    Ok(())
}

fn note_decode_error(count: &mut u64, err: &splitscope_probes::event::DecodeError) {
    *count += 1;
    if count.is_power_of_two() {
        tracing::warn!(error = %err, total = *count, "undecodable ring buffer records");
    }
}
