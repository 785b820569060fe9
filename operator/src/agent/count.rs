//! Decoded event → counter increment. The per-event path is a hash lookup on
//! (cgroup id, comm bytes, return code class) and a plain add: label strings are built only the
//! first time a key is seen, or when the attribution behind it may have changed, and the counts
//! reach the exported (atomic) counters once per drain of the ring, in `flush`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use splitscope_probes::errno::errno_name;
use splitscope_probes::{OpenRecord, OpenResult};

use super::attribution::Attributor;
use super::metrics::{AgentMetrics, OpenLabels};

/// How often an incomplete attribution (pod not known yet) is retried for the same key.
const RETRY_INCOMPLETE: Duration = Duration::from_secs(1);
/// How long a deleted pod's series stay exported: several scrapes at any usual interval, so
/// Prometheus has its last counts before they go.
pub const GONE_POD_GRACE: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    cgroup_id: u64,
    comm: [u8; 16],
    /// 0 for success, else the errno.
    errno: i32,
}

struct Entry {
    counter: IntCounter,
    /// Counted since the last flush.
    pending: u64,
    generation: u64,
    complete: bool,
    resolved_at: Instant,
}

impl Entry {
    fn flush(&mut self) {
        if self.pending > 0 {
            self.counter.inc_by(self.pending);
            self.pending = 0;
        }
    }
}

pub struct OpenCounter {
    metrics: AgentMetrics,
    attributor: Attributor,
    /// foldhash: the key is 28 bytes of kernel data, hashed once per event; SipHash's DoS
    /// resistance buys nothing for a cache that is bounded and cleared.
    cache: HashMap<Key, Entry, foldhash::fast::RandomState>,
    max_cache: usize,
    /// Keys with pending counts, and events counted since the last flush.
    dirty: Vec<Key>,
    pending_events: u64,
}

/// The `result` label of an open.
pub fn result_label(result: OpenResult) -> String {
    match result {
        OpenResult::Fd(_) => "ok".to_owned(),
        OpenResult::Errno(e) => errno_name(e).map_or_else(|| format!("errno_{e}"), str::to_owned),
    }
}

impl OpenCounter {
    pub fn new(metrics: AgentMetrics, attributor: Attributor) -> Self {
        Self {
            metrics,
            attributor,
            cache: HashMap::with_capacity_and_hasher(1024, foldhash::fast::RandomState::default()),
            max_cache: 65_536,
            dirty: Vec::new(),
            pending_events: 0,
        }
    }

    /// Adds everything counted since the last flush to the exported counters. The agent flushes
    /// after each drain of the ring, so a scrape lags the kernel by at most one drain interval.
    pub fn flush(&mut self) {
        self.metrics
            .events()
            .inc_by(std::mem::take(&mut self.pending_events));
        for key in self.dirty.drain(..) {
            if let Some(entry) = self.cache.get_mut(&key) {
                entry.flush();
            }
        }
    }

    pub fn metrics(&self) -> &AgentMetrics {
        &self.metrics
    }

    /// Drops the series of pods gone from this node for `GONE_POD_GRACE` (see
    /// `AgentMetrics::forget_gone_pods`); returns how many went.
    pub fn forget_gone_pods(&mut self, now: Instant) -> usize {
        self.flush();
        let attributor = &self.attributor;
        let removed =
            self.metrics
                .forget_gone_pods(|ns, pod| attributor.pod_is_live(ns, pod), now, GONE_POD_GRACE);
        if removed > 0 {
            // Cached entries may hold the removed counters; they are rebuilt on the next open.
            self.cache.clear();
        }
        removed
    }

    /// Counts one open; visible in the metrics after the next `flush`.
    pub fn count(&mut self, event: &impl OpenRecord) {
        self.pending_events += 1;
        let key = Key {
            // Standalone, the cgroup does not change any label: one key per comm and result.
            cgroup_id: if self.attributor.in_cluster() {
                event.cgroup_id()
            } else {
                0
            },
            comm: *event.comm_bytes(),
            errno: match event.result() {
                OpenResult::Fd(_) => 0,
                OpenResult::Errno(e) => e,
            },
        };
        let generation = self.attributor.generation();
        if let Some(entry) = self.cache.get_mut(&key)
            && entry.generation == generation
            && (entry.complete || entry.resolved_at.elapsed() < RETRY_INCOMPLETE)
        {
            if entry.pending == 0 {
                self.dirty.push(key);
            }
            entry.pending += 1;
            return;
        }
        self.resolve(key, event, generation);
        self.dirty.push(key);
    }

