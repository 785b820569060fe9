//! Teardown of a deleted TrafficSplit, run by kube-runtime's finalizer helper before it removes
//! `splitscope.dev/cleanup`:
//!
//! 1. the route (HTTPRoute, or VirtualService then DestinationRule), so the mesh stops sending
//!    weighted traffic to backends that are about to go;
//! 2. the backend Services;
//! 3. the root Service — deleted (`deletionPolicy: Delete`) or kept with our ownerReference
//!    removed (`Orphan`; our labels stay, so a later TrafficSplit of the same name adopts it);
//!
//! then the object's metric series are dropped and an Event is published. Only objects this
//! TrafficSplit controls are touched; NotFound counts as done, so a restart at any step converges.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use kube::api::{ListParams, Patch};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::children::Children;
use super::context::{Context, Error};
use super::events::{self, reason as event_reason};
use super::reconcile::{RouteChildren, delete_if_controlled, publish_deleted};
use super::render::{controlled_by, owned_selector};
use super::trafficsplit::{DeletionPolicy, TrafficSplit};

pub async fn cleanup(ts: Arc<TrafficSplit>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = ts.namespace().unwrap_or_default();
    let name = ts.name_any();
    let uid = ts.uid().unwrap_or_default();

    // 1. Route first. Its API may have been installed since start-up: ask again if needed.
    // (Err(name) only says it is still missing: then there is no route to delete.)
    let _still_missing = ctx
        .route_apis
        .ensure(&ctx.client, ts.spec.routing.provider)
        .await
        .map_err(Error::Discovery)?;
    let routes = RouteChildren::new(&ctx, &namespace);
    if ctx.route_apis.gateway() {
        delete_if_controlled(&ctx, &ts, &routes.http_routes, &name, &uid).await?;
    }
    if ctx.route_apis.istio() {
        delete_if_controlled(&ctx, &ts, &routes.virtual_services, &name, &uid).await?;
        delete_if_controlled(&ctx, &ts, &routes.destination_rules, &name, &uid).await?;
    }

    // 2. Backend Services, 3. the root Service.
    let services = Children::new(
        Api::<Service>::namespaced(ctx.client.clone(), &namespace),
        "v1",
        "Service",
        &namespace,
    );
    let list = services
        .api
        .list(&ListParams::default().labels(&owned_selector(&name)))
        .await
        .map_err(|source| Error::ListServices {
            namespace: namespace.clone(),
            name: name.clone(),
            source,
        })?;
    let root_name = ts.service_name();
    let (root, backends): (Vec<Service>, Vec<Service>) = list
        .items
        .into_iter()
        .filter(|s| controlled_by(s.metadata.owner_references.as_ref(), &uid))
        .partition(|s| s.name_any() == root_name);
    for svc in &backends {
        if services.delete(svc).await? {
            let name = svc.name_any();
            publish_deleted(&ctx, &ts, &services.describe(&name), services.reference(&name)).await;
        }
    }
    let root_note = match (root.first(), ts.spec.deletion_policy) {
        (None, _) => String::new(),
        (Some(svc), DeletionPolicy::Delete) => {
            if services.delete(svc).await? {
                publish_deleted(
                    &ctx,
                    &ts,
                    &services.describe(&root_name),
                    services.reference(&root_name),
                )
                .await;
            }
            String::new()
        }
        (Some(_), DeletionPolicy::Orphan) => {
            // Strategic merge patch: ownerReferences merge on uid, so this removes exactly our
            // reference and nothing else.
            let patch = json!({
                "metadata": {"ownerReferences": [{"$patch": "delete", "uid": uid}]}
            });
            if services.patch(&root_name, &Patch::Strategic(&patch)).await? {
                let what = services.describe(&root_name);
                events::publish(
                    &ctx.recorder,
                    &ts,
                    EventType::Normal,
                    event_reason::ORPHANED,
                    "Delete",
                    format!("{what} kept (deletionPolicy Orphan): ownerReference removed"),
                    Some(services.reference(&root_name)),
                )
                .await;
            }
            format!("; Service {root_name} kept (deletionPolicy Orphan)")
        }
    };

    ctx.metrics.forget_trafficsplit(&namespace, &name);
    events::publish(
        &ctx.recorder,
        &ts,
        EventType::Normal,
        event_reason::CLEANED_UP,
        "Delete",
        format!("owned objects removed{root_note}"),
        None,
    )
    .await;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::Scenario;

    #[tokio::test]
    async fn cleanup_deletes_route_then_backends_then_root_then_releases_the_finalizer() {
        let run = Scenario::Cleanup.run().await;
        assert_eq!(run.result.unwrap(), Action::await_change());
        assert_eq!(
            run.transcript.writes(),
            [
                "DELETE /apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/checkout",
                "DELETE /api/v1/namespaces/shop/services/checkout-stable",
                "DELETE /api/v1/namespaces/shop/services/checkout-canary",
                "DELETE /api/v1/namespaces/shop/services/checkout",
                "PATCH /apis/splitscope.dev/v1alpha1/namespaces/shop/trafficsplits/checkout",
            ]
        );
        assert_eq!(
            run.transcript.event_reasons(),
            ["Deleted", "Deleted", "Deleted", "Deleted", "CleanedUp"]
        );
        let metrics = run.metrics.render();
        assert!(
            !metrics.contains("name=\"checkout\""),
            "series left behind:\n{metrics}"
        );
    }

    #[tokio::test]
    async fn orphan_policy_keeps_the_root_service_without_our_owner_reference() {
        let run = Scenario::CleanupOrphan.run().await;
        run.result.unwrap();
        let writes = run.transcript.writes();
        assert_eq!(writes.len(), 5, "{writes:?}");
        assert_eq!(writes[3], "PATCH /api/v1/namespaces/shop/services/checkout");
        assert!(
            !writes
                .iter()
                .any(|w| w == "DELETE /api/v1/namespaces/shop/services/checkout")
        );
        assert_eq!(
            run.transcript.event_reasons(),
            ["Deleted", "Deleted", "Deleted", "Orphaned", "CleanedUp"]
        );
    }

    #[tokio::test]
    async fn istio_cleanup_deletes_virtual_service_then_destination_rule() {
        let run = Scenario::CleanupIstio.run().await;
        run.result.unwrap();
        let writes = run.transcript.writes();
        assert!(
            writes[0]
                .starts_with("DELETE /apis/networking.istio.io/v1/namespaces/shop/virtualservices/checkout"),
            "{writes:?}"
        );
        assert!(
            writes[1]
                .starts_with("DELETE /apis/networking.istio.io/v1/namespaces/shop/destinationrules/checkout"),
            "{writes:?}"
        );
    }
}
