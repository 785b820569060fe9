//! Mock-API scenarios of a TrafficSplit with `spec.rollout`: the exact requests of each moment
//! of a rollout (weights stepped only on the route, status written with its progress and a
//! resourceVersion precondition, rollback, abort, promote, a restart mid-step), with a
//! Prometheus stand-in answering the `openErrors` queries.
//!
//! The example, rolled out: stable v1 100, canary v2 0; steps 10, 50, until promoted, 100;
//! one `openErrors` metric every 30 s, one failure tolerated. Times are relative to the real
//! clock (the reconcile reads it); `NOW` in an expected status stands for the reconcile's time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::fixtures::{
    EARLIER, NOW, backends, condition, live, ready_slices, slice, status_matches, traffic_split,
    with_finalizer,
};
use super::mock_api::Expect;
use super::prometheus_stand_in;
use super::scenarios::{
    ROUTE_PATH, Run, Setup, TS_PATH, apply_route, apply_service, assert_ssa, fresh_read, list_services, run,
    run_with, service_path,
};
use crate::controller::api::trafficsplit::TrafficSplit;
use crate::controller::objects::services;
use crate::controller::reconcile::{RESYNC, SLICES_WAIT};
use crate::controller::routing::{self, RouteApis};

/// The rollout's revision for the example's canary labels and `rollout()`, computed outside
/// Rust (SHA-256 of the sorted-key JSON, as rollout/revision.rs documents).
const REVISION: &str = "024c64afda";

fn rollout() -> Value {
    json!({
        "stable": "stable",
        "canary": "canary",
        "steps": [{"setWeight": 10}, {"setWeight": 50}, {"pause": {}}, {"setWeight": 100}],
        "analysis": {
            "interval": "30s",
            "failureLimit": 1,
            "consecutiveErrorLimit": 2,
            "metrics": [{"name": "open-errors", "openErrors": {"maxIncrease": 0.05}}],
        },
    })
}

/// The example with the rollout, past its first reconcile, annotated with `action` if any.
fn rolled_out(action: Option<&str>) -> TrafficSplit {
    let mut ts = with_finalizer(traffic_split());
    ts.spec.backends[0].weight = 100;
    ts.spec.backends[1].weight = 0;
    ts.spec.rollout = Some(serde_json::from_value(rollout()).unwrap());
    if let Some(action) = action {
        ts.metadata.annotations =
            Some([("splitscope.dev/rollout-action".to_string(), action.to_string())].into());
    }
    ts
}

/// An RFC 3339 time `secs` seconds ago, at the second (as status keeps it).
fn ago(secs: i64) -> String {
    let now = Timestamp::from_second(Timestamp::now().as_second()).unwrap();
    (now - SignedDuration::from_secs(secs)).to_string()
}

/// The settled status of a reconcile that applied `stable`/`canary`, with `rollout`.
fn settled(stable: i32, canary: i32, rollout: Value) -> Value {
    let weights = format!("stable={stable},canary={canary}");
    json!({
        "observedGeneration": 1,
        "phase": "Ready",
        "service": "checkout",
        "weights": weights,
        "conditions": [
            condition("Ready", "True", "Reconciled", &format!("HTTPRoute checkout applied with weights {weights}"), 1, EARLIER),
            condition("Accepted", "True", "Valid", "the spec is valid", 1, EARLIER),
            condition("BackendsAvailable", "True", "AllBackendsReady", "stable: 2 ready, canary: 1 ready", 1, EARLIER),
        ],
        "backends": backends(&[("stable", stable, 2), ("canary", canary, 1)]),
        "rollout": rollout,
    })
}

/// `status.rollout` literally; `metric` is the open-errors entry.
fn progress(phase: &str, step: i32, canary: i32, times: (&str, &str), message: &str, metric: Value) -> Value {
    let mut v = json!({
        "phase": phase,
        "revision": REVISION,
        "stepIndex": step,
        "stepStartedAt": times.0,
        "canaryWeight": canary,
        "stableWeight": 100 - canary,
        "weightChangedAt": times.1,
        "message": message,
        "metrics": [metric],
        "canaryLabels": {"version": "v2"},
    });
    if phase == "Paused" {
        v["pauseReason"] = json!("AwaitingPromotion");
    }
    v
}

