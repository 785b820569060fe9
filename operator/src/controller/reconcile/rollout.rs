//! The rollout step of a reconcile, between validation and rendering: decide (start, resume,
//! act on a request, advance), measure when a measurement is due, and give the spec the pair's
//! weights from the decision — so the route carries them and the status reports them.

use std::time::Duration;

use kube::ResourceExt;

use crate::controller::api::duration::InvalidDuration;
use crate::controller::api::rollout::{ACTION_ANNOTATION, PauseReason, Rollout, RolloutStatus};
use crate::controller::api::trafficsplit::{TrafficSplit, backend_service_name};
use crate::controller::rollout::analysis::{self, BackendPods, Target};
use crate::controller::rollout::engine::{Decision, Engine, Plan};
use crate::controller::rollout::revision::revision;
use crate::controller::runtime::context::Context;
use crate::controller::runtime::endpoints;

use super::report::now;

/// One reconcile's rollout decision, measuring if due. `Ok(None)` without `spec.rollout`; `Err`
/// only for a duration the validation already refuses.
pub async fn decide(ts: &TrafficSplit, ctx: &Context) -> Result<Option<Decision>, InvalidDuration> {
    let Some(rollout) = &ts.spec.rollout else {
        return Ok(None);
    };
    let labels_of = |name: &str| {
        ts.spec
            .backends
            .iter()
            .find(|b| b.name == name)
            .map(|b| b.labels.clone())
            .unwrap_or_default()
    };
    let canary_labels = labels_of(&rollout.canary);
    let mut plan = Plan::new(
        rollout,
        revision(&canary_labels, rollout),
        pair_share(ts, rollout),
    )?;
    plan.canary_ready = canary_ready(ts, ctx, rollout);
    plan.canary_labels = canary_labels;
    plan.stable_labels = labels_of(&rollout.stable);
    let previous = ts.status.as_ref().and_then(|s| s.rollout.as_ref());
    let action = ts.annotations().get(ACTION_ANNOTATION).map(String::as_str);
    let mut engine = Engine::begin(&plan, previous, action, now().0);
    if engine.measurement_due()
        && let (Some(analysis), Some(interval)) = (&rollout.analysis, plan.interval)
    {
        let target = target(ts, ctx, rollout, interval);
        let round =
            analysis::measure_all(&ctx.prometheus, ctx.prometheus_url.as_deref(), analysis, &target).await;
        for m in &round {
            tracing::info!(
                trafficsplit = %format!("{}/{}", target.namespace, target.name),
                metric = %m.metric,
                outcome = m.outcome.as_str(),
                message = %m.message,
                "measured"
            );
        }
        engine.record(round);
    }
    Ok(Some(engine.finish()))
}

/// The TrafficSplit with the pair's weights as `rollout` has them (the spec's otherwise): what
/// is rendered into the route and reported in the status. While a new rollout waits for the
/// stable to select the version that succeeded, the canary keeps that version's labels too.
pub fn weighted(ts: &TrafficSplit, rollout: Option<&RolloutStatus>) -> TrafficSplit {
    let mut out = ts.clone();
    if let (Some(spec), Some(status)) = (&ts.spec.rollout, rollout) {
        let held_labels = status
            .canary_labels
            .as_ref()
            .filter(|_| status.pause_reason == Some(PauseReason::StableNotPromoted));
        for b in &mut out.spec.backends {
            if b.name == spec.canary {
                b.weight = status.canary_weight;
                if let Some(labels) = held_labels {
                    b.labels = labels.clone();
                }
            } else if b.name == spec.stable {
                b.weight = status.stable_weight;
            }
        }
    }
    out
}

/// The stable's and the canary's spec weights together.
fn pair_share(ts: &TrafficSplit, rollout: &Rollout) -> i32 {
    ts.spec
        .backends
        .iter()
        .filter(|b| b.name == rollout.stable || b.name == rollout.canary)
        .map(|b| b.weight)
        .sum()
}

/// Whether the canary's Service has a ready endpoint (the slice cache is synced: the reconcile
/// waits for that before it decides a rollout).
fn canary_ready(ts: &TrafficSplit, ctx: &Context, rollout: &Rollout) -> bool {
    let namespace = ts.namespace().unwrap_or_default();
    let service = backend_service_name(&ts.service_name(), &rollout.canary);
    endpoints::ready_endpoints(&ctx.slices.state(), &namespace, &service).is_some_and(|n| n > 0)
}

/// What the analysis queries are about: the pair's pods from their Services' EndpointSlices.
fn target(ts: &TrafficSplit, ctx: &Context, rollout: &Rollout, interval: Duration) -> Target {
    let namespace = ts.namespace().unwrap_or_default();
    let service = ts.service_name();
    let slices = ctx.slices.state();
    let backend = |name: &str| {
        let backend_service = backend_service_name(&service, name);
        BackendPods {
            backend: name.to_string(),
            pods: endpoints::pods(&slices, &namespace, &backend_service),
            service: backend_service,
        }
    };
    Target {
        canary: backend(&rollout.canary),
        stable: backend(&rollout.stable),
        namespace,
        name: ts.name_any(),
        service,
        interval,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::api::rollout::{RolloutPhase, RolloutStep};
    use crate::controller::testing::fixtures::traffic_split;

    /// While the next version waits for the stable, the canary is rendered with the labels of
    /// the version that succeeded (its Service keeps selecting those pods), and with its weight.
    #[test]
    fn a_held_rollout_keeps_the_canarys_labels_and_weight() {
        let mut ts = traffic_split();
        ts.spec.rollout = Some(Rollout {
            stable: "stable".into(),
            canary: "canary".into(),
            steps: vec![RolloutStep {
                set_weight: Some(100),
                pause: None,
            }],
            analysis: None,
            progress_deadline: None,
        });
        ts.spec.backends[1].labels = [("version".to_string(), "v3".to_string())].into();
        let status = RolloutStatus {
            phase: RolloutPhase::Paused,
            revision: "rev2".into(),
            step_index: 1,
            step_started_at: None,
            canary_weight: 100,
            stable_weight: 0,
            weight_changed_at: None,
            pause_reason: Some(PauseReason::StableNotPromoted),
            canary_unavailable_since: None,
            message: None,
            last_action: None,
            metrics: vec![],
            canary_labels: Some([("version".to_string(), "v2".to_string())].into()),
        };
        let held = weighted(&ts, Some(&status));
        let canary = &held.spec.backends[1];
        assert_eq!(
            (canary.weight, canary.labels.get("version").map(String::as_str)),
            (100, Some("v2"))
        );
        // Not held: the spec's labels.
        let mut succeeded = status.clone();
        succeeded.pause_reason = None;
        succeeded.phase = RolloutPhase::Succeeded;
        let canary = &weighted(&ts, Some(&succeeded)).spec.backends[1];
        assert_eq!(canary.labels.get("version").map(String::as_str), Some("v3"));
    }
}
