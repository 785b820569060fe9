//! Shared by the real-kernel tests: the access check, unique names, the opener child, collecting
//! events, the splitscope binary as a child process.

use std::path::PathBuf;
use std::process::Stdio;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use splitscope_probes::{EventStream, OpenEvent, Probe, ProbeConfig};

pub use splitscope_tests::http::get as http_get;
pub use splitscope_tests::process_group::GroupChild;

/// Fails the test, naming what is missing, when this process cannot load BPF programs.
pub fn require_bpf() {
    if let Err(err) = splitscope_probes::preflight::check_privileges() {
        panic!("the real-kernel tests need BPF: {err}");
    }
    if let Err(err) = splitscope_probes::preflight::check_btf() {
        panic!("the real-kernel tests need kernel BTF: {err}");
    }
}

/// A command name (<= 15 bytes) and file-name stem no other process uses.
pub fn unique(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id() % 100_000;
    let mut name = format!("{tag}{pid}x{n}");
    name.truncate(15);
    name
}

/// A fresh directory holding an existing file `exists`; `missing` is never created.
pub struct Files {
    pub dir: PathBuf,
    pub exists: String,
    pub missing: String,
}

impl Files {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("splitscope-kt-{}", unique(tag)));
        std::fs::create_dir_all(&dir).unwrap();
        let exists = dir.join("exists");
        std::fs::write(&exists, b"x").unwrap();
        Self {
            exists: exists.to_str().unwrap().to_owned(),
            missing: dir.join("missing").to_str().unwrap().to_owned(),
            dir,
        }
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The test opener's command line: `ops` under the command name `comm`.
fn opener_command(comm: &str, ops: &[String]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_splitscope-test-opener"));
    cmd.arg("--comm").arg(comm).args(ops);
    cmd
}

/// The opener that makes `ops` under the command name `comm`. With `wait_stdin` it waits for a
/// byte (or EOF) on its stdin before opening, so a test can first act on its pid.
pub fn spawn_opener(comm: &str, ops: &[String], wait_stdin: bool) -> GroupChild {
    let mut cmd = opener_command(comm, ops);
    if wait_stdin {
        cmd.arg("--wait-stdin").stdin(Stdio::piped());
    } else {
        cmd.stdin(Stdio::null());
    }
    GroupChild::spawn(&mut cmd).expect("starting the opener")
}

/// The opener that makes `ops` under the command name `comm` on one CPU, reading a byte from
/// stdin at each `pause` op.
pub fn spawn_pinned_opener(comm: &str, ops: &[String]) -> GroupChild {
    let mut cmd = opener_command(comm, ops);
    cmd.arg("--pin").stdin(Stdio::piped());
    GroupChild::spawn(&mut cmd).expect("starting the opener")
}

/// Runs the opener to completion (the process starts before the first await).
pub fn run_opener(comm: &str, ops: &[String]) -> impl std::future::Future<Output = ()> + 'static {
    let mut opener = spawn_opener(comm, ops, false);
    async move {
        let status = opener.wait().await.unwrap();
        assert!(status.success(), "opener failed: {status}");
    }
}

pub fn load(config: ProbeConfig) -> (Probe, EventStream) {
    require_bpf();
    let mut probe = Probe::load(config).unwrap_or_else(|e| panic!("loading the probe: {e:#}"));
    let stream = probe.events(Duration::from_millis(20)).unwrap();
    (probe, stream)
}

/// Reads events until `want` of them match `keep` (then 300 ms more, to catch any extra), or
/// until `timeout`. Returns the matching ones.
pub async fn collect(
    stream: &mut EventStream,
    want: usize,
    timeout: Duration,
    keep: impl Fn(&OpenEvent) -> bool,
) -> Vec<OpenEvent> {
    let mut kept = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut settle_until = None;
    loop {
        let until = settle_until.unwrap_or(deadline).min(deadline);
        match tokio::time::timeout_at(until, stream.next()).await {
            Err(_) => return kept,
            Ok(event) => {
                let event = event.expect("a decodable record");
                if keep(&event) {
                    kept.push(event);
                    if kept.len() >= want && settle_until.is_none() {
                        settle_until = Some(tokio::time::Instant::now() + Duration::from_millis(300));
                    }
                }
            }
        }
    }
}

pub fn comm_is(comm: &str) -> impl Fn(&OpenEvent) -> bool + '_ {
    move |e| e.comm() == comm.as_bytes()
}

pub fn op(kind: &str, path: &str, count: u32) -> String {
    format!("{kind}:{path}:{count}")
}

/// A splitscope child's stderr, one JSON log line at a time.
pub struct Logs {
    lines: mpsc::UnboundedReceiver<serde_json::Value>,
    reader: JoinHandle<()>,
}

impl Logs {
    pub async fn recv(&mut self) -> Option<serde_json::Value> {
        self.lines.recv().await
    }

