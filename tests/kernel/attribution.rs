//! Attribution on a kubelet-like cgroup tree built under the real cgroup v2 mount: real opens
//! from a process in a `cri-containerd-<id>.scope` are counted under the Pod that lists that
//! container id.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus};
use kube::api::ObjectMeta;
use splitscope::agent::attribution::Attributor;
use splitscope::agent::cgroups::{CgroupPaths, cgroup2_mount};
use splitscope::agent::count::OpenCounter;
use splitscope::agent::metrics::AgentMetrics;
use splitscope::agent::pods::{PodDirectory, PodIndex};
use splitscope_probes::filters::resolve_cgroup;
use splitscope_probes::{Filters, ProbeConfig};
use tokio::io::AsyncWriteExt;

use crate::filters::TestCgroup;
use crate::support::*;

#[tokio::test]
async fn opens_in_a_pod_cgroup_are_counted_under_that_pod() {
    require_bpf();
    let uid = format!("5e2a9c1d-0b7f-4c3e-8d6a-{:012x}", std::process::id());
    let id = format!("{:0>64}", format!("{:x}", std::process::id()) + "c0ffee");
    let top = unique("splitscope-kt-kp");
    let relative = format!(
        "{top}/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{id}.scope",
        uid.replace('-', "_")
    );
    let cg = TestCgroup::create(&relative);

    let pod = Pod {
        metadata: ObjectMeta {
            namespace: Some("shop".into()),
            name: Some("checkout-7d9f".into()),
            uid: Some(uid.clone()),
            ..ObjectMeta::default()
        },
        status: Some(PodStatus {
            container_statuses: Some(vec![ContainerStatus {
                name: "app".into(),
                container_id: Some(format!("containerd://{id}")),
                ..ContainerStatus::default()
            }]),
            ..PodStatus::default()
        }),
        ..Pod::default()
    };
    let directory = Arc::new(PodDirectory::default());
    directory.replace(PodIndex::build([&pod]));
    let mut counter = OpenCounter::new(
        AgentMetrics::new(100).unwrap(),
        Attributor::new(CgroupPaths::new(cgroup2_mount()), Some(directory)),
    );

    let comm = unique("ssk");
    let files = Files::new("kp");
    let (_probe, mut stream) = load(ProbeConfig {
        filters: Filters {
            cgroup: Some(resolve_cgroup(cg.top()).unwrap()),
            ..Filters::default()
        },
        ..ProbeConfig::default()
    });
    let mut child = spawn_opener(
        &comm,
        &[op("openat", &files.exists, 4), op("openat", &files.missing, 3)],
        true,
    );
    cg.add(child.pid());
    child.stdin.take().unwrap().write_all(b"g").await.unwrap();
    assert!(child.wait().await.unwrap().success());

    let events = collect(&mut stream, 7, Duration::from_secs(5), comm_is(&comm)).await;
    assert_eq!(events.len(), 7);
    for e in &events {
        counter.count(e);
    }
    counter.flush();
    let mut text = Vec::new();
    prometheus::Encoder::encode(
        &prometheus::TextEncoder::new(),
        &counter.metrics().registry().gather(),
        &mut text,
    )
    .unwrap();
    let text = String::from_utf8(text).unwrap();
    let series = |result: &str| {
        format!(
            r#"splitscope_file_opens_total{{comm="{comm}",container="app",namespace="shop",pod="checkout-7d9f",result="{result}"}}"#
        )
    };
    assert!(text.contains(&format!("{} 4", series("ok"))), "{text}");
    assert!(text.contains(&format!("{} 3", series("ENOENT"))), "{text}");
}
