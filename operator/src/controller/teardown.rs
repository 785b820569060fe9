//! Teardown of a deleted TrafficSplit, run by kube-runtime's finalizer helper before it removes
//! `splitscope.dev/cleanup`:
//!
//! 1. the route objects of every served provider, each in its provider's own order (routing/,
//!    e.g. routing/istio.rs: VirtualService, then DestinationRule), so the mesh stops sending
//!    weighted traffic to backends that are about to go;
//! 2. the backend Services;
//! 3. the root Service — deleted (`deletionPolicy: Delete`) or kept with our ownerReference
//!    removed (`Orphan`; our labels stay, so a later TrafficSplit of the same name adopts it);
//!
//! then the object's metric series are dropped and an Event is published. Only objects this
//! TrafficSplit controls are touched; NotFound counts as done, so a restart at any step converges.

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::Patch;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::json;

use crate::controller::api::trafficsplit::{DeletionPolicy, TrafficSplit};
use crate::controller::events::{self, reason as event_reason};
use crate::controller::objects::children::{self, Owner};
use crate::controller::routing;
use crate::controller::runtime::context::{Context, Error};

pub async fn cleanup(ts: Arc<TrafficSplit>, ctx: Arc<Context>) -> Result<Action, Error> {
    let owner = Owner::new(&ts, ctx.client.clone(), &ctx.recorder);

    // 1. Route first. Its API may have been installed since start-up: ask again if needed.
    // (Err(name) only says it is still missing: then there is no route to delete.)
    let _still_missing = ctx
        .route_apis
        .ensure(&ctx.client, ts.spec.routing.provider)
        .await
        .map_err(Error::Discovery)?;
    routing::teardown(&owner, &ctx.route_apis, None).await?;

    // 2. Backend Services, 3. the root Service.
    let services = children::services(ctx.client.clone(), &owner.namespace);
    let root_name = ts.service_name();
    let (root, backends): (Vec<_>, Vec<_>) = services
        .controlled(&owner)
        .await?
        .into_iter()
        .partition(|s| s.name_any() == root_name);
    for svc in &backends {
        services.delete_controlled(&owner, svc).await?;
    }
    let root_note = match (root.first(), ts.spec.deletion_policy) {
        (None, _) => String::new(),
        (Some(svc), DeletionPolicy::Delete) => {
            services.delete_controlled(&owner, svc).await?;
            String::new()
        }
        (Some(_), DeletionPolicy::Orphan) => {
            // Strategic merge patch: ownerReferences merge on uid, so this removes exactly our
            // reference and nothing else.
            let patch = json!({
                "metadata": {"ownerReferences": [{"$patch": "delete", "uid": owner.uid}]}
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

    ctx.metrics.forget_trafficsplit(&owner.namespace, &owner.name);
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
