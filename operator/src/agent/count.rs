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
/// How often the counts of a cgroup not attributed to any pod yet are attributed again.
const RETRY_HELD: Duration = Duration::from_millis(100);
/// How long such counts wait for their pod before they are counted as opens outside any pod.
/// A new container's first opens can come before its cgroup directory was walked or its Pod
/// was seen; counted at once they would have gone to the empty-labelled series for good — for a
/// canary that fails at start, every failed open it made, which its rollout's query then never
/// sees.
const HOLD_UNATTRIBUTED: Duration = Duration::from_secs(5);
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
    /// `None` while the counts are held (see `Held`).
    counter: Option<IntCounter>,
    /// Counted since the last flush (or since held).
    pending: u64,
    generation: u64,
    complete: bool,
    resolved_at: Instant,
    held: Option<Held>,
}

/// Counts of a cgroup that may be a pod's but is not attributed to one yet: kept back, for up to
/// `HOLD_UNATTRIBUTED`, rather than counted as opens outside any pod.
struct Held {
    /// The labels without a pod (comm and result are known).
    labels: OpenLabels,
    since: Instant,
}

impl Entry {
    fn flush(&mut self) {
        if self.pending > 0
            && let Some(counter) = &self.counter
        {
            counter.inc_by(self.pending);
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
        self.flush_at(Instant::now(), false);
    }

    /// `flush`, at `now`; `settle_all` gives up on every held count (before the cache is
    /// cleared, which would lose them).
    fn flush_at(&mut self, now: Instant, settle_all: bool) {
        self.metrics
            .events()
            .inc_by(std::mem::take(&mut self.pending_events));
        for key in std::mem::take(&mut self.dirty) {
            let Some(entry) = self.cache.get_mut(&key) else {
                continue;
            };
            if entry.held.is_some() && !self.settle(key, now, settle_all) {
                self.dirty.push(key);
                continue;
            }
            if let Some(entry) = self.cache.get_mut(&key) {
                entry.flush();
            }
        }
    }

    /// Attributes a held key's cgroup again when due; moves its counts to a counter once a pod
    /// is found, or once the hold is over (or `give_up`). Whether it is settled.
    #[cold]
    fn settle(&mut self, key: Key, now: Instant, give_up: bool) -> bool {
        let Some(entry) = self.cache.get_mut(&key) else {
            return true;
        };
        let Some(held) = &entry.held else {
            return true;
        };
        let expired = give_up || now.saturating_duration_since(held.since) >= HOLD_UNATTRIBUTED;
        if !expired && now.saturating_duration_since(entry.resolved_at) < RETRY_HELD {
            return false;
        }
        let attribution = self.attributor.attribute(key.cgroup_id);
        entry.resolved_at = now;
        entry.generation = self.attributor.generation();
        if !expired && unattributed(&attribution) {
            return false;
        }
        let Some(held) = entry.held.take() else {
            return true;
        };
        entry.complete = attribution.complete;
        entry.counter = Some(self.metrics.opens_counter(OpenLabels {
            namespace: attribution.pod.namespace,
            pod: attribution.pod.pod,
            container: attribution.pod.container,
            ..held.labels
        }));
        true
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
            // Held counts have no counter yet and keep waiting for their pod.
            self.cache.retain(|_, entry| entry.held.is_some());
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
        if !self.resolve(key, event, generation) {
            self.dirty.push(key);
        }
    }

    /// Builds the labels for `key` and caches its counter with one pending count (held, with
    /// whatever an earlier entry of the key held, while its cgroup has no pod yet). Whether the
    /// key is on the dirty list already (an earlier entry had counts not flushed yet).
    #[cold]
    fn resolve(&mut self, key: Key, event: &impl OpenRecord, generation: u64) -> bool {
        let now = Instant::now();
        let attribution = self.attributor.attribute(key.cgroup_id);
        let (complete, no_pod_yet) = (attribution.complete, unattributed(&attribution));
        let labels = OpenLabels {
            namespace: attribution.pod.namespace,
            pod: attribution.pod.pod,
            container: attribution.pod.container,
            comm: String::from_utf8_lossy(event.comm()).into_owned(),
            result: result_label(event.result()),
        };
        // What an earlier entry of this key held moves to this one, and its hold goes on.
        let (carried, held_since, mut dirty) = match self.cache.get_mut(&key) {
            Some(old) => {
                let dirty = old.pending > 0;
                match &old.held {
                    Some(held) => (std::mem::take(&mut old.pending), Some(held.since), dirty),
                    None => (0, None, dirty),
                }
            }
            None => (0, None, false),
        };
        let hold = no_pod_yet
            && held_since.is_none_or(|since| now.saturating_duration_since(since) < HOLD_UNATTRIBUTED);
        let (counter, held) = if hold {
            let since = held_since.unwrap_or(now);
            (None, Some(Held { labels, since }))
        } else {
            (Some(self.metrics.opens_counter(labels)), None)
        };
        if self.cache.len() >= self.max_cache {
            // Keys are cheap to rebuild; a bound keeps a churn of comms and cgroups from growing
            // memory without end. Their pending counts go out first, held ones included (every
            // key with pending counts is on the dirty list).
            self.flush_at(now, true);
            self.cache.clear();
            dirty = false; // the flush emptied the list
        }
        let replaced = self.cache.insert(
            key,
            Entry {
                counter,
                pending: 1 + carried,
                generation,
                complete,
                resolved_at: now,
                held,
            },
        );
        // A stale entry for the same key (attribution changed) keeps its counts.
        if let Some(mut old) = replaced {
            old.flush();
        }
        dirty
    }
}

/// A cgroup that may be a pod's with no pod found for it yet (its path, or its Pod, not known
/// yet). Processes outside pods are attributed at once (complete, no pod).
fn unattributed(attribution: &super::attribution::Attribution) -> bool {
    !attribution.complete && attribution.pod.pod.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::cgroups::CgroupPaths;
    use splitscope_probes::event::{encode_compact, encode_full, sample, sample_head};
    use splitscope_probes::{OpenEvent, OpenEventRef};
    use std::os::unix::fs::MetadataExt;

    /// What /metrics would serve.
    fn exported(counter: &OpenCounter) -> String {
        let mut out = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &counter.metrics().registry().gather(),
            &mut out,
        )
        .unwrap();
        String::from_utf8(out).unwrap()
    }

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

