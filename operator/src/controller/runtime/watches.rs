//! The kube-runtime Controller and what it watches: TrafficSplits; the Services we own and the
//! route kinds of every served provider (by ownerReference, only those labelled
//! `app.kubernetes.io/managed-by=splitscope`); and the EndpointSlices of our Services (through a
//! reflector that also fills the cache status counts ready endpoints from).
//!
//! The reconcile function is passed in, so this room does not depend on the reconciler.

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::store::Writer;
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;

use super::backoff::error_policy;
use super::context::{Context, Error};
use crate::controller::api::trafficsplit::{
    MANAGED_BY_LABEL, MANAGED_BY_VALUE, TRAFFIC_SPLIT_LABEL, TrafficSplit,
};
use crate::controller::objects::children::scoped_api;
use crate::controller::routing;
use crate::metrics_server::Readiness;

/// Most reconciles running at once.
pub const CONCURRENCY: u16 = 8;

/// The Controller with every watch wired, ready to `run`.
fn controller(
    ctx: &Context,
    slices: Writer<EndpointSlice>,
    namespace: Option<&str>,
) -> Controller<TrafficSplit> {
    let client = ctx.client.clone();
    let owned = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
    let controller = Controller::new(
        scoped_api::<TrafficSplit>(client.clone(), namespace),
        watcher::Config::default(),
    )
    .with_config(Config::default().concurrency(CONCURRENCY))
    .owns(scoped_api::<Service>(client.clone(), namespace), owned.clone());
    let controller = routing::watch(controller, client.clone(), namespace, &ctx.route_apis, &owned);
    let slice_events = watcher(scoped_api::<EndpointSlice>(client, namespace), owned)
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

/// Runs the Controller with `reconcile` until `stop` is cancelled (in-flight reconciles finish
/// first). Flags `readiness` once the TrafficSplit and EndpointSlice caches are synced.
pub async fn run<R, Fut>(
    ctx: Arc<Context>,
    slices: Writer<EndpointSlice>,
    namespace: Option<String>,
    readiness: Arc<Readiness>,
    stop: CancellationToken,
    reconcile: R,
) where
    R: FnMut(Arc<TrafficSplit>, Arc<Context>) -> Fut,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
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
