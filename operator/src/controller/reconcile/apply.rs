//! The Apply path of one reconcile, top to bottom: validate → rollout (decide, measure) → render
//! → observe the live children → apply what changed → prune → status.
//!
//! Nothing is written to an object this TrafficSplit does not control; an unchanged child is not
//! re-applied; an unchanged status is not re-patched (so our own writes never trigger a write
//! loop).

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::report::{StatusWrite, observation, write_status};
use super::rollout;
use super::{CONFLICT_RETRY, RESYNC, ROUTE_API_RETRY};
use crate::controller::api::trafficsplit::{Phase, TrafficSplit, backend_service_name};
use crate::controller::api::validate::validate;
use crate::controller::events::{self, reason as event_reason};
use crate::controller::objects::children::{self, Owner};
use crate::controller::objects::services;
use crate::controller::routing;
use crate::controller::runtime::context::{Context, Error};
use crate::controller::status::{Observation, Outcome};

/// Retry after a status write lost to a newer version of the object (the watch usually brings
/// it first).
const STALE_RETRY: Duration = Duration::from_secs(1);

pub async fn apply(ts: Arc<TrafficSplit>, ctx: Arc<Context>) -> Result<Action, Error> {
    let owner = Owner::new(&ts, ctx.client.clone(), &ctx.recorder);

    // 1. Validate: an invalid spec writes status only and waits for the user to fix it.
    if let Err(invalid) = validate(&ts) {
        return invalid_spec(&ts, &ctx, &owner, invalid.to_string()).await;
    }
    let provider = ts.spec.routing.provider;
    let route_api = ctx
        .route_apis
        .ensure(&ctx.client, provider)
        .await
        .map_err(Error::Discovery)?;

    // 2. Rollout: decide and measure only while the route can carry its weights; the pair's
    // weights come from it (the spec's otherwise).
    let previous = ts.status.as_ref().and_then(|s| s.rollout.as_ref());
    let decision = if route_api.is_ok() {
        match rollout::decide(&ts, &ctx).await {
            Ok(p) => p,
            Err(invalid) => return invalid_spec(&ts, &ctx, &owner, invalid.to_string()).await,
        }
    } else {
        None
    };
    let current = match &decision {
        Some(d) => Some(&d.status),
        None => previous.filter(|_| ts.spec.rollout.is_some()),
    };
    let spec = rollout::weighted(&ts, current);

    // 3. Render what should exist.
    let desired_services = services::render(&spec);
    let desired_route = routing::render(&spec);

    // 4. Observe the live children and who owns them.
    let service_api = children::services(ctx.client.clone(), &owner.namespace);
    let mut observed_services = Vec::new();
    for svc in &desired_services {
        observed_services.push(service_api.observe(&owner, svc.clone()).await?);
    }
    let observed_route = desired_route.observe(&owner, route_api.is_ok()).await?;

    // 5. Someone else's object among them: write nothing, report it, look again later (the
    // rollout does not move either).
    let mut conflicts: Vec<String> = observed_services
        .iter()
        .filter_map(|o| service_api.conflict(o))
        .collect();
    conflicts.extend(observed_route.conflicts(&owner));
    if !conflicts.is_empty() {
        let outcome = Outcome::Conflict(conflicts.clone());
        let as_was = rollout::weighted(&ts, previous);
        let written = write_status(&ts, &ctx, observation(&as_was, &ctx, outcome)).await?;
        if matches!(written, StatusWrite::Stale) {
            return Ok(Action::requeue(STALE_RETRY));
        }
        if matches!(written, StatusWrite::Done(_)) {
            events::publish(
                &ctx.recorder,
                &ts,
                EventType::Warning,
                event_reason::CONFLICT,
                "Reconcile",
                format!(
                    "not owned by this TrafficSplit, left untouched: {}",
                    conflicts.join("; ")
                ),
                None,
            )
            .await;
        }
        ctx.metrics
            .set_trafficsplit(&owner.namespace, &owner.name, &weights(&as_was), false);
        return Ok(Action::requeue(CONFLICT_RETRY));
    }

    // A reconcile that outlived its leadership term (its measurements can take a while) writes
    // nothing: the new leader decides now, and a route written from this older decision would
    // undo its rollback or abort until the route watch repaired it.
    if ctx.term.is_cancelled() {
        tracing::info!(trafficsplit = %owner.name, "the leadership term ended: writing nothing");
        return Ok(Action::await_change());
    }

    // 6. Apply what is missing or changed (a weight change only touches the route). The
    // Services go before the route that sends traffic to them, except those of backends whose
    // weight goes down (from what the status says the route last had): their new selector
    // waits until the route has taken their old share away. A new rollout takes the share the
    // last one gave its canary; pointed at the next version meanwhile, the canary would
    // otherwise hand that whole share to the new version until the route is written.
    let last_applied = |name: &str| {
        ts.status
            .as_ref()
            .and_then(|s| s.backends.iter().find(|b| b.service == name))
            .map(|b| b.weight)
    };
    let shrinking: Vec<String> = spec
        .spec
        .backends
        .iter()
        .map(|b| (b.weight, backend_service_name(&spec.service_name(), &b.name)))
        .filter(|(weight, service)| last_applied(service).is_some_and(|before| *weight < before))
        .map(|(_, service)| service)
        .collect();
    let (after_route, before_route): (Vec<_>, Vec<_>) = observed_services
        .iter()
        .partition(|o| o.live.is_some() && shrinking.contains(&o.desired.name_any()));
    let apply_services = |batch: Vec<_>| async {
        for o in batch {
            let o: &children::Observed<_> = o;
            let unchanged = o
                .live
                .as_ref()
                .is_some_and(|live| services::unchanged(live, &o.desired));
            service_api.apply_observed(&owner, o, unchanged).await?;
        }
        Ok::<_, Error>(())
    };
    apply_services(before_route).await?;
    let route_description = observed_route.apply(&owner).await?;
    apply_services(after_route).await?;

    // 7. Prune: Services we control that the spec no longer wants (a removed backend, or the old
    // root after `spec.service` changed), and routes of other providers.
    let wanted: Vec<String> = desired_services.iter().map(|s| s.name_any()).collect();
    for svc in service_api.controlled(&owner).await? {
        if !wanted.contains(&svc.name_any()) {
            service_api.delete_controlled(&owner, &svc).await?;
        }
    }
    routing::teardown(&owner, &ctx.route_apis, Some(provider)).await?;

    // 8. Report: the status with the rollout's progress, then what it decided (Events, counted
    // measurements) — only once the status holding it is written.
    let outcome = match route_api {
        Ok(()) => Outcome::Applied(route_description),
        Err(api) => Outcome::RouteApiUnavailable(api),
    };
    let missing_api = match &outcome {
        Outcome::RouteApiUnavailable(api) => Some(api.clone()),
        _ => None,
    };
    let obs = Observation {
        rollout: current.cloned(),
        ..observation(&spec, &ctx, outcome)
    };
    let (new_status, changed) = match write_status(&ts, &ctx, obs).await? {
        StatusWrite::Stale => return Ok(Action::requeue(STALE_RETRY)),
        StatusWrite::Unchanged(s) => (s, false),
        StatusWrite::Done(s) => (s, true),
    };
    if changed && let Some(api) = &missing_api {
        events::publish(
            &ctx.recorder,
            &ts,
            EventType::Warning,
            event_reason::ROUTE_API_UNAVAILABLE,
            "Reconcile",
            format!("{api} is not served by the API server; the Services are in place, the weights are not enforced"),
            None,
        )
        .await;
    }
    let ready = new_status.phase == Some(Phase::Ready);
    ctx.metrics
        .set_trafficsplit(&owner.namespace, &owner.name, &weights(&spec), ready);
    ctx.metrics
        .set_rollout(&owner.namespace, &owner.name, new_status.rollout.as_ref());
    let mut requeue = if missing_api.is_some() {
        ROUTE_API_RETRY
    } else {
        RESYNC
    };
    if let Some(decision) = decision {
        for m in &decision.counted {
            ctx.metrics
                .measured(&owner.namespace, &owner.name, &m.metric, m.outcome, m.value);
        }
        for e in decision.events {
            let kind = if e.warning {
                EventType::Warning
            } else {
                EventType::Normal
            };
            events::publish(&ctx.recorder, &ts, kind, e.reason, &e.action, e.note, None).await;
        }
        if let Some(after) = decision.requeue_after {
            requeue = requeue.min(after);
        }
    }
    Ok(Action::requeue(requeue))
}

/// An invalid spec: status only (the rollout's progress kept as it was), an Event when that is
/// news, and wait for the user to fix it.
async fn invalid_spec(
    ts: &TrafficSplit,
    ctx: &Context,
    owner: &Owner<'_>,
    message: String,
) -> Result<Action, Error> {
    let outcome = Outcome::InvalidSpec(message.clone());
    match write_status(ts, ctx, observation(ts, ctx, outcome)).await? {
        StatusWrite::Stale => return Ok(Action::requeue(STALE_RETRY)),
        StatusWrite::Done(_) => {
            events::publish(
                &ctx.recorder,
                ts,
                EventType::Warning,
                event_reason::INVALID_SPEC,
                "Validate",
                message,
                None,
            )
            .await;
        }
        StatusWrite::Unchanged(_) => {}
    }
    ctx.metrics
        .set_trafficsplit(&owner.namespace, &owner.name, &[], false);
    Ok(Action::await_change())
}

fn weights(ts: &TrafficSplit) -> Vec<(String, i32)> {
    ts.spec
        .backends
        .iter()
        .map(|b| (b.name.clone(), b.weight))
        .collect()
}