    /// Builds the labels for `key` and caches its counter with one pending count.
    #[cold]
    fn resolve(&mut self, key: Key, event: &impl OpenRecord, generation: u64) {
        let attribution = self.attributor.attribute(key.cgroup_id);
        let labels = OpenLabels {
            namespace: attribution.pod.namespace,
            pod: attribution.pod.pod,
            container: attribution.pod.container,
            comm: String::from_utf8_lossy(event.comm()).into_owned(),
            result: result_label(event.result()),
        };
        let counter = self.metrics.opens_counter(labels);
        if self.cache.len() >= self.max_cache {
            // Keys are cheap to rebuild; a bound keeps a churn of comms and cgroups from growing
            // memory without end. Their pending counts go out first.
            self.cache.values_mut().for_each(Entry::flush);
            self.cache.clear();
        }
        let replaced = self.cache.insert(
            key,
            Entry {
                counter,
                pending: 1,
                generation,
                complete: attribution.complete,
                resolved_at: Instant::now(),
            },
        );
        // A stale entry for the same key (attribution changed) keeps its counts.
        if let Some(mut old) = replaced {
            old.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::cgroups::CgroupPaths;
    use splitscope_probes::event::{encode_compact, encode_full, sample, sample_head};
    use splitscope_probes::{OpenEvent, OpenEventRef};

    #[test]
    fn results_are_ok_or_errno_names() {
        assert_eq!(result_label(OpenResult::Fd(3)), "ok");
        assert_eq!(result_label(OpenResult::Errno(2)), "ENOENT");
        assert_eq!(result_label(OpenResult::Errno(13)), "EACCES");
        assert_eq!(result_label(OpenResult::Errno(999)), "errno_999");
    }

    /// Counts the same opens whatever the record kind and however they are read: compact and
    /// full records, copied out or read in place in the ring.
    #[test]
    fn counts_per_comm_and_result_standalone() {
        let metrics = AgentMetrics::new(100).unwrap();
        let mut counter = OpenCounter::new(metrics, Attributor::new(CgroupPaths::new(None), None));
        counter.count(&OpenEvent::from_full(sample(1, "cat", "/etc/hosts", 3)));
        counter.count(&OpenEvent::from_head(sample_head(1, "cat", 3)));
        let full = encode_full(&sample(1, "cat", "/etc/hosts", 3));
        counter.count(&OpenEventRef::new(&full).unwrap());
        let compact = encode_compact(&sample_head(1, "cat", 3));
        counter.count(&OpenEventRef::new(&compact).unwrap());
        for _ in 0..2 {
            counter.count(&OpenEventRef::new(&encode_compact(&sample_head(2, "cat", -2))).unwrap());
        }
        counter.count(&OpenEvent::from_full(sample(3, "ls", "/nope", -13)));
        let exported = |counter: &OpenCounter| {
            let mut out = Vec::new();
            prometheus::Encoder::encode(
                &prometheus::TextEncoder::new(),
                &counter.metrics().registry().gather(),
                &mut out,
            )
            .unwrap();
            String::from_utf8(out).unwrap()
        };
        // Counts reach the exported counters at the flush that follows each drain of the ring.
        let ls = r#"comm="ls",container="",namespace="",pod="",result="EACCES"}"#;
        assert!(exported(&counter).contains(&format!("{ls} 0")));
        counter.flush();
        let text = exported(&counter);
        assert!(text.contains(&format!("{ls} 1")), "{text}");
        assert!(
            text.contains(r#"comm="cat",container="",namespace="",pod="",result="ok"} 4"#),
            "{text}"
        );
        assert!(text.contains(r#"comm="cat",container="",namespace="",pod="",result="ENOENT"} 2"#));
        assert!(text.contains("splitscope_probe_events_total 7"));

        // Counting goes on from there; a flush with nothing new changes nothing.
        counter.count(&OpenEvent::from_head(sample_head(3, "ls", -13)));
        counter.flush();
        counter.flush();
        let text = exported(&counter);
        assert!(text.contains(&format!("{ls} 2")), "{text}");
        assert!(text.contains("splitscope_probe_events_total 8"));
    }
}
