//! The agent and `trace` as real processes: exact counts scraped over real HTTP, live JSON
//! lines, and a clean exit on SIGTERM.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::*;

/// The agent counts the same whatever record kind its probe writes: compact (its default) or
/// full (`--records full`, the records `trace` uses).
async fn agent_exports_exact_counts_over_http_and_detaches_on_sigterm(records: &str) {
    const N: u64 = 11;
    const M: u64 = 6;
    let extra: &[&str] = if records == "full" {
        &["--records", "full"]
    } else {
        &[]
    };
    let (mut agent, mut logs) = spawn(&standalone_agent(extra));
    let (addr, attached) = agent_ready_attached(&mut logs).await;
    let want = if records == "full" { "Full" } else { "Compact" };
    assert_eq!(attached["fields"]["records"], want, "{attached}");
    assert_eq!(http_get(&addr, "/healthz").await.status, 200);
    assert_eq!(http_get(&addr, "/readyz").await.status, 200);

    let files = Files::new("ag");
    let comm = unique("ssm");
    run_opener(
        &comm,
        &[
            op("openat", &files.exists, N as u32),
            op("open", &files.missing, M as u32),
        ],
    )
    .await;

    // Within a second the counts are exact, and they stay exact.
    let metrics = settled_metrics(&addr, &comm, N, M).await;
    assert_eq!(series_value(&metrics, &comm, "ok"), Some(N), "{metrics}");
    assert_eq!(series_value(&metrics, &comm, "ENOENT"), Some(M));
    assert!(
        metrics.contains(r#"splitscope_probe_attach_info{mode="#),
        "{metrics}"
    );
    assert!(metrics.contains("splitscope_probe_events_dropped_total 0"));
    let events: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("splitscope_probe_events_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(events >= N + M);
    assert!(metrics.contains("process_resident_memory_bytes"));

    sigterm(&agent);
    wait_for(&mut logs, "probe detached").await;
    exits_cleanly(&mut agent, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn agent_counts_exactly_from_compact_records_and_detaches_on_sigterm() {
    agent_exports_exact_counts_over_http_and_detaches_on_sigterm("compact").await;
}

#[tokio::test]
async fn agent_counts_exactly_from_full_records_and_detaches_on_sigterm() {
    agent_exports_exact_counts_over_http_and_detaches_on_sigterm("full").await;
}

/// As in a DaemonSet pod without hostPID: the agent lives in its own pid namespace, so the tgid
/// the kernel reports for its opens is not the pid it knows itself by. The start-up self-test
/// must still recognise its own opens — through an in-kernel comm filter that they do not pass —
/// and the filtered counts must be exact.
#[tokio::test]
async fn agent_in_its_own_pid_namespace_passes_the_self_test_and_counts_exactly() {
    let comm = unique("ssn");
    let (_agent, mut logs) = spawn_under(
        &[OWN_PID_NAMESPACE, &["--kill-child=SIGKILL"]].concat(),
        &standalone_agent(&["--comm", &comm]),
    );
    let addr = agent_ready(&mut logs).await;

    let files = Files::new("ns");
    run_opener(
        &comm,
        &[op("openat", &files.exists, 4), op("openat", &files.missing, 3)],
    )
    .await;
    let other = unique("sso");
    run_opener(&other, &[op("openat", &files.exists, 2)]).await;

    let metrics = settled_metrics(&addr, &comm, 4, 3).await;
    assert_eq!(series_value(&metrics, &comm, "ok"), Some(4), "{metrics}");
    assert_eq!(series_value(&metrics, &comm, "ENOENT"), Some(3), "{metrics}");
    assert_eq!(
        series_value(&metrics, &other, "ok"),
        None,
        "the comm filter let {other} through"
    );
}

#[tokio::test]
async fn trace_prints_one_json_object_per_open() {
    let comm = unique("sst");
    let (mut trace, mut logs) = spawn(&["trace", "--output", "json", "--comm", &comm]);
    wait_for(&mut logs, "probe attached").await;
    let files = Files::new("tr");
    run_opener(
        &comm,
        &[op("openat", &files.exists, 3), op("openat", &files.missing, 2)],
    )
    .await;

    let mut lines = BufReader::new(trace.stdout.take().unwrap()).lines();
    let mut objects = Vec::new();
    while objects.len() < 5 {
        let line = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
            .await
            .expect("trace printed the opens")
            .unwrap()
            .unwrap();
        objects.push(serde_json::from_str::<serde_json::Value>(&line).unwrap());
    }
    sigterm(&trace);
    exits_cleanly(&mut trace, Duration::from_secs(10)).await;
    assert!(objects.iter().all(|o| o["comm"] == comm.as_str()));
    let ok: Vec<_> = objects.iter().filter(|o| o["fd"].is_number()).collect();
    let failed: Vec<_> = objects.iter().filter(|o| o["error"] == "ENOENT").collect();
    assert_eq!((ok.len(), failed.len()), (3, 2), "{objects:#?}");
    assert!(
        ok.iter()
            .all(|o| o["path"] == files.exists.as_str() && o["syscall"] == "openat")
    );
    assert!(
        failed
            .iter()
            .all(|o| o["path"] == files.missing.as_str() && o["errno"] == 2)
    );
    assert!(
        ok.iter()
            .all(|o| o["flag_names"] == serde_json::json!(["O_RDONLY", "O_NOCTTY"]))
    );
}

#[tokio::test]
async fn trace_table_has_the_opensnoop_columns() {
    let comm = unique("ssb");
    let (mut trace, mut logs) = spawn(&["trace", "--comm", &comm]);
    wait_for(&mut logs, "probe attached").await;
    let files = Files::new("tb");
    run_opener(&comm, &[op("openat", &files.missing, 1)]).await;
    let mut lines = BufReader::new(trace.stdout.take().unwrap()).lines();
    let header = lines.next_line().await.unwrap().unwrap();
    for column in ["TIME", "PID", "COMM", "FD/ERR", "FLAGS", "PATH"] {
        assert!(header.contains(column), "{header}");
    }
    let row = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        row.contains(&comm) && row.contains("ENOENT") && row.ends_with(&files.missing),
        "{row}"
    );
    sigterm(&trace);
    exits_cleanly(&mut trace, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn agent_names_a_bad_cgroup_filter_and_exits_non_zero() {
    let (mut agent, mut logs) = spawn(&standalone_agent(&["--cgroup", "/tmp"]));
    let status = tokio::time::timeout(Duration::from_secs(10), agent.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success());
    // Everything it wrote on stderr, up to the pipe's end.
    let mut said = Vec::new();
    while let Some(line) = tokio::time::timeout(Duration::from_secs(5), logs.recv())
        .await
        .expect("stderr ends once the agent has exited")
    {
        said.push(match line {
            serde_json::Value::String(text) => text,
            json => message(&json).to_owned(),
        });
    }
    assert!(
        said.iter()
            .any(|l| l.contains("--cgroup /tmp") && l.contains("not on a cgroup v2 filesystem")),
        "the error names neither the filter nor what is wrong with it: {said:#?}"
    );
}

/// `unshare --pid --fork`: unshare (in this pid namespace) forks the agent as pid 1 of a new
/// one and waits for it; `--kill-child=SIG` makes the kernel send the agent SIG when unshare dies.
const OWN_PID_NAMESPACE: &[&str] = &["unshare", "--pid", "--fork", "--mount-proc"];

/// A process that is not this test's child (the agent under unshare), watched through /proc by
/// its pid and start time, so that a reused pid is not mistaken for it.
struct Watched {
    pid: u32,
    started: u64,
}

/// (state, parent pid, start time) from /proc/PID/stat.
fn proc_stat(pid: u32) -> Option<(char, u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state, ppid, ..., starttime (the 20th).
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    Some((
        fields[0].chars().next()?,
        fields[1].parse().ok()?,
        fields[19].parse().ok()?,
    ))
}

impl Watched {
    /// The only child of `parent`.
    fn child_of(parent: u32) -> Self {
        let children: Vec<(u32, u64)> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|pid| {
                let (_, ppid, started) = proc_stat(pid)?;
                (ppid == parent).then_some((pid, started))
            })
            .collect();
        assert_eq!(children.len(), 1, "children of {parent}: {children:?}");
        Self {
            pid: children[0].0,
            started: children[0].1,
        }
    }

    fn alive(&self) -> bool {
        proc_stat(self.pid)
            .is_some_and(|(state, _, started)| started == self.started && !"ZX".contains(state))
    }

    /// Its pid inside its own pid namespace (the last NSpid entry).
    fn pid_in_namespace(&self) -> String {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        let nspid = status.lines().find_map(|l| l.strip_prefix("NSpid:")).unwrap();
        nspid.split_whitespace().last().unwrap().to_owned()
    }
}

/// An agent as pid 1 of its own pid namespace (as in a pod), ready, whose stderr reader has
/// gone — as when the process that started it, and read its logs, has ended.
async fn orphanable_agent(kill_child: &str) -> (GroupChild, Watched) {
    let comm = unique("ssz");
    let mut wrapper_args = OWN_PID_NAMESPACE.to_vec();
    let kill_child = format!("--kill-child={kill_child}");
    wrapper_args.push(&kill_child);
    let (wrapper, mut logs) = spawn_under(&wrapper_args, &standalone_agent(&["--comm", &comm]));
    agent_ready(&mut logs).await;
    let agent = Watched::child_of(wrapper.pid());
    assert_eq!(agent.pid_in_namespace(), "1", "the agent is its namespace's init");
    logs.close().await;
    (wrapper, agent)
}

/// Issue 8, item 5: after a clean CI run an agent started under `unshare --pid --fork` was still
/// running, orphaned, probe attached, and ignored SIGTERM and SIGINT. The state: its wrapper was
/// killed when the test ended, and so was the test process that read its stderr. unshare's
/// --kill-child sent the agent SIGTERM; the agent's first log line about it met the broken pipe,
/// the logger panicked (`eprintln!` of its own write error) inside the signal-handling task, and
/// that task — the only listener for SIGTERM and SIGINT, whose handlers stay installed for the
/// life of the process — died without cancelling the shutdown. As pid 1 of its namespace the
/// agent is not killed by any signal it handles. It must exit.
#[tokio::test]
async fn agent_as_pid_1_exits_when_its_wrapper_dies_after_its_log_reader() {
    let (mut wrapper, agent) = orphanable_agent("SIGTERM").await;
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(wrapper.pid() as i32, libc::SIGKILL) }, 0);
    wrapper.wait().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while agent.alive() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent (pid {}) kept running 10 s after its wrapper died and sent it SIGTERM",
            agent.pid
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The same state reached by the kubelet's way of stopping a pod: SIGTERM to the container's
/// pid 1. The agent must finish its shutdown (detach, exit 0) even with nowhere to log to.
#[tokio::test]
async fn agent_as_pid_1_exits_cleanly_on_sigterm_with_nowhere_to_log() {
    let (mut wrapper, agent) = orphanable_agent("SIGKILL").await;
    // SAFETY: signalling the agent we started (it is alive: checked above).
    assert_eq!(unsafe { libc::kill(agent.pid as i32, libc::SIGTERM) }, 0);
    // unshare exits with its child's status.
    exits_cleanly(&mut wrapper, Duration::from_secs(10)).await;
    assert!(!agent.alive());
}
