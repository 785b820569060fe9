//! One reconcile of a TrafficSplit, top to bottom:
//! validate → render → observe the live children → apply what changed → prune → status.
//!
//! Deletion goes through the finalizer (finalizer.rs). Nothing is written to an object this
//! TrafficSplit does not control; an unchanged child is not re-applied; an unchanged status is
//! not re-patched (so our own writes never trigger a write loop).

use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_api::httproutes::HttpRoute;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::DynamicObject;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::children::Children;
use super::context::{Context, Error};
use super::drift;
use super::endpoints::ready_endpoints;
use super::events::{self, reason as event_reason};
use super::finalizer::cleanup;
use super::metrics::ReconcileResult;
use super::ownership::{Ownership, classify};
use super::render::{
    Desired, Route, controlled_by, destination_rule_resource, owned_selector, render,
    virtual_service_resource,
};
use super::status::{self, BackendObservation, Observation, Outcome};
use super::trafficsplit::{
    FIELD_MANAGER, FINALIZER, MAX_BACKENDS, Phase, Provider, TrafficSplit, TrafficSplitStatus,
    backend_service_name,
};
use super::validate::validate;

/// Resync of a healthy TrafficSplit (repairs drift on kinds that are not watched).
pub const RESYNC: Duration = Duration::from_secs(300);
/// Retry while another owner holds one of our objects (it is not watched).
pub const CONFLICT_RETRY: Duration = Duration::from_secs(60);
/// Retry while the provider's API is not served.
pub const ROUTE_API_RETRY: Duration = Duration::from_secs(120);

