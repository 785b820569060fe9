//! The in-kernel filters let through exactly what they name and nothing else.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use splitscope_probes::filters::resolve_cgroup;
use splitscope_probes::{Filters, OpenResult, ProbeConfig, RecordKind};
use tokio::io::AsyncWriteExt;

use crate::support::*;

fn with(filters: Filters) -> ProbeConfig {
    ProbeConfig {
        filters,
        ..ProbeConfig::default()
    }
}

/// Opens by this test process itself, which no filter below lets through.
fn noise(files: &Files) {
    for _ in 0..5 {
        let _ = std::fs::File::open(&files.exists);
        let _ = std::fs::File::open(&files.missing);
    }
}

#[tokio::test]
async fn comm_filter_lets_only_that_comm_through() {
    let files = Files::new("fc");
    let wanted = unique("ssc");
    let other = unique("sso");
    let (_probe, mut stream) = load(with(Filters {
        comm: Some(wanted.clone()),
        ..Filters::default()
    }));
    let a = run_opener(
        &wanted,
        &[op("openat", &files.exists, 4), op("openat", &files.missing, 2)],
    );
    let b = run_opener(&other, &[op("openat", &files.exists, 9)]);
    noise(&files);
    tokio::join!(a, b);
    let events = collect(&mut stream, 6, Duration::from_secs(5), |_| true).await;
    assert_eq!(events.len(), 6, "{events:#?}");
    assert!(events.iter().all(|e| e.comm() == wanted.as_bytes()));
    assert_eq!(events.iter().filter(|e| e.result().is_ok()).count(), 4);
}

#[tokio::test]
async fn pid_filter_lets_only_that_process_through() {
    let files = Files::new("fp");
    let comm = unique("ssp");
    // Two processes with the same comm; only the first one's pid is traced.
    let mut first = spawn_opener(&comm, &[op("openat", &files.exists, 3)], true);
    let pid = first.pid();
    // Full records: the paths tell the test's opens from the child's start-up opens.
    let (_probe, mut stream) = load(ProbeConfig {
        records: RecordKind::Full,
        ..with(Filters {
            pid: Some(pid),
            ..Filters::default()
        })
    });
    let second = run_opener(&comm, &[op("openat", &files.exists, 7)]);
    let mut stdin = first.stdin.take().unwrap();
    stdin.write_all(b"g").await.unwrap();
    drop(stdin);
    second.await;
    noise(&files);
    assert!(first.wait().await.unwrap().success());
    let events = collect(&mut stream, 3, Duration::from_secs(5), |_| true).await;
    // The child's own start-up (dynamic loader) opens count too: they are that pid's.
    assert!(events.iter().all(|e| e.pid() == pid), "{events:#?}");
    let mine = events
        .iter()
        .filter(|e| e.filename() == Some(files.exists.as_bytes()))
        .count();
    assert_eq!(mine, 3);
}

#[tokio::test]
async fn path_prefix_and_failed_only_together() {
    let files = Files::new("fx");
    let comm = unique("ssf");
    let prefix = format!("{}/", files.dir.display());
    let (_probe, mut stream) = load(with(Filters {
        path_prefix: Some(prefix.clone()),
        failed_only: true,
        ..Filters::default()
    }));
    run_opener(
        &comm,
        &[
            op("openat", &files.exists, 4),  // in the prefix, succeeds: filtered
            op("openat", &files.missing, 3), // in the prefix, fails: kept
            op("openat", "/nonexistent-splitscope-kt", 6), // fails, outside the prefix: filtered
        ],
    )
    .await;
    noise(&files); // this process's failures under the prefix are kept too
    let events = collect(&mut stream, 3, Duration::from_secs(5), comm_is(&comm)).await;
    assert_eq!(events.len(), 3, "{events:#?}");
    assert!(
        events
            .iter()
            .all(|e| e.result() == OpenResult::Errno(libc::ENOENT))
    );
    assert!(
        events
            .iter()
            .all(|e| e.filename() == Some(files.missing.as_bytes()))
    );
}

/// A cgroup v2 directory made for one test, removed afterwards.
pub struct TestCgroup {
    pub dirs: Vec<std::path::PathBuf>,
}

impl TestCgroup {
    pub fn create(relative: &str) -> Self {
        let root = splitscope::agent::cgroups::cgroup2_mount()
            .expect("a cgroup v2 mount (see /proc/self/mountinfo)");
        let leaf = root.join(relative);
        std::fs::create_dir_all(&leaf).unwrap_or_else(|e| panic!("creating {}: {e}", leaf.display()));
        let mut dirs = Vec::new();
        let mut d = leaf.as_path();
        while d != root {
            dirs.push(d.to_path_buf());
            d = d.parent().unwrap();
        }
        Self { dirs }
    }
    pub fn leaf(&self) -> &std::path::Path {
        &self.dirs[0]
    }
    pub fn top(&self) -> &std::path::Path {
        self.dirs.last().unwrap()
    }
    pub fn add(&self, pid: u32) {
        std::fs::write(self.leaf().join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for d in &self.dirs {
            // Deepest first; a cgroup can be removed once its processes have exited.
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

#[tokio::test]
async fn cgroup_filter_covers_the_cgroup_and_its_descendants() {
    require_bpf();
    let files = Files::new("fg");
    let cg = TestCgroup::create(&format!("{}/inner", unique("splitscope-kt-cg")));
    let comm = unique("ssg");
    let top = resolve_cgroup(cg.top()).unwrap();
    assert_eq!(top.id, std::fs::metadata(cg.top()).unwrap().ino());
    let (_probe, mut stream) = load(with(Filters {
        cgroup: Some(top),
        ..Filters::default()
    }));
    let mut inside = spawn_opener(&comm, &[op("openat", &files.exists, 5)], true);
    cg.add(inside.pid());
    let outside = run_opener(&comm, &[op("openat", &files.exists, 8)]);
    let mut stdin = inside.stdin.take().unwrap();
    stdin.write_all(b"g").await.unwrap();
    drop(stdin);
    outside.await;
    noise(&files);
    assert!(inside.wait().await.unwrap().success());
    let events = collect(&mut stream, 5, Duration::from_secs(5), |_| true).await;
    let leaf_id = std::fs::metadata(cg.leaf()).unwrap().ino();
    assert_eq!(events.len(), 5, "{events:#?}");
    assert!(
        events
            .iter()
            .all(|e| e.cgroup_id() == leaf_id && e.comm() == comm.as_bytes())
    );
}
