//! Decoded event → counter increment. The per-event path is a hash lookup on
//! (cgroup id, comm bytes, return code class) and an atomic increment: label strings are built
//! only the first time a key is seen, or when the attribution behind it may have changed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use splitscope_probes::errno::errno_name;
use splitscope_probes::{OpenRecord, OpenResult};

use super::attribution::Attributor;
use super::metrics::{AgentMetrics, OpenLabels};

/// How often an incomplete attribution (pod not known yet) is retried for the same key.
const RETRY_INCOMPLETE: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    cgroup_id: u64,
    comm: [u8; 16],
    /// 0 for success, else the errno.
    errno: i32,
}

struct Entry {
    counter: IntCounter,
    generation: u64,
    complete: bool,
    resolved_at: Instant,
}

pub struct OpenCounter {
    metrics: AgentMetrics,
    attributor: Attributor,
    cache: HashMap<Key, Entry>,
    max_cache: usize,
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
            cache: HashMap::with_capacity(1024),
            max_cache: 65_536,
        }
    }

    pub fn metrics(&self) -> &AgentMetrics {
        &self.metrics
    }

    pub fn count(&mut self, event: &impl OpenRecord) {
        self.metrics.events().inc();
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
        if let Some(entry) = self.cache.get(&key)
            && entry.generation == generation
            && (entry.complete || entry.resolved_at.elapsed() < RETRY_INCOMPLETE)
        {
            entry.counter.inc();
            return;
        }
        self.resolve(key, event, generation).inc();
    }

    #[cold]
    fn resolve(&mut self, key: Key, event: &impl OpenRecord, generation: u64) -> IntCounter {
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
            // memory without end.
            self.cache.clear();
        }
        self.cache.insert(
            key,
            Entry {
                counter: counter.clone(),
                generation,
                complete: attribution.complete,
                resolved_at: Instant::now(),
            },
        );
        counter
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
        let mut out = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &counter.metrics().registry().gather(),
            &mut out,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(r#"comm="cat",container="",namespace="",pod="",result="ok"} 4"#),
            "{text}"
        );
        assert!(text.contains(r#"comm="cat",container="",namespace="",pod="",result="ENOENT"} 2"#));
        assert!(text.contains(r#"comm="ls",container="",namespace="",pod="",result="EACCES"} 1"#));
        assert!(text.contains("splitscope_probe_events_total 7"));
    }
}