/// Entry point for the Controller: finalizer bookkeeping, metrics, backoff reset.
pub async fn reconcile(ts: Arc<TrafficSplit>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let key = ObjectRef::from_obj(&*ts);
    let namespace = ts.namespace().ok_or_else(|| Error::NoNamespace(ts.name_any()))?;
    let api: Api<TrafficSplit> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, ts, |event| async {
        match event {
            FinalizerEvent::Apply(ts) => apply(ts, ctx.clone()).await,
            FinalizerEvent::Cleanup(ts) => cleanup(ts, ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    match &result {
        Ok(_) => {
            ctx.backoff.succeeded(&key);
            ctx.metrics.reconciled(started, ReconcileResult::Success);
        }
        Err(_) => ctx.metrics.reconciled(started, ReconcileResult::Error),
    }
    result
}

/// The Controller's error policy: retry this object after its own exponential backoff.
pub fn error_policy(ts: Arc<TrafficSplit>, error: &Error, ctx: Arc<Context>) -> Action {
    let wait = ctx.backoff.failed(ObjectRef::from_obj(&*ts));
    tracing::warn!(
        trafficsplit = %ObjectRef::from_obj(&*ts),
        error = %error,
        retry_in = ?wait,
        "reconcile failed"
    );
    Action::requeue(wait)
}

/// A desired child with its live state.
struct Observed<K> {
    desired: K,
    live: Option<K>,
    ownership: Ownership,
}

fn observed<K: Resource>(desired: K, live: Option<K>, ts_name: &str, uid: &str) -> Observed<K> {
    let ownership = classify(live.as_ref().map(|l| l.meta()), ts_name, uid);
    Observed {
        desired,
        live,
        ownership,
    }
}

struct Names {
    namespace: String,
    name: String,
    uid: String,
}

async fn apply(ts: Arc<TrafficSplit>, ctx: Arc<Context>) -> Result<Action, Error> {
    let names = Names {
        namespace: ts.namespace().unwrap_or_default(),
        name: ts.name_any(),
        uid: ts.uid().unwrap_or_default(),
    };

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
            .set_trafficsplit(&names.namespace, &names.name, &[], false);
        return Ok(Action::await_change());
    }

    // 2. Render what should exist.
    let desired = render(&ts);
    let provider = ts.spec.routing.provider;
    let route_api = ctx
        .route_apis
        .ensure(&ctx.client, provider)
        .await
        .map_err(Error::Discovery)?;

    // 3. Observe the live children and who owns them.
    let services = Children::new(
        Api::<Service>::namespaced(ctx.client.clone(), &names.namespace),
        "v1",
        "Service",
        &names.namespace,
    );
    let mut observed_services = Vec::new();
    for svc in &desired.services {
        let live = services.get(&svc.name_any()).await?;
        observed_services.push(observed(svc.clone(), live, &names.name, &names.uid));
    }
    let routes = RouteChildren::new(&ctx, &names.namespace);
    let observed_route = match (&desired.route, &route_api) {
        (Route::GatewayApi(route), Ok(())) => {
            let live = routes.http_routes.get(&route.name_any()).await?;
            ObservedRoute::GatewayApi(Box::new(observed(
                (**route).clone(),
                live,
                &names.name,
                &names.uid,
            )))
        }
        (
            Route::Istio {
                destination_rule,
                virtual_service,
            },
            Ok(()),
        ) => {
            let dr = routes.destination_rules.get(&destination_rule.name_any()).await?;
            let vs = routes.virtual_services.get(&virtual_service.name_any()).await?;
            ObservedRoute::Istio(Box::new([
                observed((**destination_rule).clone(), dr, &names.name, &names.uid),
                observed((**virtual_service).clone(), vs, &names.name, &names.uid),
            ]))
        }
        _ => ObservedRoute::None,
    };

    // 4. Someone else's object among them: write nothing, report it, look again later.
    let mut conflicts = Vec::new();
    for o in &observed_services {
        if let Ownership::Foreign(why) = &o.ownership {
            conflicts.push(format!("{} ({why})", services.describe(&o.desired.name_any())));
        }
    }
    conflicts.extend(observed_route.conflicts(&routes));
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
            .set_trafficsplit(&names.namespace, &names.name, &weights(&ts), false);
        return Ok(Action::requeue(CONFLICT_RETRY));
    }

    // 5. Apply what is missing or changed (a weight change only touches the route).
    for o in &observed_services {
        let unchanged = o
            .live
            .as_ref()
            .is_some_and(|live| drift::service_unchanged(live, &o.desired));
        apply_child(&ctx, &ts, &services, o, unchanged).await?;
    }
    let route_description = observed_route.apply(&ctx, &ts, &routes).await?;

    // 6. Prune: Services we control that the spec no longer wants, and routes of other providers.
    prune_services(&ctx, &ts, &services, &desired, &names).await?;
    routes.prune_other_providers(&ctx, &ts, provider, &names).await?;

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
        .set_trafficsplit(&names.namespace, &names.name, &weights(&ts), ready);

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

/// Applies one observed child unless it is unchanged, with an Event saying what happened.
async fn apply_child<K>(
    ctx: &Context,
    ts: &TrafficSplit,
    children: &Children<K>,
    o: &Observed<K>,
    unchanged: bool,
) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let (reason, verb) = match o.ownership {
        Ownership::Absent => (event_reason::CREATED, "created"),
        Ownership::Adoptable => (event_reason::ADOPTED, "adopted"),
        Ownership::Owned if unchanged => return Ok(()),
        Ownership::Owned => (event_reason::UPDATED, "updated"),
        // Filtered out before: never write someone else's object.
        Ownership::Foreign(_) => return Ok(()),
    };
    children.apply(&o.desired).await?;
    let what = children.describe(&o.desired.name_any());
    tracing::info!(trafficsplit = %ObjectRef::from_obj(ts), object = %what, "{verb}");
    events::publish(
        &ctx.recorder,
        ts,
        EventType::Normal,
        reason,
        "Apply",
        format!("{what} {verb}"),
        Some(children.reference(&o.desired.name_any())),
    )
    .await;
    Ok(())
}

/// The route objects of every provider, in the TrafficSplit's namespace.
pub struct RouteChildren {
    pub http_routes: Children<HttpRoute>,
    pub destination_rules: Children<DynamicObject>,
    pub virtual_services: Children<DynamicObject>,
}

impl RouteChildren {
    pub fn new(ctx: &Context, namespace: &str) -> Self {
        Self {
            http_routes: Children::new(
                Api::namespaced(ctx.client.clone(), namespace),
                "gateway.networking.k8s.io/v1",
                "HTTPRoute",
                namespace,
            ),
            destination_rules: Children::new(
                Api::namespaced_with(ctx.client.clone(), namespace, &destination_rule_resource()),
                "networking.istio.io/v1",
                "DestinationRule",
                namespace,
            ),
            virtual_services: Children::new(
                Api::namespaced_with(ctx.client.clone(), namespace, &virtual_service_resource()),
                "networking.istio.io/v1",
                "VirtualService",
                namespace,
            ),
        }
    }

    /// Deletes route objects of providers other than `provider` that this TrafficSplit
    /// controls (left over from a provider change), for every routing API that is served.
    async fn prune_other_providers(
        &self,
        ctx: &Context,
        ts: &TrafficSplit,
        provider: Provider,
        names: &Names,
    ) -> Result<(), Error> {
        if provider != Provider::GatewayApi && ctx.route_apis.gateway() {
            delete_if_controlled(ctx, ts, &self.http_routes, &names.name, &names.uid).await?;
        }
        if provider != Provider::Istio && ctx.route_apis.istio() {
            delete_if_controlled(ctx, ts, &self.virtual_services, &names.name, &names.uid).await?;
            delete_if_controlled(ctx, ts, &self.destination_rules, &names.name, &names.uid).await?;
        }
        Ok(())
    }
}

/// Deletes `name` if it exists and this TrafficSplit controls it; publishes an Event.
pub async fn delete_if_controlled<K>(
    ctx: &Context,
    ts: &TrafficSplit,
    children: &Children<K>,
    name: &str,
    uid: &str,
) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let Some(live) = children.get(name).await? else {
        return Ok(());
    };
    if !controlled_by(live.meta().owner_references.as_ref(), uid) {
        return Ok(());
    }
    if children.delete(&live).await? {
        publish_deleted(ctx, ts, &children.describe(name), children.reference(name)).await;
    }
    Ok(())
}