fn open_errors(counts: [i32; 5], at_weight: i32, last: Option<(&str, &str, &str, &str)>) -> Value {
    let [successes, failures, no_data, errors, consecutive] = counts;
    let mut v = json!({
        "name": "open-errors", "successes": successes, "failures": failures, "noData": no_data,
        "errors": errors, "consecutiveErrors": consecutive, "successesAtWeight": at_weight,
    });
    if let Some((value, outcome, message, at)) = last {
        v["lastValue"] = json!(value);
        v["lastOutcome"] = json!(outcome);
        v["lastMessage"] = json!(message);
        v["lastMeasuredAt"] = json!(at);
    }
    v
}

fn with_rollout_status(mut ts: TrafficSplit, status: Value) -> TrafficSplit {
    ts.status = Some(serde_json::from_value(status).unwrap());
    ts
}

/// The reads every reconcile of the example makes: three live Services and the route at
/// (stable, canary).
fn reads(stable: i32, canary: i32) -> Vec<Expect> {
    let mut ts = rolled_out(None);
    ts.spec.backends[0].weight = stable;
    ts.spec.backends[1].weight = canary;
    let mut script: Vec<Expect> = services::render(&ts)
        .iter()
        .map(|s| Expect::new("GET", service_path(s.metadata.name.as_deref().unwrap())).reply(200, live(s)))
        .collect();
    let routing::Route::GatewayApi(route) = routing::render(&ts) else {
        unreachable!()
    };
    script.push(Expect::new("GET", ROUTE_PATH).reply(200, live(&*route)));
    script
}

/// The reads of a reconcile that finds the route at `from`, its apply at `to`, and the prune's
/// list of the Services.
fn reweigh(from: (i32, i32), to: (i32, i32)) -> Vec<Expect> {
    let mut script = reads(from.0, from.1);
    script.push(apply_route(json!([
        ["checkout-stable", 80, to.0],
        ["checkout-canary", 80, to.1]
    ])));
    script.push(list(to.0, to.1));
    script
}

fn list(stable: i32, canary: i32) -> Expect {
    let mut ts = rolled_out(None);
    ts.spec.backends[0].weight = stable;
    ts.spec.backends[1].weight = canary;
    list_services(services::render(&ts).iter().map(live).collect())
}

/// A status patch that must write exactly `expected`, guarded by the resourceVersion read.
fn patch_status_guarded(expected: Value) -> Expect {
    Expect::new("PATCH", format!("{TS_PATH}/status"))
        .check(move |seen| {
            assert_ssa(seen);
            assert_eq!(
                seen.body["metadata"]["resourceVersion"], "100",
                "a rollout's status is written with the resourceVersion it was decided on: {}",
                seen.body
            );
            status_matches(&seen.body["status"], &expected);
        })
        .reply(200, serde_json::to_value(traffic_split()).unwrap())
}

/// A Prometheus stand-in: the canary pod (`pod-p3`) has `canary`'s failed-open ratio, the
/// stable pods `stable`'s; counts the queries it answers.
pub struct PrometheusStub {
    pub url: String,
    pub queries: Arc<AtomicUsize>,
}

impl PrometheusStub {
    pub async fn start(canary: f64, stable: f64) -> Self {
        use axum::extract::Form;
        use std::collections::HashMap;
        let queries = Arc::new(AtomicUsize::new(0));
        let counter = queries.clone();
        let answer = move |Form(q): Form<HashMap<String, String>>| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let promql = q.get("query").cloned().unwrap_or_default();
                let value = if promql.contains("pod-p3") { canary } else { stable };
                prometheus_stand_in::vector(Some(&value.to_string()))
            }
        };
        let url = prometheus_stand_in::serve(answer).await;
        Self { url, queries }
    }
}

