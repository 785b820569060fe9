//! The kube-runtime Controller and what it watches: TrafficSplits; the Services, HTTPRoutes and
//! Istio objects we own (by ownerReference, only those labelled
//! `app.kubernetes.io/managed-by=splitscope`); and the EndpointSlices of our Services (through a
//! reflector that also fills the cache status counts ready endpoints from).

use std::sync::Arc;

use futures::StreamExt;
use gateway_api::httproutes::HttpRoute;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::core::DynamicObject;
use kube::runtime::controller::{Config, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::store::Writer;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use tokio_util::sync::CancellationToken;

use super::context::Context;
use super::reconcile::{error_policy, reconcile};
use super::render::{destination_rule_resource, virtual_service_resource};
use super::trafficsplit::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, TRAFFIC_SPLIT_LABEL, TrafficSplit};
use crate::metrics_server::Readiness;

/// Most reconciles running at once.
pub const CONCURRENCY: u16 = 8;

fn scoped<K>(client: Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    }
}

/// The Controller with every watch wired, ready to `run`.
pub fn controller(
    ctx: &Context,
    slices: Writer<EndpointSlice>,
    namespace: Option<&str>,
) -> Controller<TrafficSplit> {
    let client = ctx.client.clone();
    let owned = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
    let mut controller = Controller::new(
        scoped::<TrafficSplit>(client.clone(), namespace),
        watcher::Config::default(),
    )
    .with_config(Config::default().concurrency(CONCURRENCY))
    .owns(scoped::<Service>(client.clone(), namespace), owned.clone());
    if ctx.route_apis.gateway() {
        controller = controller.owns(scoped::<HttpRoute>(client.clone(), namespace), owned.clone());
    }
    if ctx.route_apis.istio() {
        for resource in [destination_rule_resource(), virtual_service_resource()] {
            let api: Api<DynamicObject> = match namespace {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
                None => Api::all_with(client.clone(), &resource),
            };
            controller = controller.owns_with(api, resource, owned.clone());
        }
    }
    let slice_events = watcher(scoped::<EndpointSlice>(client, namespace), owned)
        .default_backoff()
        .reflect(slices)
        .touched_objects();
    controller.watches_stream(slice_events, slice_owner)
}

/// The TrafficSplit an EndpointSlice belongs to (its Service's labels, copied onto it).
fn slice_owner(slice: EndpointSlice) -> Option<ObjectRef<TrafficSplit>> {
    let name = slice.metadata.labels.as_ref()?.get(TRAFFIC_SPLIT_LABEL)?.clone();
    let namespace = slice.metadata.namespace?;
    Some(ObjectRef::new(&name).within(&namespace))
}

/// Whether the store got its first full list (false: its writer is gone).
///
/// Polled in short rounds rather than awaited once: the store's readiness signal wakes only its
/// most recent waiter, and the Controller itself waits on the TrafficSplit store too, so a single
/// await here could sleep forever after the cache is synced.
async fn ready<K>(store: &kube::runtime::reflector::Store<K>) -> bool
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        if let Ok(result) =
            tokio::time::timeout(std::time::Duration::from_millis(200), store.wait_until_ready()).await
        {
            return result.is_ok();
        }
    }
}

/// Runs the Controller until `stop` is cancelled (in-flight reconciles finish first). Flags
/// `readiness` once the TrafficSplit and EndpointSlice caches are synced.
pub async fn run(
    ctx: Arc<Context>,
    slices: Writer<EndpointSlice>,
    namespace: Option<String>,
    readiness: Arc<Readiness>,
    stop: CancellationToken,
) {
    let controller = controller(&ctx, slices, namespace.as_deref());
    let trafficsplits = controller.store();
    let slice_cache = ctx.slices.clone();
    let synced = tokio::spawn(async move {
        if ready(&trafficsplits).await && ready(&slice_cache).await {
            tracing::info!("caches synced");
            readiness.set_ready(true);
        }
    });
    let shutdown = async move { stop.cancelled().await };
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(trafficsplit = %object, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "controller"),
            }
        })
        .await;
    synced.abort();
}