pub async fn publish_deleted(
    ctx: &Context,
    ts: &TrafficSplit,
    what: &str,
    child: k8s_openapi::api::core::v1::ObjectReference,
) {
    tracing::info!(trafficsplit = %ObjectRef::from_obj(ts), object = %what, "deleted");
    events::publish(
        &ctx.recorder,
        ts,
        EventType::Normal,
        event_reason::DELETED,
        "Delete",
        format!("{what} deleted"),
        Some(child),
    )
    .await;
}

enum ObservedRoute {
    GatewayApi(Box<Observed<HttpRoute>>),
    Istio(Box<[Observed<DynamicObject>; 2]>),
    None,
}

impl ObservedRoute {
    fn conflicts(&self, routes: &RouteChildren) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |ownership: &Ownership, what: String| {
            if let Ownership::Foreign(why) = ownership {
                out.push(format!("{what} ({why})"));
            }
        };
        match self {
            ObservedRoute::GatewayApi(o) => {
                check(&o.ownership, routes.http_routes.describe(&o.desired.name_any()))
            }
            ObservedRoute::Istio(pair) => {
                let [dr, vs] = &**pair;
                check(
                    &dr.ownership,
                    routes.destination_rules.describe(&dr.desired.name_any()),
                );
                check(
                    &vs.ownership,
                    routes.virtual_services.describe(&vs.desired.name_any()),
                );
            }
            ObservedRoute::None => {}
        }
        out
    }

    /// Applies the route if needed; returns how status names it.
    async fn apply(&self, ctx: &Context, ts: &TrafficSplit, routes: &RouteChildren) -> Result<String, Error> {
        match self {
            ObservedRoute::GatewayApi(o) => {
                let unchanged = o
                    .live
                    .as_ref()
                    .is_some_and(|live| drift::http_route_unchanged(live, &o.desired));
                apply_child(ctx, ts, &routes.http_routes, o, unchanged).await?;
                Ok(format!("HTTPRoute {}", o.desired.name_any()))
            }
            ObservedRoute::Istio(pair) => {
                let [dr, vs] = &**pair;
                // Subsets before the routes that use them.
                for (children, o) in [(&routes.destination_rules, dr), (&routes.virtual_services, vs)] {
                    let unchanged = o
                        .live
                        .as_ref()
                        .is_some_and(|live| drift::dynamic_unchanged(live, &o.desired));
                    apply_child(ctx, ts, children, o, unchanged).await?;
                }
                Ok(format!(
                    "DestinationRule and VirtualService {}",
                    vs.desired.name_any()
                ))
            }
            ObservedRoute::None => Ok("Services".into()),
        }
    }
}

