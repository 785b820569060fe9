//! The Apply path of one reconcile, top to bottom: validate → render → observe the live children
//! → apply what changed → prune → status.
//!
//! Nothing is written to an object this TrafficSplit does not control; an unchanged child is not
//! re-applied; an unchanged status is not re-patched (so our own writes never trigger a write
//! loop).

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::report::{observation, write_status};
use super::{CONFLICT_RETRY, RESYNC, ROUTE_API_RETRY};
use crate::controller::api::trafficsplit::{Phase, TrafficSplit};
use crate::controller::api::validate::validate;
use crate::controller::events::{self, reason as event_reason};
use crate::controller::objects::children::{self, Owner};
use crate::controller::objects::services;
use crate::controller::routing;
use crate::controller::runtime::context::{Context, Error};
use crate::controller::status::Outcome;

pub async fn apply(ts: Arc<TrafficSplit>, ctx: Arc<Context>) -> Result<Action, Error> {
    let owner = Owner::new(&ts, ctx.client.clone(), &ctx.recorder);

    // 1. Validate: an invalid spec writes status only and waits for the user to fix it.
    if let Err(invalid) = validate(&ts) {
        let message = invalid.to_string();
        let outcome = Outcome::InvalidSpec(message.clone());
        if write_status(&ts, &ctx, observation(&ts, &ctx, outcome)).await?.1 {
            events::publish(
                &ctx.recorder,
                &ts,
                EventType::Warning,
                event_reason::INVALID_SPEC,
                "Validate",
                message,
                None,
            )
            .await;
        }
        ctx.metrics
            .set_trafficsplit(&owner.namespace, &owner.name, &[], false);
        return Ok(Action::await_change());
    }

    // 2. Render what should exist.
    let desired_services = services::render(&ts);
    let desired_route = routing::render(&ts);
    let provider = ts.spec.routing.provider;
    let route_api = ctx
        .route_apis
        .ensure(&ctx.client, provider)
        .await
        .map_err(Error::Discovery)?;

    // 3. Observe the live children and who owns them.
    let service_api = children::services(ctx.client.clone(), &owner.namespace);
    let mut observed_services = Vec::new();
    for svc in &desired_services {
        observed_services.push(service_api.observe(&owner, svc.clone()).await?);
    }
    let observed_route = desired_route.observe(&owner, route_api.is_ok()).await?;

    // 4. Someone else's object among them: write nothing, report it, look again later.
    let mut conflicts: Vec<String> = observed_services
        .iter()
        .filter_map(|o| service_api.conflict(o))
        .collect();
    conflicts.extend(observed_route.conflicts(&owner));
    if !conflicts.is_empty() {
        let outcome = Outcome::Conflict(conflicts.clone());
        if write_status(&ts, &ctx, observation(&ts, &ctx, outcome)).await?.1 {
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
            .set_trafficsplit(&owner.namespace, &owner.name, &weights(&ts), false);
        return Ok(Action::requeue(CONFLICT_RETRY));
    }

    // 5. Apply what is missing or changed (a weight change only touches the route).
    for o in &observed_services {
        let unchanged = o
            .live
            .as_ref()
            .is_some_and(|live| services::unchanged(live, &o.desired));
        service_api.apply_observed(&owner, o, unchanged).await?;
    }
    let route_description = observed_route.apply(&owner).await?;

    // 6. Prune: Services we control that the spec no longer wants (a removed backend, or the old
    // root after `spec.service` changed), and routes of other providers.
    let wanted: Vec<String> = desired_services.iter().map(|s| s.name_any()).collect();
    for svc in service_api.controlled(&owner).await? {
        if !wanted.contains(&svc.name_any()) {
            service_api.delete_controlled(&owner, &svc).await?;
        }
    }
    routing::teardown(&owner, &ctx.route_apis, Some(provider)).await?;

    // 7. Report.
    let outcome = match route_api {
        Ok(()) => Outcome::Applied(route_description),
        Err(api) => Outcome::RouteApiUnavailable(api),
    };
    let missing_api = match &outcome {
        Outcome::RouteApiUnavailable(api) => Some(api.clone()),
        _ => None,
    };
    let (new_status, changed) = write_status(&ts, &ctx, observation(&ts, &ctx, outcome)).await?;
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
        .set_trafficsplit(&owner.namespace, &owner.name, &weights(&ts), ready);

    Ok(Action::requeue(if missing_api.is_some() {
        ROUTE_API_RETRY
    } else {
        RESYNC
    }))
}

fn weights(ts: &TrafficSplit) -> Vec<(String, i32)> {
    ts.spec
        .backends
        .iter()
        .map(|b| (b.name.clone(), b.weight))
        .collect()
}