/// The named moments of a rollout.
#[derive(Debug, Clone, Copy)]
pub enum RolloutScenario {
    /// First sight of `spec.rollout`: the route steps to 10 % at once; status Progressing.
    Start,
    /// A measurement is due and succeeds: the next step's weight goes to the route only.
    StepAfterSuccess,
    /// A failure beyond failureLimit: the route goes back to the stable; status Failed.
    Rollback,
    /// `abort` requested: the canary gets 0 % without measuring.
    Abort,
    /// `promote` requested at `pause: {}`: on to the last step's 100 %.
    Promote,
    /// A restarted controller mid-step, before the next measurement: nothing read from
    /// Prometheus, nothing written.
    RestartMidStep,
    /// Another controller wrote the status first (409): nothing of this decision counts.
    LostToNewerStatus,
    /// Handed a cached copy from before our own rollback's status write (mid-step at 50 %):
    /// the fresh read finds the rollback, and the route stays with the stable.
    StaleCachedCopy,
    /// v2 succeeded at 100 %; the canary is pointed at v3 while the stable still selects v1:
    /// the new rollout waits, and neither the canary's Service nor the route changes.
    NextVersionBeforeStable,
    /// Then the stable is pointed at v2: the new rollout starts. The stable's Service takes v2
    /// before the route gives it the pair, the canary's takes v3 only after the route has
    /// taken the canary from 100 % to its first step's 10 %.
    NextVersionStarts,
    /// The canary has had no ready pod for longer than its `progressDeadline` (2m): the
    /// rollout fails, with the stable's route (already 100 %) left as it is.
    ProgressDeadline,
}

impl RolloutScenario {
    pub const ALL: [RolloutScenario; 11] = [
        RolloutScenario::Start,
        RolloutScenario::StepAfterSuccess,
        RolloutScenario::Rollback,
        RolloutScenario::Abort,
        RolloutScenario::Promote,
        RolloutScenario::RestartMidStep,
        RolloutScenario::LostToNewerStatus,
        RolloutScenario::StaleCachedCopy,
        RolloutScenario::NextVersionBeforeStable,
        RolloutScenario::NextVersionStarts,
        RolloutScenario::ProgressDeadline,
    ];