/// Deletes the Services carrying our labels and controlled by this TrafficSplit that the spec no
/// longer wants (a removed backend, or the old root after `spec.service` changed).
async fn prune_services(
    ctx: &Context,
    ts: &TrafficSplit,
    services: &Children<Service>,
    desired: &Desired,
    names: &Names,
) -> Result<(), Error> {
    let wanted: Vec<String> = desired.services.iter().map(|s| s.name_any()).collect();
    let list = services
        .api
        .list(&ListParams::default().labels(&owned_selector(&names.name)))
        .await
        .map_err(|source| Error::ListServices {
            namespace: names.namespace.clone(),
            name: names.name.clone(),
            source,
        })?;
    for svc in list.items {
        let name = svc.name_any();
        if wanted.contains(&name) || !controlled_by(svc.metadata.owner_references.as_ref(), &names.uid) {
            continue;
        }
        if services.delete(&svc).await? {
            publish_deleted(ctx, ts, &services.describe(&name), services.reference(&name)).await;
        }
    }
    Ok(())
}

/// The backends as observed through the EndpointSlice cache.
fn observation(ts: &TrafficSplit, ctx: &Context, outcome: Outcome) -> Observation {
    let namespace = ts.namespace().unwrap_or_default();
    let service = ts.service_name();
    let slices = ctx.slices.state();
    // Bounded like the status schema (an invalid spec may list more backends than allowed).
    let backends = ts
        .spec
        .backends
        .iter()
        .take(MAX_BACKENDS)
        .map(|b| {
            let backend_service = backend_service_name(&service, &b.name);
            BackendObservation {
                name: b.name.clone(),
                ready_endpoints: ready_endpoints(&slices, &namespace, &backend_service),
                service: backend_service,
                weight: b.weight,
            }
        })
        .collect();
    Observation {
        generation: ts.metadata.generation,
        service,
        backends,
        outcome,
    }
}

/// Now, at the one-second precision `metav1.Time` keeps (so a round trip compares equal).
fn now() -> Time {
    let secs = Timestamp::now().as_second();
    Time(Timestamp::from_second(secs).unwrap_or_else(|_| Timestamp::now()))
}