    /// Stops reading and closes this end of the child's stderr pipe, as when the process that
    /// started the child has gone: the child's next log line meets a broken pipe.
    pub async fn close(self) {
        self.reader.abort();
        let _ = self.reader.await;
    }
}

/// The splitscope binary with JSON logs; stderr lines arrive on the returned `Logs`.
pub fn spawn(args: &[&str]) -> (GroupChild, Logs) {
    spawn_under(&[], args)
}

/// `splitscope agent` on an ephemeral port and without a cluster, with `extra` flags after.
pub fn standalone_agent<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["agent", "--metrics-addr", "127.0.0.1:0", "--kubernetes", "off"];
    args.extend_from_slice(extra);
    args
}

/// `splitscope agent` on an ephemeral port, attributing opens to the Pods of `node` (through
/// the API server its KUBECONFIG names).
pub fn node_agent(node: &str) -> Vec<&str> {
    vec![
        "agent",
        "--metrics-addr",
        "127.0.0.1:0",
        "--kubernetes",
        "on",
        "--node-name",
        node,
    ]
}

/// Like `spawn`, with the binary started by `wrapper` (e.g. `unshare …`).
pub fn spawn_under(wrapper: &[&str], args: &[&str]) -> (GroupChild, Logs) {
    require_bpf();
    spawn_with_env(wrapper, &[], args)
}

/// The splitscope binary with extra environment variables (no BPF check: the controller needs
/// none).
pub fn spawn_with_env(
    wrapper: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
    args: &[&str],
) -> (GroupChild, Logs) {
    let bin = env!("CARGO_BIN_EXE_splitscope-under-test");
    let mut command = match wrapper {
        [] => Command::new(bin),
        [program, rest @ ..] => {
            let mut c = Command::new(program);
            c.args(rest).arg(bin);
            c
        }
    };
    command
        .envs(env.iter().copied())
        .arg("--log-format")
        .arg("json")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = GroupChild::spawn(&mut command).unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[child] {line}");
            let value = serde_json::from_str(&line).unwrap_or(serde_json::Value::String(line));
            if tx.send(value).is_err() {
                break;
            }
        }
    });
    (child, Logs { lines, reader })
}

pub fn message(v: &serde_json::Value) -> &str {
    v["fields"]["message"].as_str().unwrap_or_default()
}

/// Waits for a log line whose message starts with `prefix`.
pub async fn wait_for(logs: &mut Logs, prefix: &str) -> serde_json::Value {
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(v) = logs.recv().await {
            if message(&v).starts_with(prefix) {
                return Some(v);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(v)) => v,
        _ => panic!("the child never logged {prefix:?}"),
    }
}

pub fn sigterm(child: &Child) {
    let pid = child.id().unwrap() as i32;
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
}

/// Asserts that `child` (already signalled) exits with success within `within`.
pub async fn exits_cleanly(child: &mut Child, within: Duration) {
    let status = tokio::time::timeout(within, child.wait())
        .await
        .unwrap_or_else(|_| panic!("the child did not exit within {within:?}"))
        .unwrap();
    assert!(status.success(), "child exit: {status}");
}

/// Waits for a started agent to serve metrics and pass its start-up self-test; returns the
/// metrics address (`host:port`).
pub async fn agent_ready(logs: &mut Logs) -> String {
    agent_ready_attached(logs).await.0
}

/// As `agent_ready`, also returning its "probe attached" log line.
pub async fn agent_ready_attached(logs: &mut Logs) -> (String, serde_json::Value) {
    let serving = wait_for(logs, "serving metrics on http://").await;
    let addr = message(&serving)
        .trim_start_matches("serving metrics on http://")
        .trim_end_matches("/metrics")
        .to_owned();
    let attached = wait_for(logs, "probe attached").await;
    wait_for(logs, "agent ready").await;
    (addr, attached)
}

/// The agent's /metrics once `comm` has at least `ok` successful and `enoent` ENOENT opens (or
/// after 3 s), scraped again 300 ms later so that a count still rising would show as too high.
pub async fn settled_metrics(addr: &str, comm: &str, ok: u64, enoent: u64) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let metrics = http_get(addr, "/metrics").await.body;
        let done = series_value(&metrics, comm, "ok") >= Some(ok)
            && series_value(&metrics, comm, "ENOENT") >= Some(enoent);
        if done || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    http_get(addr, "/metrics").await.body
}

/// The standalone agent's `splitscope_file_opens_total` for `comm` and `result`.
pub fn series_value(metrics: &str, comm: &str, result: &str) -> Option<u64> {
    let want = format!(
        r#"splitscope_file_opens_total{{comm="{comm}",container="",namespace="",pod="",result="{result}"}} "#
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&want))
        .map(|v| v.trim().parse().unwrap())
}
