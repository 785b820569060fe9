//! A tiny ring and a reader that does not read: the probe keeps running, and once the reader
//! drains, every open is either read or counted as dropped, and new opens arrive again.
//! Compact records travel in per-CPU batches of 32; the reader counts the batches the ring had
//! no room for as it finds them missing.

use std::time::Duration;

use splitscope_probes::event::BATCH_LEN;
use splitscope_probes::{Filters, ProbeConfig};

use crate::support::*;

#[tokio::test]
async fn full_ring_counts_drops_and_recovers_when_read() {
    let files = Files::new("ov");
    let comm = unique("ssd");
    let page = 4096;
    let (probe, mut stream) = load(ProbeConfig {
        ring_size: page,
        filters: Filters {
            comm: Some(comm.clone()),
            ..Filters::default()
        },
        ..ProbeConfig::default()
    });
    assert_eq!(probe.dropped().unwrap(), 0);

    // 500 opens into a ring that holds two batches, nobody reading; then more.
    run_opener(&comm, &[op("openat", &files.exists, 500)]).await;
    run_opener(&comm, &[op("openat", &files.missing, 300)]).await;
    let total = 800;

    // Reading resumes: what was kept comes out, the full batches from the ring and the rest
    // where it was written. With what was dropped, that is every open, each once.
    let kept = collect(&mut stream, total, Duration::from_secs(3), comm_is(&comm)).await;
    let dropped = probe.dropped().unwrap() as usize;
    assert!(dropped >= 600, "dropped {dropped}: the ring holds 64 records");
    assert!(kept.len() >= 2 * BATCH_LEN, "kept {}", kept.len());
    assert_eq!(
        kept.len() + dropped,
        total,
        "kept {} + dropped {dropped}",
        kept.len()
    );

    // New opens arrive in full, and nothing more is dropped.
    run_opener(&comm, &[op("openat", &files.exists, 5)]).await;
    let events = collect(&mut stream, 5, Duration::from_secs(5), comm_is(&comm)).await;
    assert_eq!(events.len(), 5);
    assert_eq!(probe.dropped().unwrap() as usize, dropped, "no drops once read");
}
