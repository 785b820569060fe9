//! One reconcile of a TrafficSplit: the finalizer entry point. kube-runtime's finalizer helper
//! adds `splitscope.dev/cleanup` first, then hands a live object to [`apply`] (validate → render
//! → observe → apply → prune → status, with the rollout step in rollout.rs) and a deleted one to
//! the teardown (teardown.rs).

mod apply;
mod report;
mod rollout;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};

use crate::controller::api::trafficsplit::{FINALIZER, TrafficSplit};
use crate::controller::runtime::context::{Context, Error};
use crate::controller::runtime::metrics::ReconcileResult;
use crate::controller::teardown::cleanup;

/// Resync of a healthy TrafficSplit (repairs drift on kinds that are not watched).
pub const RESYNC: Duration = Duration::from_secs(300);
/// Retry while another owner holds one of our objects (it is not watched).
pub const CONFLICT_RETRY: Duration = Duration::from_secs(60);
/// Retry while the provider's API is not served.
pub const ROUTE_API_RETRY: Duration = Duration::from_secs(120);
/// Retry of a rollout while the EndpointSlice cache has not had its first full list.
pub const SLICES_WAIT: Duration = Duration::from_secs(1);

/// Entry point for the Controller: finalizer bookkeeping, metrics, backoff reset.
pub async fn reconcile(ts: Arc<TrafficSplit>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let key = ObjectRef::from_obj(&*ts);
    let namespace = ts.namespace().ok_or_else(|| Error::NoNamespace(ts.name_any()))?;
    // A rollout decides from its backends' EndpointSlices (which pods to measure, whether the
    // canary has ready ones). Before the cache's first full list (a new leader's first moments)
    // an empty cache would read as "no pods": the canary would lose its weight and a due
    // measurement would find no data. So it waits for the list, deciding nothing.
    if ts.spec.rollout.is_some() && ts.meta().deletion_timestamp.is_none() && !slices_synced(&ctx) {
        return Ok(Action::requeue(SLICES_WAIT));
    }
    let api: Api<TrafficSplit> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = match fresh_enough(&api, ts).await {
        Ok(Some(ts)) => finalize(&api, ts, &ctx).await,
        Ok(None) => Ok(Action::await_change()),
        Err(e) => Err(e),
    };
    match &result {
        Ok(_) => {
            ctx.backoff.succeeded(&key);
            ctx.metrics.reconciled(started, ReconcileResult::Success);
        }
        Err(_) => ctx.metrics.reconciled(started, ReconcileResult::Error),
    }
    result
}

/// Whether the EndpointSlice cache had its first full list (without waiting for it).
fn slices_synced(ctx: &Context) -> bool {
    use futures::FutureExt;
    ctx.slices
        .wait_until_ready()
        .now_or_never()
        .is_some_and(|r| r.is_ok())
}

async fn finalize(
    api: &Api<TrafficSplit>,
    ts: Arc<TrafficSplit>,
    ctx: &Arc<Context>,
) -> Result<Action, Error> {
    let result = finalizer(api, FINALIZER, ts, |event| async {
        match event {
            FinalizerEvent::Apply(ts) => apply::apply(ts, ctx.clone()).await,
            FinalizerEvent::Cleanup(ts) => cleanup(ts, ctx.clone()).await,
        }
    })
    .await;
    match result {
        // The object went away between our read and the finalizer's removal (deleted by hand
        // with its finalizer, or its last other finalizer went): the teardown is done.
        Err(finalizer::Error::RemoveFinalizer(kube::Error::Api(status))) if status.code == 404 => {
            Ok(Action::await_change())
        }
        other => other.map_err(|e| Error::Finalizer(Box::new(e))),
    }
}

/// The copy of the object to reconcile: the Controller's cached one, or a fresh read where a
/// cached copy that trails our own last write would make this reconcile undo it. `None` when
/// there is nothing left to do for this object.
///
/// Two cases need the fresh read:
///
/// - **A deletion.** On a real API server, the teardown's own deletions (Services, routes, and
///   the EndpointSlices that follow them) queue more reconciles of the TrafficSplit. The
///   Controller hands each one the object from its cache, and that copy can still show our
///   finalizer after the reconcile before it removed the finalizer and the API server deleted
///   the object: the watch event saying so has not arrived yet. Run on that stale copy, the
///   teardown repeated itself (another `CleanedUp` Event) and then failed to remove a finalizer
///   from an object that no longer existed (`NotFound`, counted as an error and retried). Gone,
///   replaced by a new object of the same name, or without our finalizer all mean the teardown
///   already ran.
/// - **A rollout.** Its weights live in the status this controller writes, and a reconcile
///   queued by anything else (an EndpointSlice changing, a resync) can be handed a cached copy
///   from before our last status write. Run on it, the route went back to the weights of the
///   step before — after a rollback, back to sending traffic to the canary that failed — until
///   the status write lost to the newer resourceVersion (409) and a reconcile a second later
///   repaired it. The guarded status write keeps the status right; only a read before the route
///   write keeps the route right. It costs one GET per reconcile of a TrafficSplit with
///   `spec.rollout`, which Flagger's and Argo Rollouts' own loops pay as well.
async fn fresh_enough(
    api: &Api<TrafficSplit>,
    ts: Arc<TrafficSplit>,
) -> Result<Option<Arc<TrafficSplit>>, Error> {
    let ours = |t: &TrafficSplit| t.finalizers().iter().any(|f| f == FINALIZER);
    let deleting = ts.meta().deletion_timestamp.is_some();
    // Without our finalizer, the finalizer helper only adds it (or, when deleting, lets the
    // object go): nothing is decided from the status.
    let needs_read = ours(&ts) && (deleting || ts.spec.rollout.is_some());
    if !needs_read {
        return Ok(Some(ts));
    }
    let name = ts.name_any();
    let live = api.get_opt(&name).await.map_err(|source| Error::Read {
        namespace: ts.namespace().unwrap_or_default(),
        name: name.clone(),
        source,
    })?;
    // Replaced by a new object of the same name: that one has its own reconcile queued.
    let live = live.filter(|live| live.uid() == ts.uid());
    Ok(if deleting {
        live.filter(|live| ours(live)).map(Arc::new)
    } else {
        live.map(Arc::new)
    })
}
