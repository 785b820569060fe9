//! The controller's Prometheus metrics. Names and labels are part of the contract (the design's
//! "Metrics"): dashboards and tests depend on them.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Instant;

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

#[derive(Debug, thiserror::Error)]
#[error("cannot register the controller metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

pub struct Metrics {
    pub registry: Registry,
    reconcile_total: IntCounterVec,
    reconcile_duration: Histogram,
    backend_weight: IntGaugeVec,
    ready: IntGaugeVec,
    pub leader: IntGauge,
    /// Backends with a weight series per (namespace, name), so removed backends lose theirs.
    backends: Mutex<HashMap<(String, String), BTreeSet<String>>>,
}

/// Result label of `splitscope_reconcile_total`.
#[derive(Debug, Clone, Copy)]
pub enum ReconcileResult {
    Success,
    Error,
}

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let reconcile_total = IntCounterVec::new(
            Opts::new(
                "splitscope_reconcile_total",
                "TrafficSplit reconciliations by result (success, error)",
            ),
            &["result"],
        )?;
        let reconcile_duration = Histogram::with_opts(
            HistogramOpts::new(
                "splitscope_reconcile_duration_seconds",
                "Time to reconcile one TrafficSplit",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        let backend_weight = IntGaugeVec::new(
            Opts::new(
                "splitscope_trafficsplit_backend_weight",
                "Weight (percent) of each TrafficSplit backend as last applied",
            ),
            &["namespace", "name", "backend"],
        )?;
        let ready = IntGaugeVec::new(
            Opts::new(
                "splitscope_trafficsplit_ready",
                "1 when the TrafficSplit's Ready condition is True, else 0",
            ),
            &["namespace", "name"],
        )?;
        let leader = IntGauge::new(
            "splitscope_leader",
            "1 while this replica holds the leader Lease (or runs with --no-leader-elect)",
        )?;
        registry.register(Box::new(reconcile_total.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(backend_weight.clone()))?;
        registry.register(Box::new(ready.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        for result in ["success", "error"] {
            reconcile_total.with_label_values(&[result]);
        }
        Ok(Self {
            registry,
            reconcile_total,
            reconcile_duration,
            backend_weight,
            ready,
            leader,
            backends: Mutex::default(),
        })
    }

    pub fn reconciled(&self, started: Instant, result: ReconcileResult) {
        self.reconcile_duration.observe(started.elapsed().as_secs_f64());
        let label = match result {
            ReconcileResult::Success => "success",
            ReconcileResult::Error => "error",
        };
        self.reconcile_total.with_label_values(&[label]).inc();
    }

    /// Records the TrafficSplit's backends and readiness, dropping series of removed backends.
    pub fn set_trafficsplit(&self, namespace: &str, name: &str, weights: &[(String, i32)], ready: bool) {
        let key = (namespace.to_string(), name.to_string());
        let now: BTreeSet<String> = weights.iter().map(|(b, _)| b.clone()).collect();
        let mut known = self.backends.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(before) = known.get(&key) {
            for gone in before.difference(&now) {
                let _ = self
                    .backend_weight
                    .remove_label_values(&[namespace, name, gone.as_str()]);
            }
        }
        for (backend, weight) in weights {
            self.backend_weight
                .with_label_values(&[namespace, name, backend.as_str()])
                .set(i64::from(*weight));
        }
        known.insert(key, now);
        self.ready
            .with_label_values(&[namespace, name])
            .set(i64::from(ready));
    }

    /// Drops every series of a deleted TrafficSplit.
    pub fn forget_trafficsplit(&self, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        let mut known = self.backends.lock().unwrap_or_else(|p| p.into_inner());
        for backend in known.remove(&key).unwrap_or_default() {
            let _ = self
                .backend_weight
                .remove_label_values(&[namespace, name, backend.as_str()]);
        }
        let _ = self.ready.remove_label_values(&[namespace, name]);
    }

    /// The registry's text exposition.
    #[cfg(test)]
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let encoder = prometheus::TextEncoder::new();
        let _ = prometheus::Encoder::encode(&encoder, &self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_the_design_names_and_drops_series() {
        let m = Metrics::new().unwrap();
        m.reconciled(Instant::now(), ReconcileResult::Success);
        m.leader.set(1);
        m.set_trafficsplit(
            "shop",
            "checkout",
            &[("stable".into(), 95), ("canary".into(), 5)],
            true,
        );
        let text = m.render();
        for needle in [
            "splitscope_reconcile_total{result=\"success\"} 1",
            "splitscope_reconcile_total{result=\"error\"} 0",
            "splitscope_reconcile_duration_seconds_count 1",
            "splitscope_trafficsplit_backend_weight{backend=\"stable\",name=\"checkout\",namespace=\"shop\"} 95",
            "splitscope_trafficsplit_backend_weight{backend=\"canary\",name=\"checkout\",namespace=\"shop\"} 5",
            "splitscope_trafficsplit_ready{name=\"checkout\",namespace=\"shop\"} 1",
            "splitscope_leader 1",
            "process_cpu_seconds_total",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }

        // The canary is removed: its series goes.
        m.set_trafficsplit("shop", "checkout", &[("stable".into(), 100)], false);
        let text = m.render();
        assert!(!text.contains("backend=\"canary\""), "{text}");
        assert!(text.contains("splitscope_trafficsplit_ready{name=\"checkout\",namespace=\"shop\"} 0"));

        // Deleted: every series of the object goes.
        m.forget_trafficsplit("shop", "checkout");
        let text = m.render();
        assert!(!text.contains("name=\"checkout\""), "{text}");
    }
}
