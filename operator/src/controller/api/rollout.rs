//! `spec.rollout` and `status.rollout`: progressive delivery of one backend (the canary) against
//! another (the stable), step by step, judged by metrics. The field names are a contract
//! (docs/rollouts.md); the CEL rules that need the whole spec (backend names, the pair's share)
//! are attached to `TrafficSplitSpec`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::patterns::{
    DNS_1123_LABEL, ERRNO_NAME, GO_DURATION, MAX_DURATION_LENGTH, MAX_ERRNOS, MAX_LABEL_LENGTH, MAX_METRICS,
    MAX_QUERY_LENGTH, MAX_STEPS, MAX_TOLERATED, MAX_URL_LENGTH, MAX_WEIGHT, MIN_WEIGHT, PROMETHEUS_URL,
};

/// Default `analysis.interval`.
pub const DEFAULT_INTERVAL: &str = "1m";
/// Default `analysis.failureLimit` (as Argo Rollouts: the first failure beyond none rolls back).
pub const DEFAULT_FAILURE_LIMIT: i32 = 0;
/// Default `analysis.consecutiveErrorLimit` (as Argo Rollouts).
pub const DEFAULT_CONSECUTIVE_ERROR_LIMIT: i32 = 4;

/// Annotation through which people act on a rollout (`splitscope rollout promote|abort|retry`).
/// Its value is the action, optionally followed by `@` and anything that makes it unique; the
/// controller acts once per distinct value and records the value it handled in
/// `status.rollout.lastAction`.
pub const ACTION_ANNOTATION: &str = "splitscope.dev/rollout-action";

/// Moves the canary's weight step by step, measuring at every step, rolling back on failures.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.progressDeadline) || duration(self.progressDeadline) >= duration('1s')")
        .message("spec.rollout.progressDeadline must be at least 1s"),
)]
pub struct Rollout {
    /// Backend that gets the traffic back on rollback or abort.
    #[schemars(length(min = 1, max = MAX_LABEL_LENGTH), regex(pattern = DNS_1123_LABEL))]
    pub stable: String,

    /// Backend being rolled out.
    #[schemars(length(min = 1, max = MAX_LABEL_LENGTH), regex(pattern = DNS_1123_LABEL))]
    pub canary: String,

    /// The steps, in order (1 to 32): `setWeight` moves the canary's share, `pause` waits.
    #[schemars(length(min = 1, max = MAX_STEPS))]
    pub steps: Vec<RolloutStep>,

    /// What is measured at every step; without it, steps advance on their pauses alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Analysis>,

    /// How long the canary backend may go without a ready pod while the rollout runs (a Go
    /// duration, at least 1s); then the rollout fails and rolls back, as Flagger's progress
    /// deadline does. Absent: the rollout waits at 0% (`CanaryUnavailable`) until the canary has
    /// a ready pod or is aborted. Not part of the revision: changing it restarts nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_DURATION_LENGTH), regex(pattern = GO_DURATION))]
    pub progress_deadline: Option<String>,
}

/// One step: exactly one of `setWeight` and `pause`.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.setWeight) != has(self.pause)")
        .message("spec.rollout.steps: each step is exactly one of setWeight or pause"),
)]
pub struct RolloutStep {
    /// The canary's share of all traffic in percent; the stable gets the rest of the pair's
    /// share (the sum of their spec weights).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_WEIGHT, max = MAX_WEIGHT))]
    pub set_weight: Option<i32>,

    /// Wait: `{duration: 1m}` for that long, `{}` until promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<Pause>,
}

impl Rollout {
    /// The step at `index` (as `status.rollout.stepIndex` counts), if there is one.
    pub fn step(&self, index: i32) -> Option<&RolloutStep> {
        usize::try_from(index).ok().and_then(|i| self.steps.get(i))
    }
}

impl RolloutStep {
    /// How messages and `splitscope rollout status` name the step: `setWeight 10`, `pause 1m`,
    /// `pause until promoted` (`?` for a step that is neither, which validation refuses).
    pub fn describe(&self) -> String {
        match (self.set_weight, &self.pause) {
            (Some(w), _) => format!("setWeight {w}"),
            (None, Some(Pause { duration: Some(d) })) => format!("pause {d}"),
            (None, Some(Pause { duration: None })) => "pause until promoted".into(),
            (None, None) => "?".into(),
        }
    }
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Pause {
    /// How long (a Go duration such as `30s`, `5m`, `1h30m`); absent = until promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_DURATION_LENGTH), regex(pattern = GO_DURATION))]
    pub duration: Option<String>,
}

/// The measurements taken at every step.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("duration(self.interval) >= duration('1s')")
        .message("spec.rollout.analysis.interval must be at least 1s"),
    validation = Rule::new("self.metrics.all(m, self.metrics.exists_one(n, n.name == m.name))")
        .message("spec.rollout.analysis.metrics: metric names must be unique"),
)]
pub struct Analysis {
    /// Time between two measurements of every metric (a Go duration, at least 1s); also the
    /// window `{{ interval }}` of the queries. Use at least two Prometheus scrape intervals.
    #[serde(default = "default_interval")]
    #[schemars(length(min = 1, max = MAX_DURATION_LENGTH), regex(pattern = GO_DURATION))]
    pub interval: String,

