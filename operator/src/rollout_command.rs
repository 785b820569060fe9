//! `splitscope rollout status|promote|abort|retry NAME [-n NS]` — also `kubectl splitscope
//! rollout …` when the binary is on PATH as `kubectl-splitscope` (kubectl's plugin mechanism).
//!
//! Actions are requests, not writes of progress: each sets the `splitscope.dev/rollout-action`
//! annotation to a new value; the controller acts on it once and records it in
//! `status.rollout.lastAction`. So a plain `kubectl annotate` does the same, and a request made
//! while the controller is down or changing leader is handled when it is back.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject};
use kube::{Api, Client};
use serde_json::json;

use crate::cli::{RolloutArgs, RolloutCommand};
use crate::controller::api::rollout::{ACTION_ANNOTATION, Rollout, RolloutStatus};
use crate::controller::rollout::action::Action;

/// How often `--wait` looks at the status.
const POLL: Duration = Duration::from_millis(500);

pub async fn run(args: RolloutArgs) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("cannot configure a Kubernetes client: set KUBECONFIG (or ~/.kube/config) to the cluster")?;
    let (target, action, wait) = match &args.command {
        RolloutCommand::Status(t) => (t, None, None),
        RolloutCommand::Promote(p) => (
            &p.target,
            Some(if p.full {
                Action::PromoteFull
            } else {
                Action::Promote
            }),
            p.wait,
        ),
        RolloutCommand::Abort(a) => (&a.target, Some(Action::Abort), a.wait),
        RolloutCommand::Retry(a) => (&a.target, Some(Action::Retry), a.wait),
    };
    let namespace = target
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let api: Api<DynamicObject> = Api::namespaced_with(client, &namespace, &resource());
    let name = &target.name;
    let object = api
        .get_opt(name)
        .await
        .with_context(|| format!("cannot read TrafficSplit {namespace}/{name}"))?
        .with_context(|| format!("TrafficSplit {namespace}/{name} not found"))?;
    let view = View::of(&object, &namespace, name)?;
    let Some(action) = action else {
        print!("{}", view.render());
        return Ok(());
    };
    if view.rollout.is_none() {
        bail!("TrafficSplit {namespace}/{name} has no spec.rollout: there is nothing to {action}");
    }
    if let Some(pending) = pending_request(&object, &view) {
        if action != Action::Abort {
            bail!(
                "TrafficSplit {namespace}/{name} has a request the controller has not handled yet \
                 ({ACTION_ANNOTATION}={pending}): asking for {action} now would replace it, and it \
                 would never run. Ask again once `splitscope rollout status` shows it as the last \
                 action (is the controller running?); `abort` replaces a pending request"
            );
        }
        println!("replacing the pending request {pending:?}: abort comes first");
    }
    let value = action.annotation_value(&Timestamp::now().to_string());
    // The version read above as a precondition: a request someone else made since is not
    // overwritten unseen (409 instead).
    let patch = json!({"metadata": {
        "resourceVersion": object.metadata.resource_version,
        "annotations": {ACTION_ANNOTATION: value},
    }});
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => bail!(
            "TrafficSplit {namespace}/{name} changed while {action} was being requested (another \
             request?); nothing was written: look at `splitscope rollout status` and ask again"
        ),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot annotate TrafficSplit {namespace}/{name}"));
        }
    }
    println!("{action} requested for TrafficSplit {namespace}/{name} ({ACTION_ANNOTATION}={value})");
    let Some(wait) = wait else {
        return Ok(());
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    loop {
        let object = api
            .get(name)
            .await
            .with_context(|| format!("cannot read TrafficSplit {namespace}/{name}"))?;
        let view = View::of(&object, &namespace, name)?;
        if view
            .status
            .as_ref()
            .is_some_and(|s| s.last_action.as_deref() == Some(value.as_str()))
        {
            print!("{}", view.render());
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "the controller has not handled the {action} request within {wait}s (is it running? \
                 `kubectl -n {namespace} describe ts {name}` shows its Events); it stays requested"
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The action annotation's value when the controller has not handled it yet: set, and not the
/// status's `lastAction`.
fn pending_request(object: &DynamicObject, view: &View) -> Option<String> {
    let requested = object.metadata.annotations.as_ref()?.get(ACTION_ANNOTATION)?;
    let handled = view.status.as_ref().and_then(|s| s.last_action.as_deref());
    (handled != Some(requested.as_str())).then(|| requested.clone())
}

fn resource() -> ApiResource {
    ApiResource {
        group: "splitscope.dev".into(),
        version: "v1alpha1".into(),
        api_version: "splitscope.dev/v1alpha1".into(),
        kind: "TrafficSplit".into(),
        plural: "trafficsplits".into(),
    }
}

/// What `status` shows: the rollout as specified and as it stands.
pub struct View {
    pub namespace: String,
    pub name: String,
    pub rollout: Option<Rollout>,
    pub status: Option<RolloutStatus>,
}

impl View {
    /// Reads `spec.rollout` and `status.rollout`, naming the field that does not parse.
    pub fn of(object: &DynamicObject, namespace: &str, name: &str) -> anyhow::Result<Self> {
        let rollout = object
            .data
            .pointer("/spec/rollout")
            .filter(|v| !v.is_null())
            .cloned()
            .map(serde_json::from_value::<Rollout>)
            .transpose()
            .with_context(|| format!("TrafficSplit {namespace}/{name}: spec.rollout does not parse"))?;
        let status = object
            .data
            .pointer("/status/rollout")
            .filter(|v| !v.is_null())
            .cloned()
            .map(serde_json::from_value::<RolloutStatus>)
            .transpose()
            .with_context(|| format!("TrafficSplit {namespace}/{name}: status.rollout does not parse"))?;
        Ok(Self {
            namespace: namespace.into(),
            name: name.into(),
            rollout,
            status,
        })
    }

    /// The human-readable status.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let (ns, name) = (&self.namespace, &self.name);
        let Some(rollout) = &self.rollout else {
            let _ = writeln!(out, "TrafficSplit {ns}/{name} has no spec.rollout");
            return out;
        };
        let Some(status) = &self.status else {
            let _ = writeln!(
                out,
                "TrafficSplit {ns}/{name}: rollout of {} not started yet (the controller has not reconciled it)",
                rollout.canary
            );
            return out;
        };
        let steps = rollout.steps.len();
        let _ = writeln!(out, "TrafficSplit:  {ns}/{name}");
        let phase = match status.pause_reason {
            Some(reason) => format!("{} ({})", status.phase.as_str(), reason.as_str()),
            None => status.phase.as_str().to_string(),
        };
        let _ = writeln!(out, "Phase:         {phase}");
        let _ = writeln!(out, "Revision:      {}", status.revision);
        let current = rollout
            .step(status.step_index)
            .map_or_else(|| "done".into(), |s| s.describe());
        let _ = writeln!(
            out,
            "Step:          {} of {steps} ({current})",
            (status.step_index + 1).min(steps as i32)
        );
        let _ = writeln!(
            out,
            "Weights:       {}={} {}={}",
            rollout.canary, status.canary_weight, rollout.stable, status.stable_weight
        );
        if let Some(message) = &status.message {
            let _ = writeln!(out, "Message:       {message}");
        }
        if !status.metrics.is_empty() {
            let _ = writeln!(
                out,
                "\n{:<20} {:<10} {:<8} {:>9} {:>8} {:>7} {:>6}  MEASURED",
                "METRIC", "VALUE", "OUTCOME", "SUCCESSES", "FAILURES", "NO DATA", "ERRORS"
            );
            for m in &status.metrics {
                let _ = writeln!(
                    out,
                    "{:<20} {:<10} {:<8} {:>9} {:>8} {:>7} {:>6}  {}",
                    m.name,
                    m.last_value.as_deref().unwrap_or("-"),
                    m.last_outcome.map_or("-", |o| o.as_str()),
                    m.successes,
                    m.failures,
                    m.no_data,
                    m.errors,
                    m.last_measured_at
                        .as_ref()
                        .map_or_else(|| "-".to_string(), |t| t.0.to_string())
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_request(requested: Option<&str>, handled: Option<&str>) -> (DynamicObject, View) {
        let mut object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "splitscope.dev/v1alpha1", "kind": "TrafficSplit",
            "metadata": {"name": "checkout", "namespace": "shop"},
            "spec": {"rollout": {"stable": "stable", "canary": "canary", "steps": [{"setWeight": 10}]}},
            "status": {"rollout": {"phase": "Progressing", "revision": "abc", "stepIndex": 0,
                "canaryWeight": 10, "stableWeight": 90}},
        }))
        .unwrap();
        if let Some(r) = requested {
            object.metadata.annotations = Some([(ACTION_ANNOTATION.to_string(), r.to_string())].into());
        }
        if let Some(h) = handled {
            object.data["status"]["rollout"]["lastAction"] = json!(h);
        }
        let view = View::of(&object, "shop", "checkout").unwrap();
        (object, view)
    }

    #[test]
    fn a_request_is_pending_until_the_status_names_it_as_handled() {
        let pending = |r, h| {
            let (object, view) = with_request(r, h);
            pending_request(&object, &view)
        };
        assert_eq!(pending(None, None), None, "nothing asked");
        assert_eq!(pending(Some("promote@1"), Some("promote@1")), None, "handled");
        assert_eq!(
            pending(Some("promote@2"), Some("promote@1")).as_deref(),
            Some("promote@2")
        );
        assert_eq!(pending(Some("promote@1"), None).as_deref(), Some("promote@1"));
    }

    #[test]
    fn status_shows_phase_step_weights_and_metrics() {
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "splitscope.dev/v1alpha1", "kind": "TrafficSplit",
            "metadata": {"name": "checkout", "namespace": "shop"},
            "spec": {"rollout": {"stable": "stable", "canary": "canary",
                "steps": [{"setWeight": 10}, {"pause": {}}, {"setWeight": 100}]}},
            "status": {"rollout": {
                "phase": "Paused", "pauseReason": "AwaitingPromotion", "revision": "abc",
                "stepIndex": 1, "canaryWeight": 10, "stableWeight": 90,
                "message": "waiting at step 2 of 3",
                "metrics": [{"name": "open-errors", "lastValue": "0.001", "lastOutcome": "Success",
                    "lastMeasuredAt": "2026-12-01T10:00:00Z", "successes": 3, "failures": 0,
                    "noData": 1, "errors": 0, "consecutiveErrors": 0, "successesAtWeight": 2}]
            }},
        }))
        .unwrap();
        let text = View::of(&object, "shop", "checkout").unwrap().render();
        for line in [
            "TrafficSplit:  shop/checkout",
            "Phase:         Paused (AwaitingPromotion)",
            "Step:          2 of 3 (pause until promoted)",
            "Weights:       canary=10 stable=90",
            "Message:       waiting at step 2 of 3",
            "open-errors          0.001      Success          3        0       1      0  2026-12-01T10:00:00Z",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn status_without_rollout_or_before_the_first_reconcile() {
        let mut object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "splitscope.dev/v1alpha1", "kind": "TrafficSplit",
            "metadata": {"name": "checkout", "namespace": "shop"}, "spec": {},
        }))
        .unwrap();
        assert_eq!(
            View::of(&object, "shop", "checkout").unwrap().render(),
            "TrafficSplit shop/checkout has no spec.rollout\n"
        );
        object.data["spec"]["rollout"] =
            json!({"stable": "stable", "canary": "canary", "steps": [{"setWeight": 100}]});
        assert!(
            View::of(&object, "shop", "checkout")
                .unwrap()
                .render()
                .contains("not started yet")
        );
        object.data["status"] = json!({"rollout": {"phase": "Sideways"}});
        let err = View::of(&object, "shop", "checkout").err().unwrap();
        assert!(
            format!("{err:#}").contains("status.rollout does not parse"),
            "{err:#}"
        );
    }
}