    /// The setup, and the Prometheus stand-in it measures against.
    pub async fn setup(self) -> (Setup, PrometheusStub) {
        let healthy = PrometheusStub::start(0.01, 0.01).await;
        let failing = PrometheusStub::start(0.5, 0.0);
        // Every reconcile of a rollout starts with a fresh read of the object; here it finds
        // the copy the reconcile was handed, except where `handed` says otherwise.
        let handed_and_live = |handed: TrafficSplit,
                               live: &TrafficSplit,
                               script: Vec<Expect>,
                               prometheus: &PrometheusStub| Setup {
            ts: handed,
            route_apis: RouteApis::new(true, false),
            slices: ready_slices(),
            series: None,
            script: std::iter::once(fresh_read(live)).chain(script).collect(),
            prometheus_url: Some(prometheus.url.clone()),
        };
        let setup = |ts: TrafficSplit, script, prometheus: &PrometheusStub| {
            let live = ts.clone();
            handed_and_live(ts, &live, script, prometheus)
        };
        let at_10 = |since: &str| {
            progress(
                "Progressing",
                0,
                10,
                (since, since),
                "step 1 of 4 (setWeight 10): canary at 10%",
                open_errors([0; 5], 0, None),
            )
        };
        let healthy_message = "failed-open ratio canary 0.01 vs stable 0.01: +0 within maxIncrease 0.05";
        let at_50 = |measured: &str, since: &str, failures: i32| {
            progress(
                "Progressing",
                1,
                50,
                (since, since),
                "step 2 of 4 (setWeight 50): canary at 50%",
                open_errors(
                    [1, failures, 0, 0, 0],
                    0,
                    Some(("0", "Success", healthy_message, measured)),
                ),
            )
        };
        match self {
            RolloutScenario::Start => {
                let ts = with_rollout_status(rolled_out(None), settled(100, 0, Value::Null));
                let mut script = reweigh((100, 0), (90, 10));
                script.push(patch_status_guarded(settled(90, 10, at_10(NOW))));
                (setup(ts, script, &healthy), healthy)
            }
            RolloutScenario::StepAfterSuccess => {
                let earlier = ago(40);
                let ts = with_rollout_status(rolled_out(None), settled(90, 10, at_10(&earlier)));
                let mut script = reweigh((90, 10), (50, 50));
                script.push(patch_status_guarded(settled(
                    50,
                    50,
                    progress(
                        "Progressing",
                        1,
                        50,
                        (NOW, NOW),
                        "step 2 of 4 (setWeight 50): canary at 50%",
                        open_errors([1, 0, 0, 0, 0], 0, Some(("0", "Success", healthy_message, NOW))),
                    ),
                )));
                (setup(ts, script, &healthy), healthy)
            }
            RolloutScenario::Rollback => {
                let failing = failing.await;
                let (measured, since) = (ago(31), ago(61));
                let mut before = at_50(&measured, &since, 1);
                before["metrics"][0]["lastOutcome"] = json!("Failure");
                let ts = with_rollout_status(rolled_out(None), settled(50, 50, before));
                let message = "failed-open ratio canary 0.5 vs stable 0: +0.5 exceeds maxIncrease 0.05";
                let mut script = reweigh((50, 50), (100, 0));
                let mut after = progress(
                    "Failed",
                    1,
                    0,
                    (&since, NOW),
                    &format!(
                        "rolled back at step 2 of 4: open-errors ({message}) failed beyond failureLimit 1; canary canary at 0%, stable stable at 100%"
                    ),
                    open_errors([1, 2, 0, 0, 0], 0, Some(("0.5", "Failure", message, NOW))),
                );
                after["stepStartedAt"] = json!(since);
                script.push(patch_status_guarded(settled(100, 0, after)));
                (setup(ts, script, &failing), failing)
            }
            RolloutScenario::Abort => {
                let (measured, since) = (ago(10), ago(40));
                let ts = with_rollout_status(
                    rolled_out(Some("abort@1")),
                    settled(50, 50, at_50(&measured, &since, 0)),
                );
                let mut script = reweigh((50, 50), (100, 0));
                let mut after = progress(
                    "Aborted",
                    1,
                    0,
                    (&since, NOW),
                    "aborted at step 2 of 4: canary canary back to 0%, stable stable at 100%",
                    open_errors(
                        [1, 0, 0, 0, 0],
                        0,
                        Some(("0", "Success", healthy_message, &measured)),
                    ),
                );
                after["lastAction"] = json!("abort@1");
                script.push(patch_status_guarded(settled(100, 0, after)));
                (setup(ts, script, &healthy), healthy)
            }
            RolloutScenario::Promote => {
                let (measured, since) = (ago(10), ago(100));
                let mut paused = at_50(&measured, &since, 0);
                paused["phase"] = json!("Paused");
                paused["pauseReason"] = json!("AwaitingPromotion");
                paused["stepIndex"] = json!(2);
                paused["metrics"][0]["successesAtWeight"] = json!(1);
                paused["message"] =
                    json!("waiting at step 3 of 4 (pause: {}) for `splitscope rollout promote`");
                let ts = with_rollout_status(rolled_out(Some("promote@1")), settled(50, 50, paused));
                let mut script = reweigh((50, 50), (0, 100));
                let mut after = progress(
                    "Progressing",
                    3,
                    100,
                    (NOW, NOW),
                    "step 4 of 4 (setWeight 100): canary at 100%",
                    open_errors(
                        [1, 0, 0, 0, 0],
                        0,
                        Some(("0", "Success", healthy_message, &measured)),
                    ),
                );
                after["lastAction"] = json!("promote@1");
                script.push(patch_status_guarded(settled(0, 100, after)));
                (setup(ts, script, &healthy), healthy)
            }
            RolloutScenario::RestartMidStep => {
                let (measured, since) = (ago(10), ago(40));
                let ts = with_rollout_status(rolled_out(None), settled(50, 50, at_50(&measured, &since, 0)));
                let mut script = reads(50, 50);
                script.push(list(50, 50));
                (setup(ts, script, &healthy), healthy)
            }
            RolloutScenario::LostToNewerStatus => {
                let earlier = ago(40);
                let ts = with_rollout_status(rolled_out(None), settled(90, 10, at_10(&earlier)));
                let mut script = reweigh((90, 10), (50, 50));
                script.push(Expect::new("PATCH", format!("{TS_PATH}/status")).reply(
                    409,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
                           "message": "Operation cannot be fulfilled on trafficsplits.splitscope.dev \"checkout\": the object has been modified"}),
                ));
                (setup(ts, script, &healthy), healthy)
            }
            RolloutScenario::NextVersionBeforeStable => {
                let (since, changed) = (ago(100), ago(60));
                let succeeded = progress(
                    "Succeeded",
                    4,
                    100,
                    (&since, &changed),
                    "all 4 steps done: canary canary at 100%, stable stable at 0%",
                    open_errors([3, 0, 0, 0, 0], 1, None),
                );
                let mut handed = rolled_out(None);
                handed.spec.backends[1].labels = [("version".to_string(), "v3".to_string())].into();
                let ts = with_rollout_status(handed, settled(0, 100, succeeded.clone()));
                let mut held = succeeded;
                held["phase"] = json!("Paused");
                held["pauseReason"] = json!("StableNotPromoted");
                held["message"] = json!(
                    "a new rollout of backend canary waits: backend stable must first select the version \
                     that succeeded and now takes the canary's 100% (version=v2); point stable at those \
                     labels, and the new rollout starts from it"
                );
                // The live Services and route are the v2 rollout's: nothing to apply.
                let mut script = reads(0, 100);
                script.push(list(0, 100));
                script.push(patch_status_guarded(settled(0, 100, held)));
                (setup(ts, script, &healthy), healthy)
            }
            RolloutScenario::NextVersionStarts => {
                let (since, changed) = (ago(100), ago(60));
                let mut held = progress(
                    "Paused",
                    4,
                    100,
                    (&since, &changed),
                    "held",
                    open_errors([3, 0, 0, 0, 0], 1, None),
                );
                held["pauseReason"] = json!("StableNotPromoted");
                let mut handed = rolled_out(None);
                let v = |version: &str| [("version".to_string(), version.to_string())].into();
                handed.spec.backends[0].labels = v("v2");
                handed.spec.backends[1].labels = v("v3");
                let rollout = handed.spec.rollout.clone().unwrap();
                let ts = with_rollout_status(handed, settled(0, 100, held));
                let mut started = at_10(NOW);
                started["revision"] =
                    json!(crate::controller::rollout::revision::revision(&v("v3"), &rollout));
                started["canaryLabels"] = json!({"version": "v3"});
                let mut script = reads(0, 100);
                script.push(apply_service(
                    "checkout-stable",
                    json!({"app": "checkout", "version": "v2"}),
                ));
                script.push(apply_route(json!([
                    ["checkout-stable", 80, 90],
                    ["checkout-canary", 80, 10]
                ])));
                script.push(apply_service(
                    "checkout-canary",
                    json!({"app": "checkout", "version": "v3"}),
                ));
                script.push(list(90, 10));
                script.push(patch_status_guarded(settled(90, 10, started)));
                (setup(ts, script, &healthy), healthy)
            }
            RolloutScenario::ProgressDeadline => {
                let (since, measured, gone) = (ago(200), ago(10), ago(130));
                let mut ts = rolled_out(None);
                if let Some(rollout) = ts.spec.rollout.as_mut() {
                    rollout.progress_deadline = Some("2m".into());
                }
                let message = "failed-open ratio canary 0 vs stable 0: +0 within maxIncrease 0.05";
                let metric = open_errors([1, 0, 1, 0, 0], 0, Some(("0", "NoData", message, &measured)));
                let mut waiting = progress(
                    "Paused",
                    0,
                    0,
                    (&since, &gone),
                    "backend canary has no ready pods",
                    metric.clone(),
                );
                waiting["pauseReason"] = json!("CanaryUnavailable");
                waiting["canaryUnavailableSince"] = json!(gone);
                let ts = with_rollout_status(ts, settled(100, 0, waiting));
                let mut failed = progress(
                    "Failed",
                    0,
                    0,
                    (&since, &gone),
                    &format!(
                        "rolled back at step 1 of 4: backend canary had no ready pod for 2m (since {gone}), its \
                         progressDeadline; canary canary at 0%, stable stable at 100%"
                    ),
                    metric,
                );
                failed["weightChangedAt"] = json!(gone);
                let mut expected = settled(100, 0, failed);
                expected["backends"] = backends(&[("stable", 100, 2), ("canary", 0, 0)]);
                // A backend at 0 % needs no endpoints.
                expected["conditions"][2]["message"] = json!("stable: 2 ready, canary: 0 ready");
                let mut script = reads(100, 0);
                script.push(list(100, 0));
                script.push(patch_status_guarded(expected));
                let mut setup = setup(ts, script, &healthy);
                setup.slices = vec![
                    ready_slices().remove(0),
                    slice("shop", "checkout-canary", "x1", &[("p3", Some(false))]),
                ];
                (setup, healthy)
            }
            RolloutScenario::StaleCachedCopy => {
                let (measured, since, rolled_back) = (ago(10), ago(40), ago(5));
                let handed =
                    with_rollout_status(rolled_out(None), settled(50, 50, at_50(&measured, &since, 0)));
                let message = "failed-open ratio canary 0.5 vs stable 0: +0.5 exceeds maxIncrease 0.05";
                let failed = progress(
                    "Failed",
                    1,
                    0,
                    (&since, &rolled_back),
                    &format!(
                        "rolled back at step 2 of 4: open-errors ({message}) failed beyond failureLimit 1; canary canary at 0%, stable stable at 100%"
                    ),
                    open_errors(
                        [1, 2, 0, 0, 0],
                        0,
                        Some(("0.5", "Failure", message, &rolled_back)),
                    ),
                );
                let mut live = with_rollout_status(rolled_out(None), settled(100, 0, failed));
                live.metadata.resource_version = Some("101".into());
                // The route as the rollback left it; nothing to write.
                let mut script = reads(100, 0);
                script.push(list(100, 0));
                (handed_and_live(handed, &live, script, &healthy), healthy)
            }
        }
    }

    pub async fn run(self) -> (Run, PrometheusStub) {
        let (setup, prometheus) = self.setup().await;
        (run(setup).await, prometheus)
    }
}

