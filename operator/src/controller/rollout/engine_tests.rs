//! The rollout's decisions over every phase and outcome. Expected statuses are written out
//! field by field; times are seconds after `T0`.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::controller::api::rollout::{
    Analysis, AnalysisMetric, MeasurementOutcome as O, OpenErrors, Pause, PauseReason, Rollout,
    RolloutPhase as P, RolloutStep, ThresholdRange,
};

/// One reconcile's decision as the reconciler makes it: begin, record `round` when one was
/// measured, finish.
fn decide(
    plan: &Plan,
    previous: Option<&RolloutStatus>,
    action: Option<&str>,
    now: Timestamp,
    round: Option<Vec<Measurement>>,
) -> Decision {
    let mut engine = Engine::begin(plan, previous, action, now);
    if let Some(round) = round {
        engine.record(round);
    }
    engine.finish()
}

const T0: i64 = 1_700_000_000;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(T0 + secs).unwrap()
}

fn time(secs: i64) -> Option<Time> {
    Some(Time(at(secs)))
}

fn set_weight(w: i32) -> RolloutStep {
    RolloutStep {
        set_weight: Some(w),
        pause: None,
    }
}

fn pause(d: Option<&str>) -> RolloutStep {
    RolloutStep {
        set_weight: None,
        pause: Some(Pause {
            duration: d.map(str::to_string),
        }),
    }
}

fn metrics() -> Vec<AnalysisMetric> {
    vec![
        AnalysisMetric {
            name: "open-errors".into(),
            open_errors: Some(OpenErrors {
                max_increase: 0.05,
                errnos: vec![],
            }),
            query: None,
            threshold_range: None,
        },
        AnalysisMetric {
            name: "http-5xx".into(),
            open_errors: None,
            query: Some("sum(x)".into()),
            threshold_range: Some(ThresholdRange {
                min: None,
                max: Some(0.5),
            }),
        },
    ]
}

/// The example: 10%, 1m, 50%, until promoted, 100%; every 30s; one failure tolerated,
/// two consecutive errors tolerated.
fn rollout() -> Rollout {
    Rollout {
        stable: "stable".into(),
        canary: "canary".into(),
        steps: vec![
            set_weight(10),
            pause(Some("1m")),
            set_weight(50),
            pause(None),
            set_weight(100),
        ],
        analysis: Some(Analysis {
            interval: "30s".into(),
            failure_limit: 1,
            consecutive_error_limit: 2,
            prometheus: None,
            metrics: metrics(),
        }),
        progress_deadline: None,
    }
}

fn plan_of(rollout: Rollout) -> Plan {
    Plan::new(&rollout, "rev1".into(), 100).unwrap()
}

fn plan() -> Plan {
    plan_of(rollout())
}

/// The plan of `rollout` with the canary's pods ready, and the same without.
fn ready_and_not(rollout: Rollout) -> (Plan, Plan) {
    let ready = plan_of(rollout);
    let mut unready = ready.clone();
    unready.canary_ready = false;
    (ready, unready)
}

fn m(metric: &str, outcome: O, value: Option<f64>) -> Measurement {
    Measurement {
        metric: metric.into(),
        outcome,
        value,
        message: format!("{metric} said {outcome:?}"),
    }
}

fn round(outcome: O) -> Vec<Measurement> {
    let value = match outcome {
        O::Success => Some(0.01),
        O::Failure => Some(0.9),
        O::NoData | O::Error => None,
    };
    vec![m("open-errors", outcome, value), m("http-5xx", outcome, value)]
}

fn reasons(d: &Decision) -> Vec<&'static str> {
    d.events.iter().map(|e| e.reason).collect()
}

/// Runs one reconcile at `secs`, measuring when due with `outcome`.
fn step(plan: &Plan, previous: &RolloutStatus, secs: i64, outcome: O) -> Decision {
    let mut engine = Engine::begin(plan, Some(previous), None, at(secs));
    if engine.measurement_due() {
        engine.record(round(outcome));
    }
    engine.finish()
}

#[test]
fn a_new_rollout_starts_at_0_and_steps_to_its_first_weight() {
    let d = decide(&plan(), None, None, at(0), None);
    assert_eq!(
        d.status,
        RolloutStatus {
            phase: P::Progressing,
            revision: "rev1".into(),
            step_index: 0,
            step_started_at: time(0),
            canary_weight: 10,
            stable_weight: 90,
            weight_changed_at: time(0),
            pause_reason: None,
            canary_unavailable_since: None,
            message: Some("step 1 of 5 (setWeight 10): canary at 10%".into()),
            last_action: None,
            metrics: vec![MetricStatus::new("open-errors"), MetricStatus::new("http-5xx")],
            canary_labels: Some(Default::default()),
        }
    );
    assert_eq!(reasons(&d), ["RolloutStarted", "WeightStepped"]);
    assert_eq!(
        d.events[1].note,
        "step 1 of 5: canary canary at 10%, stable stable at 90%"
    );
    assert_eq!(
        d.requeue_after,
        Some(Duration::from_secs(30)),
        "the first measurement"
    );
    assert!(d.counted.is_empty());
}

#[test]
fn nothing_is_measured_before_a_whole_interval_at_the_weight() {
    let plan = plan();
    let started = decide(&plan, None, None, at(0), None).status;
    let engine = Engine::begin(&plan, Some(&started), None, at(29));
    assert!(!engine.measurement_due());
    let d = engine.finish();
    assert_eq!(d.status, started, "nothing changes between measurements");
    assert!(d.events.is_empty());
    assert_eq!(d.requeue_after, Some(Duration::from_secs(1)));
    assert!(Engine::begin(&plan, Some(&started), None, at(30)).measurement_due());
}