    /// Failed measurements of one metric tolerated; one more rolls back.
    #[serde(default = "default_failure_limit")]
    #[schemars(range(min = 0, max = MAX_TOLERATED))]
    pub failure_limit: i32,

    /// Consecutive errors of one metric (Prometheus unreachable, a bad query) tolerated; one
    /// more pauses the rollout (`AnalysisError`) — errors never roll back.
    #[serde(default = "default_consecutive_error_limit")]
    #[schemars(range(min = 0, max = MAX_TOLERATED))]
    pub consecutive_error_limit: i32,

    /// Where to query; default: the controller's `--prometheus-url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusSource>,

    /// What to measure (1 to 10 metrics).
    #[schemars(length(min = 1, max = MAX_METRICS))]
    pub metrics: Vec<AnalysisMetric>,
}

fn default_interval() -> String {
    DEFAULT_INTERVAL.to_string()
}

fn default_failure_limit() -> i32 {
    DEFAULT_FAILURE_LIMIT
}

fn default_consecutive_error_limit() -> i32 {
    DEFAULT_CONSECUTIVE_ERROR_LIMIT
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusSource {
    /// Base URL of the Prometheus HTTP API, e.g. `http://prometheus.monitoring:9090`.
    #[schemars(length(min = 1, max = MAX_URL_LENGTH), regex(pattern = PROMETHEUS_URL))]
    pub address: String,
}

/// One metric: exactly one of `openErrors` (built in) and `query` (with `thresholdRange`).
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.openErrors) != has(self.query)")
        .message("spec.rollout.analysis.metrics: each metric is exactly one of openErrors or query"),
    validation = Rule::new("has(self.query) == has(self.thresholdRange)")
        .message("spec.rollout.analysis.metrics: thresholdRange goes with query (and only with query)"),
)]
pub struct AnalysisMetric {
    /// Name (a DNS label, unique among the metrics): the `metric` label of the analysis metrics.
    #[schemars(length(min = 1, max = MAX_LABEL_LENGTH), regex(pattern = DNS_1123_LABEL))]
    pub name: String,

    /// Built in: the canary pods' failed-open ratio (from the agent) against the stable pods'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_errors: Option<OpenErrors>,

    /// A PromQL query returning one number. Template variables: `{{ namespace }}`,
    /// `{{ name }}`, `{{ service }}`, `{{ interval }}`, `{{ canaryPods }}`, `{{ stablePods }}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_QUERY_LENGTH))]
    pub query: Option<String>,

    /// The accepted range of the query's value; outside it the measurement fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_range: Option<ThresholdRange>,
}

/// The canary's failed-open ratio may exceed the stable's by at most `maxIncrease`.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OpenErrors {
    /// Most the canary's ratio of failed opens may exceed the stable's (0 to 1, e.g. 0.05).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_increase: f64,

    /// Only these results count as failures (errno names such as `EACCES`); default: every
    /// failed open.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "errno_list")]
    pub errnos: Vec<String>,
}

/// `min` and/or `max`, both inclusive.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.min) || has(self.max)")
        .message("spec.rollout.analysis.metrics[].thresholdRange needs min, max or both"),
    validation = Rule::new("!has(self.min) || !has(self.max) || self.min <= self.max")
        .message("spec.rollout.analysis.metrics[].thresholdRange: min must not exceed max"),
)]
pub struct ThresholdRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

fn errno_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": MAX_ERRNOS,
        "items": {"type": "string", "minLength": 2, "maxLength": 32, "pattern": ERRNO_NAME},
    })
}

// ---------------------------------------------------------------------------------------------
// status.rollout
// ---------------------------------------------------------------------------------------------