fn series(metrics: &str, name_and_labels: &str) -> Option<String> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(name_and_labels)?
            .strip_prefix(' ')
            .map(str::to_owned)
    })
}

const SUCCESSES: &str = r#"splitscope_analysis_measurements_total{metric="open-errors",name="checkout",namespace="shop",outcome="success"}"#;
const FAILURES: &str = r#"splitscope_analysis_measurements_total{metric="open-errors",name="checkout",namespace="shop",outcome="failure"}"#;
const CANARY_WEIGHT: &str = r#"splitscope_rollout_canary_weight{name="checkout",namespace="shop"}"#;

fn phase_series(phase: &str) -> String {
    format!(r#"splitscope_rollout_phase{{name="checkout",namespace="shop",phase="{phase}"}}"#)
}

#[tokio::test]
async fn a_new_rollout_steps_the_route_to_its_first_weight_at_once() {
    let (run, prometheus) = RolloutScenario::Start.run().await;
    assert_eq!(run.result.unwrap(), Action::requeue(Duration::from_secs(30)));
    assert_eq!(
        run.transcript.event_reasons(),
        ["Updated", "RolloutStarted", "WeightStepped"]
    );
    assert_eq!(prometheus.queries.load(Ordering::SeqCst), 0, "nothing is due yet");
    let metrics = run.metrics.render();
    assert_eq!(
        series(&metrics, &phase_series("Progressing")).as_deref(),
        Some("1")
    );
    assert_eq!(series(&metrics, CANARY_WEIGHT).as_deref(), Some("10"));
}

#[tokio::test]
async fn a_successful_measurement_steps_the_weight_on_the_route_only() {
    let (run, prometheus) = RolloutScenario::StepAfterSuccess.run().await;
    assert_eq!(run.result.unwrap(), Action::requeue(Duration::from_secs(30)));
    let writes = run.transcript.writes();
    assert_eq!(
        writes.len(),
        2,
        "the route and the status, no Service: {writes:?}"
    );
    assert_eq!(run.transcript.event_reasons(), ["Updated", "WeightStepped"]);
    assert_eq!(
        prometheus.queries.load(Ordering::SeqCst),
        2,
        "canary and stable ratios"
    );
    let metrics = run.metrics.render();
    assert_eq!(series(&metrics, SUCCESSES).as_deref(), Some("1"), "{metrics}");
    assert_eq!(series(&metrics, FAILURES).as_deref(), Some("0"), "{metrics}");
}

#[tokio::test]
async fn a_failure_beyond_the_limit_sends_the_traffic_back_to_the_stable() {
    let (run, _) = RolloutScenario::Rollback.run().await;
    assert_eq!(run.result.unwrap(), Action::requeue(RESYNC));
    assert_eq!(
        run.transcript.event_reasons(),
        ["Updated", "AnalysisFailed", "RolledBack"]
    );
    assert!(
        run.transcript
            .events
            .iter()
            .skip(1)
            .all(|e| e["type"] == "Warning")
    );
    let metrics = run.metrics.render();
    assert_eq!(
        series(&metrics, FAILURES).as_deref(),
        Some("1"),
        "this reconcile's one"
    );
    assert_eq!(series(&metrics, &phase_series("Failed")).as_deref(), Some("1"));
    assert_eq!(series(&metrics, CANARY_WEIGHT).as_deref(), Some("0"));
}

#[tokio::test]
async fn abort_sends_the_traffic_back_without_measuring() {
    let (run, prometheus) = RolloutScenario::Abort.run().await;
    assert_eq!(run.result.unwrap(), Action::requeue(RESYNC));
    assert_eq!(run.transcript.event_reasons(), ["Updated", "RolloutAborted"]);
    assert_eq!(prometheus.queries.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn promote_leaves_the_pause_and_steps_to_the_next_weight() {
    let (run, _) = RolloutScenario::Promote.run().await;
    assert_eq!(run.result.unwrap(), Action::requeue(Duration::from_secs(30)));
    assert_eq!(
        run.transcript.event_reasons(),
        ["Updated", "RolloutPromoted", "WeightStepped"]
    );
}

#[tokio::test]
async fn a_restart_mid_step_writes_nothing_and_measures_nothing_before_it_is_due() {
    let (run, prometheus) = RolloutScenario::RestartMidStep.run().await;
    let writes = run.transcript.writes();
    assert!(writes.is_empty(), "{writes:?}");
    assert!(run.transcript.events.is_empty());
    assert_eq!(prometheus.queries.load(Ordering::SeqCst), 0);
    // Looks again when the next measurement is due: 30 s after the last one, 10 s ago.
    let requeue = format!("{:?}", run.result.unwrap());
    assert!(
        requeue.contains("20s") || requeue.contains("21s") || requeue.contains("19s"),
        "{requeue}"
    );
}

/// A new leader's first reconciles, before its EndpointSlice cache has had its first full list:
/// the empty cache would read as "no pods" (the canary would lose its weight, the due
/// measurement would find no data), so nothing is read, measured or written until it has.
#[tokio::test]
async fn a_rollout_waits_for_the_endpointslice_cache_before_it_decides() {
    let (setup, prometheus) = RolloutScenario::Rollback.setup().await;
    let run = run_with(
        Setup {
            script: vec![],
            ..setup
        },
        false,
        false,
    )
    .await;
    assert_eq!(run.result.unwrap(), Action::requeue(SLICES_WAIT));
    assert!(
        run.transcript.requests.is_empty(),
        "{:?}",
        run.transcript.requests
    );
    assert_eq!(prometheus.queries.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_next_version_waits_for_the_stable_and_the_canary_keeps_serving_the_one_that_succeeded() {
    let (run, prometheus) = RolloutScenario::NextVersionBeforeStable.run().await;
    let action = run.result.unwrap();
    let writes = run.transcript.writes();
    assert_eq!(
        writes,
        [
            "PATCH /apis/splitscope.dev/v1alpha1/namespaces/shop/trafficsplits/checkout/status?&force=true&fieldManager=splitscope"
        ],
        "no Service and no route written"
    );
    assert_eq!(run.transcript.event_reasons(), ["RolloutPaused"]);
    assert_eq!(prometheus.queries.load(Ordering::SeqCst), 0);
    assert_eq!(action, Action::requeue(RESYNC));
}

#[tokio::test]
async fn once_the_stable_selects_it_the_next_version_starts_without_handing_it_the_old_share() {
    let (run, _) = RolloutScenario::NextVersionStarts.run().await;
    run.result.unwrap();
    let reasons = run.transcript.event_reasons();
    assert!(reasons.iter().any(|r| r == "RolloutStarted"), "{reasons:?}");
}

/// A reconcile still running when its controller lost the lease: it read and measured, but
/// writes neither the route nor the status (the new leader decides).
#[tokio::test]
async fn a_reconcile_that_outlived_its_leadership_term_writes_nothing() {
    let (mut setup, prometheus) = RolloutScenario::Rollback.setup().await;
    let reads: Vec<Expect> = std::mem::take(&mut setup.script)
        .into_iter()
        .take_while(|e| e.method() == "GET")
        .collect();
    assert!(!reads.is_empty());
    let run = run_with(
        Setup {
            script: reads,
            ..setup
        },
        true,
        true,
    )
    .await;
    assert_eq!(run.result.unwrap(), Action::await_change());
    let writes = run.transcript.writes();
    assert!(writes.is_empty(), "{writes:?}");
    assert!(run.transcript.events.is_empty());
    assert!(prometheus.queries.load(Ordering::SeqCst) > 0, "it did measure");
}

#[tokio::test]
async fn a_decision_lost_to_a_newer_status_counts_nothing() {
    let (run, prometheus) = RolloutScenario::LostToNewerStatus.run().await;
    assert_eq!(run.result.unwrap(), Action::requeue(Duration::from_secs(1)));
    assert_eq!(prometheus.queries.load(Ordering::SeqCst), 2, "it did measure");
    assert_eq!(
        run.transcript.event_reasons(),
        ["Updated"],
        "but publishes none of the rollout's Events"
    );
    let metrics = run.metrics.render();
    assert_eq!(
        series(&metrics, SUCCESSES),
        None,
        "and counts no measurement: {metrics}"
    );
    let errors = r#"splitscope_reconcile_total{result="error"}"#;
    assert_eq!(series(&metrics, errors).as_deref(), Some("0"), "nor an error");
}

#[tokio::test]
async fn a_canary_without_ready_pods_past_its_progress_deadline_fails_the_rollout() {
    let (run, prometheus) = RolloutScenario::ProgressDeadline.run().await;
    assert_eq!(run.result.unwrap(), Action::requeue(RESYNC));
    let writes = run.transcript.writes();
    assert_eq!(
        writes.len(),
        1,
        "the status only: the route is the stable's already: {writes:?}"
    );
    assert!(
        run.transcript.event_reasons().iter().any(|r| r == "RolledBack"),
        "{:?}",
        run.transcript.event_reasons()
    );
    assert_eq!(prometheus.queries.load(Ordering::SeqCst), 0);
    let metrics = run.metrics.render();
    assert_eq!(
        series(&metrics, &phase_series("Failed")).as_deref(),
        Some("1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_cached_copy_from_before_a_rollback_does_not_put_the_canary_back_on_the_route() {
    let (run, prometheus) = RolloutScenario::StaleCachedCopy.run().await;
    let writes = run.transcript.writes();
    assert!(
        writes.is_empty(),
        "the route stays at the stable's 100 %, and the status as the rollback wrote it: {writes:?}"
    );
    assert!(run.transcript.events.is_empty());
    assert_eq!(
        prometheus.queries.load(Ordering::SeqCst),
        0,
        "a failed rollout measures nothing"
    );
    assert_eq!(run.result.unwrap(), Action::requeue(RESYNC));
    let metrics = run.metrics.render();
    assert_eq!(
        series(&metrics, &phase_series("Failed")).as_deref(),
        Some("1"),
        "{metrics}"
    );
    assert_eq!(series(&metrics, CANARY_WEIGHT).as_deref(), Some("0"), "{metrics}");
}
