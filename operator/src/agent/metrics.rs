//! The agent's metrics, declared in one place (names and label sets are a contract with the
//! dashboards). Label values are created once per series; the per-event path in count.rs only
//! increments a cached counter.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

pub const FILE_OPENS_TOTAL: &str = "splitscope_file_opens_total";
pub const FILE_OPENS_LABELS: [&str; 5] = ["namespace", "pod", "container", "comm", "result"];
pub const PROBE_EVENTS_TOTAL: &str = "splitscope_probe_events_total";
pub const PROBE_EVENTS_DROPPED_TOTAL: &str = "splitscope_probe_events_dropped_total";
pub const PROBE_ATTACH_INFO: &str = "splitscope_probe_attach_info";

/// The label value every label but `result` takes once the series cap is reached.
pub const OTHER: &str = "other";

/// One `splitscope_file_opens_total` series.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OpenLabels {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub comm: String,
    /// `ok` or an errno name such as `ENOENT`.
    pub result: String,
}

impl OpenLabels {
    /// The label values in FILE_OPENS_LABELS order.
    fn values(&self) -> [&str; 5] {
        [
            &self.namespace,
            &self.pod,
            &self.container,
            &self.comm,
            &self.result,
        ]
    }
}

pub struct AgentMetrics {
    registry: Registry,
    opens: IntCounterVec,
    events: IntCounter,
    dropped: IntCounter,
    attach_info: IntGaugeVec,
    series: HashSet<OpenLabels>,
    max_series: usize,
    /// (namespace, pod) of series whose pod has left this node, and when that was first seen.
    gone_since: HashMap<(String, String), Instant>,
}

