//! Shared by the real-kernel tests: the access check, unique names, the opener child, collecting
//! events.

use std::path::PathBuf;
use std::process::Stdio;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use splitscope_probes::{EventStream, OpenEvent, Probe, ProbeConfig};

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

pub fn opener_command(comm: &str, ops: &[String]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_splitscope-test-opener"));
    cmd.arg("--comm").arg(comm).args(ops).stdin(Stdio::null());
    cmd
}

/// Runs the opener to completion (the command is built before the first await).
pub fn run_opener(comm: &str, ops: &[String]) -> impl std::future::Future<Output = ()> + 'static {
    let mut cmd = opener_command(comm, ops);
    async move {
        let status = cmd.status().await.unwrap();
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

/// The splitscope binary with JSON logs; stderr lines arrive on the returned channel.
pub fn spawn(args: &[&str]) -> (Child, mpsc::UnboundedReceiver<serde_json::Value>) {
    spawn_under(&[], args)
}

/// Like `spawn`, with the binary started by `wrapper` (e.g. `unshare …`).
pub fn spawn_under(wrapper: &[&str], args: &[&str]) -> (Child, mpsc::UnboundedReceiver<serde_json::Value>) {
    require_bpf();
    spawn_with_env(wrapper, &[], args)
}

/// The splitscope binary with extra environment variables (no BPF check: the controller needs
/// none).
pub fn spawn_with_env(
    wrapper: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
    args: &[&str],
) -> (Child, mpsc::UnboundedReceiver<serde_json::Value>) {
    let bin = env!("CARGO_BIN_EXE_splitscope-under-test");
    let mut command = match wrapper {
        [] => Command::new(bin),
        [program, rest @ ..] => {
            let mut c = Command::new(program);
            c.args(rest).arg(bin);
            c
        }
    };
    let mut child = command
        .envs(env.iter().copied())
        .arg("--log-format")
        .arg("json")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[child] {line}");
            let value = serde_json::from_str(&line).unwrap_or(serde_json::Value::String(line));
            if tx.send(value).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

pub fn message(v: &serde_json::Value) -> &str {
    v["fields"]["message"].as_str().unwrap_or_default()
}

/// Waits for a log line whose message starts with `prefix`.
pub async fn wait_for(
    logs: &mut mpsc::UnboundedReceiver<serde_json::Value>,
    prefix: &str,
) -> serde_json::Value {
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

pub async fn http_get(addr: &str, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
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
pub async fn agent_ready(logs: &mut mpsc::UnboundedReceiver<serde_json::Value>) -> String {
    let serving = wait_for(logs, "serving metrics on http://").await;
    let addr = message(&serving)
        .trim_start_matches("serving metrics on http://")
        .trim_end_matches("/metrics")
        .to_owned();
    wait_for(logs, "agent ready").await;
    addr
}

/// The agent's /metrics once `comm` has at least `ok` successful and `enoent` ENOENT opens (or
/// after 3 s), scraped again 300 ms later so that a count still rising would show as too high.
pub async fn settled_metrics(addr: &str, comm: &str, ok: u64, enoent: u64) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let metrics = http_get(addr, "/metrics").await;
        let done = series_value(&metrics, comm, "ok") >= Some(ok)
            && series_value(&metrics, comm, "ENOENT") >= Some(enoent);
        if done || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    http_get(addr, "/metrics").await
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