/// Writes the status through `/status` (server-side apply) unless it would not change.
/// Returns the status and whether it was written.
async fn write_status(
    ts: &TrafficSplit,
    ctx: &Context,
    obs: Observation,
) -> Result<(TrafficSplitStatus, bool), Error> {
    let new: TrafficSplitStatus = status::compute(ts.status.as_ref(), &obs, &now());
    if ts.status.as_ref() == Some(&new) {
        return Ok((new, false));
    }
    let namespace = ts.namespace().unwrap_or_default();
    let name = ts.name_any();
    let api: Api<TrafficSplit> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = json!({
        "apiVersion": TrafficSplit::api_version(&()),
        "kind": TrafficSplit::kind(&()),
        "status": new,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| Error::Status {
        namespace,
        name,
        source,
    })?;
    Ok((new, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::Scenario;

    #[tokio::test]
    async fn first_reconcile_only_adds_the_finalizer() {
        let run = Scenario::FinalizerCreation.run().await;
        assert_eq!(run.result.unwrap(), Action::await_change());
        assert_eq!(run.transcript.requests.len(), 1, "{:?}", run.transcript.requests);
    }

    #[tokio::test]
    async fn creation_applies_three_services_and_the_route() {
        let run = Scenario::Creation.run().await;
        assert_eq!(run.result.unwrap(), Action::requeue(RESYNC));
        assert_eq!(
            run.transcript.writes(),
            [
                "PATCH /api/v1/namespaces/shop/services/checkout?&force=true&fieldManager=splitscope",
                "PATCH /api/v1/namespaces/shop/services/checkout-stable?&force=true&fieldManager=splitscope",
                "PATCH /api/v1/namespaces/shop/services/checkout-canary?&force=true&fieldManager=splitscope",
                "PATCH /apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/checkout?&force=true&fieldManager=splitscope",
                "PATCH /apis/splitscope.dev/v1alpha1/namespaces/shop/trafficsplits/checkout/status?&force=true&fieldManager=splitscope",
            ]
        );
        assert_eq!(run.transcript.event_reasons(), ["Created"; 4]);
        let note = run.transcript.events[3]["note"].as_str().unwrap();
        assert_eq!(note, "HTTPRoute shop/checkout created");
    }

    #[tokio::test]
    async fn resync_of_an_unchanged_object_writes_nothing() {
        let run = Scenario::Resync.run().await;
        assert_eq!(run.result.unwrap(), Action::requeue(RESYNC));
        assert_eq!(run.transcript.writes(), Vec::<String>::new());
        assert!(run.transcript.events.is_empty());
        assert!(
            run.metrics
                .render()
                .contains("splitscope_trafficsplit_ready{name=\"checkout\",namespace=\"shop\"} 1")
        );
    }

    #[tokio::test]
    async fn a_weight_change_writes_only_the_route() {
        let run = Scenario::WeightChange.run().await;
        run.result.unwrap();
        let writes = run.transcript.writes();
        assert_eq!(writes.len(), 2, "{writes:?}");
        assert!(
            writes[0]
                .starts_with("PATCH /apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/checkout?")
        );
        assert!(writes[1].contains("/trafficsplits/checkout/status?"));
        assert_eq!(run.transcript.event_reasons(), ["Updated"]);
        let metrics = run.metrics.render();
        assert!(metrics.contains(
            "splitscope_trafficsplit_backend_weight{backend=\"canary\",name=\"checkout\",namespace=\"shop\"} 50"
        ), "{metrics}");
    }

    #[tokio::test]
    async fn a_foreign_service_is_a_conflict_and_left_alone() {
        let run = Scenario::Conflict.run().await;
        assert_eq!(run.result.unwrap(), Action::requeue(CONFLICT_RETRY));
        let writes = run.transcript.writes();
        assert_eq!(writes.len(), 1, "only the status may be written: {writes:?}");
        assert!(writes[0].contains("/trafficsplits/checkout/status?"));
        assert_eq!(run.transcript.event_reasons(), ["Conflict"]);
        assert_eq!(run.transcript.events[0]["type"], "Warning");
    }

    #[tokio::test]
    async fn a_removed_backend_loses_its_service() {
        let run = Scenario::BackendRemoved.run().await;
        run.result.unwrap();
        assert!(
            run.transcript
                .writes()
                .contains(&"DELETE /api/v1/namespaces/shop/services/checkout-canary".to_string()),
            "{:?}",
            run.transcript.writes()
        );
        assert_eq!(run.transcript.event_reasons(), ["Updated", "Deleted"]);
        assert!(!run.metrics.render().contains("backend=\"canary\""));
    }

    #[tokio::test]
    async fn an_invalid_spec_writes_status_only_and_waits() {
        let run = Scenario::InvalidSpec.run().await;
        assert_eq!(run.result.unwrap(), Action::await_change());
        assert_eq!(
            run.transcript
                .requests
                .iter()
                .filter(|r| !r.contains("/events"))
                .count(),
            1
        );
        assert_eq!(run.transcript.event_reasons(), ["InvalidSpec"]);
        assert!(
            run.transcript.events[0]["note"]
                .as_str()
                .unwrap()
                .contains("spec.backends")
        );
    }

    #[tokio::test]
    async fn a_missing_route_api_is_reported_and_services_still_applied() {
        let run = Scenario::RouteApiMissing.run().await;
        assert_eq!(run.result.unwrap(), Action::requeue(ROUTE_API_RETRY));
        assert_eq!(run.transcript.writes().len(), 4, "{:?}", run.transcript.writes());
        assert_eq!(
            run.transcript.event_reasons(),
            ["Created", "Created", "Created", "RouteAPIUnavailable"]
        );
    }

    #[tokio::test]
    async fn a_route_api_installed_after_start_is_found_and_used() {
        let run = Scenario::RouteApiInstalledLater.run().await;
        assert_eq!(run.result.unwrap(), Action::requeue(RESYNC));
        assert_eq!(run.transcript.event_reasons(), ["Created"; 4]);
    }

    #[tokio::test]
    async fn istio_applies_destination_rule_then_virtual_service() {
        let run = Scenario::IstioCreation.run().await;
        run.result.unwrap();
        let writes = run.transcript.writes();
        assert!(writes[3].contains("/destinationrules/checkout?"), "{writes:?}");
        assert!(writes[4].contains("/virtualservices/checkout?"), "{writes:?}");
    }

    #[tokio::test]
    async fn an_orphaned_root_service_with_our_labels_is_adopted() {
        let run = Scenario::Adoption.run().await;
        run.result.unwrap();
        assert_eq!(
            run.transcript.event_reasons(),
            ["Adopted", "Created", "Created", "Created"]
        );
    }
}