#[test]
fn a_healthy_canary_promotes_through_every_step() {
    let plan = plan();
    let s0 = decide(&plan, None, None, at(0), None).status;

    // 30s: both metrics succeed at 10% -> the 1m pause begins.
    let d = step(&plan, &s0, 30, O::Success);
    assert_eq!((d.status.step_index, d.status.canary_weight), (1, 10));
    assert_eq!(d.status.phase, P::Progressing);
    assert_eq!(d.counted.len(), 2);
    let open = &d.status.metrics[0];
    assert_eq!(
        (
            open.successes,
            open.successes_at_weight,
            open.last_value.as_deref()
        ),
        (1, 1, Some("0.01"))
    );
    assert_eq!(open.last_measured_at, time(30));
    assert_eq!(open.last_outcome, Some(O::Success));
    // Next: a measurement at 60s (before the pause ends at 90s).
    assert_eq!(d.requeue_after, Some(Duration::from_secs(30)));

    // 60s: measured again, the pause still runs.
    let d = step(&plan, &d.status, 60, O::Success);
    assert_eq!(d.status.step_index, 1);
    assert_eq!(d.status.metrics[1].successes, 2);
    // 90s: the pause ended and the weight has a success -> 50%.
    let d = step(&plan, &d.status, 90, O::Success);
    assert_eq!(
        (
            d.status.step_index,
            d.status.canary_weight,
            d.status.stable_weight
        ),
        (2, 50, 50)
    );
    assert_eq!(reasons(&d), ["WeightStepped"]);
    assert_eq!(
        d.status.metrics[0].successes_at_weight, 0,
        "counts restart at a new weight"
    );
    assert_eq!(d.status.weight_changed_at, time(90));

    // 120s: success at 50% -> pause {} -> Paused, awaiting promotion.
    let d = step(&plan, &d.status, 120, O::Success);
    assert_eq!(d.status.step_index, 3);
    assert_eq!(d.status.phase, P::Paused);
    assert_eq!(d.status.pause_reason, Some(PauseReason::AwaitingPromotion));
    assert_eq!(reasons(&d), ["RolloutPaused"]);
    assert!(!d.events[0].warning);
    // Analysis goes on while paused.
    let paused = step(&plan, &d.status, 150, O::Success);
    assert_eq!(paused.status.step_index, 3);
    assert!(
        paused.events.is_empty(),
        "still paused for the same reason: no new Event"
    );

    // Promoted at 155s -> 100%; 185s success -> Succeeded.
    let d = decide(&plan, Some(&paused.status), Some("promote@1"), at(155), None);
    assert_eq!(reasons(&d), ["RolloutPromoted", "WeightStepped"]);
    assert_eq!((d.status.step_index, d.status.canary_weight), (4, 100));
    assert_eq!(d.status.last_action.as_deref(), Some("promote@1"));
    let d = step(&plan, &d.status, 185, O::Success);
    assert_eq!(d.status.phase, P::Succeeded);
    assert_eq!(
        (
            d.status.step_index,
            d.status.canary_weight,
            d.status.stable_weight
        ),
        (5, 100, 0)
    );
    assert_eq!(reasons(&d), ["RolloutSucceeded"]);
    assert_eq!(
        d.status.message.as_deref(),
        Some("all 5 steps done: canary canary at 100%, stable stable at 0%")
    );
    assert_eq!(d.requeue_after, None);

    // Done: nothing is measured any more.
    let engine = Engine::begin(&plan, Some(&d.status), None, at(400));
    assert!(!engine.measurement_due());
    assert_eq!(engine.finish().status, d.status);
}

#[test]
fn the_last_window_of_a_timed_pause_is_judged_before_the_next_weight() {
    let plan = plan();
    let s0 = decide(&plan, None, None, at(0), None).status;
    let d = step(&plan, &s0, 30, O::Success); // 10%, the 1m pause begins
    let d = step(&plan, &d.status, 60, O::Failure); // tolerated (limit 1)
    assert_eq!(d.status.phase, P::Progressing);
    // 90s: the pause ends as a measurement falls due. The window 60s-90s ran at 10% and
    // failed: the canary rolls back instead of going to 50%.
    let d = step(&plan, &d.status, 90, O::Failure);
    assert_eq!(d.status.phase, P::Failed, "{:?}", d.status);
    assert_eq!(d.status.canary_weight, 0);
    assert_eq!(d.status.metrics[0].last_measured_at, time(90));
    assert!(!reasons(&d).contains(&"WeightStepped"), "{:?}", reasons(&d));
}

