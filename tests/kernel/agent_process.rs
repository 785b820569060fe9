//! The agent and `trace` as real processes: exact counts scraped over real HTTP, live JSON
//! lines, and a clean exit on SIGTERM.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::*;

#[tokio::test]
async fn agent_exports_exact_counts_over_http_and_detaches_on_sigterm() {
    const N: u64 = 11;
    const M: u64 = 6;
    let (mut agent, mut logs) = spawn(&["agent", "--metrics-addr", "127.0.0.1:0", "--kubernetes", "off"]);
    let addr = agent_ready(&mut logs).await;
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

/// As in a DaemonSet pod without hostPID: the agent lives in its own pid namespace, so the tgid
/// the kernel reports for its opens is not the pid it knows itself by. The start-up self-test
/// must still recognise its own opens — through an in-kernel comm filter that they do not pass —
/// and the filtered counts must be exact.
#[tokio::test]
async fn agent_in_its_own_pid_namespace_passes_the_self_test_and_counts_exactly() {
    let comm = unique("ssn");
    let (_agent, mut logs) = spawn_under(
        &[
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child=SIGKILL",
        ],
        &[
            "agent",
            "--metrics-addr",
            "127.0.0.1:0",
            "--kubernetes",
            "off",
            "--comm",
            &comm,
        ],
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
    let (mut agent, mut logs) = spawn(&[
        "agent",
        "--metrics-addr",
        "127.0.0.1:0",
        "--kubernetes",
        "off",
        "--cgroup",
        "/tmp",
    ]);
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
