//! The product's two halves joined on this machine's kernel: the real agent counts the real
//! opens of processes in two pods' cgroups (kubelet-shaped, under the cgroup v2 mount) and
//! attributes them to the Pods it reads from the fake API server; a real Prometheus scrapes it;
//! the real controller rolls out the canary against it and rolls it back when the canary's
//! processes fail their opens — judged by the built-in `openErrors` alone, no query written.

use std::ffi::OsStr;
use std::time::Duration;

use serde_json::{Value, json};
use splitscope_tests::fake_api_server::FakeApiServer;
use splitscope_tests::prometheus::{Job, Prometheus, require_prometheus};
use splitscope_tests::served::{self, PodEndpoint, controller_resources};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::filters::TestCgroup;
use crate::support::*;

const NODE: &str = "rollout-node";
const TS: &str = "/apis/splitscope.dev/v1alpha1/trafficsplits";
const ROUTES: &str = "/apis/gateway.networking.k8s.io/v1/httproutes";

/// One pod: its Pod object's identity and its container's cgroup, kubelet-shaped.
struct PodCgroup {
    name: String,
    uid: String,
    container_id: String,
    cgroup: TestCgroup,
}

impl PodCgroup {
    fn new(top: &str, name: &str, n: u64) -> Self {
        let uid = format!(
            "7a1c0e2d-5b3f-4e6a-9c8d-{:012x}",
            (u64::from(std::process::id()) << 8) + n
        );
        let container_id = format!("{:0>64}", format!("{:x}{n:x}c0de", std::process::id()));
        let relative = format!(
            "{top}/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{container_id}.scope",
            uid.replace('-', "_")
        );
        Self {
            name: name.to_owned(),
            uid,
            container_id,
            cgroup: TestCgroup::create(&relative),
        }
    }

    fn pod(&self, version: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": self.name, "namespace": "shop", "uid": self.uid,
                         "labels": {"app": "checkout", "version": version}},
            "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "app"}]},
            "status": {"containerStatuses": [{
                "name": "app", "ready": true, "restartCount": 0, "image": "app", "imageID": "",
                "containerID": format!("containerd://{}", self.container_id),
            }]},
        })
    }

    /// The pod's workload until `stop`: every 100 ms an opener process, moved into the pod's
    /// container cgroup before it opens anything, does `ops`. (Each exec also makes the dynamic
    /// loader's own failed opens — the same in both pods, so they cancel in the comparison;
    /// enough opens per process keep them from drowning the difference.)
    fn keep_opening(&self, comm: String, ops: Vec<String>, stop: CancellationToken) -> JoinHandle<()> {
        let procs = self.cgroup.leaf().join("cgroup.procs");
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let mut opener = spawn_opener(&comm, &ops, true);
                std::fs::write(&procs, opener.pid().to_string()).expect("moving the opener into its pod");
                if let Some(mut stdin) = opener.stdin.take() {
                    let _ = stdin.write_all(b"g").await;
                }
                let _ = opener.wait().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    }
}

/// The backend Service's EndpointSlice, naming `pod` as its one endpoint.
fn slice(backend: &str, pod: &PodCgroup, address: &str) -> Value {
    served::checkout_slice(
        backend,
        &[PodEndpoint {
            pod: &pod.name,
            uid: &pod.uid,
            address,
        }],
    )
}

fn traffic_split(prometheus: &str) -> Value {
    let rollout = json!({
        "stable": "stable",
        "canary": "canary",
        "steps": [{"setWeight": 50}, {"pause": {}}],
        "analysis": {
            "interval": "3s",
            "prometheus": {"address": format!("http://{prometheus}")},
            "metrics": [{"name": "open-errors", "openErrors": {"maxIncrease": 0.05}}],
        },
    });
    served::checkout(&[("stable", "v1", 100), ("canary", "v2", 0)], Some(rollout))
}

#[tokio::test]
async fn the_agents_count_of_a_canarys_failed_opens_rolls_it_back() {
    require_bpf();
    require_prometheus();
    let top = unique("splitscope-kt-ro");
    let stable = PodCgroup::new(&top, "checkout-v1-a", 1);
    let canary = PodCgroup::new(&top, "checkout-v2-a", 2);
    let files = Files::new("ro");

    // The API server: the two Pods on this node and their backend Services' slices.
    let api = FakeApiServer::start(
        controller_resources(true),
        vec![
            stable.pod("v1"),
            canary.pod("v2"),
            slice("stable", &stable, "10.0.1.1"),
            slice("canary", &canary, "10.0.2.1"),
        ],
    )
    .await
    .unwrap();
    let kube_dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(kube_dir.path()).unwrap();
    let env = [("KUBECONFIG", kubeconfig.as_os_str())];

    // The agent, attributing opens to those Pods.
    let (_agent, mut agent_logs) = spawn_with_env(&[], &env, &node_agent(NODE));
    let agent_addr = agent_ready(&mut agent_logs).await;

    // The workloads: v1 reads its files; v2 fails a third of its opens (the release's bug: a
    // file it needs is not there).
    let stop = CancellationToken::new();
    let v1 = stable.keep_opening(
        unique("ssv1"),
        vec![op("openat", &files.exists, 60)],
        stop.clone(),
    );
    let v2 = canary.keep_opening(
        unique("ssv2"),
        vec![op("openat", &files.exists, 40), op("openat", &files.missing, 20)],
        stop.clone(),
    );

    // Prometheus scraping the agent, as in the cluster.
    let prometheus = Prometheus::start(&[Job {
        name: "splitscope-agent-metrics",
        target: agent_addr.clone(),
        labels: vec![("node", NODE)],
    }])
    .await;
    // Both pods' opens, attributed, before the rollout starts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let series = prometheus
            .query(r#"sum by (pod, result) (splitscope_file_opens_total{namespace="shop"})"#)
            .await
            .unwrap_or_default();
        let pods: Vec<&str> = series
            .iter()
            .filter_map(|s| s["metric"]["pod"].as_str())
            .collect();
        if pods.contains(&"checkout-v1-a") && pods.contains(&"checkout-v2-a") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent never attributed both pods' opens: {series:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The controller, and the TrafficSplit with its rollout.
    api.put(traffic_split(&prometheus.addr));
    let (_controller, mut controller_logs) = spawn_with_env(
        &[],
        &[
            ("KUBECONFIG", kubeconfig.as_os_str()),
            ("POD_NAME", OsStr::new("controller-signal")),
        ],
        &["controller", "--no-leader-elect", "--metrics-addr", "127.0.0.1:0"],
    );
    wait_for(&mut controller_logs, "serving /metrics").await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let status = loop {
        let status = api
            .object(TS, "shop", "checkout")
            .map(|ts| ts["status"]["rollout"].clone())
            .unwrap_or(Value::Null);
        if status["phase"] == "Failed" {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the canary was never rolled back: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("open-errors (failed-open ratio canary 0.")
            && message.contains("exceeds maxIncrease 0.05"),
        "{message}"
    );
    let route = api.object(ROUTES, "shop", "checkout").expect("the HTTPRoute");
    let weights: Vec<(Value, Value)> = route["spec"]["rules"][0]["backendRefs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].clone(), r["weight"].clone()))
        .collect();
    assert_eq!(
        weights,
        [
            (json!("checkout-stable"), json!(100)),
            (json!("checkout-canary"), json!(0))
        ],
        "the traffic went back to the stable"
    );
    stop.cancel();
    let _ = tokio::join!(v1, v2);
}