#[test]
fn a_canary_without_ready_pods_gets_no_traffic_and_nothing_advances_until_it_has() {
    let (ready, unready) = ready_and_not(rollout());

    // A new rollout whose canary has no ready pod yet: it stays at 0 %.
    let d = decide(&unready, None, None, at(0), None);
    assert_eq!((d.status.step_index, d.status.canary_weight), (0, 0));
    assert_eq!(d.status.phase, P::Paused);
    assert_eq!(d.status.pause_reason, Some(PauseReason::CanaryUnavailable));
    assert!(!reasons(&d).contains(&"WeightStepped"), "{:?}", reasons(&d));
    assert!(reasons(&d).contains(&"RolloutPaused"), "{:?}", reasons(&d));
    // Its pods come: the first step's weight.
    let d = decide(&ready, Some(&d.status), None, at(5), None);
    assert_eq!(d.status.canary_weight, 10);
    assert_eq!(d.status.phase, P::Progressing);

    // In the 1m pause at 10 %, the canary loses its pods: 0 %, and the pause does not end.
    let d = step(&ready, &d.status, 35, O::Success);
    assert_eq!((d.status.step_index, d.status.canary_weight), (1, 10));
    let gone = decide(&unready, Some(&d.status), None, at(40), None);
    assert_eq!((gone.status.step_index, gone.status.canary_weight), (1, 0));
    assert_eq!(gone.status.stable_weight, 100);
    assert_eq!(gone.status.pause_reason, Some(PauseReason::CanaryUnavailable));
    // Measurements go on (here a success, with no canary traffic to judge): nothing moves.
    let still = step(&unready, &gone.status, 200, O::Success);
    assert_eq!((still.status.step_index, still.status.canary_weight), (1, 0));
    // The pause ended at 95: it looks again at the next measurement, not every second.
    assert_eq!(still.requeue_after, Some(Duration::from_secs(30)));
    // Back: 10 % again, judged afresh at that weight before the pause may end.
    let back = step(&ready, &still.status, 210, O::Success);
    assert_eq!((back.status.step_index, back.status.canary_weight), (1, 10));
    assert_eq!(back.status.metrics[0].successes_at_weight, 0);
    assert_eq!(back.status.phase, P::Progressing);
    let d = step(&ready, &back.status, 240, O::Success);
    assert_eq!((d.status.step_index, d.status.canary_weight), (2, 50));
}

#[test]
fn a_canary_without_ready_pods_past_its_progress_deadline_rolls_back() {
    let mut with_deadline = rollout();
    with_deadline.progress_deadline = Some("5m".into());
    let (ready, unready) = ready_and_not(with_deadline);

    // At 10 %, the canary loses its pods at 20s: 0 %, and the clock starts.
    let d = decide(&ready, None, None, at(0), None);
    let gone = step(&unready, &d.status, 20, O::Success);
    assert_eq!(gone.status.canary_unavailable_since, time(20));
    assert_eq!(gone.status.pause_reason, Some(PauseReason::CanaryUnavailable));
    let message = gone.status.message.clone().unwrap_or_default();
    assert!(message.contains("progressDeadline 5m"), "{message}");
    // A reconcile before the deadline (measurements go on) keeps the first time it was seen.
    let waiting = step(&unready, &gone.status, 200, O::Success);
    assert_eq!(waiting.status.canary_unavailable_since, time(20));
    assert_eq!(waiting.status.phase, P::Paused);
    // Measured at 310, next at 340: it looks again at the deadline, 320.
    let later = step(&unready, &waiting.status, 310, O::Success);
    assert_eq!(later.requeue_after, Some(Duration::from_secs(10)));
    // Pods back before the deadline: the clock is cleared, the step goes on.
    let back = step(&ready, &later.status, 315, O::Success);
    assert_eq!(back.status.canary_unavailable_since, None);
    assert_eq!(
        (back.status.phase, back.status.canary_weight),
        (P::Progressing, 10)
    );
    // Gone again: a fresh five minutes, counted from 400s, not from 20s.
    let again = step(&unready, &back.status, 400, O::Success);
    assert_eq!(again.status.canary_unavailable_since, time(400));
    let before = step(&unready, &again.status, 699, O::Success);
    assert_eq!(before.status.phase, P::Paused);
    // At the deadline: Failed, the canary at 0 % and the stable at the pair's share.
    let failed = step(&unready, &before.status, 700, O::Success);
    assert_eq!(failed.status.phase, P::Failed);
    assert_eq!(
        (failed.status.canary_weight, failed.status.stable_weight),
        (0, 100)
    );
    assert_eq!(failed.status.pause_reason, None);
    assert_eq!(failed.status.canary_unavailable_since, None);
    assert_eq!(reasons(&failed), ["RolledBack"]);
    let message = failed.status.message.clone().unwrap_or_default();
    assert!(
        message.contains("backend canary had no ready pod for 5m") && message.contains("progressDeadline"),
        "{message}"
    );
    assert!(failed.events[0].warning);
    assert_eq!(failed.requeue_after, None);
    // Retried while it still has none: a new clock from the retry.
    let retried = decide(&unready, Some(&failed.status), Some("retry"), at(800), None);
    assert_eq!(retried.status.phase, P::Paused);
    assert_eq!(retried.status.canary_unavailable_since, time(800));

    // Without a progressDeadline it waits however long it takes.
    let (_, forever) = ready_and_not(rollout());
    let d = decide(&forever, None, None, at(0), None);
    let d = decide(&forever, Some(&d.status), None, at(86_400), None);
    assert_eq!(
        (d.status.phase, d.status.pause_reason),
        (P::Paused, Some(PauseReason::CanaryUnavailable))
    );
    assert_eq!(d.status.canary_unavailable_since, time(0));
}

#[test]
fn promoted_to_the_end_without_canary_pods_succeeds_at_the_final_weight_once_they_are_back() {
    let (ready, unready) = ready_and_not(rollout());
    let d = decide(&ready, None, None, at(0), None);
    let gone = decide(&unready, Some(&d.status), None, at(5), None);
    let promoted = decide(&unready, Some(&gone.status), Some("promote-full"), at(6), None);
    assert_eq!(
        (promoted.status.phase, promoted.status.canary_weight),
        (P::Paused, 0)
    );
    assert_eq!(promoted.status.pause_reason, Some(PauseReason::CanaryUnavailable));
    // Nothing left to promote past: ignored, and the step stays at the end.
    let again = decide(&unready, Some(&promoted.status), Some("promote"), at(6), None);
    assert_eq!(again.status.step_index, 5);
    assert_eq!(reasons(&again), ["RolloutActionIgnored"]);
    let back = decide(&ready, Some(&again.status), None, at(7), None);
    assert_eq!(
        (back.status.phase, back.status.canary_weight),
        (P::Succeeded, 100)
    );
    assert_eq!(back.status.stable_weight, 0);
}

