//! The agent inside a cgroup namespace, as on a kind node: the node is a container sharing the
//! host's kernel with the other nodes, and the /sys/fs/cgroup the agent's pod mounts from it
//! shows only the node's subtree, rooted at a cgroup that is not the kernel's root. The probe
//! still sees every open on the kernel.

use std::path::Path;
use std::time::Duration;

use splitscope_tests::fake_api_server::FakeApiServer;
use splitscope_tests::served::controller_resources;
use tokio::io::AsyncWriteExt;

use crate::filters::TestCgroup;
use crate::support::*;

/// The wrapper that starts the agent in `dir`'s cgroup, in a new cgroup namespace rooted there,
/// and in a mount namespace whose /sys/fs/cgroup is that namespace's view of the tree.
fn in_cgroup_namespace(dir: &Path) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        concat!(
            r#"echo $$ > "$0/cgroup.procs" && exec unshare --mount --cgroup --propagation private "#,
            r#"--kill-child=SIGKILL sh -c 'mount -t cgroup2 none /sys/fs/cgroup && exec "$@"' sh "$@""#
        )
        .into(),
        dir.display().to_string(),
    ]
}

/// Runs `comm`'s opens (`ok` successful, `failed` ENOENT) from a process moved into `cgroup`.
async fn open_inside(cgroup: &TestCgroup, comm: &str, files: &Files, ok: u32, failed: u32) {
    let mut inside = spawn_opener(
        comm,
        &[
            op("openat", &files.exists, ok),
            op("openat", &files.missing, failed),
        ],
        true,
    );
    cgroup.add(inside.pid());
    let mut stdin = inside.stdin.take().unwrap();
    stdin.write_all(b"g").await.unwrap();
    drop(stdin);
    assert!(inside.wait().await.unwrap().success());
}

/// `--cgroup` names a directory as the agent sees it. Inside a cgroup namespace that directory
/// is deeper in the kernel's tree than it looks: a filter that compared the task's ancestor at
/// the depth counted from the visible root matched nothing there, while the agent's self-test
/// (which bypasses the filters) passed.
#[tokio::test]
async fn cgroup_filter_holds_inside_a_cgroup_namespace() {
    require_bpf();
    let node = TestCgroup::create(&format!("{}/app", unique("splitscope-kt-ns")));
    let files = Files::new("cn");
    let comm = unique("ssc");
    let wrapper = in_cgroup_namespace(node.top());
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    // /sys/fs/cgroup/app as the agent sees it is <top>/app in the kernel's tree.
    let (_agent, mut logs) = spawn_under(
        &wrapper,
        &standalone_agent(&["--cgroup", "/sys/fs/cgroup/app", "--comm", &comm]),
    );
    let addr = agent_ready(&mut logs).await;

    open_inside(&node, &comm, &files, 4, 3).await;
    run_opener(&comm, &[op("openat", &files.exists, 5)]).await; // outside the cgroup

    let metrics = settled_metrics(&addr, &comm, 4, 3).await;
    assert_eq!(series_value(&metrics, &comm, "ok"), Some(4), "{metrics}");
    assert_eq!(series_value(&metrics, &comm, "ENOENT"), Some(3), "{metrics}");
}

/// On a node whose cgroup tree is a namespace's view, the agent counts that node's opens only:
/// the opens of the other nodes and of the host, which share the kernel, are not this node's.
#[tokio::test]
async fn a_node_agent_in_a_cgroup_namespace_counts_only_its_nodes_opens() {
    require_bpf();
    let node = TestCgroup::create(&format!("{}/workload", unique("splitscope-kt-node")));
    let files = Files::new("nn");
    let api = FakeApiServer::start(controller_resources(true), vec![])
        .await
        .unwrap();
    let kube_dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(kube_dir.path()).unwrap();
    let wrapper = in_cgroup_namespace(node.top());
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let (_agent, mut logs) = spawn_with_env(
        &wrapper,
        &[("KUBECONFIG", kubeconfig.as_os_str())],
        &node_agent("kt-node"),
    );
    let addr = agent_ready(&mut logs).await;

    let on_node = unique("ssi");
    let elsewhere = unique("sse");
    open_inside(&node, &on_node, &files, 6, 2).await;
    run_opener(&elsewhere, &[op("openat", &files.exists, 5)]).await;

    let metrics = settled_metrics(&addr, &on_node, 6, 2).await;
    assert_eq!(series_value(&metrics, &on_node, "ok"), Some(6), "{metrics}");
    assert_eq!(series_value(&metrics, &on_node, "ENOENT"), Some(2), "{metrics}");
    // The other process's opens would have been counted by now (the drain interval is 50 ms).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = http_get(&addr, "/metrics").await.body;
    assert!(
        !metrics.contains(&format!("comm=\"{elsewhere}\"")),
        "opens outside the node's cgroup subtree were counted: {metrics}"
    );
}