    /// A node's cgroup tree in a temporary directory, a container's cgroup in it, and the agent's
    /// counter attributing to this node's Pods (none yet).
    struct Node {
        root: std::path::PathBuf,
        pods: std::sync::Arc<crate::agent::pods::PodDirectory>,
        counter: OpenCounter,
    }

    const UID: &str = "0a1b2c3d-0000-4000-8000-00000000c0de";
    const CONTAINER: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";

    impl Node {
        fn new(name: &str) -> Self {
            Self::with_max_series(name, 100)
        }

        fn with_max_series(name: &str, max_series: usize) -> Self {
            let root = std::env::temp_dir().join(format!("splitscope-count-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(root.join("system.slice")).unwrap();
            let pods = std::sync::Arc::new(crate::agent::pods::PodDirectory::default());
            let attributor = Attributor::new(CgroupPaths::new(Some(root.clone())), Some(pods.clone()));
            let counter = OpenCounter::new(AgentMetrics::new(max_series).unwrap(), attributor);
            Self { root, pods, counter }
        }

        /// Makes the container's cgroup (cgroupfs layout); returns its id.
        fn container_cgroup(&self) -> u64 {
            let dir = self
                .root
                .join(format!("kubepods/besteffort/pod{UID}/{CONTAINER}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::metadata(dir).unwrap().ino()
        }

        fn pod_arrives(&self) {
            let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"namespace": "shop", "name": "checkout-v2", "uid": UID},
                "status": {"containerStatuses": [{"name": "app", "image": "app", "imageID": "",
                    "ready": true, "restartCount": 0, "containerID": format!("containerd://{CONTAINER}")}]},
            }))
            .unwrap();
            self.pods.replace(crate::agent::pods::PodIndex::build([&pod]));
        }

