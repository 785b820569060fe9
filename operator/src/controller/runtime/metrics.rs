//! The controller's Prometheus metrics. Names and labels are part of the contract (the design's
//! "Metrics"): dashboards and tests depend on them.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Instant;

use prometheus::{GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::controller::api::rollout::{MeasurementOutcome, RolloutPhase, RolloutStatus};

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
    rollout_phase: IntGaugeVec,
    rollout_canary_weight: IntGaugeVec,
    analysis_measurements: IntCounterVec,
    analysis_value: GaugeVec,
    /// Backends with a weight series per (namespace, name), so removed backends lose theirs.
    backends: Mutex<HashMap<(String, String), BTreeSet<String>>>,
    /// Analysis metrics with series per (namespace, name), so a rollout's removal (or a new
    /// revision with other metrics) drops theirs.
    analysis_metrics: Mutex<HashMap<(String, String), BTreeSet<String>>>,
}

/// The `outcome` label of `splitscope_analysis_measurements_total`.
pub fn outcome_label(outcome: MeasurementOutcome) -> &'static str {
    match outcome {
        MeasurementOutcome::Success => "success",
        MeasurementOutcome::Failure => "failure",
        MeasurementOutcome::NoData => "no_data",
        MeasurementOutcome::Error => "error",
    }
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
        let rollout_phase = IntGaugeVec::new(
            Opts::new(
                "splitscope_rollout_phase",
                "1 for the current phase of the TrafficSplit's rollout, 0 for the others",
            ),
            &["namespace", "name", "phase"],
        )?;
        let rollout_canary_weight = IntGaugeVec::new(
            Opts::new(
                "splitscope_rollout_canary_weight",
                "The rollout's canary weight (percent) in the route",
            ),
            &["namespace", "name"],
        )?;
        let analysis_measurements = IntCounterVec::new(
            Opts::new(
                "splitscope_analysis_measurements_total",
                "Rollout analysis measurements by metric and outcome (success, failure, no_data, error)",
            ),
            &["namespace", "name", "metric", "outcome"],
        )?;
        let analysis_value = GaugeVec::new(
            Opts::new(
                "splitscope_analysis_value",
                "The last measured value of a rollout analysis metric (NaN when it had none)",
            ),
            &["namespace", "name", "metric"],
        )?;
        registry.register(Box::new(reconcile_total.clone()))?;
        registry.register(Box::new(rollout_phase.clone()))?;
        registry.register(Box::new(rollout_canary_weight.clone()))?;
        registry.register(Box::new(analysis_measurements.clone()))?;
        registry.register(Box::new(analysis_value.clone()))?;
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
            rollout_phase,
            rollout_canary_weight,
            analysis_measurements,
            analysis_value,
            backends: Mutex::default(),
            analysis_metrics: Mutex::default(),
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
        drop(known);
        self.set_rollout(namespace, name, None);
    }

    /// Records the rollout's phase and canary weight; `None` (no rollout) drops every rollout
    /// and analysis series of the TrafficSplit.
    pub fn set_rollout(&self, namespace: &str, name: &str, rollout: Option<&RolloutStatus>) {
        let key = (namespace.to_string(), name.to_string());
        let now: BTreeSet<String> = rollout
            .map(|r| r.metrics.iter().map(|m| m.name.clone()).collect())
            .unwrap_or_default();
        let mut known = self.analysis_metrics.lock().unwrap_or_else(|p| p.into_inner());
        for gone in known
            .get(&key)
            .into_iter()
            .flatten()
            .filter(|m| !now.contains(*m))
        {
            let _ = self
                .analysis_value
                .remove_label_values(&[namespace, name, gone.as_str()]);
            for outcome in MeasurementOutcome::ALL {
                let _ = self.analysis_measurements.remove_label_values(&[
                    namespace,
                    name,
                    gone.as_str(),
                    outcome_label(outcome),
                ]);
            }
        }
        let Some(rollout) = rollout else {
            known.remove(&key);
            for phase in RolloutPhase::ALL {
                let _ = self
                    .rollout_phase
                    .remove_label_values(&[namespace, name, phase.as_str()]);
            }
            let _ = self.rollout_canary_weight.remove_label_values(&[namespace, name]);
            return;
        };
        for phase in RolloutPhase::ALL {
            self.rollout_phase
                .with_label_values(&[namespace, name, phase.as_str()])
                .set(i64::from(phase == rollout.phase));
        }
        self.rollout_canary_weight
            .with_label_values(&[namespace, name])
            .set(i64::from(rollout.canary_weight));
        // Every outcome from 0, so rate() and increase() see the first measurement of each.
        for metric in now.difference(known.get(&key).unwrap_or(&BTreeSet::new())) {
            for outcome in MeasurementOutcome::ALL {
                self.analysis_measurements.with_label_values(&[
                    namespace,
                    name,
                    metric.as_str(),
                    outcome_label(outcome),
                ]);
            }
        }
        known.insert(key, now);
    }

    /// Counts one measurement (once its status is written) and records its value.
    pub fn measured(
        &self,
        namespace: &str,
        name: &str,
        metric: &str,
        outcome: MeasurementOutcome,
        value: Option<f64>,
    ) {
        self.analysis_measurements
            .with_label_values(&[namespace, name, metric, outcome_label(outcome)])
            .inc();
        self.analysis_value
            .with_label_values(&[namespace, name, metric])
            .set(value.unwrap_or(f64::NAN));
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

    #[test]
    fn rollout_series_follow_the_rollout_and_go_with_it() {
        use crate::controller::api::rollout::MetricStatus;
        let m = Metrics::new().unwrap();
        let mut rollout = RolloutStatus {
            phase: RolloutPhase::Progressing,
            revision: "r1".into(),
            step_index: 0,
            step_started_at: None,
            canary_weight: 10,
            stable_weight: 90,
            weight_changed_at: None,
            pause_reason: None,
            canary_unavailable_since: None,
            message: None,
            last_action: None,
            metrics: vec![MetricStatus::new("open-errors"), MetricStatus::new("http-5xx")],
            canary_labels: None,
        };
        m.set_rollout("shop", "checkout", Some(&rollout));
        m.measured(
            "shop",
            "checkout",
            "open-errors",
            MeasurementOutcome::Success,
            Some(0.01),
        );
        m.measured("shop", "checkout", "http-5xx", MeasurementOutcome::NoData, None);
        let text = m.render();
        for needle in [
            "splitscope_rollout_phase{name=\"checkout\",namespace=\"shop\",phase=\"Progressing\"} 1",
            "splitscope_rollout_phase{name=\"checkout\",namespace=\"shop\",phase=\"Failed\"} 0",
            "splitscope_rollout_canary_weight{name=\"checkout\",namespace=\"shop\"} 10",
            "splitscope_analysis_measurements_total{metric=\"open-errors\",name=\"checkout\",namespace=\"shop\",outcome=\"success\"} 1",
            "splitscope_analysis_measurements_total{metric=\"open-errors\",name=\"checkout\",namespace=\"shop\",outcome=\"failure\"} 0",
            "splitscope_analysis_measurements_total{metric=\"http-5xx\",name=\"checkout\",namespace=\"shop\",outcome=\"no_data\"} 1",
            "splitscope_analysis_value{metric=\"open-errors\",name=\"checkout\",namespace=\"shop\"} 0.01",
            "splitscope_analysis_value{metric=\"http-5xx\",name=\"checkout\",namespace=\"shop\"} NaN",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }

        // Rolled back, and a new revision without http-5xx: its series go, the others stay.
        rollout.phase = RolloutPhase::Failed;
        rollout.canary_weight = 0;
        rollout.metrics.truncate(1);
        m.set_rollout("shop", "checkout", Some(&rollout));
        let text = m.render();
        assert!(
            text.contains(
                "splitscope_rollout_phase{name=\"checkout\",namespace=\"shop\",phase=\"Failed\"} 1"
            )
        );
        assert!(text.contains("splitscope_rollout_canary_weight{name=\"checkout\",namespace=\"shop\"} 0"));
        assert!(!text.contains("http-5xx"), "{text}");
        assert!(text.contains("metric=\"open-errors\""), "{text}");

        // spec.rollout removed: every rollout series goes.
        m.set_rollout("shop", "checkout", None);
        let text = m.render();
        assert!(!text.contains("splitscope_rollout_"), "{text}");
        assert!(!text.contains("splitscope_analysis_"), "{text}");

        // And with the TrafficSplit.
        m.set_rollout("shop", "checkout", Some(&rollout));
        m.forget_trafficsplit("shop", "checkout");
        assert!(!m.render().contains("name=\"checkout\""));
    }
}