impl AgentMetrics {
    /// `max_series`: distinct `splitscope_file_opens_total` series before new label sets fold
    /// into the `other` bucket (which keeps `result`).
    pub fn new(max_series: usize) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let opens = IntCounterVec::new(
            Opts::new(
                FILE_OPENS_TOTAL,
                "File opens seen by the probe, by pod, container, command and result (ok or errno name)",
            ),
            &FILE_OPENS_LABELS,
        )?;
        let events = IntCounter::new(
            PROBE_EVENTS_TOTAL,
            "Records the agent read from the probe's ring buffer",
        )?;
        let dropped = IntCounter::new(
            PROBE_EVENTS_DROPPED_TOTAL,
            "Opens the probe could not deliver (ring buffer full, or no room to keep arguments)",
        )?;
        let attach_info = IntGaugeVec::new(
            Opts::new(
                PROBE_ATTACH_INFO,
                "The probe's active attach mode and target (value 1)",
            ),
            &["mode", "target"],
        )?;
        registry.register(Box::new(opens.clone()))?;
        registry.register(Box::new(events.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        registry.register(Box::new(attach_info.clone()))?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            registry,
            opens,
            events,
            dropped,
            attach_info,
            series: HashSet::new(),
            max_series,
            gone_since: HashMap::new(),
        })
    }

    pub fn registry(&self) -> Registry {
        self.registry.clone()
    }

    pub fn events(&self) -> &IntCounter {
        &self.events
    }

    /// Brings the dropped counter up to the probe's running total.
    pub fn set_dropped(&self, total: u64) {
        let current = self.dropped.get();
        if total > current {
            self.dropped.inc_by(total - current);
        }
    }

    pub fn set_attach_info(&self, mode: &str, target: &str) {
        self.attach_info.reset();
        self.attach_info.with_label_values(&[mode, target]).set(1);
    }

    /// The counter for `labels`, or for the `other` bucket once `max_series` series exist.
    pub fn opens_counter(&mut self, labels: OpenLabels) -> IntCounter {
        let labels = if self.series.contains(&labels) || self.series.len() < self.max_series {
            labels
        } else {
            OpenLabels {
                namespace: OTHER.into(),
                pod: OTHER.into(),
                container: OTHER.into(),
                comm: OTHER.into(),
                result: labels.result,
            }
        };
        let counter = self.opens.with_label_values(&labels.values());
        self.series.insert(labels);
        counter
    }

    /// Removes the series of pods that have been gone from this node for `grace` or longer;
    /// returns how many went. Without this a long-running agent's series cap fills with pods long
    /// deleted, and every new pod (a canary among them) is counted as `other`, where no rollout's
    /// query finds it. The grace lets Prometheus scrape a pod's last counts before they go.
    pub fn forget_gone_pods(
        &mut self,
        is_live: impl Fn(&str, &str) -> bool,
        now: Instant,
        grace: Duration,
    ) -> usize {
        // Each pod once, however many series it has: is_live takes a lock.
        let pods: HashSet<(&str, &str)> = self
            .series
            .iter()
            .filter(|l| !l.pod.is_empty() && l.pod != OTHER)
            .map(|l| (l.namespace.as_str(), l.pod.as_str()))
            .collect();
        let mut gone = HashSet::new();
        for (namespace, pod) in pods {
            let key = (namespace.to_owned(), pod.to_owned());
            if is_live(namespace, pod) {
                self.gone_since.remove(&key);
            } else if now.saturating_duration_since(*self.gone_since.entry(key.clone()).or_insert(now))
                >= grace
            {
                gone.insert(key);
            }
        }
        if gone.is_empty() {
            return 0;
        }
        let before = self.series.len();
        let opens = &self.opens;
        self.series.retain(|labels| {
            let keep = !gone.contains(&(labels.namespace.clone(), labels.pod.clone()));
            if !keep {
                let _ = opens.remove_label_values(&labels.values());
            }
            keep
        });
        for key in &gone {
            self.gone_since.remove(key);
        }
        before - self.series.len()
    }

    /// Distinct `splitscope_file_opens_total` series (the `other` buckets included).
    #[cfg(test)]
    pub fn series(&self) -> usize {
        self.series.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(comm: &str, result: &str) -> OpenLabels {
        OpenLabels {
            namespace: String::new(),
            pod: String::new(),
            container: String::new(),
            comm: comm.into(),
            result: result.into(),
        }
    }

    fn scrape(m: &AgentMetrics) -> String {
        let mut out = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &m.registry().gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn series_beyond_the_cap_fold_into_other_keeping_the_result() {
        let mut m = AgentMetrics::new(3).unwrap();
        for i in 0..3 {
            m.opens_counter(labels(&format!("c{i}"), "ok")).inc();
        }
        // Existing series keep counting under their own labels.
        m.opens_counter(labels("c1", "ok")).inc();
        for i in 3..50 {
            m.opens_counter(labels(&format!("c{i}"), "ok")).inc();
            m.opens_counter(labels(&format!("c{i}"), "ENOENT")).inc();
        }
        assert_eq!(m.series(), 5, "3 real series + other/ok + other/ENOENT");
        let text = scrape(&m);
        assert!(
            text.contains(r#"comm="c1",container="",namespace="",pod="",result="ok"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"comm="other",container="other",namespace="other",pod="other",result="ok"} 47"#)
        );
        assert!(text.contains(r#"result="ENOENT"} 47"#));
        assert!(!text.contains(r#"comm="c3""#));
    }

    fn pod_labels(pod: &str, result: &str) -> OpenLabels {
        OpenLabels {
            namespace: "shop".into(),
            pod: pod.into(),
            container: "app".into(),
            comm: "web".into(),
            result: result.into(),
        }
    }

    #[test]
    fn series_of_pods_gone_past_the_grace_are_removed_and_free_the_cap() {
        let grace = Duration::from_secs(300);
        let mut m = AgentMetrics::new(3).unwrap();
        m.opens_counter(pod_labels("old-1", "ok")).inc();
        m.opens_counter(pod_labels("old-1", "ENOENT")).inc();
        m.opens_counter(pod_labels("stays", "ok")).inc();
        // The cap is full: a new pod (a canary, say) is counted as `other`.
        m.opens_counter(pod_labels("canary-1", "ok")).inc();
        assert!(!scrape(&m).contains("canary-1"));

        // old-1 leaves the node: kept through the grace, so its last counts get scraped.
        let live = |_: &str, pod: &str| pod != "old-1";
        let t0 = Instant::now();
        assert_eq!(m.forget_gone_pods(live, t0, grace), 0);
        assert_eq!(m.forget_gone_pods(live, t0 + grace / 2, grace), 0);
        assert!(scrape(&m).contains(r#"pod="old-1""#));
        assert_eq!(m.forget_gone_pods(live, t0 + grace, grace), 2);
        let text = scrape(&m);
        assert!(!text.contains(r#"pod="old-1""#), "{text}");
        assert!(text.contains(r#"pod="stays""#), "{text}");
        assert!(text.contains(r#"pod="other""#), "the other bucket stays: {text}");

        // The room it left goes to the next new pod.
        m.opens_counter(pod_labels("canary-1", "ok")).inc();
        assert!(scrape(&m).contains(r#"pod="canary-1""#));
    }

    #[test]
    fn a_pod_back_on_the_node_within_the_grace_keeps_its_series() {
        let grace = Duration::from_secs(300);
        let mut m = AgentMetrics::new(10).unwrap();
        m.opens_counter(pod_labels("db-0", "ok")).inc();
        let t0 = Instant::now();
        assert_eq!(m.forget_gone_pods(|_, _| false, t0, grace), 0);
        // Recreated under the same name (a StatefulSet pod): the clock starts again.
        assert_eq!(m.forget_gone_pods(|_, _| true, t0 + grace / 2, grace), 0);
        assert_eq!(m.forget_gone_pods(|_, _| false, t0 + grace, grace), 0);
        assert!(scrape(&m).contains(r#"pod="db-0""#));
        // Standalone series (no pod label) never go.
        m.opens_counter(labels("cat", "ok")).inc();
        assert_eq!(m.forget_gone_pods(|_, _| false, t0 + grace * 3, grace), 1);
        assert!(scrape(&m).contains(r#"comm="cat""#));
    }

    #[test]
    fn exports_every_metric_of_the_contract() {
        let m = AgentMetrics::new(10).unwrap();
        m.opens_counter_for_test();
        m.events().inc_by(5);
        m.set_dropped(7);
        m.set_dropped(3); // never goes backwards
        m.set_attach_info("tracepoint", "syscalls:sys_exit_openat");
        let text = scrape(&m);
        for name in [
            FILE_OPENS_TOTAL,
            PROBE_EVENTS_TOTAL,
            PROBE_EVENTS_DROPPED_TOTAL,
            PROBE_ATTACH_INFO,
        ] {
            assert!(text.contains(name), "{name} missing:\n{text}");
        }
        assert!(text.contains("splitscope_probe_events_dropped_total 7"));
        assert!(text.contains(
            r#"splitscope_probe_attach_info{mode="tracepoint",target="syscalls:sys_exit_openat"} 1"#
        ));
        assert!(text.contains("process_resident_memory_bytes"));
    }

    impl AgentMetrics {
        fn opens_counter_for_test(&self) {
            self.opens.with_label_values(&["", "", "", "x", "ok"]).inc();
        }
    }
}
