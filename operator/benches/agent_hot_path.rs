//! The agent's per-event path: read a compact ring-buffer record in place, attribute it, count
//! it; take the records of a batch from the ring; and what `trace` does instead, copying a full
//! record out.
//! `cargo xtask bench` runs this and writes the figures into BENCHMARKS.md.

use std::hint::black_box;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus};
use kube::api::ObjectMeta;
use splitscope::agent::attribution::Attributor;
use splitscope::agent::cgroups::CgroupPaths;
use splitscope::agent::count::OpenCounter;
use splitscope::agent::metrics::AgentMetrics;
use splitscope::agent::pods::{PodDirectory, PodIndex};
use splitscope_probes::batch::{Cursors, take_full};
use splitscope_probes::event::{
    BATCH_LEN, COMPACT_RECORD_SIZE, FULL_RECORD_SIZE, RawOpenBatch, RawOpenFull, encode_batch,
    encode_compact, encode_full, sample,
};
use splitscope_probes::{OpenEvent, OpenEventRef};

fn raw_records(n: usize, cgroup_id: u64) -> impl Iterator<Item = RawOpenFull> {
    (0..n).map(move |i| {
        let mut raw = sample(
            1000 + i as u32,
            &format!("comm{}", i % 64),
            "/etc/ld.so.cache",
            if i % 5 == 0 { -2 } else { 3 },
        );
        raw.head.cgroup_id = cgroup_id;
        raw
    })
}

/// Compact records, as the agent's probe writes them.
fn records(n: usize, cgroup_id: u64) -> Vec<[u8; COMPACT_RECORD_SIZE]> {
    raw_records(n, cgroup_id)
        .map(|r| encode_compact(&r.head))
        .collect()
}

fn hot_path(c: &mut Criterion) {
    let full: Vec<[u8; FULL_RECORD_SIZE]> = raw_records(1024, 1).map(|r| encode_full(&r)).collect();
    c.bench_function("decode: copy a full record out (as trace does)", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % full.len();
            black_box(OpenEvent::decode(black_box(&full[i])).ok())
        })
    });

    // A full batch as the ring delivers it; each round hands out the next one of the same CPU.
    let heads: Vec<_> = raw_records(BATCH_LEN, 1).map(|r| r.head).collect();
    let mut ring_batch = encode_batch(&RawOpenBatch {
        seq: 0,
        cpu: 0,
        pad: 0,
        rec: heads.try_into().unwrap(),
        pad_end: [0; 6],
    });
    let mut cursors = Cursors::new(1);
    let mut end = 0u64;
    let mut standalone_batched = OpenCounter::new(
        AgentMetrics::new(5000).unwrap(),
        Attributor::new(CgroupPaths::new(None), None),
    );
    c.bench_function(
        "take a full batch of 32 from the ring and count them standalone (per batch)",
        |b| {
            b.iter(|| {
                end += BATCH_LEN as u64;
                ring_batch[..8].copy_from_slice(&end.to_ne_bytes());
                take_full(&mut cursors, &ring_batch, |r| {
                    if let Ok(event) = r.and_then(OpenEventRef::new) {
                        standalone_batched.count(&event);
                    }
                });
                if end.is_multiple_of(BATCH_LEN as u64 * 32) {
                    standalone_batched.flush();
                }
            })
        },
    );

    let batch = records(1024, 1);
    let mut standalone = OpenCounter::new(
        AgentMetrics::new(5000).unwrap(),
        Attributor::new(CgroupPaths::new(None), None),
    );
    c.bench_function("count standalone: 64 comms x ok/ENOENT", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % batch.len();
            if let Ok(event) = OpenEventRef::new(&batch[i]) {
                standalone.count(&event);
            }
            // The agent flushes after each drain of the ring (thousands of records).
            if i == 0 {
                standalone.flush();
            }
        })
    });

    // In a cluster: a kubelet-shaped cgroup directory tree (plain directories stand in for the
    // cgroup fs: the agent maps directory inodes to paths the same way) and a Pod that lists the
    // container.
    let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let uid = "7c1e8a4b-2f3d-4e5f-9a0b-1c2d3e4f5a6b";
    let root = std::env::temp_dir().join(format!("splitscope-bench-cg-{}", std::process::id()));
    let leaf = root.join(format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{id}.scope",
        uid.replace('-', "_")
    ));
    std::fs::create_dir_all(&leaf).unwrap();
    let cgroup_id = std::fs::metadata(&leaf).unwrap().ino();
    let pod = Pod {
        metadata: ObjectMeta {
            namespace: Some("shop".into()),
            name: Some("checkout-1".into()),
            uid: Some(uid.into()),
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
    let in_pod = records(1024, cgroup_id);
    let mut cluster = OpenCounter::new(
        AgentMetrics::new(5000).unwrap(),
        Attributor::new(CgroupPaths::new(Some(root.clone())), Some(directory)),
    );
    c.bench_function("attribute + count in a pod: 64 comms x ok/ENOENT", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % in_pod.len();
            if let Ok(event) = OpenEventRef::new(&in_pod[i]) {
                cluster.count(&event);
            }
            if i == 0 {
                cluster.flush();
            }
        })
    });
    let _ = std::fs::remove_dir_all(&root);
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