/// `labels` as a BTreeMap.
fn labels(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_next_version_waits_until_the_stable_selects_the_one_that_succeeded() {
    // v2 succeeded at 100 %: the canary carries the pair; the stable still selects v1.
    let mut v2 = plan();
    v2.canary_labels = labels(&[("version", "v2")]);
    v2.stable_labels = labels(&[("version", "v1")]);
    let started = decide(&v2, None, None, at(0), None).status;
    assert_eq!(started.canary_labels, Some(labels(&[("version", "v2")])));
    let done = decide(&v2, Some(&started), Some("promote-full@1"), at(5), None).status;
    assert_eq!((done.phase, done.canary_weight), (P::Succeeded, 100));

    // The canary is pointed at v3 first: the new rollout waits, v2 keeps its 100 %.
    let mut v3 = plan_of(rollout());
    v3.revision = "rev3".into();
    v3.canary_labels = labels(&[("version", "v3")]);
    v3.stable_labels = labels(&[("version", "v1")]);
    let held = decide(&v3, Some(&done), None, at(10), None);
    assert_eq!(held.status.phase, P::Paused);
    assert_eq!(held.status.pause_reason, Some(PauseReason::StableNotPromoted));
    assert_eq!((held.status.canary_weight, held.status.stable_weight), (100, 0));
    assert_eq!(held.status.revision, "rev1", "the new rollout has not started");
    assert_eq!(held.status.canary_labels, Some(labels(&[("version", "v2")])));
    assert_eq!(reasons(&held), ["RolloutPaused"]);
    assert!(
        held.status
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("version=v2")
    );
    assert_eq!(held.requeue_after, None, "only a spec change lifts it");
    // Looked at again, still held, no second Event.
    let again = decide(&v3, Some(&held.status), None, at(20), None);
    assert_eq!(again.status.pause_reason, Some(PauseReason::StableNotPromoted));
    assert!(again.events.is_empty());
    // A promote meanwhile is answered at once, and not kept for the new rollout (where it
    // would skip the first step unjudged).
    let asked = decide(&v3, Some(&again.status), Some("promote@2"), at(25), None);
    assert_eq!(asked.status.last_action.as_deref(), Some("promote@2"));
    assert_eq!(reasons(&asked), ["RolloutActionIgnored"]);
    assert!(
        asked.events[0].note.contains("has not started"),
        "{}",
        asked.events[0].note
    );
    assert_eq!(
        (asked.status.canary_weight, &asked.status.revision),
        (100, &"rev1".to_string())
    );
    let again = decide(&v3, Some(&asked.status), Some("promote@2"), at(28), None);
    assert!(again.events.is_empty(), "handled once");

    // The stable now selects v2: the new rollout starts from it, the canary (v3) at 0 %.
    v3.stable_labels = labels(&[("version", "v2")]);
    let d = decide(&v3, Some(&again.status), Some("promote@2"), at(30), None);
    assert_eq!(d.status.revision, "rev3");
    assert_eq!(d.status.phase, P::Progressing);
    assert_eq!((d.status.step_index, d.status.canary_weight), (0, 10));
    assert_eq!(d.status.canary_labels, Some(labels(&[("version", "v3")])));
}

#[test]
fn a_new_version_after_a_failed_or_unrecorded_rollout_starts_at_once() {
    let mut v3 = plan();
    v3.revision = "rev3".into();
    v3.canary_labels = labels(&[("version", "v3")]);
    v3.stable_labels = labels(&[("version", "v1")]);
    // After a rollback the canary carries nothing: nothing to keep.
    let mut failed = decide(&plan(), None, None, at(0), None).status;
    failed.phase = P::Failed;
    failed.canary_weight = 0;
    failed.canary_labels = Some(labels(&[("version", "v2")]));
    assert_eq!(
        decide(&v3, Some(&failed), None, at(5), None).status.revision,
        "rev3"
    );
    // A status written before the labels were recorded is not held.
    let mut old = failed.clone();
    old.phase = P::Succeeded;
    old.canary_weight = 100;
    old.canary_labels = None;
    assert_eq!(decide(&v3, Some(&old), None, at(5), None).status.revision, "rev3");
}

#[test]
fn failures_up_to_the_limit_are_tolerated_one_more_rolls_back() {
    let plan = plan();
    let s0 = decide(&plan, None, None, at(0), None).status;
    let d = step(&plan, &s0, 30, O::Failure);
    assert_eq!(d.status.phase, P::Progressing, "failureLimit 1 tolerates one");
    assert_eq!(reasons(&d), ["AnalysisFailed", "AnalysisFailed"]);
    assert!(d.events.iter().all(|e| e.warning));
    assert_eq!(
        d.events[0].note,
        "metric open-errors: open-errors said Failure (failure 1, 1 tolerated)"
    );
    assert_eq!(
        (d.status.canary_weight, d.status.step_index),
        (10, 0),
        "no advance on failure"
    );

    let d = step(&plan, &d.status, 60, O::Failure);
    assert_eq!(d.status.phase, P::Failed);
    assert_eq!((d.status.canary_weight, d.status.stable_weight), (0, 100));
    assert_eq!(reasons(&d), ["AnalysisFailed", "AnalysisFailed", "RolledBack"]);
    assert_eq!(
        d.status.message.as_deref(),
        Some(
            "rolled back at step 1 of 5: open-errors (open-errors said Failure); http-5xx (http-5xx said Failure) failed beyond failureLimit 1; canary canary at 0%, stable stable at 100%"
        )
    );
    assert_eq!(d.status.metrics[0].failures, 2);
    assert_eq!(d.requeue_after, None);
    // Failed stays Failed: no measurement, no step.
    let later = step(&plan, &d.status, 300, O::Success);
    assert_eq!(later.status, d.status);
    assert!(later.events.is_empty());
}

#[test]
fn no_data_holds_the_step_and_resumes_when_data_comes() {
    let plan = plan();
    let s0 = decide(&plan, None, None, at(0), None).status;
    let d = step(&plan, &s0, 30, O::NoData);
    assert_eq!(d.status.phase, P::Paused);
    assert_eq!(d.status.pause_reason, Some(PauseReason::NoData));
    assert_eq!(d.status.step_index, 0, "a canary without traffic never advances");
    assert_eq!(d.status.canary_weight, 10);
    assert_eq!(reasons(&d), ["RolloutPaused"]);
    assert!(d.events[0].warning);
    assert_eq!(
        d.status.message.as_deref(),
        Some("metric open-errors has no data: open-errors said NoData (the step resumes when data comes)")
    );
    assert_eq!(d.status.metrics[0].no_data, 1);

    // Still no data: no new Event; then data -> Progressing and the step advances.
    let d = step(&plan, &d.status, 60, O::NoData);
    assert!(d.events.is_empty());
    let d = step(&plan, &d.status, 90, O::Success);
    assert_eq!(d.status.phase, P::Progressing);
    assert_eq!(d.status.pause_reason, None);
    assert_eq!(d.status.step_index, 1);
}

#[test]
fn errors_beyond_the_limit_pause_and_never_roll_back() {
    let plan = plan();
    let mut status = decide(&plan, None, None, at(0), None).status;
    // consecutiveErrorLimit 2: the first two keep it Progressing.
    for (i, secs) in [30, 60].into_iter().enumerate() {
        let d = step(&plan, &status, secs, O::Error);
        assert_eq!(d.status.phase, P::Progressing, "error {}", i + 1);
        assert_eq!(d.status.step_index, 0);
        status = d.status;
    }
    let d = step(&plan, &status, 90, O::Error);
    assert_eq!(d.status.phase, P::Paused);
    assert_eq!(d.status.pause_reason, Some(PauseReason::AnalysisError));
    assert_eq!(d.status.metrics[0].consecutive_errors, 3);
    assert_eq!(d.status.canary_weight, 10, "an outage never rolls back");
    assert_eq!(reasons(&d), ["RolloutPaused"]);
    // Ten more errors: still paused, still at 10%.
    let mut status = d.status;
    for secs in (120..420).step_by(30) {
        status = step(&plan, &status, secs, O::Error).status;
    }
    assert_eq!((status.phase, status.canary_weight), (P::Paused, 10));
    // Prometheus is back: resumes and advances.
    let d = step(&plan, &status, 420, O::Success);
    assert_eq!(d.status.phase, P::Progressing);
    assert_eq!(d.status.metrics[0].consecutive_errors, 0);
    assert_eq!(d.status.step_index, 1);
}

#[test]
fn a_restart_resumes_without_repeating_a_counted_measurement() {
    let plan = plan();
    let s0 = decide(&plan, None, None, at(0), None).status;
    let measured = step(&plan, &s0, 30, O::Success).status;
    // A new process (or a new leader) reads the status a few seconds later.
    for secs in [31, 45, 59] {
        let engine = Engine::begin(&plan, Some(&measured), None, at(secs));
        assert!(!engine.measurement_due(), "at {secs}s");
        let d = engine.finish();
        assert_eq!(d.status, measured);
        assert!(d.counted.is_empty());
    }
    assert!(Engine::begin(&plan, Some(&measured), None, at(60)).measurement_due());
}

#[test]
fn abort_from_any_phase_sets_the_canary_to_0() {
    let plan = plan();
    let progressing = decide(&plan, None, None, at(0), None).status;
    let succeeded = decide(&plan, Some(&progressing), Some("promote-full@1"), at(5), None).status;
    let failed = {
        let s = step(&plan, &progressing, 30, O::Failure).status;
        step(&plan, &s, 60, O::Failure).status
    };
    for (from, status) in [
        ("Progressing", &progressing),
        ("Succeeded", &succeeded),
        ("Failed", &failed),
    ] {
        let d = decide(&plan, Some(status), Some("abort@x"), at(100), None);
        assert_eq!(d.status.phase, P::Aborted, "from {from}");
        assert_eq!(
            (d.status.canary_weight, d.status.stable_weight),
            (0, 100),
            "from {from}"
        );
        assert_eq!(reasons(&d), ["RolloutAborted"], "from {from}");
        assert_eq!(d.requeue_after, None);
        // The same annotation value again is the same request: handled once.
        let again = decide(&plan, Some(&d.status), Some("abort@x"), at(101), None);
        assert_eq!(again.status, d.status);
        assert!(again.events.is_empty());
        // A new abort of an Aborted rollout is ignored, with an Event saying so.
        let twice = decide(&plan, Some(&d.status), Some("abort@y"), at(102), None);
        assert_eq!(reasons(&twice), ["RolloutActionIgnored"]);
        assert_eq!(twice.status.phase, P::Aborted);
    }
}

#[test]
fn retry_restarts_a_failed_or_aborted_rollout_and_nothing_else() {
    let plan = plan();
    let s0 = decide(&plan, None, None, at(0), None).status;
    let aborted = decide(&plan, Some(&s0), Some("abort@1"), at(10), None).status;
    let d = decide(&plan, Some(&aborted), Some("retry@2"), at(20), None);
    assert_eq!(reasons(&d), ["RolloutStarted", "WeightStepped"]);
    assert_eq!(
        (d.status.phase, d.status.step_index, d.status.canary_weight),
        (P::Progressing, 0, 10)
    );
    assert_eq!(
        d.status.metrics,
        vec![MetricStatus::new("open-errors"), MetricStatus::new("http-5xx")]
    );
    assert_eq!(d.status.last_action.as_deref(), Some("retry@2"));
    assert_eq!(d.status.step_started_at, time(20));

    let ignored = decide(&plan, Some(&s0), Some("retry@3"), at(20), None);
    assert_eq!(reasons(&ignored), ["RolloutActionIgnored"]);
    assert_eq!(
        ignored.events[0].note,
        "retry ignored: only a Failed or Aborted rollout can be retried; this one is Progressing"
    );
    assert_eq!(ignored.status.canary_weight, 10);
}

#[test]
fn promote_leaves_the_current_step_and_full_promotion_skips_to_the_end() {
    let plan = plan();
    let s0 = decide(&plan, None, None, at(0), None).status;
    // Promoting the setWeight 10 step (still awaiting analysis) moves into the 1m pause.
    let d = decide(&plan, Some(&s0), Some("promote@a"), at(5), None);
    assert_eq!(reasons(&d), ["RolloutPromoted"]);
    assert_eq!(d.events[0].note, "promoted past step 1 of 5 (setWeight 10)");
    assert_eq!((d.status.step_index, d.status.canary_weight), (1, 10));

    let d = decide(&plan, Some(&s0), Some("promote-full@b"), at(5), None);
    assert_eq!(reasons(&d), ["RolloutPromoted", "RolloutSucceeded"]);
    assert_eq!(
        (
            d.status.phase,
            d.status.step_index,
            d.status.canary_weight,
            d.status.stable_weight
        ),
        (P::Succeeded, 5, 100, 0)
    );
    // Promoting a Succeeded rollout does nothing.
    let again = decide(&plan, Some(&d.status), Some("promote@c"), at(6), None);
    assert_eq!(reasons(&again), ["RolloutActionIgnored"]);
    assert_eq!(again.status.canary_weight, 100);
}

#[test]
fn an_unknown_action_is_named_and_recorded_as_handled() {
    let plan = plan();
    let s0 = decide(&plan, None, None, at(0), None).status;
    let d = decide(&plan, Some(&s0), Some("rollback"), at(1), None);
    assert_eq!(reasons(&d), ["RolloutActionIgnored"]);
    assert!(
        d.events[0]
            .note
            .starts_with("unknown rollout action \"rollback\"")
    );
    assert_eq!(d.status.last_action.as_deref(), Some("rollback"));
}

#[test]
fn a_new_revision_starts_over_and_an_annotation_from_before_is_not_replayed() {
    let plan = plan();
    let s0 = decide(&plan, None, Some("abort@old"), at(0), None).status;
    assert_eq!(
        s0.phase,
        P::Progressing,
        "an annotation present at the start is consumed"
    );
    assert_eq!(s0.last_action.as_deref(), Some("abort@old"));
    let advanced = step(&plan, &s0, 30, O::Success).status;

    let mut changed = rollout();
    changed.steps[0] = set_weight(20);
    let plan2 = Plan::new(&changed, "rev2".into(), 100).unwrap();
    let d = decide(&plan2, Some(&advanced), None, at(40), None);
    assert_eq!(reasons(&d), ["RolloutStarted", "WeightStepped"]);
    assert_eq!(
        (
            d.status.revision.as_str(),
            d.status.step_index,
            d.status.canary_weight
        ),
        ("rev2", 0, 20)
    );
    assert_eq!(d.status.metrics[0].successes, 0);
}

#[test]
fn the_stable_gets_the_rest_of_the_pairs_share_only() {
    // Three backends: stable 70 + canary 0 share 70; a mirror keeps its 30.
    let plan = Plan::new(&rollout(), "rev1".into(), 70).unwrap();
    let d = decide(&plan, None, None, at(0), None);
    assert_eq!((d.status.canary_weight, d.status.stable_weight), (10, 60));
    // The share shrinks below the canary's weight in the spec: clamped.
    let smaller = Plan::new(&rollout(), "rev1".into(), 5).unwrap();
    let d = decide(&smaller, Some(&d.status), None, at(1), None);
    assert_eq!((d.status.canary_weight, d.status.stable_weight), (5, 0));
    assert_eq!(smaller.final_weight(), 5);
}

#[test]
fn without_analysis_steps_advance_on_their_pauses_alone() {
    let mut r = rollout();
    r.analysis = None;
    r.steps = vec![set_weight(10), pause(Some("1m")), set_weight(100)];
    let plan = plan_of(r);
    let d = decide(&plan, None, None, at(0), None);
    assert_eq!((d.status.step_index, d.status.canary_weight), (1, 10));
    assert_eq!(d.requeue_after, Some(Duration::from_secs(60)), "the pause's end");
    let engine = Engine::begin(&plan, Some(&d.status), None, at(30));
    assert!(!engine.measurement_due());
    let d = decide(&plan, Some(&d.status), None, at(60), None);
    assert_eq!(d.status.phase, P::Succeeded);
    assert_eq!(d.status.canary_weight, 100);
}

#[test]
fn a_leading_pause_keeps_the_canary_at_0() {
    let mut r = rollout();
    r.steps = vec![pause(None), set_weight(100)];
    let d = decide(&plan_of(r), None, None, at(0), None);
    assert_eq!(d.status.canary_weight, 0);
    assert_eq!(d.status.pause_reason, Some(PauseReason::AwaitingPromotion));
    assert_eq!(reasons(&d), ["RolloutStarted", "RolloutPaused"]);
}

#[test]
fn a_weight_change_restarts_the_measurement_window() {
    let plan = plan();
    let s0 = decide(&plan, None, None, at(0), None).status;
    // Measured at 30s at 10% (the 1m pause starts), then promoted at 40s to 50%.
    let s1 = step(&plan, &s0, 30, O::Success).status;
    let d = decide(&plan, Some(&s1), Some("promote@1"), at(40), None);
    assert_eq!(d.status.canary_weight, 50);
    // Not at 60s (30s after the last measurement) but at 70s (30s after the weight changed).
    assert_eq!(d.requeue_after, Some(Duration::from_secs(30)));
    assert!(!Engine::begin(&plan, Some(&d.status), None, at(60)).measurement_due());
    assert!(Engine::begin(&plan, Some(&d.status), None, at(70)).measurement_due());
}

#[test]
fn a_hand_edited_status_out_of_range_is_clamped_not_a_panic() {
    let plan = plan();
    let mut s = decide(&plan, None, None, at(0), None).status;
    s.step_index = 99;
    let d = decide(&plan, Some(&s), None, at(1), None);
    assert_eq!(d.status.phase, P::Succeeded);
    s.step_index = -3;
    s.phase = P::Progressing;
    let d = decide(&plan, Some(&s), None, at(1), None);
    assert_eq!(d.status.step_index, 0);
}

#[test]
fn values_are_written_plainly() {
    assert_eq!(format_value(0.05), "0.05");
    assert_eq!(format_value(1.0), "1");
    assert_eq!(format_value(-0.0000001), "0");
    assert_eq!(format_value(f64::NAN), "NaN");
    assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
}

mod any_sequence {
    //! Random sequences of reconciles — time passing, the canary's pods coming and going,
    //! measurements of every outcome, people's actions — against what must hold after each.

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    struct Reconcile {
        wait: i64,
        ready: bool,
        outcome: O,
        action: Option<&'static str>,
        edit: Edit,
    }

    /// A change of the spec before the reconcile.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Edit {
        None,
        /// The canary backend pointed at the next version (a new revision).
        NextVersion,
        /// The stable backend pointed at the version the last rollout took the canary to.
        PromoteStable,
    }

    fn reconcile() -> impl Strategy<Value = Reconcile> {
        let outcome = prop_oneof![
            6 => Just(O::Success),
            1 => Just(O::Failure),
            1 => Just(O::NoData),
            1 => Just(O::Error),
        ];
        let action = prop_oneof![
            12 => Just(None),
            1 => Just(Some("promote")),
            1 => Just(Some("promote-full")),
            1 => Just(Some("abort")),
            1 => Just(Some("retry")),
        ];
        let edit = prop_oneof![
            14 => Just(Edit::None),
            1 => Just(Edit::NextVersion),
            1 => Just(Edit::PromoteStable),
        ];
        (1i64..=90, prop::bool::weighted(0.8), outcome, action, edit).prop_map(
            |(wait, ready, outcome, action, edit)| Reconcile {
                wait,
                ready,
                outcome,
                action,
                edit,
            },
        )
    }

    /// The example's rollout, with or without analysis and a progress deadline, sharing 100 or
    /// 60 (a third backend keeps the rest), of the canary at `canary` and the stable at `stable`
    /// (versions), its canary with or without a ready pod.
    fn plan(analysis: bool, deadline: bool, share: i32, canary: u32, stable: u32, ready: bool) -> Plan {
        let mut rollout = rollout();
        if !analysis {
            rollout.analysis = None;
        }
        if deadline {
            rollout.progress_deadline = Some("2m".into());
        }
        let mut plan = Plan::new(&rollout, format!("rev{canary}"), share).unwrap();
        plan.canary_labels = labels(&[("version", &format!("v{canary}"))]);
        plan.stable_labels = labels(&[("version", &format!("v{stable}"))]);
        plan.canary_ready = ready;
        plan
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn every_decision_keeps_the_rollouts_invariants(
            analysis in any::<bool>(),
            deadline in any::<bool>(),
            share in prop_oneof![Just(100), Just(60)],
            run in prop::collection::vec(reconcile(), 1..60),
        ) {
            let (mut canary, mut stable) = (2, 1);
            // The annotation stays until someone sets another value, as on a real object.
            let mut annotation: Option<String> = None;
            let mut status: Option<RolloutStatus> = None;
            let mut now = 0;
            for (i, r) in run.iter().enumerate() {
                now += r.wait;
                match r.edit {
                    Edit::None => {}
                    Edit::NextVersion => canary += 1,
                    Edit::PromoteStable => {
                        if let Some(version) = status
                            .as_ref()
                            .and_then(|s| s.canary_labels.as_ref())
                            .and_then(|l| l.get("version"))
                            .and_then(|v| v.trim_start_matches('v').parse().ok())
                        {
                            stable = version;
                        }
                    }
                }
                let plan = &plan(analysis, deadline, share, canary, stable, r.ready);
                if let Some(a) = r.action {
                    annotation = Some(format!("{a}@{i}"));
                }
                let action = annotation.clone();
                let mut engine = Engine::begin(plan, status.as_ref(), action.as_deref(), at(now));
                if engine.measurement_due() {
                    engine.record(round(r.outcome));
                }
                let d = engine.finish();
                let s = &d.status;
                let context = format!("reconcile {i} at {now}s ({r:?}), canary v{canary} stable v{stable}: {s:?}");
                let previous = status.as_ref();

                // A new version waits while the last one succeeded with traffic and the stable
                // does not select it; then nothing moves, and nothing else starts.
                let must_hold = previous.is_some_and(|p| {
                    p.revision != plan.revision
                        && (p.phase == P::Succeeded || p.pause_reason == Some(PauseReason::StableNotPromoted))
                        && p.canary_weight > 0
                        && p.canary_labels.as_ref().is_some_and(|l| *l != plan.stable_labels)
                });
                let held = s.pause_reason == Some(PauseReason::StableNotPromoted);
                // A request is handled by the first reconcile that sees it, whatever the phase,
                // so `splitscope rollout … --wait` always gets an answer.
                prop_assert_eq!(&s.last_action, &annotation, "{}", context);
                prop_assert_eq!(held, must_hold, "{}", context);
                if held {
                    let p = previous.expect("held only after a rollout");
                    prop_assert_eq!(&s.revision, &p.revision, "{}", context);
                    prop_assert_eq!((s.canary_weight, &s.canary_labels), (p.canary_weight, &p.canary_labels), "{}", context);
                    prop_assert_eq!(d.requeue_after, None, "{}", context);
                    prop_assert!(d.counted.is_empty(), "{}", context);
                } else {
                    prop_assert_eq!(&s.revision, &plan.revision, "{}", context);
                }

                prop_assert_eq!(s.canary_weight + s.stable_weight, share, "{}", context);
                prop_assert!((0..=share).contains(&s.canary_weight), "{}", context);
                prop_assert!((0..=5).contains(&s.step_index), "{}", context);
                if let Some(p) = previous.filter(|p| p.revision == s.revision) {
                    // A measurement judges a window that saw one weight only.
                    if !d.counted.is_empty() {
                        let since = p.weight_changed_at.as_ref().map(|t| t.0);
                        prop_assert!(
                            since.is_some_and(|t| add(t, Duration::from_secs(30)) <= at(now)),
                            "measured less than an interval after the weight changed: {}", context
                        );
                    }
                    // A weight change restarts the window; a step change its clock.
                    if s.canary_weight != p.canary_weight {
                        prop_assert_eq!(s.weight_changed_at.as_ref().map(|t| t.0), Some(at(now)), "{}", context);
                        prop_assert!(s.metrics.iter().all(|m| m.successes_at_weight == 0), "{}", context);
                    }
                    // (An action may move it and back within one decision: promote-full to a
                    // canary without pods.)
                    if s.canary_weight == p.canary_weight && r.action.is_none() {
                        prop_assert_eq!(&s.weight_changed_at, &p.weight_changed_at, "{}", context);
                    }
                    if s.step_index != p.step_index {
                        prop_assert_eq!(s.step_started_at.as_ref().map(|t| t.0), Some(at(now)), "{}", context);
                    }
                }
                if matches!(s.phase, P::Failed | P::Aborted) || (!r.ready && !s.phase.is_done() && !held) {
                    prop_assert_eq!(s.canary_weight, 0, "{}", context);
                }
                let newly_succeeded = s.phase == P::Succeeded
                    && previous.is_none_or(|p| p.phase != P::Succeeded || p.revision != s.revision);
                if newly_succeeded {
                    prop_assert!(r.ready, "{}", context);
                    prop_assert_eq!(s.canary_weight, share, "{}", context);
                    // Nobody promoted anything: the final weight was judged healthy.
                    if run[..=i].iter().all(|r| r.action.is_none() && r.edit == Edit::None) {
                        prop_assert!(s.metrics.iter().all(|m| m.successes_at_weight > 0), "{}", context);
                    }
                }
                let newly = |phase: P| s.phase == phase && previous.is_none_or(|p| p.phase != phase || p.revision != s.revision);
                if newly(P::Failed) {
                    let message = s.message.as_deref().unwrap_or_default();
                    if message.contains("progressDeadline") {
                        prop_assert!(deadline && !r.ready, "{}", context);
                    } else {
                        // Only failures beyond failureLimit (1) roll back; errors and no data never.
                        prop_assert!(s.metrics.iter().any(|m| m.failures > 1), "{}", context);
                        prop_assert_eq!(r.outcome, O::Failure, "{}", context);
                    }
                }
                if newly(P::Aborted) {
                    prop_assert!(annotation.as_deref().is_some_and(|a| a.starts_with("abort@")), "{}", context);
                }
                if !held {
                    prop_assert_eq!(s.canary_unavailable_since.is_some(), !r.ready && !s.phase.is_done(), "{}", context);
                }
                // Nothing to look again for: done, or (without analysis) waiting for a person or
                // for canary pods (their EndpointSlices are watched) with no deadline.
                let waits_on_the_world = held
                    || !analysis && match s.pause_reason {
                        Some(PauseReason::AwaitingPromotion) => true,
                        Some(PauseReason::CanaryUnavailable) => !deadline,
                        _ => false,
                    };
                match d.requeue_after {
                    None => prop_assert!(s.phase.is_done() || waits_on_the_world, "{}", context),
                    Some(after) => prop_assert!(after >= MIN_REQUEUE && !s.phase.is_done(), "{}", context),
                }

                // Deciding again at the same moment, with nothing new, changes nothing.
                let again = Engine::begin(plan, Some(s), action.as_deref(), at(now));
                prop_assert!(!again.measurement_due(), "{}", context);
                let again = again.finish();
                prop_assert_eq!(&again.status, s, "{}", context);
                prop_assert!(again.events.is_empty(), "{:?} after {}", again.events, context);

                status = Some(d.status);
            }
        }
    }
}