        /// Three failed opens by `crashy` in `cgroup`, as a container that fails at start makes.
        fn crash(&mut self, cgroup: u64) {
            for _ in 0..3 {
                self.open(cgroup, "crashy", -2);
            }
        }

        fn open(&mut self, cgroup_id: u64, comm: &str, ret: i64) {
            let mut head = sample_head(7, comm, ret);
            head.cgroup_id = cgroup_id;
            self.counter.count(&OpenEvent::from_head(head));
        }

        fn exported(&self) -> String {
            exported(&self.counter)
        }
    }

    impl Drop for Node {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    const IN_POD: &str =
        r#"{comm="crashy",container="app",namespace="shop",pod="checkout-v2",result="ENOENT"} 3"#;

    /// A container that fails at start, before the agent knew its Pod: its failed opens wait and
    /// then count for the Pod, not as opens outside any pod.
    #[test]
    fn a_new_containers_opens_wait_for_its_pod() {
        let mut node = Node::new("wait");
        let start = Instant::now();
        let cgroup = node.container_cgroup();
        node.crash(cgroup);
        node.counter.flush_at(start, false);
        let text = node.exported();
        assert!(
            !text.contains(r#"comm="crashy""#),
            "held, not counted without a pod: {text}"
        );
        assert!(text.contains("splitscope_probe_events_total 3"), "{text}");

        node.pod_arrives();
        node.counter.flush_at(start + RETRY_HELD * 2, false);
        let text = node.exported();
        assert!(text.contains(IN_POD), "{text}");
        assert!(!text.contains(r#"pod="",result="ENOENT""#), "{text}");
    }

    /// Counts whose cgroup never turns out to be a pod's are counted without one after the hold,
    /// and nothing is lost on the way; a process outside pods is counted at once.
    #[test]
    fn unattributed_counts_are_given_up_after_the_hold_and_outside_pods_at_once() {
        let mut node = Node::new("giveup");
        let start = Instant::now();
        let cgroup = node.container_cgroup();
        node.crash(cgroup);
        let service = std::fs::metadata(node.root.join("system.slice")).unwrap().ino();
        node.open(service, "sshd", 3);
        node.counter.flush_at(start, false);
        let text = node.exported();
        assert!(
            text.contains(r#"{comm="sshd",container="",namespace="",pod="",result="ok"} 1"#),
            "{text}"
        );
        assert!(!text.contains(r#"comm="crashy""#), "{text}");

        node.counter
            .flush_at(start + HOLD_UNATTRIBUTED + RETRY_HELD, false);
        let text = node.exported();
        assert!(
            text.contains(r#"{comm="crashy",container="",namespace="",pod="",result="ENOENT"} 3"#),
            "{text}"
        );
    }

    /// A full cache is cleared, and no count is lost on the way: every key with counts not
    /// flushed yet is flushed first.
    #[test]
    fn a_full_cache_is_cleared_without_losing_counts() {
        let metrics = AgentMetrics::new(100).unwrap();
        let mut counter = OpenCounter::new(metrics, Attributor::new(CgroupPaths::new(None), None));
        counter.max_cache = 2;
        for comm in ["a", "b", "a", "c", "b", "d"] {
            counter.count(&OpenEvent::from_head(sample_head(1, comm, 3)));
        }
        counter.flush();
        let text = exported(&counter);
        for (comm, n) in [("a", 2), ("b", 2), ("c", 1), ("d", 1)] {
            let series = format!(r#"{{comm="{comm}",container="",namespace="",pod="",result="ok"}} {n}"#);
            assert!(text.contains(&series), "{series} in {text}");
        }
        assert!(text.contains("splitscope_probe_events_total 6"), "{text}");
    }

    /// Without a cgroup v2 tree no cgroup will ever be found: nothing is held.
    #[test]
    fn without_a_cgroup_tree_opens_count_at_once() {
        let pods = std::sync::Arc::new(crate::agent::pods::PodDirectory::default());
        let attributor = Attributor::new(CgroupPaths::new(None), Some(pods));
        let mut counter = OpenCounter::new(AgentMetrics::new(100).unwrap(), attributor);
        let mut head = sample_head(7, "crashy", -2);
        head.cgroup_id = 4242;
        counter.count(&OpenEvent::from_head(head));
        counter.flush();
        let text = exported(&counter);
        assert!(
            text.contains(r#"{comm="crashy",container="",namespace="",pod="",result="ENOENT"} 1"#),
            "{text}"
        );
    }

    mod any_sequence {
        //! Random opens from a pod's container, a system service and an unknown cgroup, with
        //! flushes, the Pod coming and going, a tiny cache and a tiny series cap (the `other`
        //! bucket): no open is ever lost or counted twice.

        use proptest::prelude::*;

        use super::*;

        #[derive(Debug, Clone)]
        enum Step {
            Open { cgroup: u8, comm: u8, failed: bool },
            Flush { after_ms: u64 },
            PodArrives,
            PodGoes,
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                8 => (0u8..3, 0u8..3, any::<bool>()).prop_map(|(cgroup, comm, failed)| Step::Open { cgroup, comm, failed }),
                3 => (0u64..3000).prop_map(|after_ms| Step::Flush { after_ms }),
                1 => Just(Step::PodArrives),
                1 => Just(Step::PodGoes),
            ]
        }

        /// The sum of every `splitscope_file_opens_total` series.
        fn opens_exported(text: &str) -> u64 {
            text.lines()
                .filter(|l| l.starts_with("splitscope_file_opens_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]

            #[test]
            fn every_open_is_counted_once(
                max_cache in prop_oneof![Just(2usize), Just(3), Just(65_536)],
                max_series in prop_oneof![Just(2usize), Just(5), Just(100)],
                steps in prop::collection::vec(step(), 1..80),
            ) {
                let mut node = Node::with_max_series("any", max_series);
                node.counter.max_cache = max_cache;
                let container = node.container_cgroup();
                let service = std::fs::metadata(node.root.join("system.slice")).unwrap().ino();
                let mut now = Instant::now();
                let mut opens = 0u64;
                for s in &steps {
                    match *s {
                        Step::Open { cgroup, comm, failed } => {
                            let cgroup = [container, service, 987_654_321][usize::from(cgroup)];
                            node.open(cgroup, ["a", "b", "crashy"][usize::from(comm)], if failed { -2 } else { 3 });
                            opens += 1;
                        }
                        Step::Flush { after_ms } => {
                            now += Duration::from_millis(after_ms);
                            node.counter.flush_at(now, false);
                            // Never more than was opened, whatever is still held.
                            prop_assert!(opens_exported(&node.exported()) <= opens);
                        }
                        Step::PodArrives => node.pod_arrives(),
                        Step::PodGoes => node.pods.replace(crate::agent::pods::PodIndex::build([])),
                    }
                }
                // Quiet for longer than the hold: everything held is counted, pod or not.
                node.counter.flush_at(now + HOLD_UNATTRIBUTED * 2, false);
                let text = node.exported();
                prop_assert_eq!(opens_exported(&text), opens, "{}", text);
                // The cap holds, beside one `other` series per result (ok, ENOENT here).
                prop_assert!(node.counter.metrics().series() <= max_series + 2, "{}", text);
                let events = format!("splitscope_probe_events_total {opens}");
                prop_assert!(text.contains(&events), "{}", text);
            }
        }
    }

    /// More opens of a held key, before and after an attribution retry, all reach the Pod.
    #[test]
    fn every_open_of_a_held_key_reaches_its_pod() {
        let mut node = Node::new("more");
        let start = Instant::now();
        let cgroup = node.container_cgroup();
        node.open(cgroup, "crashy", -2);
        node.counter.flush_at(start + RETRY_HELD * 2, false);
        node.open(cgroup, "crashy", -2);
        node.counter.flush_at(start + RETRY_HELD * 4, false);
        node.open(cgroup, "crashy", -2);
        node.pod_arrives();
        node.counter.flush_at(start + RETRY_HELD * 6, false);
        let text = node.exported();
        assert!(text.contains(IN_POD), "{text}");
    }
}
