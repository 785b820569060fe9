//! A tiny ring and a reader that does not read: the kernel counts drops and keeps running;
//! once the reader drains, new opens arrive again.

use std::time::Duration;

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

    // 500 opens into a ring that holds 12 records, nobody reading.
    run_opener(&comm, &[op("openat", &files.exists, 500)]).await;
    let dropped = probe.dropped().unwrap();
    assert!(dropped >= 400, "dropped {dropped}");

    // The program kept running: more opens, more drops.
    run_opener(&comm, &[op("openat", &files.missing, 100)]).await;
    let dropped_more = probe.dropped().unwrap();
    assert_eq!(
        dropped_more,
        dropped + 100,
        "every open past a full ring is a counted drop"
    );

    // Reading resumes: what was kept comes out, then new opens arrive in full.
    let mut kept = 0;
    while stream.try_next().is_some() {
        kept += 1;
    }
    assert!(
        kept > 0 && kept + dropped_more as usize == 600,
        "kept {kept} + dropped {dropped_more}"
    );
    run_opener(&comm, &[op("openat", &files.exists, 5)]).await;
    let events = collect(&mut stream, 5, Duration::from_secs(5), comm_is(&comm)).await;
    assert_eq!(events.len(), 5);
    assert_eq!(probe.dropped().unwrap(), dropped_more, "no drops once read");
}