/// Progress of the rollout: everything the controller needs to resume after a restart or on
/// another replica.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Progressing, Paused, Succeeded, Failed or Aborted.
    pub phase: RolloutPhase,

    /// Hash of the canary backend's labels and `spec.rollout` (but `progressDeadline`): a new
    /// value starts a new rollout.
    pub revision: String,

    /// Index of the current step (the number of steps once done).
    pub step_index: i32,

    /// When the current step began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,

    /// The canary's weight in the route now.
    pub canary_weight: i32,

    /// The stable's weight in the route now (the pair's share minus the canary's).
    pub stable_weight: i32,

    /// When the canary's weight last changed: measurements count for a weight only when their
    /// whole window lies after this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_changed_at: Option<Time>,

    /// Why it is Paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_reason: Option<PauseReason>,

    /// Since when the canary backend has had no ready pod, while it has none: what
    /// `progressDeadline` is counted from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_unavailable_since: Option<Time>,

    /// What happened last, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// The last `splitscope.dev/rollout-action` annotation value handled (each value acts once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_action: Option<String>,

    /// Per analysis metric: counts and the last measurement.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_METRICS))]
    pub metrics: Vec<MetricStatus>,

    /// The canary backend's labels when this rollout started. After it succeeded, the next one
    /// starts only once the stable backend selects these (the version now carrying the traffic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_labels: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutPhase {
    Progressing,
    Paused,
    Succeeded,
    Failed,
    Aborted,
}

impl RolloutPhase {
    pub const ALL: [RolloutPhase; 5] = [
        RolloutPhase::Progressing,
        RolloutPhase::Paused,
        RolloutPhase::Succeeded,
        RolloutPhase::Failed,
        RolloutPhase::Aborted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RolloutPhase::Progressing => "Progressing",
            RolloutPhase::Paused => "Paused",
            RolloutPhase::Succeeded => "Succeeded",
            RolloutPhase::Failed => "Failed",
            RolloutPhase::Aborted => "Aborted",
        }
    }

    /// Succeeded, Failed and Aborted: nothing moves until the spec changes or someone retries.
    pub fn is_done(self) -> bool {
        matches!(
            self,
            RolloutPhase::Succeeded | RolloutPhase::Failed | RolloutPhase::Aborted
        )
    }
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PauseReason {
    /// At a `pause: {}` step: `splitscope rollout promote` moves on.
    AwaitingPromotion,
    /// A metric had no data (no traffic, no series, NaN): resumes by itself when data comes.
    NoData,
    /// A metric's consecutive errors passed `consecutiveErrorLimit`: resumes when a
    /// measurement succeeds again.
    AnalysisError,
    /// The canary backend has no ready pods: it gets 0 % until it has, then the rollout goes on
    /// at the weight of its step (or, after `progressDeadline`, it fails and rolls back).
    CanaryUnavailable,
    /// A new version was asked for after a rollout succeeded, but the stable backend does not
    /// select the version that succeeded: the canary keeps that version and its weight until
    /// it does, then the new rollout starts.
    StableNotPromoted,
}

impl PauseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            PauseReason::AwaitingPromotion => "AwaitingPromotion",
            PauseReason::NoData => "NoData",
            PauseReason::AnalysisError => "AnalysisError",
            PauseReason::CanaryUnavailable => "CanaryUnavailable",
            PauseReason::StableNotPromoted => "StableNotPromoted",
        }
    }
}

/// One measurement's verdict.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeasurementOutcome {
    /// Within the range.
    Success,
    /// Outside the range.
    Failure,
    /// No data: an empty result, NaN or ±Inf, or a canary without traffic in the window.
    NoData,
    /// Prometheus unreachable, an error answer, or more than one series.
    Error,
}

impl MeasurementOutcome {
    pub const ALL: [MeasurementOutcome; 4] = [
        MeasurementOutcome::Success,
        MeasurementOutcome::Failure,
        MeasurementOutcome::NoData,
        MeasurementOutcome::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MeasurementOutcome::Success => "Success",
            MeasurementOutcome::Failure => "Failure",
            MeasurementOutcome::NoData => "NoData",
            MeasurementOutcome::Error => "Error",
        }
    }
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricStatus {
    pub name: String,

    /// The last measured value (as text: Prometheus values may be NaN or ±Inf).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_value: Option<String>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<MeasurementOutcome>,

    /// What the last measurement said, e.g. the query's error or why there was no data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message: Option<String>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_measured_at: Option<Time>,

    /// Counts over the whole rollout (reset by a new revision or a retry).
    pub successes: i32,
    pub failures: i32,
    pub no_data: i32,
    pub errors: i32,
    pub consecutive_errors: i32,

    /// Successful measurements since the canary's weight last changed (a step advances only
    /// when every metric has at least one).
    pub successes_at_weight: i32,
}

impl MetricStatus {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            last_value: None,
            last_outcome: None,
            last_message: None,
            last_measured_at: None,
            successes: 0,
            failures: 0,
            no_data: 0,
            errors: 0,
            consecutive_errors: 0,
            successes_at_weight: 0,
        }
    }
}
